//! How a connection to a server is had: one pool per server, each with its own bounds.
//!
//! Every bound is explicit, because each failure mode needs its own: a pool checkout waits at
//! most `acquire_timeout` (a dead server must not hold a request for the OS's TCP connect
//! timeout), a replica's checkout less (a read always has the primary to fall back to), and a
//! statement runs at most `statement_timeout` (set on every connection). The breaker and
//! the health monitor are what stop paying these bounds once a server is known to be down.
//!
//! Pools connect lazily: a shard that is down at start-up does not stop the service from
//! serving the others.
//!
//! # Why the shard pools are not sqlx's pool
//!
//! sqlx's pool (0.8) sends a round trip to the server every time a connection goes back to
//! it (`Sync`, wait for `ReadyForQuery`: "test on release"), and no setting turns that off.
//! On a one-statement read that is a second round trip per request: both processes wake up
//! twice, and the connection is out of the pool until the answer comes back. On this
//! project's `user_uniform` load test (one primary-key read per request, no cache) it was
//! 12.7 % of the service's CPU, and taking it out raised throughput by about a fifth.
//!
//! So request traffic runs on [`ConnPool`]: deadpool's generic pool (already in the tree for
//! Redis) holding sqlx connections, with the statements still sqlx's checked macros. What
//! sqlx's ping was for is kept, paid only when needed:
//! - *A transaction dropped midway* (a cancelled request) queues its `ROLLBACK` without
//!   sending it. A connection handed back in that state is flushed in a task of its own
//!   (see [`Conn`]'s `Drop`), so its locks do not wait for the next checkout.
//! - *A statement cancelled in flight* leaves its answer unread on the socket; sqlx drains it
//!   before the connection's next statement, so the next user pays that, not every user.
//! - *A connection broken while idle* (the server restarted, or ended the session): the
//!   routing (`shard.rs`) runs a read that fails on one once more on a [`checked`] checkout,
//!   whose connections are pinged before use, and a write always takes a checked checkout,
//!   since a write that failed midway may have committed and cannot be retried.
//!
//! The directory's pool, used directly by the registration saga and the API keys with no
//! such routing, and the administration pool (migrations, seeding) stay sqlx pools.

use std::{
    future::Future,
    ops::{Deref, DerefMut},
    str::FromStr,
    time::Duration,
};

use anyhow::Context;
use deadpool::{
    Runtime,
    managed::{self, Object, PoolError, RecycleError, RecycleResult, TimeoutType, Timeouts},
};
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{config::DbConfig, telemetry::names};

/// How long an unused connection stays open before the pool closes it, so a pool does not
/// pin server slots it no longer needs.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

tokio::task_local! {
    /// Set while a statement runs under [`checked`]: a checkout then pings an idle connection
    /// before handing it out.
    static CHECKED: ();
}

/// Runs `statement` with every idle connection it checks out pinged first (a broken one is
/// closed and the next one tried, or a new one opened). The check runs in the checking-out
/// task (the checkout is polled inside the statement's future), which is why a task-local
/// reaches it.
pub(crate) async fn checked<F: Future>(statement: F) -> F::Output {
    CHECKED.scope((), statement).await
}

/// Opens and recycles one server's request connections.
#[derive(Debug)]
pub(crate) struct Manager {
    options: PgConnectOptions,
}

impl managed::Manager for Manager {
    type Type = PgConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(&self.options).await
    }

    /// Free unless the caller asked for a checked connection (see the module doc).
    async fn recycle(
        &self,
        conn: &mut PgConnection,
        _: &managed::Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if CHECKED.try_with(|()| ()).is_ok() {
            // An error drops the connection; the checkout goes on with the next.
            conn.ping().await.map_err(RecycleError::Backend)?;
        }
        Ok(())
    }
}

/// A server's pool of request connections (cheap to clone: a handle).
#[derive(Debug, Clone)]
pub(crate) struct ConnPool {
    pool: managed::Pool<Manager>,
    timeouts: Timeouts,
}

impl ConnPool {
    /// A connection, waiting at most the pool's acquire timeout for a free slot and as long
    /// again to open a new connection. Errors come as sqlx's, so the routing classifies them
    /// as it classifies a statement's.
    pub(crate) async fn get(&self) -> Result<Conn, sqlx::Error> {
        match self.pool.timeout_get(&self.timeouts).await {
            Ok(conn) => Ok(Conn(Some(conn))),
            Err(PoolError::Backend(err)) => Err(err),
            // Waiting for a slot: every connection is in use (busy). Opening or checking a
            // connection: the server did not answer in time (unavailable). The routing and
            // the breaker treat the two differently (`Error::Busy`).
            Err(PoolError::Timeout(TimeoutType::Wait)) => Err(sqlx::Error::PoolTimedOut),
            Err(PoolError::Timeout(TimeoutType::Create | TimeoutType::Recycle)) => {
                Err(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the database did not accept a connection in time",
                )))
            }
            Err(PoolError::Closed) => Err(sqlx::Error::PoolClosed),
            Err(err @ (PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_))) => {
                Err(sqlx::Error::Configuration(format!("{err:?}").into()))
            }
        }
    }

    /// (open connections, idle connections).
    pub(crate) fn usage(&self) -> (usize, usize) {
        let status = self.pool.status();
        (status.size, status.available)
    }

    /// Closes the connections unused for [`IDLE_TIMEOUT`] (called by the health monitor).
    pub(crate) fn close_idle(&self) {
        let idle = self
            .pool
            .retain(|_, metrics| metrics.last_used() < IDLE_TIMEOUT);
        close_all(idle.removed);
    }

    /// Refuses new checkouts and says goodbye to the server on every idle connection.
    pub(crate) async fn close(&self) {
        self.pool.close();
        for conn in self.pool.retain(|_, _| false).removed {
            let _ = conn.close().await;
        }
    }
}

