//! The staleness auditor: how stale what the caches and the replicas serve really is, as a
//! measured number rather than an argument.
//!
//! Each strategy trades freshness for speed, and the trade is bounded on paper: two-tier may
//! serve another instance's invalidated value for up to `cache.l1_ttl`, a replica lags by
//! its replay delay, and a write whose invalidation never reached Redis leaves the old value
//! for a whole TTL. A sampled share of reads (`consistency.audit.sample_rate`; one read is
//! what one request asks of one kind at once, a user or a GraphQL page of fifty) is read
//! again on the shard's **primary**, after the answer has left, and each value that came from
//! the L1, Redis or a replica is compared with the primary's current row:
//!
//! - **stale**: the values differ, and the primary's newer row was written before the value
//!   was served (its `updated_at` is at or before the moment of serving). A write that lands
//!   between the answer and the audit makes the values differ too, but the served value was
//!   current when served: that is not counted.
//! - **age**: the served moment minus the newer row's `updated_at`, how long the primary had
//!   held what the client did not get. Values without a version (a cached page of ids, a row
//!   deleted since) count as stale without an age.
//!
//! Reads served by the primary are current by definition and not audited; neither is a value
//! taken from another request's flight (nobody here knows which server read it). Pages of a
//! user's posts that no cache serves (deep pages, and every page with `none`) are audited as
//! the cached reads are, when a replica answered them.
//!
//! # What it costs, and what guards the primary
//!
//! An audit is one primary read per shard involved (`db_queries_total{op="audit"}`, apart
//! from the requests' own). It never delays an answer: it runs in a task of its own, spawned
//! as the read returns. It never piles up: at most `max_in_flight` audits run at once, and a
//! sampled read that finds every slot taken is dropped and counted
//! (`stale_reads_skipped_total{reason="busy"}`), never queued. Unsampled reads pay one
//! relaxed atomic add and a hash.
//!
//! # Reading it
//!
//! `stale_reads_total / stale_reads_audited_total` per `strategy` and `source` is the stale
//! share; `stale_read_age_seconds` says how far behind. `token="yes"` are reads by a client
//! carrying its `X-Consistency-Token`: read-your-writes promises them their *own* writes, so
//! for a client that reads what it wrote, stale should stay 0 there; other clients' writes may
//! still be stale for them. The ages rest on two clocks (Postgres' `now()` in `updated_at`,
//! the service's at serving): on one host they agree; across hosts, skew adds to the age, and
//! a write whose transaction began before the answer but committed after it counts as stale
//! with an age below that transaction's length.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    config::{AuditConfig, CacheStrategy},
    db::{self, Db, Served, Session},
    telemetry::names,
};

/// Reads values again, by id, on the primary (the session given is [`Session::audit`]).
type Reload<K, T> =
    Box<dyn FnOnce(Session, Vec<K>) -> BoxFuture<'static, Result<HashMap<K, T>, db::Error>> + Send>;

/// How a kind of value is read again and what its version is.
pub(super) struct Recheck<K, T> {
    reload: Reload<K, T>,
    /// When the value was last written (`None`: it carries no version).
    version: fn(&T) -> Option<DateTime<Utc>>,
}

impl<K, T> Recheck<K, T> {
    /// `load` reads values by id from `db` in the session it is given.
    pub fn new<F, Fut>(db: &Arc<Db>, load: F, version: fn(&T) -> Option<DateTime<Utc>>) -> Self
    where
        F: FnOnce(Arc<Db>, Session, Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<K, T>, db::Error>> + Send + 'static,
    {
        let db = db.clone();
        Self {
            reload: Box::new(move |session, ids| Box::pin(load(db, session, ids))),
            version,
        }
    }
}

/// Where a served value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    L1,
    Redis,
    Replica { shard: u16, index: usize },
}

impl Source {
    /// The source of a value loaded from `shard` by a recording session: a replica, or `None`
    /// for the primary (current by definition) or an unknown server.
    pub fn loaded(session: &Session, shard: u16) -> Option<Self> {
        match session.served_by(shard)? {
            Served::Replica(index) => Some(Self::Replica { shard, index }),
            Served::Primary => None,
        }
    }

