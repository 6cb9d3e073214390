//! HTTP: routes per API version, the extractors that turn requests into domain values, and
//! the layers every request passes through.

mod conditional;
pub mod extract;
mod graphql;
mod health;
mod v1;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};

use crate::{
    AppState,
    db::{ConsistencyToken, Scope},
    error::{Error, InternalErrorReport},
    telemetry,
};

/// `X-Db-Route: shard=N;role=primary|replica[, ...]`: where this request's SQL went (dev profile).
pub const DB_ROUTE_HEADER: HeaderName = HeaderName::from_static("x-db-route");
/// `X-Cache: hit|miss|bypass`: what the cache did for this request (dev profile).
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-cache");
/// `X-Consistency-Token`: returned by writes, sent back by clients for read-your-writes
/// (see `src/db/consistency.rs`).
pub const CONSISTENCY_HEADER: HeaderName = HeaderName::from_static("x-consistency-token");

/// The whole HTTP surface. Versions are mounted side by side under their prefix; v2 and
/// GraphQL join here without touching v1.
pub fn router(app: AppState) -> Router {
    let http = &app.config.http;
    Router::new()
        .merge(health::router())
        .merge(telemetry::metrics::router(&app))
        .nest("/v1", v1::router())
        .merge(graphql::router(&app))
        .fallback(|| async { Error::NotFound("no route matches this path") })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(http.body_limit_bytes))
        .layer(middleware::from_fn(log_internal_errors))
        .layer(middleware::from_fn_with_state(app.clone(), db_scope))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            http.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(|_panic| {
            // The panic message may carry internal state: it is not sent, and the process
            // keeps serving other requests.
            tracing::error!("a request handler panicked");
            Error::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        // Outermost: request id, span, metrics and access log see every answer, including
        // timeouts and caught panics.
        .layer(middleware::from_fn(telemetry::http::observe))
        .with_state(app)
}

/// Gives the request its data-layer [`Scope`]: the consistency its `X-Consistency-Token`
/// demands going in; the token covering its writes coming out; and, in the dev profile, the
/// routes its statements took in [`DB_ROUTE_HEADER`] and the cache's outcomes in
/// [`CACHE_HEADER`], so a learner can watch writes go to primaries, reads to replicas, and
/// hits skip both.
async fn db_scope(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let required = match request
        .headers()
        .get(CONSISTENCY_HEADER)
        .map(|v| v.to_str())
    {
        None => ConsistencyToken::default(),
        Some(Ok(text)) => match text.parse() {
            Ok(token) => token,
            Err(why) => {
                return Error::BadRequest(format!("X-Consistency-Token: {why}")).into_response();
            }
        },
        Some(Err(_)) => {
            return Error::BadRequest("X-Consistency-Token is not ASCII".into()).into_response();
        }
    };
    let scope = Scope::new(required, app.config.is_dev());
    request.extensions_mut().insert(scope.clone());
    let mut response = next.run(request).await;
    if let Some(token) = app.db.consistency_token(&scope).await
        && let Ok(value) = HeaderValue::from_str(&token.to_string())
    {
        response.headers_mut().insert(CONSISTENCY_HEADER, value);
    }
    let outcomes = scope.cache_outcomes();
    if !outcomes.is_empty()
        && let Ok(value) = HeaderValue::from_str(&outcomes.join(", "))
    {
        response.headers_mut().insert(CACHE_HEADER, value);
    }
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
