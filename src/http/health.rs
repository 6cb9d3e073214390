//! Liveness and readiness.
//!
//! `/healthz` says the process is up (no I/O: a liveness probe that touches the database
//! gets healthy pods restarted when the database blips). `/readyz` reports every dependency:
//! the directory checked live with a short bound, and each shard's primary (through its
//! circuit breaker, which the health monitor probes) and replicas (rotation, lag) as the
//! monitor last saw them, so a probe costs one query however many shards there are. It
//! fails (503) only when this instance can serve nothing: the directory is down, or every
//! shard primary is. One bad shard leaves it ready but `degraded`, naming the shard: every
//! instance shares that shard, so pulling them all from the load balancer would turn a
//! partial outage into a total one.
//!
//! The directory is checked on a connection of its own, not through the requests' pool: a
//! burst of logins that fills that pool would otherwise make every instance unready at
//! once, and the load balancer would drain the whole fleet.
//!
//! Who sees what: the detailed body (shards, breakers, replicas' lag and LSNs) describes the
//! deployment's topology, so outside the dev profile the API's address answers only
//! `{"status": ...}` with the same status code, and the details are served on the admin
//! address (`telemetry.metrics_addr`) beside `/metrics`.

use std::time::Duration;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;

use super::extract::Json;
use crate::{AppState, config::CacheStrategy, db::ReplicaStatus, traffic::BreakerState};

const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(public_readyz))
}

/// `/readyz` with every detail, for the admin address.
pub fn admin_router() -> Router<AppState> {
    Router::new().route("/readyz", get(readyz))
}

/// What the API's address answers: the details in the dev profile, the status alone
/// otherwise.
async fn public_readyz(State(app): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let dev = app.config.is_dev();
    let (code, Json(readiness)) = readyz(State(app)).await;
    if dev {
        (code, Json(readiness)).into_response()
    } else {
        (code, Json(json!({ "status": readiness.status }))).into_response()
    }
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    directory: &'static str,
    /// Ids of the shards that cannot serve everything (primary down or no replica in rotation).
    degraded_shards: Vec<u16>,
    shards: Vec<ShardReadiness>,
    /// The cache never makes the instance unready: with Redis down, reads go to the database.
    cache: CacheReadiness,
    /// Nor does the rate limiter: with its Redis down, limits fall back per route class.
    ratelimit: RateLimitReadiness,
    /// Nor the idempotency store: with its Redis down, only POSTs with a key get 503.
    idempotency: IdempotencyReadiness,
}

#[derive(Debug, Serialize)]
struct IdempotencyReadiness {
    enabled: bool,
    /// The breaker in front of its Redis (`null` when disabled): `open` means every POST
    /// with an `Idempotency-Key` gets 503.
    breaker: Option<BreakerState>,
}

#[derive(Debug, Serialize)]
struct RateLimitReadiness {
    enabled: bool,
    /// The breaker in front of the limiter's Redis: `open` means every decision is the
    /// fallback's (a local share, or 503 for logins).
    breaker: BreakerState,
}

#[derive(Debug, Serialize)]
struct CacheReadiness {
    strategy: CacheStrategy,
    /// The Redis breaker (`null` for the `none` strategy).
    breaker: Option<BreakerState>,
    /// Invalidations waiting for Redis to come back.
    pending_invalidations: usize,
}

#[derive(Debug, Serialize)]
struct ShardReadiness {
    id: u16,
    primary: &'static str,
    breaker: BreakerState,
    replicas: Vec<ReplicaStatus>,
}

async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let directory = check(app.db.directory_probe());
    let shards = futures_util::future::join_all(app.db.cluster().iter().map(|shard| async move {
        ShardReadiness {
            id: shard.id(),
            primary: match shard.breaker_state() {
                BreakerState::Closed => "up",
                _ => "down",
            },
            breaker: shard.breaker_state(),
            replicas: shard.replicas().iter().map(|r| r.health.status()).collect(),
        }
    }));
    let (directory, shards) = tokio::join!(directory, shards);
    let degraded_shards: Vec<u16> = shards
        .iter()
        .filter(|s| {
            s.primary != "up"
                || (!s.replicas.is_empty() && !s.replicas.iter().any(|r| r.in_rotation))
        })
        .map(|s| s.id)
        .collect();
    let any_primary = shards.iter().any(|s| s.primary == "up");
    let (code, status) = match (directory == "up", any_primary, degraded_shards.is_empty()) {
        (true, _, true) => (StatusCode::OK, "ready"),
        (true, true, false) => (StatusCode::OK, "degraded"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    (
        code,
        Json(Readiness {
            status,
            directory,
            degraded_shards,
            shards,
            cache: CacheReadiness {
                strategy: app.cache.strategy(),
                breaker: app.cache.breaker_state(),
                pending_invalidations: app.cache.pending_invalidations(),
            },
            ratelimit: RateLimitReadiness {
                enabled: app.config.ratelimit.enabled,
                breaker: app.limiter.breaker_state(),
            },
            idempotency: IdempotencyReadiness {
                enabled: app.idempotency.is_some(),
                breaker: app.idempotency.as_ref().map(|store| store.breaker_state()),
            },
        }),
    )
}

async fn check(pool: &PgPool) -> &'static str {
    match tokio::time::timeout(
        CHECK_TIMEOUT,
        sqlx::query_scalar!("SELECT 1").fetch_one(pool),
    )
    .await
    {
        Ok(Ok(_)) => "up",
        _ => "down",
    }
}