    /// `l1`, `redis`, `shard1-replica` (the shard's first replica), `shard1-replica2`, ...
    fn label(self) -> String {
        match self {
            Self::L1 => "l1".into(),
            Self::Redis => "redis".into(),
            Self::Replica { shard, index: 0 } => format!("shard{shard}-replica"),
            Self::Replica { shard, index } => format!("shard{shard}-replica{}", index + 1),
        }
    }
}

/// The values one sampled read served, with where each came from (`None`: served as absent).
pub(super) type Sample<K, T> = Vec<(K, Source, Option<T>)>;

/// Samples reads and runs their audits, at most `max_in_flight` at once.
pub struct Auditor {
    strategy: &'static str,
    /// A read is sampled when its hash falls below this; `u64::MAX` with a rate of 1 (every
    /// read, the hash's top value included: see [`Auditor::sampled`]).
    threshold: u64,
    every: bool,
    slots: Arc<Semaphore>,
    max_in_flight: u32,
    reads: AtomicU64,
    hasher: RandomState,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("strategy", &self.strategy)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// `None` when the sample rate is 0: no audit, and nothing paid per read.
    pub fn new(config: &AuditConfig, strategy: CacheStrategy) -> Option<Self> {
        (config.sample_rate > 0.0).then(|| Self {
            strategy: match strategy {
                CacheStrategy::None => "none",
                CacheStrategy::CacheAside => "cache-aside",
                CacheStrategy::TwoTier => "two-tier",
            },
            threshold: (config.sample_rate * u64::MAX as f64) as u64,
            every: config.sample_rate >= 1.0,
            slots: Arc::new(Semaphore::new(config.max_in_flight)),
            max_in_flight: u32::try_from(config.max_in_flight).unwrap_or(u32::MAX),
            reads: AtomicU64::new(0),
            hasher: RandomState::new(),
        })
    }

    /// Whether this read is audited: a keyed hash of a counter, uniform without an RNG.
    pub(super) fn sampled(&self) -> bool {
        if self.every {
            return true;
        }
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        self.hasher.hash_one(n) < self.threshold
    }

    /// Audits `served` in a task of its own, if a slot is free; otherwise counts it skipped.
    /// `token`: whether the request carried a consistency token.
    pub(super) fn submit<K, T>(&self, recheck: Recheck<K, T>, token: bool, served: Sample<K, T>)
    where
        K: Copy + Eq + Hash + Send + 'static,
        T: Serialize + Send + 'static,
    {
        if served.is_empty() {
            return;
        }
        let served_at = Utc::now();
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.skipped("busy", served.len());
            return;
        };
        let strategy = self.strategy;
        tokio::spawn(async move {
            let audit = Audit {
                strategy,
                token: if token { "yes" } else { "no" },
                served_at,
            };
            audit.run(recheck, served, slot).await;
        });
    }

    fn skipped(&self, reason: &'static str, n: usize) {
        skipped(self.strategy, reason, n);
    }

    /// Takes every audit slot, once the audits running now have ended, until the permit is
    /// dropped: for tests that show a full auditor skips rather than waits.
    #[doc(hidden)]
    pub async fn occupy(&self) -> Option<OwnedSemaphorePermit> {
        self.slots
            .clone()
            .acquire_many_owned(self.max_in_flight)
            .await
            .ok()
    }
}

fn skipped(strategy: &'static str, reason: &'static str, n: usize) {
    metrics::counter!(names::STALE_READS_SKIPPED, "strategy" => strategy, "reason" => reason)
        .increment(n as u64);
}

/// One sampled read's audit.
struct Audit {
    strategy: &'static str,
    token: &'static str,
    served_at: DateTime<Utc>,
}

impl Audit {
    async fn run<K, T>(
        self,
        recheck: Recheck<K, T>,
        served: Sample<K, T>,
        slot: OwnedSemaphorePermit,
    ) where
        K: Copy + Eq + Hash,
        T: Serialize,
    {
        let ids = served.iter().map(|(id, _, _)| *id).collect();
        let current = (recheck.reload)(Session::audit(), ids).await;
        drop(slot);
        let current = match current {
            Ok(current) => current,
            Err(err) => {
                tracing::debug!(error = %err, "staleness audit read failed");
                skipped(self.strategy, "error", served.len());
                return;
            }
        };
        for (id, source, value) in served {
            self.judge(source, value.as_ref(), current.get(&id), recheck.version);
        }
    }

