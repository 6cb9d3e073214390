//! GraphQL: the schema, its per-request DataLoaders, and the limits a public endpoint needs.
//!
//! The schema is a library ([`build_schema`]); `src/http/graphql.rs` wires it to `/graphql`
//! in a few lines. Every read and write goes through the same
//! [`operations`](crate::operations) as REST v1 (the DataLoaders' batch functions too), so
//! the rules, the cache and the error meanings are the same; only the representation differs
//! (string `ID`s, Relay connections, `extensions.code`).
//!
//! - [`types`]: `User`, `Post`, the access token.
//! - [`query`] and [`mutation`]: the roots.
//! - [`loaders`]: DataLoaders, built for each request (never on the schema), batching by shard.
//! - [`limits`]: depth, cost and page-size limits, checked before any resolver runs.
//! - [`charge`]: the rate limit's charge, the query's cost, made before any resolver runs.
//! - [`budget`]: the bytes of answer and the reads one request may spend while it runs.

pub mod budget;
pub mod charge;
pub mod limits;
pub mod loaders;
pub mod mutation;
pub mod planned;
pub mod query;
pub mod types;

use std::{net::IpAddr, sync::Arc};

use async_graphql::{Context, EmptySubscription, Schema};

use crate::{
    AppState, Config,
    auth::{AuthUser, Principal},
    db::Session,
    error::Error,
};
use budget::RequestBudget;
use limits::Limits;
use loaders::Loaders;
use mutation::MutationRoot;
use query::QueryRoot;

pub type ApiSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Builds the schema once at start-up. It holds no data: everything a request needs is
/// attached to that request as a [`RequestData`], so nothing (above all no DataLoader cache)
/// is shared between requests or users.
pub fn build_schema(config: &Config) -> ApiSchema {
    // The charge first: its hooks wrap the limits', so it charges only what they let through.
    let mut builder = Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .extension(charge::Charge)
        .extension(Limits::new(&config.graphql, config.api.max_page_size))
        // Before the planned executor, so that its stop wraps the plan's run too.
        .extension(budget::Budget);
    if config.graphql.plans() {
        // Last, so innermost: it runs a plan only once the charge and the limits have let the
        // query through.
        builder = builder.extension(planned::Planned);
    }
    if !config.introspection() {
        // "Did you mean ...?" suggestions would reveal field names that introspection hides.
        builder = builder.disable_introspection().disable_suggestions();
    }
    builder.finish()
}

/// What the resolvers of one request share, built by the HTTP handler for that request.
///
/// The DataLoaders live here, not on the schema: async-graphql's examples register one loader
/// with `Schema::build(..).data(loader)`, which makes its cache global, so one user's request
/// is answered from rows another request loaded (stale after a write, and across viewers).
/// Per request, a loader's cache lives exactly as long as the request that filled it.
pub struct RequestData {
    pub app: AppState,
    pub session: Session,
    /// Who the request acts for: its access token's user, its API key, or nobody. Resolved by
    /// the same extractor as REST's, and asked the same questions (`viewer`, `writer`), so a
    /// key does in GraphQL exactly what it does in REST.
    pub principal: Principal,
    /// The client's address, which `login` and `register` are limited by.
    pub client: IpAddr,
    pub loaders: Loaders,
    /// The bytes and reads this request may still spend; shared with its loaders.
    pub budget: Arc<RequestBudget>,
    /// Where the planned executor leaves the answer it rendered (`None`: the handler does not
    /// take rendered answers, and every request runs on the resolvers).
    pub rendered: Option<planned::Rendered>,
}

impl RequestData {
    pub fn new(app: AppState, session: Session, principal: Principal, client: IpAddr) -> Self {
        let budget = Arc::new(RequestBudget::new(&app.config.graphql));
        let loaders = Loaders::new(&app, &session, &budget);
        Self {
            app,
            session,
            principal,
            client,
            loaders,
            budget,
            rendered: None,
        }
    }

    /// Lets the planned executor answer into `slot` (see `src/graphql/planned/`).
    pub fn with_rendered(mut self, slot: planned::Rendered) -> Self {
        self.rendered = Some(slot);
        self
    }

    /// The user whose view this is (their own email shows): a token's user or a key's owner.
    pub(crate) fn viewer(&self) -> Option<AuthUser> {
        self.principal.viewer()
    }

    /// This request's data. Missing only if the handler forgot it: a bug, reported as an
    /// internal error (never with the type name in the client's message).
    pub(crate) fn of<'a>(ctx: &Context<'a>) -> Result<&'a Self, Error> {
        ctx.data_opt::<Self>().ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "the GraphQL request was executed without its RequestData"
            ))
        })
    }

    pub(crate) fn viewer_id(&self) -> Option<i64> {
        self.viewer().map(|viewer| viewer.id)
    }

    /// The user a mutation writes as: a token's user or a `write` key's owner (a `read` key
    /// is `FORBIDDEN`, no credentials `UNAUTHENTICATED`).
    pub(crate) fn me(&self) -> Result<AuthUser, Error> {
        self.principal.writer()
    }

    /// A `first` argument as a row count, within `api.max_page_size`.
    pub(crate) fn page_size(&self, first: i32) -> Result<i64, Error> {
        limits::page_size(i64::from(first), self.app.config.api.max_page_size)
    }
}
