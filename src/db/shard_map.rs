//! ID-range sharding: which shard owns an id, and how a shard routes reads and writes.

use std::ops::RangeInclusive;

use sqlx::PgPool;

use super::{ReplicaSet, Role, Scope};
use crate::config::ShardConfig;

/// One shard: a closed id range, a primary for writes, replicas for reads.
#[derive(Debug)]
pub struct Shard {
    id: u16,
    range: RangeInclusive<i64>,
    accepts_new_users: bool,
    primary: PgPool,
    replicas: ReplicaSet,
}

impl Shard {
    pub fn new(config: &ShardConfig, primary: PgPool, replicas: ReplicaSet) -> Self {
        Self {
            id: config.id,
            range: config.first_id..=config.last_id,
            accepts_new_users: config.accepts_new_users,
            primary,
            replicas,
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

    /// The pool for a read: a replica when the shard has one, else the primary.
    pub fn reader(&self, scope: &Scope) -> &PgPool {
        match self.replicas.pick() {
            Some(replica) => {
                scope.record(self.id, Role::Replica);
                replica
            }
            None => self.writer(scope),
        }
    }

    /// The pool for writes, transactions, and reads that must see the latest commit.
    pub fn writer(&self, scope: &Scope) -> &PgPool {
        scope.record(self.id, Role::Primary);
        &self.primary
    }

    pub fn replicas(&self) -> &ReplicaSet {
        &self.replicas
    }

    /// The primary pool without recording a route: for administration (migrations, seeding,
    /// health checks), not for request traffic.
    pub fn primary_pool(&self) -> &PgPool {
        &self.primary
    }

    pub(crate) async fn close(&self) {
        self.primary.close().await;
        for replica in self.replicas.iter() {
            replica.close().await;
        }
    }
}

/// The shard map: shards ordered by their (disjoint) id ranges.
#[derive(Debug)]
pub struct ShardMap {
    shards: Vec<Shard>,
}

impl ShardMap {
    /// `shards` must be sorted by range and disjoint; `Config::validate` guarantees it.
    pub fn new(shards: Vec<Shard>) -> Self {
        Self { shards }
    }

    /// The shard that owns `id`, or `None` when no shard's range holds it (so the row cannot
    /// exist anywhere: the caller answers 404 without a query).
    pub fn owner(&self, id: i64) -> Option<&Shard> {
        // Binary search over ranges: O(log shards), no I/O, no directory lookup.
        let i = self.shards.partition_point(|s| *s.range.end() < id);
        self.shards.get(i).filter(|s| s.range.contains(&id))
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

    pub fn get(&self, index: usize) -> Option<&Shard> {
        self.shards.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn local_map() -> ShardMap {
        let config = Config::default();
        let pool = |url: &str| {
            sqlx::postgres::PgPoolOptions::new()
                .connect_lazy(url)
                .expect("the default URLs parse")
        };
        ShardMap::new(
            config
                .db
                .shards
                .iter()
                .map(|s| Shard::new(s, pool(&s.primary), ReplicaSet::new(vec![])))
                .collect(),
        )
    }

    #[tokio::test]
    async fn ids_map_to_the_shard_whose_closed_range_holds_them() {
        let map = local_map();
        let owner = |id| map.owner(id).map(Shard::id);
        assert_eq!(owner(1), Some(0));
        assert_eq!(owner(1_000_000_000), Some(0));
        assert_eq!(owner(1_000_000_001), Some(1));
        assert_eq!(owner(2_000_000_000), Some(1));
        assert_eq!(owner(2_000_000_001), None);
        assert_eq!(owner(0), None);
        assert_eq!(owner(-5), None);
    }
}
