//! HTTP: routes per API version, the extractors that turn requests into domain values, and
//! the layers every request passes through.

pub mod extract;
mod graphql;
mod health;
mod v1;

use std::time::Duration;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer, trace::TraceLayer};

use crate::{
    AppState,
    db::Scope,
    error::{Error, InternalErrorReport},
};

/// `X-Db-Route: shard=N;role=primary|replica[, ...]`: where this request's SQL went (dev profile).
pub const DB_ROUTE_HEADER: HeaderName = HeaderName::from_static("x-db-route");

/// The whole HTTP surface. Versions are mounted side by side under their prefix; v2 and
/// GraphQL join here without touching v1.
pub fn router(app: AppState) -> Router {
    let http = &app.config.http;
    let mut router = Router::new()
        .merge(health::router())
        .nest("/v1", v1::router())
        .merge(graphql::router(&app))
        .fallback(|| async { Error::NotFound("no route matches this path") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(http.body_limit_bytes))
        .layer(middleware::from_fn(log_internal_errors));
    if app.config.is_dev() {
        router = router.layer(middleware::from_fn(db_route_header));
    }
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_millis(http.request_timeout_ms),
        ))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_panic| {
            // The panic message may carry internal state: it is not sent, and the process
            // keeps serving other requests.
            tracing::error!("a request handler panicked");
            Error::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .with_state(app)
}

/// Records the request's database routes and reports them in [`DB_ROUTE_HEADER`], so a
/// learner can watch writes go to primaries and reads to replicas.
async fn db_route_header(mut request: Request, next: Next) -> Response {
    let scope = Scope::recording();
    request.extensions_mut().insert(scope.clone());
    let mut response = next.run(request).await;
    let routes = scope.routes();
    if !routes.is_empty() {
        let value = routes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(DB_ROUTE_HEADER, value);
        }
    }
    response
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
