//! The health monitor: one background task per shard that checks the primary and each
//! replica every `db.replicas.check_interval`.
//!
//! - The primary's check feeds its circuit breaker (a failed check trips it, a good one
//!   closes it), so a dead primary is detected with no traffic at all and a
//!   recovered one is noticed within one interval. It also samples the WAL insert position.
//! - Each replica's check reads its replay position. Lag in bytes is the primary's position
//!   minus the replica's; lag in time is how long ago the primary was at the position the
//!   replica has now replayed, from the monitor's own samples of the primary. (The popular
//!   `now() - pg_last_xact_replay_timestamp()` is wrong on a quiet primary: with no new
//!   transactions it grows for ever and would evict a replica that is fully caught up.)
//! - While the primary is unreachable the byte lag is unknown: replicas stay in rotation on
//!   liveness alone, since they are then the only thing that can serve the shard's reads.
//! - The checks use a connection of their own per server, not the request pools: with every
//!   request connection busy, a check waiting for one would time out and trip a healthy
//!   primary's breaker (or evict a healthy replica) because of load, not failure. Costs one
//!   more server connection per server per instance.

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::task::JoinHandle;

use super::{Shard, pool::ConnPool, replicas::ReplicaHealth};
use crate::{
    config::ReplicaHealthConfig,
    db::Lsn,
    telemetry::names,
    traffic::{BreakerState, CircuitBreaker},
};

