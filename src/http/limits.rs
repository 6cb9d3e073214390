//! The distributed rate limits on the routes: every request but the probes is charged to its
//! principal's tier budget for its route class, shared by every instance through Redis.
//!
//! - **Who**: the principal, resolved once here and stored in the request's extensions (the
//!   `Principal` extractor reads it from there): a user (by id, under their account's tier),
//!   an API key (by key id, `service`), or an anonymous client (by address, `anonymous`). A
//!   request with credentials that do not verify is limited as anonymous by its address, and
//!   its handler answers the 401.
//! - **Which budget**: the route class ([`RouteClass`]): `auth` for `/v{1,2}/auth/*`, `graphql`
//!   for `POST /graphql`, `reads` for `GET`/`HEAD`, `writes` for the rest.
//! - **How much**: 1 unit per REST request. A GraphQL request costs its computed query cost,
//!   known only once it is parsed and validated: its charge rides with the request
//!   ([`GraphqlCharge`]) and is made before any resolver runs (`src/graphql/charge.rs`).
//! - **The answer**: every answer of a limited route carries `RateLimit-Policy` and
//!   `RateLimit` (the rate, and the daily quota as a second policy); a refusal is a 429
//!   problem+json with `Retry-After` (a GraphQL error body for `/graphql`), or, for `auth`
//!   while Redis is unusable, a 503 with `Retry-After` (`src/traffic/ratelimit/routes.rs`).
//!
//! Cost: one Redis round trip per request (the script), a token verification, and two
//! header values; `ratelimit.enabled = false` removes the layer.

use std::net::IpAddr;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::client::ClientAddr;
use crate::{
    AppState,
    auth::{Principal, RefusedCredentials},
    config::{LimitTier, RouteClass},
    traffic::{GraphqlCharge, Verdict, limit_key},
};

pub const RATELIMIT_POLICY_HEADER: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT_HEADER: HeaderName = HeaderName::from_static("ratelimit");

/// The route class of a request.
pub fn route_class(method: &Method, path: &str) -> RouteClass {
    if super::versioning::is_auth(path) {
        RouteClass::Auth
    } else if path == "/graphql" && method == Method::POST {
        RouteClass::Graphql
    } else if method == Method::GET || method == Method::HEAD {
        RouteClass::Reads
    } else {
        RouteClass::Writes
    }
}

/// The middleware; see the module doc. It goes on to load shedding ([`super::shed::run`])
/// itself rather than through a second layer: every `from_fn` layer clones the inner service
/// and boxes and moves the request's future, and on a cached read that layering measured
/// several percent of the request's CPU.
pub async fn limit(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let class = route_class(request.method(), request.uri().path());
    let (tier, subject) = match Principal::resolve(&app, request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            (principal.tier(), subject(&principal, &request))
        }
        // Bad credentials: limited by address; the handler's extractor answers the 401
        // from the refusal noted here, without checking them again.
        Err(err) => {
            RefusedCredentials::note(&err, request.extensions_mut());
            (LimitTier::Anonymous, address_subject(&request))
        }
    };
    if class == RouteClass::Graphql {
        let charge = GraphqlCharge::new(subject, tier);
        request.extensions_mut().insert(charge.clone());
        let mut response = super::shed::run(&app, request, next).await;
        if let Some(verdict) = charge.verdict() {
            write_headers(&verdict, response.headers_mut());
        }
        return response;
    }
    let verdict = app
        .limits
        .check(&app.limiter, &subject, tier, class, 1)
        .await;
    let mut response = match verdict.error() {
        Some(refusal) => refusal.into_response(),
        None => super::shed::run(&app, request, next).await,
    };
    write_headers(&verdict, response.headers_mut());
    response
}

/// The key a principal's usage is kept under (the tier and class are added by the limits).
fn subject(principal: &Principal, request: &Request) -> String {
    match principal {
        Principal::Anonymous => address_subject(request),
        Principal::User(user) => format!("user:{}", user.id),
        Principal::ApiKey(key) => format!("key:{}", key.key_id),
    }
}

fn address_subject(request: &Request) -> String {
    let addr = request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ClientAddr(addr)| *addr);
    format!("addr:{}", limit_key(addr))
}

/// `RateLimit-Policy` and `RateLimit` (a refusal's `Retry-After` comes with its error).
pub fn write_headers(verdict: &Verdict, headers: &mut HeaderMap) {
    let Some(rendered) = &verdict.headers else {
        return;
    };
    for (name, value) in [
        (RATELIMIT_POLICY_HEADER, &rendered.policy),
        (RATELIMIT_HEADER, &rendered.ratelimit),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fall_into_their_classes() {
        let class = |method: Method, path: &str| route_class(&method, path);
        assert_eq!(class(Method::POST, "/v1/auth/login"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/v1/auth/register"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/v2/auth/login"), RouteClass::Auth);
        assert_eq!(class(Method::POST, "/v2/authors"), RouteClass::Writes);
        assert_eq!(class(Method::POST, "/graphql"), RouteClass::Graphql);
        assert_eq!(class(Method::GET, "/graphql"), RouteClass::Reads);
        assert_eq!(class(Method::GET, "/v1/users/7"), RouteClass::Reads);
        assert_eq!(class(Method::HEAD, "/v1/posts"), RouteClass::Reads);
        assert_eq!(class(Method::POST, "/v1/posts"), RouteClass::Writes);
        assert_eq!(class(Method::DELETE, "/v1/users/7"), RouteClass::Writes);
        assert_eq!(class(Method::GET, "/nope"), RouteClass::Reads);
    }
}
