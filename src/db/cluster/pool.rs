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
//! # Checked checkouts
//!
//! By default sqlx pings every idle connection before handing it out (a full round trip to
//! the server, on every statement). A connection it hands back is already pinged on release,
//! so the only thing the checkout ping catches is a connection that broke while idle: the
//! server restarted, or killed the session. The shard pools skip that ping, and the routing
//! (`shard.rs`) deals with the rare broken connection instead: a read that fails on one is
//! run once more on a [`checked`] checkout (exactly the old behaviour, paid only after a
//! failure), and a write always takes a checked checkout, since a write that failed midway
//! may have committed and cannot be retried. The directory's pool, used directly by the
//! registration saga and the API keys with no such routing, keeps the ping.

use std::{future::Future, str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    Connection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{config::DbConfig, telemetry::names};

tokio::task_local! {
    /// Set while a statement runs under [`checked`]: the pool's `before_acquire` hook then
    /// pings an idle connection before handing it out.
    static CHECKED: ();
}

/// Runs `statement` with every idle connection it checks out pinged first (a broken one is
/// closed and the next one tried, or a new one opened): what sqlx's `test_before_acquire`
/// does, for this statement only. The hook runs in the checking-out task (sqlx polls the
/// checkout inside the statement's future), which is why a task-local reaches it.
pub(crate) async fn checked<F: Future>(statement: F) -> F::Output {
    CHECKED.scope((), statement).await
}

/// A shard primary's request pool (checkouts pinged only on demand: see the module doc).
pub(crate) fn primary(config: &DbConfig, url: &str) -> anyhow::Result<PgPool> {
    request_pool(
        config,
        url,
        "primary",
        config.acquire_timeout,
        Ping::OnDemand,
    )
}

/// A replica's request pool: a short checkout bound, since the primary can take the read.
pub(crate) fn replica(config: &DbConfig, url: &str) -> anyhow::Result<PgPool> {
    request_pool(
        config,
        url,
        "replica",
        config.replicas.acquire_timeout,
        Ping::OnDemand,
    )
}

/// The directory's pool: like a primary's, but every checkout is pinged (its callers use it
/// directly, with no retry for a broken connection).
pub(crate) fn directory(config: &DbConfig) -> anyhow::Result<PgPool> {
    request_pool(
        config,
        config.directory_url.expose(),
        "directory",
        config.acquire_timeout,
        Ping::Always,
    )
}

/// When a pool pings an idle connection before handing it out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ping {
    Always,
    /// Only inside [`checked`].
    OnDemand,
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

/// Every connection carries `application_name` (visible in `pg_stat_activity` on each
/// server) and a `statement_timeout`, so a slow query cannot hold a connection for ever.
fn request_pool(
    config: &DbConfig,
    url: &str,
    role: &str,
    acquire_timeout: Duration,
    ping: Ping,
) -> anyhow::Result<PgPool> {
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("Failed to parse the {role} database URL"))?
        .application_name(&format!("scalable-api/{role}"))
        .options([("statement_timeout", statement_timeout.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(config.pool_max_connections)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        // Recycle idle connections so a pool does not pin server slots it no longer needs.
        .idle_timeout(Some(Duration::from_secs(60)))
        .test_before_acquire(ping == Ping::Always);
    let pool = match ping {
        Ping::Always => pool,
        Ping::OnDemand => pool.before_acquire(|conn, _| {
            let wanted = CHECKED.try_with(|()| ()).is_ok();
            Box::pin(async move {
                if wanted {
                    // An error closes the connection; the checkout goes on with the next.
                    conn.ping().await?;
                }
                Ok(true)
            })
        }),
    };
    Ok(pool.connect_lazy_with(options))
}

/// Sets `db_pool_connections{shard, role, state}` from `pools` (summed), sampled at scrape
/// time rather than on every checkout.
pub(crate) fn report<'a>(shard: &str, role: &'static str, pools: impl Iterator<Item = &'a PgPool>) {
    let (open, idle) = pools.fold((0u64, 0u64), |(open, idle), pool| {
        (open + u64::from(pool.size()), idle + pool.num_idle() as u64)
    });
    let gauge = |state: &'static str| metrics::gauge!(names::DB_POOL_CONNECTIONS, "shard" => shard.to_owned(), "role" => role, "state" => state);
    gauge("idle").set(idle as f64);
    gauge("in_use").set(open.saturating_sub(idle) as f64);
}