    /// Counts one served value against the primary's.
    fn judge<T: Serialize>(
        &self,
        source: Source,
        served: Option<&T>,
        current: Option<&T>,
        version: fn(&T) -> Option<DateTime<Utc>>,
    ) {
        let source = source.label();
        let labels = [
            ("strategy", self.strategy.to_owned()),
            ("source", source),
            ("token", self.token.to_owned()),
        ];
        metrics::counter!(names::STALE_READS_AUDITED, &labels).increment(1);
        match verdict(served, current, version, self.served_at) {
            Verdict::Fresh => {}
            Verdict::Stale { age } => {
                metrics::counter!(names::STALE_READS, &labels).increment(1);
                if let Some(age) = age {
                    metrics::histogram!(names::STALE_READ_AGE, &labels).record(age);
                }
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Fresh,
    /// `age` in seconds, when the newer row has a version.
    Stale {
        age: Option<f64>,
    },
}

/// Whether `served` (at `served_at`) was stale against the primary's `current`.
fn verdict<T: Serialize>(
    served: Option<&T>,
    current: Option<&T>,
    version: fn(&T) -> Option<DateTime<Utc>>,
    served_at: DateTime<Utc>,
) -> Verdict {
    // Compared as JSON, which is what the cache holds and the APIs render from.
    if serde_json::to_vec(&served).ok() == serde_json::to_vec(&current).ok() {
        return Verdict::Fresh;
    }
    let newer = current.and_then(version);
    let older = served.and_then(version);
    match newer {
        // Written after this value was served: it was current then.
        Some(newer) if newer > served_at => Verdict::Fresh,
        // The change carries its time only if it moved the version forward.
        Some(newer) if older.is_none_or(|older| newer > older) => Verdict::Stale {
            age: Some((served_at - newer).as_seconds_f64().max(0.0)),
        },
        _ => Verdict::Stale { age: None },
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[derive(Serialize)]
    struct Row {
        name: &'static str,
        updated_at: DateTime<Utc>,
    }

    fn version(row: &Row) -> Option<DateTime<Utc>> {
        Some(row.updated_at)
    }

    #[test]
    fn a_value_is_stale_only_if_the_primary_held_a_newer_one_when_it_was_served() {
        let t0 = Utc::now();
        let at = |secs: i64| t0 + TimeDelta::seconds(secs);
        let old = Row {
            name: "old",
            updated_at: at(0),
        };
        let new = Row {
            name: "new",
            updated_at: at(10),
        };
        let same = Row {
            name: "old",
            updated_at: at(0),
        };
        assert_eq!(
            verdict(Some(&old), Some(&same), version, at(20)),
            Verdict::Fresh
        );
        assert_eq!(
            verdict(Some(&old), Some(&new), version, at(12)),
            Verdict::Stale { age: Some(2.0) },
            "served 2 s after the newer row was written"
        );
        assert_eq!(
            verdict(Some(&old), Some(&new), version, at(5)),
            Verdict::Fresh,
            "the newer row came after the answer"
        );
        assert_eq!(
            verdict(Some(&old), None, version, at(5)),
            Verdict::Stale { age: None },
            "deleted since: stale, age unknown"
        );
        assert_eq!(
            verdict(None, Some(&new), version, at(11)),
            Verdict::Stale { age: Some(1.0) },
            "a cached \"not found\" after the row was created"
        );
    }

    #[test]
    fn replicas_are_named_as_the_breakers_and_the_test_harness_name_servers() {
        assert_eq!(Source::L1.label(), "l1");
        assert_eq!(
            Source::Replica { shard: 1, index: 0 }.label(),
            "shard1-replica"
        );
        assert_eq!(
            Source::Replica { shard: 0, index: 1 }.label(),
            "shard0-replica2"
        );
    }
}
