//! A shard's read replicas and how reads are balanced over them.

use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::PgPool;

/// The replicas of one shard, balanced round-robin.
///
/// Round-robin needs no coordination and spreads load evenly when replicas are alike; it
/// knows nothing of health or lag yet, which is why a shard with no replicas reads from its
/// primary rather than pretending.
#[derive(Debug)]
pub struct ReplicaSet {
    pools: Vec<PgPool>,
    next: AtomicUsize,
}

impl ReplicaSet {
    pub fn new(pools: Vec<PgPool>) -> Self {
        Self {
            pools,
            next: AtomicUsize::new(0),
        }
    }

    /// The replica the next read should use, or `None` when the shard has none.
    pub fn pick(&self) -> Option<&PgPool> {
        if self.pools.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pools.len();
        self.pools.get(i)
    }

    pub fn len(&self) -> usize {
        self.pools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PgPool> {
        self.pools.iter()
    }
}
