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
mod directory;
mod error;
mod fanout;
mod keyset;
pub mod migrate;
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

pub use error::Error;
pub use keyset::PostKey;
pub use posts::AuthorWrite;
pub use replicas::ReplicaSet;
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
}

impl Db {
    /// Builds the pools without connecting: a shard that is down at start-up must not stop
    /// the service from serving the others (connections open on first use, bounded by
    /// `acquire_timeout_ms`).
    pub fn connect_lazy(config: &DbConfig) -> anyhow::Result<Self> {
        let directory = pool(config, &config.directory_url, "directory")?;
        let shards = config
            .shards
            .iter()
            .map(|s| {
                let primary = pool(config, &s.primary, "primary")?;
                let replicas = s
                    .replicas
                    .iter()
                    .map(|url| pool(config, url, "replica"))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(Shard::new(s, primary, ReplicaSet::new(replicas)))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            shards: ShardMap::new(shards),
            directory,
            placement: Placement::default(),
        })
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
    }
}

/// One pool per server. Every connection carries `application_name` (visible in
/// `pg_stat_activity` on each server) and a `statement_timeout`, so a slow query cannot hold
/// a connection for ever.
fn pool(config: &DbConfig, url: &str, role: &str) -> anyhow::Result<PgPool> {
    let statement_timeout = config.statement_timeout().as_millis().to_string();
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("Failed to parse the {role} database URL"))?
        .application_name(&format!("scalable-api/{role}"))
        .options([("statement_timeout", statement_timeout.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(config.pool_max_connections)
        .min_connections(0)
        .acquire_timeout(config.acquire_timeout())
        // Recycle idle connections so a pool does not pin server slots it no longer needs.
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(options))
}
