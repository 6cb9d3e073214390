//! The load-shedding layer: gives each request a [`Priority`] from who sends it and what it
//! asks for, and admits it through the adaptive concurrency limit (`src/traffic/shed/`), or
//! answers 503 with `Retry-After` at once.
//!
//! The priority, lowest first (the order `Priority` documents):
//!
//! | request | anonymous | free tier | pro tier, API key |
//! |---|---|---|---|
//! | `GET` a collection (`/v1/users`, `/v1/posts`, `/v1/users/{id}/posts`) | anonymous lists | reads | paid reads |
//! | `GET` one resource (a route ending in `{id}`), the GraphiQL page | reads | reads | paid reads |
//! | `POST /graphql` | anonymous lists | reads | paid reads |
//! | a write (`POST`, `PATCH`, `DELETE`, `PUT`) | anonymous lists | critical | critical |
//! | `/v{1,2}/auth/*` (login, registration) | critical | critical | critical |
//!
//! - Collection reads cost more than single reads (a feed merges every shard, a page reads
//!   many rows) and are easier to serve stale elsewhere.
//! - A GraphQL request is told from a REST read only by its route: whether it is a small
//!   query, a nested one or a mutation is in the body, which this layer does not read (it
//!   runs before the body arrives, and parsing it for every request, shed or not, would cost
//!   what shedding saves). So GraphQL goes by its caller only, and an anonymous one counts as
//!   a list: it can ask for the costliest thing the API serves. Writes that must get through
//!   an overload go through REST.
//! - An anonymous write is refused by the handler anyway (401): it gets no priority.
//! - Bad credentials count as anonymous here (the handler still answers 401): a made-up token
//!   buys no priority.
//! - Health and metrics never pass this layer (`src/http/mod.rs` puts it around the API
//!   routes only): a load balancer that saw `/readyz` fail under load would pull the instance
//!   and move its load onto the others, which then fail too; and the metrics are how one
//!   watches the overload.
//!
//! The layer runs inside the rate limits (a client over its rate costs a 429, never a slot)
//! and inside the request timeout: a request that times out is cancelled, which frees its slot
//! but teaches the limit nothing (by then the window medians have long risen).
//!
//! The principal is resolved once, through the request's extensions, as
//! [`Principal`]'s extractor does: a layer in front (the rate limits) may have stored it, and
//! the handlers read what this layer stores.

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    AppState,
    auth::{Principal, RefusedCredentials},
    config::LimitTier,
    error::Error,
    traffic::{Priority, Shed},
};

/// The answer to a shed request.
const OVERLOADED: Error = Error::Unavailable {
    detail: "the service is overloaded and shed this request to keep others fast; retry after the Retry-After delay",
    retry_after: Shed::RETRY_AFTER,
};

/// The layer when the rate limits are off (see the module doc); with them on, their layer
/// calls [`run`] itself, so that a request passes one middleware for both.
pub async fn admit(State(app): State<AppState>, request: Request, next: Next) -> Response {
    run(&app, request, next).await
}

/// Admits `request` (then runs `next`), queues it briefly, or sheds it.
pub async fn run(app: &AppState, mut request: Request, next: Next) -> Response {
    let Some(shedder) = app.shedder.as_ref() else {
        return next.run(request).await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let what = kind(request.method(), route);
    let principal = principal(app, &mut request).await;
    match shedder.acquire(priority(what, principal.tier())).await {
        Ok(permit) => {
            let response = next.run(request).await;
            permit.finish();
            response
        }
        Err(_) if what == RequestKind::GraphQl => super::graphql::transport_error(OVERLOADED),
        Err(_) => OVERLOADED.into_response(),
    }
}

/// The request's principal from its extensions, or resolved and stored there; refused
/// credentials are anonymous for the priority, and noted ([`RefusedCredentials`]) so the
/// handler answers the 401 without checking them again.
async fn principal(app: &AppState, request: &mut Request) -> Principal {
    if let Some(principal) = request.extensions().get::<Principal>() {
        return *principal;
    }
    if request.extensions().get::<RefusedCredentials>().is_some() {
        return Principal::Anonymous;
    }
    match Principal::resolve(app, request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            principal
        }
        Err(err) => {
            RefusedCredentials::note(&err, request.extensions_mut());
            Principal::Anonymous
        }
    }
}

