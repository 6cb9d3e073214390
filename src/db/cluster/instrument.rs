//! Metrics and spans for every SQL call, recorded where every call passes: the shard's
//! routing ([`super::Shard`]), which knows the shard and the role it picked.
//!
//! The `op` label is fixed by the routing entry point (`read`, `read_primary` -> `read`;
//! `write` -> `write`; the commit position after a write -> `commit_lsn`; the live check of
//! a replica's replay position -> `replay_lsn`), never passed by a caller, so it cannot be
//! mislabelled. One call is one closure given to the shard, which is one SQL statement
//! except in a few paths that need a second one on the same shard: an empty page of a
//! user's posts (does the user exist?), a refused post change (missing or not yours?), the
//! user list's count, and a user's deletion (a transaction). So `db_queries_total` counts
//! round trips through the routing, a slight undercount of statements on those paths; a
//! read retried on the primary after its replica failed counts once on each.
//!
//! The duration covers what the caller waits for: the pool checkout (a saturated pool shows
//! up here) and the statement's round trip. It also goes into the request's
//! [`ServerTiming`], the `db` entry of its `Server-Timing` header.
//!
//! Cost: the series of a shard are registered once, when the shard is built, so a call
//! pays two atomic updates, a clock read and a `tracing` span, no label hashing, plus two
//! relaxed atomic adds for the request's timing.
//! The directory's statements (`src/db/repo/directory.rs`) run on its own pool, outside shards,
//! and are not counted here.

use std::{future::Future, time::Instant};

use metrics::{Counter, Histogram};
use tracing::Instrument;

use super::Role;
use crate::telemetry::{Phase, ServerTiming, names};

/// What a data-layer call does, as the `op` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// A read (on a replica, or on the primary).
    Read,
    /// A write, on the primary.
    Write,
    /// The primary's WAL position after a write: for the consistency token, and for the
    /// cache's fences.
    CommitLsn,
    /// A replica's replay position, asked live when a read carries a requirement the health
    /// monitor cannot vouch for yet (right after a write).
    ReplayLsn,
    /// The staleness auditor's re-read of a served value, on the primary (`src/cache/audit.rs`):
    /// apart from `read`, so that requests' SQL is not inflated by the audits.
    Audit,
    /// A user's credentials version, on the primary, when an access token is checked for
    /// revocation (`src/auth/sessions.rs`): apart from `read`, so its cost shows.
    Credentials,
}

impl Op {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::CommitLsn => "commit_lsn",
            Op::ReplayLsn => "replay_lsn",
            Op::Audit => "audit",
            Op::Credentials => "credentials",
        }
    }

    /// The span name Jaeger lists; shard and role are its attributes.
    fn span_name(self) -> &'static str {
        match self {
            Op::Read => "db read",
            Op::Write => "db write",
            Op::CommitLsn => "db commit_lsn",
            Op::ReplayLsn => "db replay_lsn",
            Op::Audit => "db audit",
            Op::Credentials => "db credentials",
        }
    }
}

/// The series one (role, op) pair of a shard updates.
#[derive(Debug, Clone)]
struct Series {
    queries: Counter,
    duration: Histogram,
}

impl Series {
    fn new(shard: u16, role: Role, op: Op) -> Self {
        let labels = [
            ("shard", shard.to_string()),
            ("role", role.as_str().to_owned()),
            ("op", op.as_str().to_owned()),
        ];
        Self {
            queries: metrics::counter!(names::DB_QUERIES, &labels),
            duration: metrics::histogram!(names::DB_QUERY_DURATION, &labels),
        }
    }
}

/// A shard's SQL series, one per (role, op) pair the routing can produce.
#[derive(Debug, Clone)]
pub(crate) struct QueryMetrics {
    shard: u16,
    replica_read: Series,
    replica_replay_lsn: Series,
    primary_read: Series,
    primary_write: Series,
    primary_commit_lsn: Series,
    primary_audit: Series,
    primary_credentials: Series,
}

impl QueryMetrics {
    /// Registers the shard's series with the recorder installed now (see
    /// `telemetry::metrics::install`).
    pub(crate) fn new(shard: u16) -> Self {
        Self {
            shard,
            replica_read: Series::new(shard, Role::Replica, Op::Read),
            replica_replay_lsn: Series::new(shard, Role::Replica, Op::ReplayLsn),
            primary_read: Series::new(shard, Role::Primary, Op::Read),
            primary_write: Series::new(shard, Role::Primary, Op::Write),
            primary_commit_lsn: Series::new(shard, Role::Primary, Op::CommitLsn),
            primary_audit: Series::new(shard, Role::Primary, Op::Audit),
            primary_credentials: Series::new(shard, Role::Primary, Op::Credentials),
        }
    }

    fn series(&self, role: Role, op: Op) -> &Series {
        match (role, op) {
            (Role::Replica, Op::ReplayLsn) => &self.replica_replay_lsn,
            (Role::Replica, _) => &self.replica_read,
            (Role::Primary, Op::Read) => &self.primary_read,
            (Role::Primary, Op::Write) => &self.primary_write,
            (Role::Primary, Op::CommitLsn | Op::ReplayLsn) => &self.primary_commit_lsn,
            (Role::Primary, Op::Audit) => &self.primary_audit,
            (Role::Primary, Op::Credentials) => &self.primary_credentials,
        }
    }

    /// Runs `call` inside a `db.query` span (a child of the request's span in the trace) and
    /// counts and times it, in the metrics and in the request's `timing`.
    pub(crate) async fn observe<T>(
        &self,
        timing: &ServerTiming,
        role: Role,
        op: Op,
        call: impl Future<Output = T>,
    ) -> T {
        let span = tracing::info_span!(
            "db.query",
            otel.name = op.span_name(),
            otel.kind = "client",
            db.system.name = "postgresql",
            shard = self.shard,
            role = role.as_str(),
            op = op.as_str(),
        );
        let start = Instant::now();
        let result = call.instrument(span).await;
        let elapsed = start.elapsed();
        let series = self.series(role, op);
        series.queries.increment(1);
        series.duration.record(elapsed.as_secs_f64());
        timing.record(Phase::Db, elapsed);
        result
    }
}
