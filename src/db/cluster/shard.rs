//! One shard and its routing rules: which server a read or a write goes to.
//!
//! A shard is a primary (behind its circuit breaker) plus its [`ReplicaSet`]. Routing decides
//! *which* server; the pools behind each (`pool.rs`) decide *how* a connection is had.

use std::{
    future::Future,
    ops::RangeInclusive,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use sqlx::PgPool;

use super::{
    Role,
    instrument::{Op, QueryMetrics},
    pool::{self, Conn, ConnPool},
    replicas::{Replica, ReplicaSet},
};
use crate::{
    config::ShardConfig,
    db::{Error, Served, Session, consistency::Lsn},
    telemetry,
    traffic::{BreakerConfig, BreakerState, CircuitBreaker},
};

/// One shard: a closed id range, a primary for writes, replicas for reads.
///
/// Routing rules (the only place they live):
/// - [`Shard::write`]: the primary, behind its circuit breaker. The shard is marked written
///   in the request's [`Session`], so the response's consistency token covers it and the
///   request's later reads of this shard see its own write.
/// - [`Shard::read`]: a replica in rotation that has replayed what the request's token
///   requires; else the primary. A replica that fails to connect is taken out of rotation
///   and the read retried on the primary, so a dying replica costs no failed request.
/// - [`Shard::read_primary`]: reads that must see the latest commit.
/// - The staleness auditor's session ([`Session::audit`]): every read on the primary, counted
///   as `op="audit"`, since it compares a served value with the primary's current row.
///
/// Pooled connections are handed out without a check (see `pool.rs`): a read that meets one
/// broken while idle runs once more on a checked connection before it counts as a failure;
/// a write always takes a checked one.
///
/// Every call is counted, timed and given a span here, by role and op (see
/// [`super::instrument`]).
#[derive(Debug)]
pub struct Shard {
    id: u16,
    range: RangeInclusive<i64>,
    accepts_new_users: bool,
    primary: ConnPool,
    /// The primary for administration (see `pool::admin`).
    admin: PgPool,
    pub(crate) breaker: Arc<CircuitBreaker>,
    /// The primary's WAL insert position at the monitor's last check.
    pub(crate) primary_lsn: Arc<AtomicU64>,
    replicas: ReplicaSet,
    metrics: QueryMetrics,
}

impl Shard {
    pub(crate) fn new(
        config: &ShardConfig,
        primary: ConnPool,
        admin: PgPool,
        replicas: ReplicaSet,
        breaker: &BreakerConfig,
    ) -> Self {
        Self {
            id: config.id,
            range: config.first_id..=config.last_id,
            accepts_new_users: config.accepts_new_users,
            primary,
            admin,
            breaker: Arc::new(
                CircuitBreaker::new(breaker.clone()).named(format!("shard{}-primary", config.id)),
            ),
            primary_lsn: Arc::default(),
            replicas,
            metrics: QueryMetrics::new(config.id),
        }
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn range(&self) -> &RangeInclusive<i64> {
        &self.range
    }

    pub fn accepts_new_users(&self) -> bool {
        self.accepts_new_users
    }

    /// Runs `query` where a read of this shard should go (see the type's doc). `query` may run
    /// twice (replica, then primary), so it is `Fn`.
    pub async fn read<T, F, Fut>(&self, session: &Session, query: F) -> Result<T, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        if session.is_audit() {
            return self.read_primary_as(session, Op::Audit, query).await;
        }
        if !session.wrote(self.id) && !self.replicas.is_empty() {
            let required = session.required(self.id);
            let replica = match (self.replicas.pick(required), required) {
                (Some(replica), _) => Some(replica),
                // The monitor has not seen any replica past the requirement yet; ask one.
                (None, Some(lsn)) => self.caught_up_replica(session, lsn).await,
                (None, None) => None,
            };
            match replica {
                Some(replica) => {
                    if let Some(result) = self.on_replica(session, replica, &query).await {
                        if result.is_ok() {
                            session.record_served(self.id, Served::Replica(replica.index));
                        }
                        return result;
                    }
                }
                None if required.is_some() => fallback(self.id, "token_ahead_of_replicas"),
                None => fallback(self.id, "no_replica_in_rotation"),
            }
        }
        let read = self.read_on(session, Role::Primary, Op::Read, &self.primary, &query);
        let result = self.on_primary(session, read).await;
        if result.is_ok() {
            session.record_served(self.id, Served::Primary);
        }
        result
    }

    /// Runs `query` on `replica`. `None` when the caller should retry on the primary: the
    /// replica cannot be reached (it leaves rotation at once), or it cancelled the read in a
    /// recovery conflict (it stays: it is replaying, which is its job).
    async fn on_replica<T, F, Fut>(
        &self,
        session: &Session,
        replica: &Replica,
        query: &F,
    ) -> Option<Result<T, Error>>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        self.record(session, Role::Replica);
        let result = self
            .read_on(session, Role::Replica, Op::Read, &replica.pool, query)
            .await;
        match result {
            Err(err) if err.is_unavailable() => {
                replica.health.mark_down();
                tracing::warn!(shard = self.id, replica = replica.index, error = %err, "replica failed; read retried on the primary");
                fallback(self.id, "replica_failed");
                None
            }
            // Busy, not down: it stays in rotation; this read goes to the primary.
            Err(err) if err.is_busy() => {
                fallback(self.id, "replica_busy");
                None
            }
            // Without this a recovery conflict on a busy replica would be a 500.
            Err(err) if err.is_replay_conflict() => {
                fallback(self.id, "replay_conflict");
                None
            }
            result => Some(result),
        }
    }

    /// A replica in rotation that has replayed `lsn` right now, asked live (GitLab's load
    /// balancer does the same): the monitor's view is up to one interval old, and without
    /// this a read right after a write would go to the primary even once the replica has it.
    /// Costs one round trip, only for reads whose requirement the monitor cannot vouch for.
    async fn caught_up_replica(&self, session: &Session, lsn: Lsn) -> Option<&Replica> {
        let replica = self.replicas.pick(None)?;
        let probe = async {
            let mut conn = replica.pool.get().await?;
            sqlx::query_scalar!("SELECT pg_last_wal_replay_lsn()::text")
                .fetch_one(&mut *conn)
                .await
        };
        let replayed = self
            .metrics
            .observe(session.timing(), Role::Replica, Op::ReplayLsn, probe)
            .await
            .ok()?;
        let replayed: Lsn = replayed?.parse().ok()?;
        replica.health.saw_replay(replayed);
        (replayed >= lsn).then_some(replica)
    }

    /// Runs a read on the primary: for reads that must see the latest commit (the current row
    /// before changing it, a login right after registering).
    pub async fn read_primary<T, F, Fut>(&self, session: &Session, query: F) -> Result<T, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        self.read_primary_as(session, Op::Read, query).await
    }

    /// A read on the primary counted as `op`'s (one that is not a request's data read).
    pub(crate) async fn read_primary_as<T, F, Fut>(
        &self,
        session: &Session,
        op: Op,
        query: F,
    ) -> Result<T, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let read = self.read_on(session, Role::Primary, op, &self.primary, &query);
        self.on_primary(session, read).await
    }

    /// Runs a write on the primary and marks the shard written in `session`.
    pub async fn write<T, F, Fut>(&self, session: &Session, query: F) -> Result<T, Error>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        // Marked before running: a write whose outcome is unknown (the connection dropped
        // around the commit) may have committed, and the token must then cover it.
        session.mark_written(self.id);
        // Always on a checked connection, never retried: a write that failed on a connection
        // may have reached the server and committed (only the answer was lost), and running
        // it again would apply it twice. Checking first costs a round trip per write, which
        // is what keeps a connection broken while idle (a restarted primary) from failing
        // the write.
        let write = self.run(
            session,
            Role::Primary,
            Op::Write,
            &self.primary,
            true,
            query,
        );
        self.on_primary(session, write).await
    }

    /// The primary's current WAL insert position: every commit made before this call is at
    /// or below it. (The insert position, not `pg_current_wal_lsn()`: with asynchronous
    /// commit a commit record can still be in WAL buffers past the flushed position.)
    pub(crate) async fn commit_lsn(&self, session: &Session) -> Result<Lsn, Error> {
        if let Some(lsn) = session.known_commit_lsn(self.id) {
            return Ok(lsn);
        }
        let query = |mut db: Conn| async move {
            sqlx::query_scalar!("SELECT pg_current_wal_insert_lsn()::text AS \"lsn!\"")
                .fetch_one(&mut *db)
                .await
        };
        let read = self.read_on(session, Role::Primary, Op::CommitLsn, &self.primary, &query);
        let text: String = self.on_primary(session, read).await?;
        let lsn: Lsn = text
            .parse()
            .map_err(|()| Error::Query(sqlx::Error::Decode(format!("bad LSN {text}").into())))?;
        session.remember_commit_lsn(self.id, lsn);
        Ok(lsn)
    }

    /// Runs `statement` (a [`Shard::read_on`] or [`Shard::run`] on the primary) behind the
    /// primary's breaker, which counts its final outcome only.
    async fn on_primary<T>(
        &self,
        session: &Session,
        statement: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.breaker
            .admit()
            .map_err(|rejected| Error::PrimaryDown {
                retry_after: rejected.retry_after,
            })?;
        self.record(session, Role::Primary);
        let result = statement.await;
        match &result {
            Err(err) if err.is_unavailable() => {
                tracing::warn!(shard = self.id, error = %err, "primary unavailable");
                self.breaker.record_failure();
            }
            Err(err @ Error::Timeout(_)) => {
                tracing::warn!(shard = self.id, error = %err, "statement timed out on the primary");
                self.breaker.record_success();
            }
            // Busy, not down, and not proven up either (no statement reached it): the breaker
            // hears nothing (see `Error::Busy`).
            Err(err) if err.is_busy() => {
                tracing::warn!(shard = self.id, error = %err, "primary's request pool exhausted");
            }
            _ => self.breaker.record_success(),
        }
        result
    }

    /// Runs a read on `pool` as a pooled connection comes, unchecked (see `pool.rs`); if that
    /// connection turns out broken (the server restarted, or ended the session, while it sat
    /// idle), once more on a checked connection. A read can safely run twice, and the
    /// second run costs what every read used to: the check. A server that is really down fails
    /// the second run too, and only that outcome reaches the breaker or the replica's health,
    /// so a pool full of connections broken by one restart does not open a breaker or evict a
    /// replica that is back.
    async fn read_on<T, F, Fut>(
        &self,
        session: &Session,
        role: Role,
        op: Op,
        pool: &ConnPool,
        query: &F,
    ) -> Result<T, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        match self.run(session, role, op, pool, false, query).await {
            Err(err) if err.is_broken_connection() => {
                tracing::debug!(shard = self.id, role = role.as_str(), error = %err, "broken pooled connection; read retried on a checked one");
                self.run(session, role, op, pool, true, query).await
            }
            result => result,
        }
    }

    /// Runs one statement on `pool`, counted and timed; `checked`: on a connection pinged
    /// first (see `pool::checked`).
    async fn run<T, F, Fut>(
        &self,
        session: &Session,
        role: Role,
        op: Op,
        pool: &ConnPool,
        checked: bool,
        query: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        // The checkout is inside the timed statement: waiting for a connection is part of
        // what the statement cost the request.
        let statement = self.metrics.observe(session.timing(), role, op, async {
            let conn = pool.get().await?;
            query(conn).await
        });
        let result = if checked {
            pool::checked(statement).await
        } else {
            statement.await
        };
        result.map_err(Error::classify)
    }

    /// Reports the server a statement is about to run on to the request's debug trace.
    fn record(&self, session: &Session, role: Role) {
        if let Some(trace) = session.trace() {
            trace.db_route(self.id, role.as_str());
        }
    }

    pub fn replicas(&self) -> &ReplicaSet {
        &self.replicas
    }

    /// The primary pool without routing, breaker or session: for administration (migrations,
    /// seeding, health checks), never for request traffic.
    pub fn primary_pool(&self) -> &PgPool {
        &self.admin
    }

    /// The primary's request pool (gauges, idle reaping).
    pub(crate) fn request_pool(&self) -> &ConnPool {
        &self.primary
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn primary_lsn(&self) -> Lsn {
        Lsn(self.primary_lsn.load(Ordering::Acquire))
    }

    /// A request connection to the primary, held until dropped: for tests that exhaust the
    /// pool.
    #[doc(hidden)]
    pub async fn checkout_primary(&self) -> Result<Conn, sqlx::Error> {
        self.primary.get().await
    }

    pub(crate) async fn close(&self) {
        self.primary.close().await;
        self.admin.close().await;
        for replica in self.replicas.iter() {
            replica.pool.close().await;
        }
    }
}

/// Counts a read that wanted a replica and got the primary, by why (as crates.io does): a
/// rising rate means replicas are unhealthy or lagging, and the primary is carrying reads.
fn fallback(shard: u16, reason: &'static str) {
    metrics::counter!(telemetry::names::DB_READ_FALLBACK, "shard" => shard.to_string(), "reason" => reason)
        .increment(1);
}
