//! What one request may spend while it runs: bytes of answer, and reads of the data layer.
//!
//! The limits (`limits.rs`) judge a query before it runs, by its shape; two costs only show
//! while it runs, so this [`RequestBudget`] counts them as they are spent:
//!
//! - **Bytes** (`graphql.max_response_bytes`). The cost limit counts fields, not their length:
//!   `user { posts(first: 100) { body author { posts(first: 100) { body } } } }` costs about
//!   12,000 and would render 10,000 bodies of up to 80 KB each (20,000 characters of UTF-8),
//!   all held in memory at once. Every resolved value adds its length (text) or a few bytes
//!   (anything else); the planned executor counts the bytes it writes. Past the budget the
//!   request stops at once (its pending resolvers and reads are dropped) and the answer is a
//!   single `RESPONSE_TOO_LARGE` error: no partial data, whose size would be the problem.
//! - **Reads** (`graphql.max_reads`, `graphql.max_concurrent_reads`). Each root list is its
//!   own cross-shard read, and async-graphql resolves root fields concurrently. Every read of
//!   the request (a DataLoader batch, a root list, a level of a plan) takes one of the
//!   request's few concurrency permits, so twenty roots do not take twenty connections per
//!   shard from the pool every request shares; and a request past its read count stops with
//!   `TOO_MANY_READS`. The root-field limit (`graphql.max_root_fields`) refuses the obvious
//!   fan-out before anything runs; this bounds whatever shape gets past it.
//!
//! Like the limits' errors, these are a 200 with `errors` and a stable `extensions.code`.

use std::{
    future::Future,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
};

use async_graphql::{
    Response, ServerError, ServerResult, Value,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextExecute, NextResolve, ResolveInfo,
    },
};
use tokio::sync::{Notify, Semaphore};

use super::RequestData;
use crate::{config::GraphqlConfig, error::Error};

/// One request's budget; see the module documentation.
#[derive(Debug)]
pub struct RequestBudget {
    max_bytes: usize,
    bytes: AtomicUsize,
    max_reads: u32,
    reads: AtomicU32,
    permits: Semaphore,
    /// The first budget spent; set once.
    exceeded: OnceLock<Exceeded>,
    /// Wakes the [`Budget`] extension, which stops the request.
    stop: Notify,
}

#[derive(Debug, Clone, Copy)]
enum Exceeded {
    Bytes(usize),
    Reads(u32),
}

impl RequestBudget {
    pub fn new(config: &GraphqlConfig) -> Self {
        Self {
            max_bytes: config.max_response_bytes,
            bytes: AtomicUsize::new(0),
            max_reads: config.max_reads,
            reads: AtomicU32::new(0),
            permits: Semaphore::new(config.max_concurrent_reads as usize),
            exceeded: OnceLock::new(),
            stop: Notify::new(),
        }
    }

    /// Adds `n` bytes to the answer; `false` once the answer is past its budget.
    pub fn add_bytes(&self, n: usize) -> bool {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.max_bytes {
            self.exceed(Exceeded::Bytes(self.max_bytes));
            return false;
        }
        true
    }

    /// Bytes the answer may still grow by.
    pub fn bytes_left(&self) -> usize {
        self.max_bytes
            .saturating_sub(self.bytes.load(Ordering::Relaxed))
    }

    /// Runs `read` as one of the request's reads: refused past `graphql.max_reads`, and
    /// waiting while `graphql.max_concurrent_reads` others run.
    pub async fn read<T>(&self, read: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        if self.reads.fetch_add(1, Ordering::Relaxed) >= self.max_reads {
            self.exceed(Exceeded::Reads(self.max_reads));
        }
        if let Some(exceeded) = self.exceeded.get() {
            // Whichever budget is spent, the request is stopping: no more reads for it.
            return Err(Error::BadRequest(exceeded.message()));
        }
        // The semaphore is never closed, so acquiring fails only in theory.
        let _permit = self.permits.acquire().await.map_err(|_| {
            Error::Internal(anyhow::anyhow!("the request's read permits were closed"))
        })?;
        read.await
    }

    /// The error that stops the request, once a budget is spent.
    fn error(&self) -> Option<ServerError> {
        let exceeded = self.exceeded.get()?;
        let mut err = ServerError::new(exceeded.message(), None);
        err.extensions
            .get_or_insert_with(Default::default)
            .set("code", exceeded.code());
        Some(err)
    }

    pub(super) fn is_exceeded(&self) -> bool {
        self.exceeded.get().is_some()
    }

    fn exceed(&self, what: Exceeded) {
        if self.exceeded.set(what).is_ok() {
            // Stores a permit if the extension is not waiting yet: the wake is never lost.
            self.stop.notify_one();
        }
    }
}

impl Exceeded {
    fn code(self) -> &'static str {
        match self {
            Exceeded::Bytes(_) => "RESPONSE_TOO_LARGE",
            Exceeded::Reads(_) => "TOO_MANY_READS",
        }
    }

    fn message(self) -> String {
        match self {
            Exceeded::Bytes(max) => format!(
                "the answer grew past the limit of {max} bytes (graphql.max_response_bytes): ask for fewer or smaller pages, or leave out long fields such as `body`"
            ),
            Exceeded::Reads(max) => format!(
                "the query needed more than {max} reads of the database (graphql.max_reads): ask for fewer root lists or levels"
            ),
        }
    }
}

/// The extension that counts the answer's bytes and stops a request whose budget is spent.
/// Register it before the planned executor, so that it wraps it.
#[derive(Debug, Clone, Copy)]
pub struct Budget;

impl ExtensionFactory for Budget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Budget)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Budget {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let Some(rq) = ctx.data_opt::<RequestData>() else {
            return next.run(ctx, operation_name).await;
        };
        let budget = &rq.budget;
        // Dropping the execution drops every pending resolver and read with it.
        let response = tokio::select! {
            biased;
            () = budget.stop.notified() => None,
            response = next.run(ctx, operation_name) => Some(response),
        };
        match budget.error() {
            Some(err) => Response::from_errors(vec![err]),
            None => response.unwrap_or_default(),
        }
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let key = info.alias.unwrap_or(info.name).len();
        let value = next.run(ctx, info).await?;
        if let (Some(value), Some(rq)) = (&value, ctx.data_opt::<RequestData>()) {
            // The key, its quotes and colon, and the value: objects and lists count only
            // their brackets here, their fields are counted as they resolve.
            let size = key + 4 + leaf_size(value);
            if !rq.budget.add_bytes(size) {
                return Err(rq
                    .budget
                    .error()
                    .unwrap_or_else(|| ServerError::new("the answer is too large", None)));
            }
        }
        Ok(value)
    }
}

/// About what `value` takes in the JSON answer, its nested fields left out.
fn leaf_size(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len() + 2,
        Value::Enum(name) => name.len() + 2,
        Value::Binary(bytes) => bytes.len(),
        Value::Null | Value::Boolean(_) => 5,
        Value::Number(_) => 20,
        Value::List(_) | Value::Object(_) => 2,
    }
}
