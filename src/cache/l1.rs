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
//! - **Refresh ahead.** An entry that has lived three quarters of `l1_ttl` is handed to one
//!   reader as a miss (it reads Redis and refills the entry), while every other reader keeps
//!   hitting it until it is refilled or reaches `l1_ttl`. Without it, every request in flight
//!   when a hot entry expires misses it together and looks it up in Redis: a herd of Redis
//!   round trips per hot key every `l1_ttl`. The bound on staleness stays `l1_ttl`.
//!
//! # Inserts that race an invalidation
//!
//! A value read from Redis or loaded from the database reaches the L1 a moment after its
//! lookup, and an invalidation applied in between must not be undone by the insert (the old
//! value would sit in the L1 after the write's response). So every invalidation applied
//! here records when, per entry (a fixed table of instants indexed by a keyed hash: bounded
//! memory, and a collision only drops an insert needlessly) and for families, *before*
//! removing; and an insert checks, *after* inserting, whether an invalidation of its entry
//! was recorded since its lookup began, and if so removes what it inserted. Either the
//! insert sees the record, or the invalidation's removal comes after the insert. (The cache
//! applies a write's invalidation to the L1 both before and after its Redis script, so a
//! lookup that slipped in between, before the version bump, is covered too.)

use std::{
    any::Any,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use moka::future::Cache as Moka;
use tokio::task::JoinHandle;

use super::keys::Key;
use crate::config::CacheConfig;

/// Slots of the table of invalidation instants: 32 KiB.
const INVALIDATED_SLOTS: usize = 4096;

/// What an entry weighs: the length of the JSON it was decoded from (the decoded value holds
/// the same strings, and its numbers in no more room), plus the entry's own bookkeeping
/// (the `Arc`s, the refresh fields, moka's node) of about 128 bytes. An estimate, not a
/// measurement: measuring the decoded value would mean walking it on every insert.
fn weight(json_len: usize) -> u32 {
    u32::try_from(json_len.saturating_add(128)).unwrap_or(u32::MAX)
}

/// The decoded `Option<T>` of an entry's key type (`None`: cached "not found").
pub type Value = Arc<dyn Any + Send + Sync>;

struct Entry {
    value: Value,
    /// What the entry counts against `cache.l1_max_bytes` (see [`weight`]).
    weight: u32,
    /// From then on, the first reader refreshes the entry (see the module documentation).
    refresh_at: Instant,
    /// Whether a reader has taken the refresh.
    claimed: AtomicBool,
}

#[derive(Clone)]
pub struct L1 {
    entries: Moka<String, Arc<Entry>>,
    invalidated: Arc<Invalidated>,
    refresh_after: Duration,
}

/// When invalidations were last applied: nanoseconds since `epoch`, plus one (0: never).
struct Invalidated {
    entries: Box<[AtomicU64]>,
    families: AtomicU64,
    epoch: Instant,
    slots: RandomState,
}

impl Invalidated {
    fn slot(&self, key: &str) -> Option<&AtomicU64> {
        self.entries
            .get(self.slots.hash_one(key) as usize % INVALIDATED_SLOTS)
    }

    fn nanos(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// SeqCst, as the read in [`Invalidated::since`]: the two sides' record-then-remove and
    /// insert-then-check must not be reordered.
    fn record(&self, at: Option<&AtomicU64>) {
        if let Some(at) = at {
            at.fetch_max(
                self.nanos(Instant::now()).saturating_add(1),
                Ordering::SeqCst,
            );
        }
    }

    /// Whether `key` (or any family) was invalidated at or after `since`.
    fn since(&self, key: &str, since: Instant) -> bool {
        let since = self.nanos(since);
        let entry = self
            .slot(key)
            .map_or(u64::MAX, |at| at.load(Ordering::SeqCst));
        entry > since || self.families.load(Ordering::SeqCst) > since
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
    /// Entries held (moka's count: it lags its pending inserts and evictions by moments).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// What the entries weigh against `cache.l1_max_bytes` (same lag).
    pub fn weighted_bytes(&self) -> u64 {
        self.entries.weighted_size()
    }

    pub fn new(config: &CacheConfig) -> Self {
        Self {
            // Bounded by bytes, not entries: one entry is a user (a few hundred bytes) or a
            // page of the user list with its rows (up to about a megabyte), so a count bound
            // would be either far too small for users or a gigabyte for pages.
            entries: Moka::builder()
                .max_capacity(config.l1_max_bytes)
                .weigher(|key: &String, entry: &Arc<Entry>| {
                    entry.weight.saturating_add(key.len() as u32)
                })
                .time_to_live(config.l1_ttl)
                // For families: one invalidation retires every page of the user list.
                .support_invalidation_closures()
                .build(),
            invalidated: Arc::new(Invalidated {
                entries: (0..INVALIDATED_SLOTS).map(|_| AtomicU64::new(0)).collect(),
                families: AtomicU64::new(0),
                epoch: Instant::now(),
                slots: RandomState::new(),
            }),
            refresh_after: config.l1_ttl.mul_f64(0.75),
        }
    }

    /// The entry of `key`, if there is one of type `Option<T>` (an entry of another type is a
    /// miss: keys name their type, so that only happens across a schema change). An entry due
    /// for its refresh is a miss for the one caller that takes the refresh.
    pub async fn get<T: Clone + 'static>(&self, key: &str) -> Option<Option<T>> {
        let entry = self.entries.get(key).await?;
        if Instant::now() >= entry.refresh_at && !entry.claimed.swap(true, Ordering::Relaxed) {
            return None;
        }
        entry.value.downcast_ref::<Option<T>>().cloned()
    }

    /// Inserts `value`, read by a lookup that began at `looked_up`, unless an invalidation
    /// of its entry was applied since (see the module doc).
    pub async fn insert<T: Send + Sync + 'static>(
        &self,
        key: &str,
        value: Option<T>,
        json_len: usize,
        looked_up: Instant,
    ) {
        let entry = Entry {
            value: Arc::new(value),
            weight: weight(json_len),
            refresh_at: Instant::now() + self.refresh_after,
            claimed: AtomicBool::new(false),
        };
        self.entries.insert(key.to_owned(), Arc::new(entry)).await;
        if self.invalidated.since(key, looked_up) {
            self.remove(key).await;
        }
    }

    pub async fn remove(&self, key: &str) {
        self.entries.invalidate(key).await;
    }

    /// Drops what one line of an invalidation message names: an entry, or with a leading
    /// `*` every entry of a family (see [`line`]). Recorded first, for racing inserts.
    pub async fn apply(&self, line: &str) {
        match line.strip_prefix('*') {
            Some(base) => {
                self.invalidated.record(Some(&self.invalidated.families));
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
            None => {
                self.invalidated.record(self.invalidated.slot(line));
                self.remove(line).await;
            }
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
        // Whatever was published while no subscriber listened is lost: start clean (and
        // keep inserts that raced the clearing out, as a family invalidation would).
        self.invalidated.record(Some(&self.invalidated.families));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn value() -> Option<String> {
        Some("{}".to_owned())
    }

    fn l1(ttl: Duration) -> L1 {
        L1::new(&CacheConfig {
            l1_ttl: ttl,
            ..CacheConfig::default()
        })
    }

    #[tokio::test]
    async fn an_insert_is_dropped_when_its_entry_was_invalidated_since_its_lookup() {
        let l1 = L1::new(&CacheConfig::default());
        let looked_up = Instant::now();
        l1.apply("p:user:1").await;
        l1.insert("p:user:1", value(), 16, looked_up).await;
        assert!(
            l1.get::<String>("p:user:1").await.is_none(),
            "the value read before the invalidation stays out"
        );

        l1.insert("p:user:1", value(), 16, Instant::now()).await;
        assert!(
            l1.get::<String>("p:user:1").await.is_some(),
            "a lookup after the invalidation inserts"
        );
    }

    #[tokio::test]
    async fn the_l1_holds_at_most_its_bytes_whatever_the_entries_weigh() {
        let new = || {
            L1::new(&CacheConfig {
                l1_max_bytes: 1 << 20,
                l1_ttl: Duration::from_secs(60),
                ..CacheConfig::default()
            })
        };
        let l1 = new();
        // Forty 100 KB pages: 4 MB offered to a 1 MiB cache.
        for i in 0..40 {
            l1.insert(&format!("p:page:{i}"), Some(i), 100_000, Instant::now())
                .await;
        }
        l1.entries.run_pending_tasks().await;
        assert!(
            l1.entries.weighted_size() <= 1 << 20,
            "{} bytes held",
            l1.entries.weighted_size()
        );
        assert!(
            l1.entries.entry_count() <= 10,
            "{} pages held",
            l1.entries.entry_count()
        );
        // Small entries fit by the thousand in the same budget.
        let l1 = new();
        for i in 0..2_000 {
            l1.insert(&format!("p:user:{i}"), Some(i), 300, Instant::now())
                .await;
        }
        l1.entries.run_pending_tasks().await;
        assert!(
            l1.entries.entry_count() >= 1_500,
            "{} users held",
            l1.entries.entry_count()
        );
    }

    #[tokio::test]
    async fn a_family_invalidation_keeps_out_every_insert_that_raced_it() {
        let l1 = L1::new(&CacheConfig::default());
        let looked_up = Instant::now();
        l1.apply("*p:users:").await;
        l1.insert("p:users:o0l10", value(), 16, looked_up).await;
        assert!(l1.get::<String>("p:users:o0l10").await.is_none());
    }

    #[tokio::test]
    async fn a_hit_returns_the_value_of_its_type_and_another_type_is_a_miss() {
        let l1 = l1(Duration::from_secs(60));
        let now = Instant::now();
        l1.insert("k", Some(vec![1_i64, 2]), 16, now).await;
        l1.insert("absent", None::<String>, 16, now).await;
        assert_eq!(l1.get::<Vec<i64>>("k").await, Some(Some(vec![1, 2])));
        assert_eq!(l1.get::<String>("absent").await, Some(None));
        assert_eq!(l1.get::<String>("k").await, None);
        assert_eq!(l1.get::<String>("nothing").await, None);
    }

    #[tokio::test]
    async fn one_reader_refreshes_an_entry_near_its_end_while_the_others_hit_until_l1_ttl() {
        let ttl = Duration::from_millis(400);
        let l1 = l1(ttl);
        l1.insert("k", Some(1_i64), 16, Instant::now()).await;
        assert_eq!(l1.get::<i64>("k").await, Some(Some(1)), "fresh: a hit");
        tokio::time::sleep(ttl.mul_f64(0.8)).await;
        assert_eq!(
            l1.get::<i64>("k").await,
            None,
            "the first reader past 3/4 refreshes"
        );
        assert_eq!(
            l1.get::<i64>("k").await,
            Some(Some(1)),
            "the next ones still hit"
        );
        l1.insert("k", Some(2_i64), 16, Instant::now()).await;
        assert_eq!(l1.get::<i64>("k").await, Some(Some(2)), "refilled");
        tokio::time::sleep(ttl.mul_f64(0.8)).await;
        assert_eq!(
            l1.get::<i64>("k").await,
            None,
            "the refill is due for refresh in turn"
        );
        tokio::time::sleep(ttl.mul_f64(0.3)).await;
        assert_eq!(
            l1.get::<i64>("k").await,
            None,
            "gone after l1_ttl, refreshed or not"
        );
        assert_eq!(l1.get::<i64>("k").await, None);
    }
}
