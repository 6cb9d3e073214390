//! Liveness and readiness.
//!
//! `/healthz` says the process is up (no I/O: a liveness probe that touches the database
//! gets healthy pods restarted when the database blips). `/readyz` checks every dependency
//! with a short bound and reports each one. It fails (503) only when this instance can serve
//! nothing: the directory is down, or every shard primary is. One bad shard leaves it ready
//! but `degraded`, because every instance shares that shard: pulling them all from the load
//! balancer would turn a partial outage into a total one.

use std::time::Duration;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use super::extract::Json;
use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    directory: &'static str,
    shards: Vec<ShardReadiness>,
}

#[derive(Debug, Serialize)]
struct ShardReadiness {
    id: u16,
    primary: &'static str,
    replicas: Vec<&'static str>,
}

async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let directory = check(app.db.directory_pool());
    let shards = futures_util::future::join_all(app.db.shards().iter().map(|shard| async move {
        let replicas = futures_util::future::join_all(shard.replicas().iter().map(check));
        let (primary, replicas) = tokio::join!(check(shard.primary_pool()), replicas);
        ShardReadiness {
            id: shard.id(),
            primary,
            replicas,
        }
    }));
    let (directory, shards) = tokio::join!(directory, shards);
    let all_up = shards
        .iter()
        .all(|s| s.primary == "up" && s.replicas.iter().all(|r| *r == "up"));
    let any_primary = shards.iter().any(|s| s.primary == "up");
    let (code, status) = match (directory == "up", any_primary, all_up) {
        (true, _, true) => (StatusCode::OK, "ready"),
        (true, true, false) => (StatusCode::OK, "degraded"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    (
        code,
        Json(Readiness {
            status,
            directory,
            shards,
        }),
    )
}

async fn check(pool: &PgPool) -> &'static str {
    match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => "up",
        _ => "down",
    }
}
