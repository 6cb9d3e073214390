//! The cluster: every shard, found by id range, each a primary plus its replicas.
//!
//! Ownership reads top-down: [`Cluster`] -> [`Shard`] { primary + breaker, [`ReplicaSet`] }
//! -> pool. Which server a statement goes to is decided in [`shard`] (routing); how a
//! connection is had, with which timeouts, in [`pool`]; whether a server may serve at all,
//! by the health [`monitor`].

pub(crate) mod instrument;
pub(crate) mod monitor;
pub(crate) mod placement;
pub(crate) mod pool;
pub(crate) mod replicas;
pub(crate) mod shard;

use std::collections::HashSet;

use futures_util::future::try_join_all;
use sqlx::PgPool;
use tokio::task::JoinHandle;

pub use replicas::{ReplicaSet, ReplicaStatus};
pub use shard::Shard;

use super::{ConsistencyToken, Error, Lsn, Session};
use crate::config::DbConfig;

/// Which server of a shard a statement ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// Every shard, ordered by their (disjoint) id ranges, and the health monitor's own
/// connections to each server.
#[derive(Debug)]
pub struct Cluster {
    shards: Vec<Shard>,
    /// The health monitor's connections (primary, replicas) per shard, in shard order.
    monitor_pools: Vec<(PgPool, Vec<PgPool>)>,
}

impl Cluster {
    /// Builds every shard's pools without connecting (see [`pool`]). `config.shards` is sorted
    /// by range and disjoint: `Config::validate` guarantees it.
    pub fn connect_lazy(config: &DbConfig) -> anyhow::Result<Self> {
        let mut shards = Vec::with_capacity(config.shards.len());
        let mut monitor_pools = Vec::with_capacity(config.shards.len());
        for shard in &config.shards {
            let replicas = shard
                .replicas
                .iter()
                .map(|url| pool::replica(config, url.expose()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            shards.push(Shard::new(
                shard,
                pool::primary(config, shard.primary.expose())?,
                pool::admin(config, shard.primary.expose())?,
                ReplicaSet::new(replicas),
                &config.primary_breaker,
            ));
            let monitor_replicas = shard
                .replicas
                .iter()
                .map(|url| pool::monitor(url.expose(), monitor::check_timeout(&config.replicas)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            monitor_pools.push((
                pool::monitor(
                    shard.primary.expose(),
                    monitor::check_timeout(&config.replicas),
                )?,
                monitor_replicas,
            ));
        }
        Ok(Self {
            shards,
            monitor_pools,
        })
    }

    /// Starts one health monitor per shard (see [`monitor`]). Abort the handles to stop them.
    pub(crate) fn spawn_monitors(&self, config: &DbConfig) -> Vec<JoinHandle<()>> {
        monitor::spawn(&self.shards, &self.monitor_pools, &config.replicas)
    }

    /// The shard that owns `id`, or `None` when no shard's range holds it (so the row cannot
    /// exist anywhere: the caller answers "not found" without a query).
    pub fn owner(&self, id: i64) -> Option<&Shard> {
        // Binary search over ranges: O(log shards), no I/O, no directory lookup.
        let i = self.shards.partition_point(|s| *s.range().end() < id);
        self.shards.get(i).filter(|s| s.range().contains(&id))
    }

    /// Shards in id order.
    pub fn iter(&self) -> std::slice::Iter<'_, Shard> {
        self.shards.iter()
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard with this shard id (not index).
    pub fn by_id(&self, id: u16) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id() == id)
    }

    /// Runs `read` on each shard that owns some of `ids`, concurrently, with that shard's
    /// (distinct) ids; returns every shard's rows. Shards that own none of the ids cost
    /// nothing, and neither do ids no shard owns. This is how a batch read costs one
    /// statement per shard involved, whatever the number of keys.
    pub(crate) async fn on_owning_shards<'a, T, F, Fut>(
        &'a self,
        ids: &[i64],
        read: F,
    ) -> Result<Vec<T>, Error>
    where
        F: Fn(&'a Shard, Vec<i64>) -> Fut,
        Fut: Future<Output = Result<Vec<T>, Error>>,
    {
        let mut seen = HashSet::with_capacity(ids.len());
        let distinct: Vec<i64> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
        let per_shard = self.shards.iter().filter_map(|shard| {
            let mine: Vec<i64> = distinct
                .iter()
                .copied()
                .filter(|id| shard.range().contains(id))
                .collect();
            (!mine.is_empty()).then(|| read(shard, mine))
        });
        let rows = try_join_all(per_shard).await?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// The commit position of `shard`'s primary now: every commit this request made there is
    /// at or below it. The cache fences its entries with it.
    pub async fn commit_lsn(&self, session: &Session, shard: u16) -> Result<Lsn, Error> {
        match self.by_id(shard) {
            Some(shard) => shard.commit_lsn(session).await,
            None => Ok(Lsn::default()),
        }
    }

    /// The consistency token for a response: what the request was given, raised by the
    /// commit position of every shard it wrote. `None` when it wrote nothing.
    pub async fn consistency_token(&self, session: &Session) -> Option<ConsistencyToken> {
        let written = session.written_shards();
        if written.is_empty() {
            return None;
        }
        let mut token = session.required_token().clone();
        for shard in written.iter().filter_map(|&id| self.by_id(id)) {
            match shard.commit_lsn(session).await {
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

    /// Sets `db_pool_connections` for every shard server (the data layer reports its own
    /// gauges; `/metrics` calls this before rendering).
    pub(crate) fn report_pool_gauges(&self) {
        for shard in &self.shards {
            let id = shard.id().to_string();
            pool::report(
                &id,
                "primary",
                std::iter::once(shard.request_pool().usage()),
            );
            pool::report(
                &id,
                "replica",
                shard.replicas().iter().map(|r| r.pool.usage()),
            );
        }
    }

    /// Closes every pool; called on shutdown so Postgres sees clean disconnects.
    pub async fn close(&self) {
        for shard in &self.shards {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn ids_map_to_the_shard_whose_closed_range_holds_them() {
        let cluster = Cluster::connect_lazy(&Config::default().db).expect("lazy pools");
        let owner = |id| cluster.owner(id).map(Shard::id);
        assert_eq!(owner(1), Some(0));
        assert_eq!(owner(1_000_000_000), Some(0));
        assert_eq!(owner(1_000_000_001), Some(1));
        assert_eq!(owner(2_000_000_000), Some(1));
        assert_eq!(owner(2_000_000_001), None);
        assert_eq!(owner(0), None);
        assert_eq!(owner(-5), None);
    }
}
