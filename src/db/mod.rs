//! The data layer: the only code that knows shards, roles and pools.
//!
//! Callers say *what* they need ("these users", "write this post on its author's shard");
//! this module decides *where*. Ownership reads top-down:
//!
//! - [`Db`]: the [`Cluster`] of shards, the email directory's database, the placement policy
//!   for new users;
//! - [`cluster`]: each [`Shard`] is a primary (pool, circuit breaker, health-monitor
//!   connection) plus its [`ReplicaSet`]; routing (`cluster/shard.rs`) picks the server,
//!   pooling (`cluster/pool.rs`) says how a connection is had;
//! - [`repo`]: repositories by resource: `db.users()`, `db.posts()`, `db.feed()`,
//!   `db.directory()` (the cross-database saga), `db.api_keys()`;
//! - [`Session`]: the request's consistency requirement and the shards it wrote, passed to
//!   every call.
//!
//! Administration (migrations, demo data) lives in `src/admin/`, off the request path.

/// Injects a crash (a panic, which skips every compensating step like a dying process
/// would) or a pause at a named point when the `failpoints` feature is on and a test armed
/// it (see `failpoints.rs`). Compiled out otherwise.
macro_rules! fail_point {
    ($db:expr, $name:literal) => {
        #[cfg(feature = "failpoints")]
        $db.failpoints.hit($name).await;
    };
}
pub(crate) use fail_point;

pub mod cluster;
pub mod consistency;
mod error;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub mod repo;
mod session;

use std::sync::Arc;

use sqlx::PgPool;
use tokio::task::JoinHandle;

pub use cluster::{Cluster, ReplicaSet, ReplicaStatus, Role, Shard, pool::Conn};
pub use consistency::{ConsistencyToken, Lsn};
pub use error::Error;
pub use repo::{
    api_keys::{ApiKeys, KeyRecord},
    directory::Directory,
    feed::{Feed, PostKey},
    posts::{AuthorWrite, Posts},
    users::{Page, UserList, UserUpdate, Users},
};
pub use session::{Served, Session};

use crate::config::DbConfig;
use cluster::placement::Placement;

/// Handle to every database the service uses. Cheap to share: pools are reference-counted.
#[derive(Debug)]
pub struct Db {
    cluster: Cluster,
    directory: PgPool,
    /// Readiness's own connection to the directory: a burst of logins that fills the
    /// directory's request pool must not make every instance look unready at once (a load
    /// balancer would then drain the whole fleet).
    directory_probe: PgPool,
    placement: Placement,
    config: DbConfig,
    /// Crash injection for the saga tests.
    #[cfg(feature = "failpoints")]
    pub failpoints: failpoints::FailPoints,
}

impl Db {
    /// Builds the pools without connecting: a shard that is down at start-up must not stop
    /// the service from serving the others (connections open on first use, bounded by
    /// `acquire_timeout`).
    pub fn connect_lazy(config: &DbConfig) -> anyhow::Result<Self> {
        Ok(Self {
            cluster: Cluster::connect_lazy(config)?,
            directory: cluster::pool::directory(config)?,
            directory_probe: cluster::pool::monitor(
                config.directory_url.expose(),
                cluster::monitor::check_timeout(&config.replicas),
            )?,
            placement: Placement::default(),
            config: config.clone(),
            #[cfg(feature = "failpoints")]
            failpoints: failpoints::FailPoints::default(),
        })
    }

    /// Starts the background work of a serving instance: the per-shard health monitors and
    /// the directory repair pass. Abort the handles to stop it.
    pub fn spawn_background(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let mut tasks = self.cluster.spawn_monitors(&self.config);
        tasks.push(repo::directory::spawn_repair(self.clone()));
        tasks
    }

    pub fn users(&self) -> Users<'_> {
        Users {
            cluster: &self.cluster,
        }
    }

    pub fn posts(&self) -> Posts<'_> {
        Posts {
            cluster: &self.cluster,
        }
    }

    pub fn feed(&self) -> Feed<'_> {
        Feed {
            cluster: &self.cluster,
        }
    }

    pub fn directory(&self) -> Directory<'_> {
        Directory { db: self }
    }

    /// API keys, in the directory database.
    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys { db: self }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The directory database without the saga: for administration and health checks.
    pub fn directory_pool(&self) -> &PgPool {
        &self.directory
    }

    /// A one-connection pool to the directory for readiness checks, apart from the requests'.
    pub fn directory_probe(&self) -> &PgPool {
        &self.directory_probe
    }

    /// Sets the data layer's gauges (`db_pool_connections`); `/metrics` calls it at scrape.
    pub fn report_gauges(&self) {
        self.cluster.report_pool_gauges();
        cluster::pool::report(
            "directory",
            "primary",
            std::iter::once(cluster::pool::sqlx_usage(&self.directory)),
        );
    }

    /// Closes every pool; called on shutdown so Postgres sees clean disconnects.
    pub async fn close(&self) {
        self.directory.close().await;
        self.directory_probe.close().await;
        self.cluster.close().await;
    }
}
