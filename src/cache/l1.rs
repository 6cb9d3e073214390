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
//!
//! Two choices make a hit cheap and keep hits hitting:
//! - **Decoded values, not bytes.** An entry holds the value itself (`Option<T>`, behind an
//!   `Arc<dyn Any>`), so a hit is a clone, not a JSON parse: parsing the timestamps of a
//!   nested query's 250 posts on every request took a quarter of its CPU. The price: an entry
//!   takes its in-memory size rather than its JSON's (about the same for these rows).
//! - **Expiry spread over the last quarter of `l1_ttl`.** Entries filled together (a page's
//!   50 users) would otherwise all expire in the same instant, and every request in flight
//!   would then miss them together and look them up in Redis at once, a herd each `l1_ttl`.
//!   Each key gets its own lifetime between 0.75 and 1 times `l1_ttl` (a hash of the key), so
//!   the bound on staleness stays `l1_ttl`.

use std::{
    any::Any,
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use moka::{Expiry, future::Cache as Moka};
use tokio::task::JoinHandle;

use super::keys::Key;
use crate::config::CacheConfig;

/// An entry: the decoded `Option<T>` of its key's type (`None`: cached "not found").
pub type Value = Arc<dyn Any + Send + Sync>;

#[derive(Clone)]
pub struct L1 {
    entries: Moka<String, Value>,
}

/// Each key's lifetime: between 3/4 and all of `l1_ttl`, by a hash of the key (see the
/// module documentation).
struct SpreadExpiry {
    ttl: Duration,
    hasher: RandomState,
}

impl Expiry<String, Value> for SpreadExpiry {
    fn expire_after_create(&self, key: &String, _: &Value, _: Instant) -> Option<Duration> {
        let fraction = (self.hasher.hash_one(key) % 1024) as f64 / 1024.0;
        Some(self.ttl.mul_f64(0.75 + 0.25 * fraction))
    }
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
                .expire_after(SpreadExpiry {
                    ttl: config.l1_ttl,
                    hasher: RandomState::new(),
                })
                // For families: one invalidation retires every page of the user list.
                .support_invalidation_closures()
                .build(),
        }
    }

    /// The entry of `key`, if there is one of type `Option<T>` (an entry of another type is a
    /// miss: keys name their type, so that only happens across a schema change).
    pub async fn get<T: Clone + 'static>(&self, key: &str) -> Option<Option<T>> {
        let value = self.entries.get(key).await?;
        value.downcast_ref::<Option<T>>().cloned()
    }

    pub async fn insert<T: Send + Sync + 'static>(&self, key: &str, value: Option<T>) {
        self.entries.insert(key.to_owned(), Arc::new(value)).await;
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
