//! The data layer: the only code that knows shards, roles and pools.
//!
//! Callers say *what* they need ("read user 42", "write on the author's shard"); this module
//! decides *where*: [`ShardMap`] maps an id to its [`Shard`], a shard sends writes to its
//! primary and reads to its [`ReplicaSet`], and the [`directory`] maps emails to ids so login
//! never scatters to every shard. Every route taken is recorded in the request's [`Scope`],
//! which is how the dev-profile `X-Db-Route` header can show it.
//!
//! Ownership reads top-down: [`Db`] -> [`ShardMap`] -> [`Shard`] { primary, replicas } -> pool.

mod batch;
pub mod consistency;
mod directory;
mod error;
#[cfg(feature = "failpoints")]
pub mod failpoints;
mod fanout;
mod instrument;
mod keyset;
pub mod migrate;
mod monitor;
mod placement;
mod posts;
mod replicas;
mod route;
pub mod seed;
mod shard_map;
mod users;

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use consistency::{ConsistencyToken, Lsn};
pub use error::Error;
pub use keyset::PostKey;
pub use posts::AuthorWrite;
pub use replicas::{ReplicaSet, ReplicaStatus};
pub use route::{Role, Route, Scope};
pub use shard_map::{Shard, ShardMap};
pub use users::{Page, UserUpdate};

use crate::config::DbConfig;
use placement::Placement;

/// Handle to every database the service uses. Cheap to share: pools are reference-counted.
#[derive(Debug)]
pub struct Db {
    shards: ShardMap,
    directory: PgPool,
    placement: Placement,
    config: DbConfig,
    /// The health monitor's connections (primary, replicas) per shard, in config order.
    monitor_pools: Vec<(PgPool, Vec<PgPool>)>,
    /// Crash injection for the saga tests.
    #[cfg(feature = "failpoints")]
    pub failpoints: failpoints::FailPoints,
}

impl Db {
    /// Builds the pools without connecting: a shard that is down at start-up must not stop
    /// the service from serving the others (connections open on first use, bounded by
    /// `acquire_timeout`).
    pub fn connect_lazy(config: &DbConfig) -> anyhow::Result<Self> {
        let directory = pool(
            config,
            config.directory_url.expose(),
            "directory",
            config.acquire_timeout,
        )?;
        let replica_timeout = config.replicas.acquire_timeout;
        let shards = config
            .shards
            .iter()
            .map(|s| {
                let primary = pool(
                    config,
                    s.primary.expose(),
                    "primary",
                    config.acquire_timeout,
                )?;
                let replicas = s
                    .replicas
                    .iter()
                    .map(|url| pool(config, url.expose(), "replica", replica_timeout))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(Shard::new(
                    s,
                    primary,
                    ReplicaSet::new(replicas),
                    &config.primary_breaker,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let check_timeout = monitor::check_timeout(&config.replicas);
        let monitor_pools = config
            .shards
            .iter()
            .map(|s| {
                let replicas = s
                    .replicas
                    .iter()
                    .map(|url| monitor_pool(url.expose(), check_timeout))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok((monitor_pool(s.primary.expose(), check_timeout)?, replicas))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            monitor_pools,
            shards: ShardMap::new(shards),
            directory,
            placement: Placement::default(),
            config: config.clone(),
            #[cfg(feature = "failpoints")]
            failpoints: failpoints::FailPoints::default(),
        })
    }

    /// Starts the background work of a serving instance: the per-shard health monitors and
    /// the directory repair pass. Abort the handles to stop it.
    pub fn spawn_background(self: &std::sync::Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = monitor::spawn(&self.shards, &self.monitor_pools, &self.config.replicas);
        tasks.push(directory::spawn_repair(self.clone()));
        tasks
    }

    /// The commit position of `shard`'s primary now: every commit this request made there is
    /// at or below it. The cache fences its entries with it.
    pub async fn commit_lsn(&self, scope: &Scope, shard: u16) -> Result<Lsn, Error> {
        match self.shards.by_id(shard) {
            Some(shard) => shard.commit_lsn(scope).await,
            None => Ok(Lsn::default()),
        }
    }

    /// The consistency token for a response: what the request was given, raised by the
    /// commit position of every shard it wrote. `None` when it wrote nothing.
    pub async fn consistency_token(&self, scope: &Scope) -> Option<ConsistencyToken> {
        let written = scope.written_shards();
        if written.is_empty() {
            return None;
        }
        let mut token = scope.required_token().clone();
        for shard in written.iter().filter_map(|&id| self.shards.by_id(id)) {
            match shard.commit_lsn(scope).await {
                Ok(lsn) => token.require(shard.id(), lsn),
                // The write itself is done; without its LSN the client just loses the
                // read-your-writes guarantee for this one response.
                Err(err) => {
                    tracing::warn!(shard = shard.id(), error = %err, "no commit LSN for the consistency token")
                }
            }
        }
        Some(token)
    }

    pub fn shards(&self) -> &ShardMap {
        &self.shards
    }

    pub fn directory_pool(&self) -> &PgPool {
        &self.directory
    }

    /// Closes every pool; called on shutdown so Postgres sees clean disconnects.
    pub async fn close(&self) {
        self.directory.close().await;
        for shard in self.shards.iter() {
            shard.close().await;
        }
        for (primary, replicas) in &self.monitor_pools {
            primary.close().await;
            for replica in replicas {
                replica.close().await;
            }
        }
    }
}

/// The health monitor's own connection to a server (see `monitor.rs`): one connection,
/// waited for no longer than a check may take.
fn monitor_pool(url: &str, check_timeout: Duration) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)
        .context("Failed to parse a database URL")?
        .application_name("scalable-api/monitor");
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(check_timeout)
        .connect_lazy_with(options))
}

/// One pool per server. Every connection carries `application_name` (visible in
/// `pg_stat_activity` on each server) and a `statement_timeout`, so a slow query cannot hold
/// a connection for ever.
fn pool(
    config: &DbConfig,
    url: &str,
    role: &str,
    acquire_timeout: Duration,
) -> anyhow::Result<PgPool> {
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("Failed to parse the {role} database URL"))?
        .application_name(&format!("scalable-api/{role}"))
        .options([("statement_timeout", statement_timeout.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(config.pool_max_connections)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        // Recycle idle connections so a pool does not pin server slots it no longer needs.
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(options))
}