/// Closes `conns` politely in the background (a `Terminate` message rather than a reset).
fn close_all(conns: Vec<PgConnection>) {
    if conns.is_empty() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            for conn in conns {
                let _ = conn.close().await;
            }
        });
    }
}

/// A checked-out request connection: derefs to sqlx's `PgConnection`, so a statement runs on
/// `&mut *conn`. Goes back to its pool when dropped.
#[derive(Debug)]
pub struct Conn(
    /// `None` only inside `drop`.
    Option<Object<Manager>>,
);

impl Deref for Conn {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.0
            .as_deref()
            .expect("a Conn holds its connection until dropped")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.0
            .as_deref_mut()
            .expect("a Conn holds its connection until dropped")
    }
}

impl Drop for Conn {
    /// A transaction dropped before its end (its request was cancelled) leaves a `ROLLBACK`
    /// queued but unsent: the server still holds its locks. Such a connection is flushed in
    /// a task of its own before it goes back; any other goes back as it is, with no round
    /// trip. (`should_flush` is what sqlx's connections report for exactly this.)
    fn drop(&mut self) {
        let Some(conn) = self.0.take_if(|conn| conn.should_flush()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to flush on: close it rather than hand back a connection in a
            // transaction.
            drop(Object::take(conn));
            return;
        };
        runtime.spawn(async move {
            let mut conn = conn;
            if conn.ping().await.is_err() {
                // Broken: out of the pool, never handed out again.
                drop(Object::take(conn));
            }
        });
    }
}

/// A shard primary's request pool.
pub(crate) fn primary(config: &DbConfig, url: &str) -> anyhow::Result<ConnPool> {
    conn_pool(config, url, "primary", config.acquire_timeout)
}

/// A replica's request pool: a short checkout bound, since the primary can take the read.
pub(crate) fn replica(config: &DbConfig, url: &str) -> anyhow::Result<ConnPool> {
    conn_pool(config, url, "replica", config.replicas.acquire_timeout)
}

fn conn_pool(
    config: &DbConfig,
    url: &str,
    role: &str,
    acquire_timeout: Duration,
) -> anyhow::Result<ConnPool> {
    let options = connect_options(config, url, role)?;
    let pool = managed::Pool::builder(Manager { options })
        .max_size(config.pool_max_connections as usize)
        // Last in, first out: the busiest connections stay warm and the rest go idle long
        // enough to be closed.
        .queue_mode(deadpool::managed::QueueMode::Lifo)
        .runtime(Runtime::Tokio1)
        .build()
        .with_context(|| format!("Failed to build the {role} pool"))?;
    Ok(ConnPool {
        pool,
        timeouts: Timeouts {
            wait: Some(acquire_timeout),
            create: Some(acquire_timeout),
            recycle: Some(acquire_timeout),
        },
    })
}

/// The directory's pool: sqlx's, every checkout pinged (its callers use it directly, with
/// no retry for a broken connection).
pub(crate) fn directory(config: &DbConfig) -> anyhow::Result<PgPool> {
    sqlx_pool(config, config.directory_url.expose(), "directory")
}

/// A shard primary's pool for administration (migrations, seeding): sqlx's, for its
/// `begin` and `execute` on the pool. Opens nothing until used, which `serve` never does.
pub(crate) fn admin(config: &DbConfig, url: &str) -> anyhow::Result<PgPool> {
    sqlx_pool(config, url, "admin")
}

fn sqlx_pool(config: &DbConfig, url: &str, role: &str) -> anyhow::Result<PgPool> {
    let options = connect_options(config, url, role)?;
    Ok(PgPoolOptions::new()
        .max_connections(config.pool_max_connections)
        .min_connections(0)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(Some(IDLE_TIMEOUT))
        .connect_lazy_with(options))
}

/// Every connection carries `application_name` (visible in `pg_stat_activity` on each
/// server) and a `statement_timeout`, so a slow query cannot hold a connection for ever.
fn connect_options(config: &DbConfig, url: &str, role: &str) -> anyhow::Result<PgConnectOptions> {
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    Ok(PgConnectOptions::from_str(url)
        .with_context(|| format!("Failed to parse the {role} database URL"))?
        .application_name(&format!("scalable-api/{role}"))
        .options([("statement_timeout", statement_timeout.as_str())]))
}

/// The health monitor's own connection to a server (see `monitor.rs`): one connection,
/// waited for no longer than a check may take (`check_timeout`).
pub(crate) fn monitor(url: &str, check_timeout: Duration) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .context("Failed to parse a database URL")?
        .application_name("scalable-api/monitor");
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(check_timeout)
        .connect_lazy_with(options))
}

/// (open connections, idle connections) of one of sqlx's pools.
pub(crate) fn sqlx_usage(pool: &PgPool) -> (usize, usize) {
    (pool.size() as usize, pool.num_idle())
}

/// Sets `db_pool_connections{shard, role, state}` from the pools' `(open, idle)` usage
/// (summed), sampled at scrape time rather than on every checkout.
pub(crate) fn report(shard: &str, role: &'static str, usage: impl Iterator<Item = (usize, usize)>) {
    let (open, idle) = usage.fold((0, 0), |(open, idle), (o, i)| (open + o, idle + i));
    let gauge = |state: &'static str| metrics::gauge!(names::DB_POOL_CONNECTIONS, "shard" => shard.to_owned(), "role" => role, "state" => state);
    gauge("idle").set(idle as f64);
    gauge("in_use").set(open.saturating_sub(idle) as f64);
}
