//! The two-tier strategy's in-process L1 (moka) and how it learns of invalidations.
//!
//! An L1 hit costs no network at all, which is the point; the price is that each instance
//! holds its own copy, and an invalidation must reach every instance. Two mechanisms:
//! - every invalidation is published on a Redis channel, and each instance's subscriber
//!   drops the named keys from its L1 (milliseconds);
//! - every L1 entry lives at most `l1_ttl`, which bounds staleness when a message is
//!   lost (pub/sub is at-most-once; a reconnecting subscriber also clears its whole L1,
//!   since it cannot know what it missed).
//!
//! So: an instance may serve a value invalidated on *another* instance for at most
//! `l1_ttl` (typically far less); its own invalidations apply to its L1 at once.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use moka::future::Cache as Moka;
use tokio::task::JoinHandle;

use super::keys::Key;
use crate::config::CacheConfig;

#[derive(Clone)]
pub struct L1 {
    entries: Moka<String, Arc<[u8]>>,
}

impl std::fmt::Debug for L1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl L1 {
    pub fn new(config: &CacheConfig) -> Self {
        Self {
            entries: Moka::builder()
                .max_capacity(config.l1_max_entries)
                .time_to_live(config.l1_ttl)
                // For families: one invalidation retires every page of the user list.
                .support_invalidation_closures()
                .build(),
        }
    }

    pub async fn get(&self, key: &str) -> Option<Arc<[u8]>> {
        self.entries.get(key).await
    }

    pub async fn insert(&self, key: &str, value: Arc<[u8]>) {
        self.entries.insert(key.to_owned(), value).await;
    }

    pub async fn remove(&self, key: &str) {
        self.entries.invalidate(key).await;
    }

    /// Drops what one line of an invalidation message names: an entry, or with a leading
    /// `*` every entry of a family (see [`line`]).
    pub async fn apply(&self, line: &str) {
        match line.strip_prefix('*') {
            Some(base) => {
                let base = base.to_owned();
                // Registered as a predicate that moka applies lazily: cheap to ask for, and
                // only registrations and deletions (not every write) invalidate a family.
                if let Err(err) = self
                    .entries
                    .invalidate_entries_if(move |key, _| key.starts_with(&base))
                {
                    tracing::warn!(error = %err, "L1 family invalidation refused; clearing the L1");
                    self.entries.invalidate_all();
                }
            }
            None => self.remove(line).await,
        }
    }

    /// Follows the invalidation channel until aborted, reconnecting with a pause when Redis
    /// goes away; every (re)connection starts from an empty L1.
    pub fn spawn_subscriber(&self, redis_url: String, channel: String) -> JoinHandle<()> {
        let l1 = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(err) = l1.follow(&redis_url, &channel).await {
                    tracing::debug!(error = %err, "L1 invalidation subscriber disconnected");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    async fn follow(&self, redis_url: &str, channel: &str) -> redis::RedisResult<()> {
        let client = redis::Client::open(redis_url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        // Whatever was published while no subscriber listened is lost: start clean.
        self.entries.invalidate_all();
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let keys: String = message.get_payload()?;
            for line in keys.lines() {
                self.apply(line).await;
            }
        }
        Ok(())
    }
}

/// The line of an invalidation message that names `key` (`*{base}` for a whole family).
pub fn line(key: &Key) -> String {
    if key.is_family() {
        format!("*{key}")
    } else {
        key.to_string()
    }
}
