//! Where a new user goes.
//!
//! Policy: round-robin over the shards that accept new users, starting from a per-process
//! counter. It needs no shared state, so every instance can place users independently and
//! shards still fill evenly on average. A shard that cannot take the user (its range is used
//! up, or its primary is down) is skipped and the next candidate tried, so one full or broken
//! shard does not stop registrations. Ranges bound how many users a shard can ever hold; to
//! retire a shard from placement, set `accepts_new_users = false` in the shard map.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Cluster, Shard};

#[derive(Debug, Default)]
pub(crate) struct Placement {
    next: AtomicUsize,
}

impl Placement {
    /// Shards to try for the next user, in order: the round-robin choice first, then the
    /// other accepting shards after it.
    pub(crate) fn candidates<'a>(&self, shards: &'a Cluster) -> Vec<&'a Shard> {
        let open: Vec<&Shard> = shards.iter().filter(|s| s.accepts_new_users()).collect();
        if open.is_empty() {
            return open;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % open.len();
        open.iter()
            .cycle()
            .skip(start)
            .take(open.len())
            .copied()
            .collect()
    }
}