/// Bound on one check: twice the interval, within 100 ms..1 s. It is also how long a dead
/// primary goes unnoticed when nothing else calls it: the driver keeps retrying a refused
/// connection until its deadline, so a check fails only when its bound runs out.
pub(crate) fn check_timeout(config: &ReplicaHealthConfig) -> Duration {
    (config.check_interval * 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
}
/// Samples of the primary's position kept for the lag-in-time estimate.
const SAMPLES: usize = 256;

struct ShardProbe {
    shard: u16,
    primary: PgPool,
    breaker: Arc<CircuitBreaker>,
    primary_lsn: Arc<std::sync::atomic::AtomicU64>,
    replicas: Vec<(usize, PgPool, Arc<ReplicaHealth>)>,
    /// The shard's request pools, whose idle connections each tick closes.
    request_pools: Vec<ConnPool>,
    /// (primary position, when it was seen), oldest first.
    samples: VecDeque<(Lsn, Instant)>,
}

/// Starts one monitor task per shard, on its own connections: `pools[i]` are the primary
/// and replica pools of the i-th shard of `shards` (config order). Abort the handles to stop
/// them.
pub(crate) fn spawn(
    shards: &[Shard],
    pools: &[(PgPool, Vec<PgPool>)],
    config: &ReplicaHealthConfig,
) -> Vec<JoinHandle<()>> {
    shards
        .iter()
        .zip(pools)
        .map(|(shard, (primary, replicas))| {
            let probe = ShardProbe {
                shard: shard.id(),
                primary: primary.clone(),
                breaker: shard.breaker.clone(),
                primary_lsn: shard.primary_lsn.clone(),
                replicas: shard
                    .replicas()
                    .iter()
                    .zip(replicas)
                    .map(|(r, pool)| (r.index, pool.clone(), r.health.clone()))
                    .collect(),
                samples: VecDeque::with_capacity(SAMPLES),
                request_pools: std::iter::once(shard.request_pool())
                    .chain(shard.replicas().iter().map(|r| &r.pool))
                    .cloned()
                    .collect(),
            };
            tokio::spawn(run(probe, config.clone()))
        })
        .collect()
}

async fn run(mut probe: ShardProbe, config: ReplicaHealthConfig) {
    let mut tick = tokio::time::interval(config.check_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        for pool in &probe.request_pools {
            pool.close_idle();
        }
        let primary = check_primary(&mut probe, check_timeout(&config)).await;
        for (index, pool, health) in &probe.replicas {
            check_replica(
                probe.shard,
                *index,
                pool,
                health,
                primary,
                &probe.samples,
                &config,
            )
            .await;
        }
    }
}

async fn check_primary(probe: &mut ShardProbe, timeout: Duration) -> Option<Lsn> {
    let checked = tokio::time::timeout(
        timeout,
        sqlx::query_scalar!("SELECT pg_current_wal_insert_lsn()::text AS \"lsn!\"")
            .fetch_one(&probe.primary),
    )
    .await;
    match checked.map(|r| r.map(|text| text.parse::<Lsn>())) {
        Ok(Ok(Ok(lsn))) => {
            probe.breaker.record_success();
            probe.primary_lsn.store(lsn.0, Ordering::Release);
            if probe.samples.len() == SAMPLES {
                probe.samples.pop_front();
            }
            probe.samples.push_back((lsn, Instant::now()));
            Some(lsn)
        }
        _ => {
            if probe.breaker.state() == BreakerState::Closed {
                tracing::warn!(
                    shard = probe.shard,
                    "primary check failed: its breaker opens"
                );
            }
            probe.breaker.trip();
            None
        }
    }
}

async fn check_replica(
    shard: u16,
    index: usize,
    pool: &PgPool,
    health: &ReplicaHealth,
    primary: Option<Lsn>,
    samples: &VecDeque<(Lsn, Instant)>,
    config: &ReplicaHealthConfig,
) {
    let checked = tokio::time::timeout(
        check_timeout(config),
        sqlx::query_scalar!("SELECT pg_last_wal_replay_lsn()::text").fetch_one(pool),
    )
    .await;
    let replay = match checked {
        Ok(Ok(Some(text))) => text.parse::<Lsn>().ok(),
        _ => None,
    };
    let labels = [("shard", shard.to_string()), ("replica", index.to_string())];
    let Some(replay) = replay else {
        // Unreachable, or not a standby at all (a NULL replay position): never a replica to
        // read from.
        if health.in_rotation() {
            tracing::warn!(
                shard,
                replica = index,
                "replica unreachable: out of rotation"
            );
        }
        health.mark_down();
        metrics::gauge!(names::DB_REPLICA_IN_ROTATION, &labels).set(0.0);
        return;
    };
    let lag_bytes = primary.map_or(0, |p| p.0.saturating_sub(replay.0));
    let lag_ms = primary.map_or(0, |_| lag_behind(samples, replay).as_millis() as u64);
    let within =
        lag_bytes <= config.max_lag_bytes && u128::from(lag_ms) <= config.max_lag.as_millis();
    let was_in = health.in_rotation();
    health.observe(replay, lag_bytes, lag_ms, within, config.rejoin_after);
    match (was_in, health.in_rotation()) {
        (true, false) => tracing::warn!(
            shard,
            replica = index,
            lag_bytes,
            lag_ms,
            "replica lags past the bound: out of rotation"
        ),
        (false, true) => tracing::info!(
            shard,
            replica = index,
            "replica healthy again: back in rotation"
        ),
        _ => {}
    }
    metrics::gauge!(names::DB_REPLICA_LAG, &labels).set(lag_bytes as f64);
    metrics::gauge!(names::DB_REPLICA_IN_ROTATION, &labels).set(if health.in_rotation() {
        1.0
    } else {
        0.0
    });
}

/// How far behind in time a replica at `replay` is: the age of the oldest sample of the
/// primary's position that the replica has not replayed yet (zero if it has them all).
fn lag_behind(samples: &VecDeque<(Lsn, Instant)>, replay: Lsn) -> Duration {
    samples
        .iter()
        .find(|(lsn, _)| *lsn > replay)
        .map_or(Duration::ZERO, |(_, seen)| seen.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_in_time_is_the_age_of_the_oldest_unreplayed_primary_position() {
        let now = Instant::now();
        let samples: VecDeque<_> = [
            (Lsn(100), now - Duration::from_secs(9)),
            (Lsn(200), now - Duration::from_secs(6)),
            (Lsn(300), now - Duration::from_secs(3)),
        ]
        .into();
        let lag = lag_behind(&samples, Lsn(150));
        assert!(
            lag >= Duration::from_secs(6) && lag < Duration::from_secs(7),
            "{lag:?}"
        );
        assert_eq!(
            lag_behind(&samples, Lsn(300)),
            Duration::ZERO,
            "caught up, however quiet the primary"
        );
    }
}
