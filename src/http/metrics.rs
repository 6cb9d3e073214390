//! `/metrics`: the Prometheus text format, on the API's address or on an admin address of
//! its own. The recorder and the metric names live in `src/telemetry/`; each layer reports
//! its own series, and its sampled gauges when asked here.

use anyhow::Context;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::AppState;

/// `/metrics` on the API's own address, unless metrics are off or have their own address.
pub fn router(app: &AppState) -> Router<AppState> {
    if app.metrics.is_some() && app.config.telemetry.metrics_addr.is_none() {
        Router::new().route("/metrics", get(scrape))
    } else {
        Router::new()
    }
}

/// Serves `/metrics` and the detailed `/readyz` on `telemetry.metrics_addr`, when set: an
/// admin port keeps the service's internals (routes, shard layout, LSNs, error rates) off the
/// public address. The production profile requires it.
pub async fn admin_server(app: &AppState) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let (Some(addr), Some(_)) = (app.config.telemetry.metrics_addr, &app.metrics) else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("Failed to bind the metrics address {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
    let router = Router::new()
        .route("/metrics", get(scrape))
        .merge(super::health::admin_router())
        .with_state(app.clone());
    Ok(Some(tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(error = %err, "the metrics server stopped");
        }
    })))
}

/// `GET /metrics`: the Prometheus text format. The data layer's gauges (pool connections) are
/// sampled here, at scrape time, rather than on every checkout: a scrape every 15 s costs one
/// pass over the pools. So are the sizes of the in-process maps (a lock or an atomic load
/// each) and the resident memory (one read of `/proc/self/status`).
pub async fn scrape(State(app): State<AppState>) -> Response {
    let Some(handle) = &app.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    app.db.report_gauges();
    app.cache.report_gauges();
    app.api_keys.report_gauges();
    app.credential_versions.report_gauges();
    app.limiter.report_gauges();
    crate::telemetry::metrics::report_process_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
