//! A shard's read replicas: their health, their lag, and which of them may serve a read.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
};

use super::pool::ConnPool;
use crate::db::Lsn;
use serde::Serialize;

/// One replica and what the health monitor last saw of it. Atomics, so the read path
/// checks rotation and replay position without a lock.
#[derive(Debug)]
pub struct Replica {
    pub(crate) index: usize,
    pub(crate) pool: ConnPool,
    pub health: Arc<ReplicaHealth>,
}

#[derive(Debug)]
pub struct ReplicaHealth {
    /// In rotation: reachable and within the lag bounds for `rejoin_after` checks in a row.
    in_rotation: AtomicBool,
    reachable: AtomicBool,
    /// Replayed WAL position (0 until the first check).
    replay_lsn: AtomicU64,
    lag_bytes: AtomicU64,
    lag_ms: AtomicU64,
    healthy_checks: AtomicU32,
}

impl Default for ReplicaHealth {
    /// Optimistic until the first check: in rotation, nothing known to be replayed (so reads
    /// that carry a token still go to the primary).
    fn default() -> Self {
        Self {
            in_rotation: AtomicBool::new(true),
            reachable: AtomicBool::new(true),
            replay_lsn: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            healthy_checks: AtomicU32::new(0),
        }
    }
}

/// What `/readyz` and the metrics show of a replica.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaStatus {
    pub in_rotation: bool,
    pub reachable: bool,
    pub replay_lsn: String,
    pub lag_bytes: u64,
    pub lag_ms: u64,
}

impl ReplicaHealth {
    pub fn in_rotation(&self) -> bool {
        self.in_rotation.load(Ordering::Acquire)
    }

    pub fn replay_lsn(&self) -> Lsn {
        Lsn(self.replay_lsn.load(Ordering::Acquire))
    }

    /// A live check saw the replica at `lsn`.
    pub(crate) fn saw_replay(&self, lsn: Lsn) {
        self.replay_lsn.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// A check (or a failed read) found the replica unreachable: out of rotation at once.
    pub(crate) fn mark_down(&self) {
        self.reachable.store(false, Ordering::Release);
        self.healthy_checks.store(0, Ordering::Release);
        self.in_rotation.store(false, Ordering::Release);
    }

    /// A check reached the replica. It stays in (or rejoins) rotation only when within the
    /// lag bounds, and rejoins only after `rejoin_after` such checks in a row, so a replica
    /// that flaps around the bound does not flap in and out of rotation with it.
    pub(crate) fn observe(
        &self,
        replay: Lsn,
        lag_bytes: u64,
        lag_ms: u64,
        within_bounds: bool,
        rejoin_after: u32,
    ) {
        self.reachable.store(true, Ordering::Release);
        self.replay_lsn.fetch_max(replay.0, Ordering::AcqRel);
        self.lag_bytes.store(lag_bytes, Ordering::Release);
        self.lag_ms.store(lag_ms, Ordering::Release);
        if !within_bounds {
            self.healthy_checks.store(0, Ordering::Release);
            self.in_rotation.store(false, Ordering::Release);
            return;
        }
        let streak = self.healthy_checks.fetch_add(1, Ordering::AcqRel) + 1;
        if self.in_rotation() || streak >= rejoin_after {
            self.in_rotation.store(true, Ordering::Release);
        }
    }

    pub fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            in_rotation: self.in_rotation(),
            reachable: self.reachable.load(Ordering::Acquire),
            replay_lsn: self.replay_lsn().to_string(),
            lag_bytes: self.lag_bytes.load(Ordering::Acquire),
            lag_ms: self.lag_ms.load(Ordering::Acquire),
        }
    }
}

/// The replicas of one shard, balanced round-robin over those in rotation.
///
/// Round-robin needs no coordination and spreads load evenly when replicas are alike. A
/// replica leaves rotation when the monitor finds it down or lagging past the bounds, or
/// when a read on it fails to connect; reads then go to the other replicas, or to the
/// primary when none is left.
#[derive(Debug)]
pub struct ReplicaSet {
    replicas: Vec<Replica>,
    next: AtomicUsize,
}

impl ReplicaSet {
    pub(crate) fn new(pools: Vec<ConnPool>) -> Self {
        Self {
            replicas: pools
                .into_iter()
                .enumerate()
                .map(|(index, pool)| Replica {
                    index,
                    pool,
                    health: Arc::default(),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The replica the next read should use: in rotation and, when the read carries a
    /// consistency requirement, known to have replayed past it. `None`: use the primary.
    pub fn pick(&self, at_least: Option<Lsn>) -> Option<&Replica> {
        let n = self.replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .filter_map(|k| self.replicas.get((start + k) % n))
            .find(|r| {
                r.health.in_rotation() && at_least.is_none_or(|lsn| r.health.replay_lsn() >= lsn)
            })
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_rejoins_only_after_enough_healthy_checks_in_a_row() {
        let health = ReplicaHealth::default();
        health.mark_down();
        health.observe(Lsn(10), 0, 0, true, 2);
        assert!(!health.in_rotation(), "one healthy check is not enough");
        health.observe(Lsn(20), 0, 0, true, 2);
        assert!(health.in_rotation());
        health.observe(Lsn(30), 1 << 30, 0, false, 2);
        assert!(!health.in_rotation(), "lag past the bound takes it out");
        assert_eq!(health.replay_lsn(), Lsn(30));
    }
}
