//! The planned executor: a query's reads done level by level in batches, its answer written
//! straight to JSON bytes.
//!
//! async-graphql resolves every field as its own future, through every extension's hook, and
//! builds the whole answer as a tree of `ConstValue`s (a string clone and a map insert a field)
//! before serialising it. For `users(first: 50) { ... posts(first: 5) { id title } }` that is
//! about 800 resolver calls and as many small allocations, and it costs milliseconds of CPU
//! per request where the reads themselves, served from the cache, cost a fraction of one.
//! The fastest GraphQL servers compile the query instead of resolving it field by field; this
//! executor does the same for the queries it covers:
//!
//! 1. **Plan** ([`plan`]): before validation, the parsed operation becomes a [`Plan`]: the
//!    root fields, and for each object which fields under which keys. Anything it does not
//!    cover (mutations, fragments, directives, introspection, ...) gets no plan.
//! 2. **Load** ([`load`]): once async-graphql has validated the query and every limit and the
//!    rate-limit charge have passed, the plan's reads run one level at a time, each level in
//!    one batch call of the same operations the DataLoaders use (`src/operations/`), so through
//!    the same cache, with the same consistency and the same statement count: one statement per
//!    shard per level at most, none when the cache is warm. There is no batch window to wait
//!    for: the plan knows every key of a level before it asks.
//! 3. **Render** ([`render`]): the answer is written field by field into one buffer, in the
//!    query's order, exactly as the resolvers would have answered.
//!
//! Correctness rests on falling back, never on a second implementation of the rules: a
//! request with no plan, and a planned request whose reads fail or meet something the
//! resolvers answer with an error (a bad id, a post whose author is gone), runs on the
//! resolvers, which produce the answer or the error they always have (`graphql.executor =
//! "resolvers"` uses them for everything). The cost of that choice: a failing planned request
//! reads twice. `tests/api/graphql/planned.rs` runs the same queries on both executors and
//! compares the answers byte for byte.

mod load;
pub(crate) mod plan;
mod render;

use std::sync::{Arc, Mutex, OnceLock};

use async_graphql::{
    Request, Response, ServerResult,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextPrepareRequest},
};

use super::RequestData;
pub(crate) use plan::Plan;

/// The answer a planned request rendered, handed to the HTTP handler (which sends these bytes
/// instead of serialising async-graphql's `Response`).
pub type Rendered = Arc<OnceLock<Vec<u8>>>;

/// The extension that plans each request and runs the plan in place of the resolvers.
pub struct Planned;

impl ExtensionFactory for Planned {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PlannedRequest::default())
    }
}

/// One request's plan, between `prepare_request` (where the parsed document is at hand) and
/// `execute` (after validation and the limits).
#[derive(Default)]
struct PlannedRequest {
    plan: Mutex<Option<Plan>>,
}

#[async_graphql::async_trait::async_trait]
impl Extension for PlannedRequest {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let mut request = next.run(ctx, request).await?;
        // Taken out while the document is borrowed, and put back: no copy of the variables.
        let operation_name = request.operation_name.take();
        let variables = std::mem::take(&mut request.variables);
        // A parse error is the parser's to report, on the normal path.
        if let Ok(doc) = request.parsed_query() {
            let plan = Plan::build(doc, operation_name.as_deref(), &variables);
            *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan;
        }
        request.operation_name = operation_name;
        request.variables = variables;
        Ok(request)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let plan = self.plan.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let (Some(plan), Some(rq)) = (plan, ctx.data_opt::<RequestData>())
            && let Some(rendered) = &rq.rendered
            // Boxed: the load's future nests the cache's and the database's, deeper than the
            // compiler's default limit for computing the extension future's layout.
            && let Some(body) = Box::pin(run(&plan, rq)).await
            && rendered.set(body).is_ok()
        {
            // The handler sends the rendered bytes; this empty answer is never serialised.
            return Response::default();
        }
        if ctx
            .data_opt::<RequestData>()
            .is_some_and(|rq| rq.budget.is_exceeded())
        {
            // The plan spent the request's budget: the budget's extension, around this one,
            // answers with its error; the resolvers would only spend more.
            return Response::default();
        }
        next.run(ctx, operation_name).await
    }
}

/// Loads and renders `plan`; `None` sends the request to the resolvers.
async fn run(plan: &Plan, rq: &RequestData) -> Option<Vec<u8>> {
    let loaded = load::load(plan, rq).await?;
    let start = std::time::Instant::now();
    let body = render::render(plan, &loaded, rq.viewer_id(), &rq.budget);
    rq.session
        .timing()
        .record(crate::telemetry::Phase::Serialize, start.elapsed());
    body
}
