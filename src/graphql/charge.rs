//! The rate limit's charge for a GraphQL request: its computed cost, charged once the query is
//! validated and before any resolver runs.
//!
//! A REST request costs one unit of its route class's budget; a GraphQL request can ask for a
//! single field or for 2,500 rows, so it is charged what async-graphql's validation computes
//! as its complexity (the same figure `graphql.max_complexity` bounds; see `limits.rs`): a
//! query for 50 users with 5 posts each spends about 1,500 units, `{ viewer { id } }` two. An
//! operation that checks a password (`login`, `register`) is charged like a REST login
//! instead: one unit of the `auth` budget.
//!
//! The HTTP layer resolves the principal and attaches a [`GraphqlCharge`] to the request
//! (`src/http/limits.rs`); this extension settles it from the `validation` hook, so a query
//! refused for its depth or cost is not charged for it, and a refused charge stops the
//! request before execution. The HTTP handler turns a refused charge into a 429 (or 503) with
//! the headers, not a 200 with an error, and charges one unit for a request that failed
//! before validation (a parse error is not free to send).

use std::sync::Arc;

use async_graphql::{
    Request, ServerError, ServerResult, ValidationResult,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest, NextValidation,
    },
};

use super::{RequestData, limits::checks_a_password};
use crate::traffic::GraphqlCharge;

/// The extension; register it before [`super::limits::Limits`], so that its hooks see what
/// the limits let through.
#[derive(Debug, Clone, Copy)]
pub struct Charge;

impl ExtensionFactory for Charge {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Charge)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Charge {
    /// After the limits' checks on the parsed document (which bound its fragments): an
    /// operation that checks a password is charged to `auth`.
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let mut request = next.run(ctx, request).await?;
        let charge = request
            .data
            .get(&std::any::TypeId::of::<GraphqlCharge>())
            .and_then(|data| data.downcast_ref::<GraphqlCharge>())
            .cloned();
        if let (Some(charge), Ok(doc)) = (charge, request.parsed_query())
            && checks_a_password(doc)
        {
            charge.count_as_auth();
        }
        Ok(request)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let (Some(charge), Some(data)) = (
            ctx.data_opt::<GraphqlCharge>(),
            ctx.data_opt::<RequestData>(),
        ) else {
            return Ok(result);
        };
        let cost = u32::try_from(result.complexity).unwrap_or(u32::MAX);
        let verdict = charge
            .settle(&data.app.limits, &data.app.limiter, cost)
            .await;
        match verdict.error() {
            None => Ok(result),
            // The HTTP handler answers with the verdict's status; this only stops execution.
            Some(refusal) => Err(vec![ServerError::new(refusal.to_string(), None)]),
        }
    }
}