/// What a request asks for, as far as its priority goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    /// `/v{1,2}/auth/*`: login, registration.
    Auth,
    Write,
    /// A read of a collection.
    List,
    /// A read of one resource.
    Single,
    /// `POST /graphql`.
    GraphQl,
}

/// What a `method` request to `route` asks for. `route` is the matched template
/// (`/v1/users/{id}/posts`); `None` for a path no route matches (answered 404 at once), which
/// counts as a single read (or a write).
fn kind(method: &Method, route: Option<&str>) -> RequestKind {
    let route = route.unwrap_or("/{unmatched}");
    if super::versioning::is_auth(route) {
        return RequestKind::Auth;
    }
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    match (route, read) {
        ("/graphql", false) => RequestKind::GraphQl,
        ("/graphql", true) => RequestKind::Single,
        (_, false) => RequestKind::Write,
        // A template ending in a parameter reads one resource; any other reads a collection.
        // The rule holds for new routes (v2's too) without a table to update.
        (route, true) if route.ends_with('}') => RequestKind::Single,
        (_, true) => RequestKind::List,
    }
}

/// The priority of a request of `kind` sent by a principal of `tier` (the module doc's table).
fn priority(kind: RequestKind, tier: LimitTier) -> Priority {
    let paid = matches!(tier, LimitTier::Pro | LimitTier::Service);
    match (kind, tier) {
        (RequestKind::Auth, _) => Priority::Critical,
        (RequestKind::Write | RequestKind::List | RequestKind::GraphQl, LimitTier::Anonymous) => {
            Priority::AnonymousLists
        }
        (RequestKind::Write, _) => Priority::Critical,
        (RequestKind::List | RequestKind::Single | RequestKind::GraphQl, _) if paid => {
            Priority::PaidReads
        }
        (RequestKind::List | RequestKind::Single | RequestKind::GraphQl, _) => Priority::Reads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LimitTier::{Anonymous, Free, Pro, Service};
    use Priority::{AnonymousLists, Critical, PaidReads, Reads};

    fn of(method: Method, route: &str, tier: LimitTier) -> Priority {
        priority(kind(&method, Some(route)), tier)
    }

    #[test]
    fn anonymous_lists_rank_lowest_and_logins_and_writes_highest() {
        let cases = [
            (Method::GET, "/v1/posts", Anonymous, AnonymousLists),
            (Method::GET, "/v1/users", Anonymous, AnonymousLists),
            (
                Method::GET,
                "/v1/users/{id}/posts",
                Anonymous,
                AnonymousLists,
            ),
            (Method::POST, "/graphql", Anonymous, AnonymousLists),
            (Method::POST, "/v1/posts", Anonymous, AnonymousLists),
            (Method::GET, "/v1/users/{id}", Anonymous, Reads),
            (Method::POST, "/v2/auth/login", Anonymous, Critical),
            (Method::GET, "/graphql", Anonymous, Reads),
            (Method::GET, "/v1/posts", Free, Reads),
            (Method::GET, "/v1/posts/{id}", Free, Reads),
            (Method::POST, "/graphql", Free, Reads),
            (Method::GET, "/v1/users/{id}/posts", Pro, PaidReads),
            (Method::GET, "/v1/posts/{id}", Service, PaidReads),
            (Method::POST, "/graphql", Service, PaidReads),
            (Method::POST, "/v1/auth/login", Anonymous, Critical),
            (Method::POST, "/v1/auth/register", Anonymous, Critical),
            (Method::POST, "/v1/posts", Free, Critical),
            (Method::PATCH, "/v1/users/{id}", Free, Critical),
            (Method::DELETE, "/v1/posts/{id}", Pro, Critical),
        ];
        for (method, route, tier, want) in cases {
            assert_eq!(
                of(method.clone(), route, tier),
                want,
                "{method} {route} as {tier:?}"
            );
        }
    }

    #[test]
    fn a_path_no_route_matches_is_a_single_read() {
        assert_eq!(priority(kind(&Method::GET, None), Anonymous), Reads);
        assert_eq!(
            kind(&Method::POST, None),
            RequestKind::Write,
            "and anonymous writes rank lowest"
        );
    }
}
