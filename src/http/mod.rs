//! HTTP: routes per API version, the extractors that turn requests into domain values, and
//! the layers every request passes through.

mod assets;
pub mod client;
mod compression;
mod conditional;
pub mod cursor;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod graphql;
mod health;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod openapi;
mod rest;
mod security;
pub mod server;
pub mod session;
mod shed;
pub mod shield;
mod signing;
pub mod versioning;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};

use crate::{
    AppState,
    error::{Error, InternalErrorReport},
    telemetry,
};

/// What the server serves: [`router`] behind header versioning, which sends an unversioned
/// path (`/users/4`) to the version its `Accept` names before the router matches it
/// ([`versioning`]).
pub fn service(app: AppState) -> versioning::HeaderVersioning {
    let config = app.config.http.versioning.clone();
    versioning::HeaderVersioning::new(router(app), &config)
}

/// The whole HTTP surface. REST versions are mounted side by side under their prefix, from
/// one set of handlers (see [`rest`]); GraphQL beside them. Unversioned paths reach it
/// already rewritten to their version by [`service`].
pub fn router(app: AppState) -> Router {
    let http = &app.config.http;
    let method_not_allowed = || async { Error::MethodNotAllowed };
    // Each REST version gets `Idempotency-Key` on its POSTs; GraphQL and the probes do not.
    let v1 = idempotency::apply(rest::router::<rest::v1::V1>(), &app);
    let v2 = idempotency::apply(rest::router::<rest::v2::V2>(), &app);
    let api = Router::new()
        .nest("/v1", v1)
        .nest("/v2", v2)
        .merge(graphql::router(&app))
        .fallback(unmatched)
        .method_not_allowed_fallback(method_not_allowed);
    let router = Router::new()
        .merge(health::router())
        .merge(metrics::router(&app))
        .merge(openapi::router())
        .merge(assets::router())
        .merge(traffic_control(api, &app))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(http.body_limit_bytes))
        .layer(middleware::from_fn(log_internal_errors))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            session::session,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            http.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(|_panic| {
            // The panic message may carry internal state: it is not sent, and the process
            // keeps serving other requests.
            tracing::error!("a request handler panicked");
            Error::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }));
    // Outside everything that renders or keeps a body (the idempotency store keeps it as
    // rendered, and a replay is compressed for the retry's own `Accept-Encoding`).
    let router = compression::apply(router, &http.compression);
    security::apply(router, http)
        // Before anything that keys on the client address; inside the request span, whose
        // `client.address` it fills.
        .layer(middleware::from_fn_with_state(app.clone(), client::resolve))
        // Outermost: request id, span, metrics and access log see every answer, including
        // timeouts and caught panics.
        .layer(middleware::from_fn(telemetry::http::observe))
        .with_state(app)
}

/// The shield, then the distributed limits, then load shedding, around the API (unknown paths
/// included) and never around the probes: a flood, a spent quota or an overload must not fail
/// a load balancer's health checks, nor hide `/metrics`. The limits read the client address
/// that `client::resolve` found. Shedding is innermost (Stripe's order: rate limiters, then
/// shedders), so a client over its rate costs a 429, never a slot in the concurrency limit.
fn traffic_control(api: Router<AppState>, app: &AppState) -> Router<AppState> {
    let config = &app.config.ratelimit;
    if !config.enabled {
        return api.layer(middleware::from_fn_with_state(app.clone(), shed::admit));
    }
    // One layer for both: the limits call shedding themselves (`limits::limit`).
    let api = api.layer(middleware::from_fn_with_state(app.clone(), limits::limit));
    match shield::layer(&config.shield) {
        Some(shield) => api.layer(shield),
        None => api,
    }
}

/// No route matched: 404, or 406 for an unversioned path whose `Accept` named only versions
/// not on offer (left unrewritten, see [`versioning::VersionNotOffered`]).
async fn unmatched(State(app): State<AppState>, request: Request) -> Error {
    if request
        .extensions()
        .get::<versioning::VersionNotOffered>()
        .is_some()
    {
        versioning::not_acceptable(app.config.http.versioning.default)
    } else {
        Error::NotFound("no route matches this path")
    }
}

/// Logs internal errors once, with the request they belong to; the body the client gets
/// stays generic (see [`crate::error`]).
async fn log_internal_errors(request: Request, next: Next) -> Response {
    let (method, uri) = (request.method().clone(), request.uri().path().to_owned());
    let response = next.run(request).await;
    if let Some(InternalErrorReport(report)) = response.extensions().get::<InternalErrorReport>() {
        tracing::error!(%method, path = %uri, error = %report, "request failed");
    }
    response
}
