//! The cache layer: between the handlers and the data layer, caching data (a user, a post, a
//! user's first page of posts), never HTTP responses, so REST and GraphQL share entries and
//! each renders them for its viewer.
//!
//! Strategies (`cache.strategy`, no rebuild needed, so load tests can compare them):
//! - `none`: every read goes to the database. The baseline.
//! - `cache-aside`: Redis first; on a miss, read the database and fill Redis. One network
//!   round trip per hit, shared by every instance, so the hit ratio grows with the fleet.
//! - `two-tier`: an in-process L1 in front of cache-aside Redis. Hot keys are served with no
//!   network at all; the cost is memory per instance and a bounded window (`l1_ttl`) in
//!   which another instance's invalidation may not have reached this L1 (see [`l1`]).
//!
//! Write-through (writing the new row into the cache on every write) is left out on purpose:
//! with several writers, the cache updates can arrive in another order than the commits, and
//! the older value wins until its TTL; invalidating (deleting) is order-independent. See the
//! README.
//!
//! Every miss is [single-flighted](single_flight), fills are fenced against stale reads (see
//! [`redis_tier`]), TTLs are jittered, "not found" is cached briefly, and Redis trouble turns
//! into database reads (`bypass`), never into errors.

pub mod keys;
mod l1;
pub mod redis_tier;
mod single_flight;

use std::{
    future::Future,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::{Serialize, de::DeserializeOwned};
use tokio::task::JoinHandle;

use crate::{
    config::{CacheConfig, CacheStrategy},
    db::{self, Db, Lsn, Page, Scope},
    domain::{Post, UserProfile},
    error::Error,
    traffic::BreakerState,
};
use keys::Key;
use l1::L1;
use redis_tier::{Lookup, RedisTier};
use single_flight::SingleFlight;

/// What a flight shares with its waiters: the encoded value, or the load's error.
type Loaded = Result<Arc<[u8]>, Arc<db::Error>>;

#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
    db: Arc<Db>,
    redis: Option<RedisTier>,
    l1: Option<L1>,
    flights: SingleFlight<Loaded>,
    jitter_seed: AtomicU64,
}

impl Cache {
    pub fn new(config: &CacheConfig, db: Arc<Db>) -> anyhow::Result<Self> {
        let redis = match config.strategy {
            CacheStrategy::None => None,
            CacheStrategy::CacheAside | CacheStrategy::TwoTier => Some(RedisTier::new(config)?),
        };
        let l1 = (config.strategy == CacheStrategy::TwoTier).then(|| L1::new(config));
        Ok(Self {
            config: config.clone(),
            db,
            redis,
            l1,
            flights: SingleFlight::default(),
            jitter_seed: AtomicU64::new(0),
        })
    }

    /// The L1 invalidation subscriber (two-tier only).
    pub fn spawn_background(&self) -> Vec<JoinHandle<()>> {
        match (&self.l1, &self.redis) {
            (Some(l1), Some(redis)) => {
                vec![l1.spawn_subscriber(
                    self.config.redis_url.expose().to_owned(),
                    redis.channel.clone(),
                )]
            }
            _ => Vec::new(),
        }
    }

    pub fn strategy(&self) -> CacheStrategy {
        self.config.strategy
    }

    /// The Redis breaker's state, when there is a Redis tier.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.redis.as_ref().map(RedisTier::breaker_state)
    }

    /// Invalidations waiting for Redis to come back.
    pub fn pending_invalidations(&self) -> usize {
        self.redis
            .as_ref()
            .map_or(0, RedisTier::pending_invalidations)
    }

    pub async fn user(&self, scope: &Scope, id: i64) -> Result<Option<UserProfile>, Error> {
        let db = &self.db;
        self.read(
            scope,
            Key::user(&self.config.key_prefix, id),
            shard_of(db, id),
            |scope| async move { Ok(db.user(&scope, id).await?.map(UserProfile::from)) },
        )
        .await
    }

    pub async fn post(&self, scope: &Scope, id: i64) -> Result<Option<Post>, Error> {
        let db = &self.db;
        self.read(
            scope,
            Key::post(&self.config.key_prefix, id),
            shard_of(db, id),
            |scope| async move { db.post(&scope, id).await },
        )
        .await
    }

    /// A user's posts, newest first. Pages within the first `cache.page_size` posts come
    /// from one cached entry per user; deeper pages go to the database.
    pub async fn user_posts(
        &self,
        scope: &Scope,
        user_id: i64,
        page: Page,
    ) -> Result<Option<Vec<Post>>, Error> {
        let cached = i64::from(self.config.page_size);
        if page.offset + page.limit > cached {
            if self.config.strategy != CacheStrategy::None {
                scope.record_cache("bypass");
            }
            return Ok(self.db.user_posts(scope, user_id, page).await?);
        }
        let db = &self.db;
        let first = Page {
            limit: cached,
            offset: 0,
        };
        let key = Key::posts_page(&self.config.key_prefix, user_id);
        let posts: Option<Vec<Post>> = self
            .read(scope, key, shard_of(db, user_id), |scope| async move {
                db.user_posts(&scope, user_id, first).await
            })
            .await?;
        Ok(posts.map(|posts| {
            posts
                .into_iter()
                .skip(page.offset as usize)
                .take(page.limit as usize)
                .collect()
        }))
    }

    /// After a user was created or changed: their entry (and a cached "not found" for a new id).
    pub async fn user_written(&self, scope: &Scope, id: i64) {
        let prefix = &self.config.key_prefix;
        self.invalidate(
            scope,
            id,
            vec![Key::user(prefix, id), Key::posts_page(prefix, id)],
        )
        .await;
    }

    /// After a user and their posts were deleted.
    pub async fn user_deleted(&self, scope: &Scope, id: i64, posts: &[i64]) {
        let prefix = &self.config.key_prefix;
        let mut keys = vec![Key::user(prefix, id), Key::posts_page(prefix, id)];
        keys.extend(posts.iter().map(|&post| Key::post(prefix, post)));
        self.invalidate(scope, id, keys).await;
    }

    /// After a post was created, changed or deleted: the post and its author's page.
    pub async fn post_written(&self, scope: &Scope, post: i64, author: i64) {
        let prefix = &self.config.key_prefix;
        self.invalidate(
            scope,
            author,
            vec![Key::post(prefix, post), Key::posts_page(prefix, author)],
        )
        .await;
    }

    /// The read path shared by every cached type; see the module doc.
    async fn read<T, F, Fut>(
        &self,
        scope: &Scope,
        key: Key,
        shard: u16,
        load: F,
    ) -> Result<Option<T>, Error>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Scope) -> Fut,
        Fut: Future<Output = Result<Option<T>, db::Error>>,
    {
        let Some(redis) = &self.redis else {
            return Ok(load(scope.clone()).await?);
        };
        if let Some(l1) = &self.l1
            && let Some(bytes) = l1.get(key.as_str()).await
            && let Some(value) = decode(&bytes)
        {
            count("l1", "hit");
            scope.record_cache("hit");
            return Ok(value);
        }
        let lookup = match redis.lookup(&key).await {
            Ok(Lookup::Hit(bytes)) => match decode(&bytes) {
                Some(value) => {
                    if self.l1.is_some() {
                        // Copied only for an L1 to keep: cache-aside hits skip it.
                        self.keep_in_l1(&key, bytes.as_slice().into()).await;
                    }
                    count("redis", "hit");
                    scope.record_cache("hit");
                    return Ok(value);
                }
                None => None,
            },
            Ok(miss) => {
                count("redis", "miss");
                scope.record_cache("miss");
                Some(miss)
            }
            Err(_) => {
                count("redis", "bypass");
                scope.record_cache("bypass");
                None
            }
        };
        // Misses and bypasses alike go through the single flight: a burst on one key costs
        // one database read even while Redis is unavailable. A waiter must not take a value
        // loaded under an older view than its own, so the flight's identity holds both its
        // consistency requirement and the entry's version it saw: a miss looked up after a
        // write's invalidation (a newer version) starts its own load past that write's
        // fence instead of joining one that began before the write.
        let version = match &lookup {
            Some(Lookup::Miss { version, .. }) => version.as_str(),
            _ => "",
        };
        let flight = format!(
            "{key}@{}@{version}",
            scope.required(shard).unwrap_or_default().0
        );
        let (loaded, _) = self
            .flights
            .run(&flight, || {
                self.load_and_fill(redis, scope, &key, shard, lookup, &load)
            })
            .await;
        match loaded {
            Ok(bytes) => Ok(decode(&bytes).flatten()),
            Err(err) => Err(Error::from(err.as_ref())),
        }
    }

    /// The flight's work. With Redis usable (`lookup` is a miss): look again (a previous
    /// flight may have filled the entry while this request queued), read the database past
    /// the entry's fence, fill under its version. With Redis unusable: just read.
    async fn load_and_fill<T, F, Fut>(
        &self,
        redis: &RedisTier,
        scope: &Scope,
        key: &Key,
        shard: u16,
        lookup: Option<Lookup>,
        load: &F,
    ) -> Loaded
    where
        T: Serialize,
        F: Fn(Scope) -> Fut,
        Fut: Future<Output = Result<Option<T>, db::Error>>,
    {
        let miss = match lookup {
            None => None,
            Some(first) => match redis.lookup(key).await {
                Ok(Lookup::Hit(bytes)) => return Ok(bytes.into()),
                Ok(again) => Some(again),
                Err(_) => Some(first),
            },
        };
        let (version, fence) = match miss {
            Some(Lookup::Miss { version, fence }) => (Some(version), fence),
            _ => (None, None),
        };
        let fenced = match fence {
            Some(lsn) => scope.at_least(shard, Lsn(lsn)),
            None => scope.clone(),
        };
        let value = load(fenced).await.map_err(Arc::new)?;
        let bytes: Arc<[u8]> = match serde_json::to_vec(&value) {
            Ok(bytes) => bytes.into(),
            Err(err) => return Err(Arc::new(db::Error::Query(sqlx::Error::Decode(err.into())))),
        };
        if let Some(version) = version
            && redis
                .fill(key, &version, &bytes, self.ttl(value.is_none()))
                .await
        {
            count("redis", "fill");
            self.keep_in_l1(key, bytes.clone()).await;
        }
        Ok(bytes)
    }

    async fn keep_in_l1(&self, key: &Key, bytes: Arc<[u8]>) {
        if let Some(l1) = &self.l1 {
            l1.insert(key.as_str(), bytes).await;
        }
    }

    /// Runs after the write has committed: drops the entries here and in Redis, bumps their
    /// versions and fences them at the write's commit LSN (read from the shard that owns
    /// `owner_id`).
    async fn invalidate(&self, scope: &Scope, owner_id: i64, keys: Vec<Key>) {
        let Some(redis) = &self.redis else {
            return;
        };
        if let Some(l1) = &self.l1 {
            for key in &keys {
                l1.remove(key.as_str()).await;
            }
        }
        let lsn = match self
            .db
            .commit_lsn(scope, shard_of(&self.db, owner_id))
            .await
        {
            Ok(lsn) => lsn.0,
            // Without the LSN the fence cannot be raised; the version bump and delete still
            // stop fills that raced the write. Fills that start later read replicas as usual.
            Err(err) => {
                tracing::warn!(error = %err, "no commit LSN for a cache fence");
                0
            }
        };
        redis.invalidate(&keys, lsn).await;
        metrics::counter!(crate::telemetry::metrics::names::CACHE_INVALIDATIONS)
            .increment(keys.len() as u64);
    }

    /// The TTL of an entry: negative entries short, positive ones jittered by
    /// +-`ttl_jitter` so that entries filled together (after a deploy, a flush) do not expire
    /// together and stampede the database in lockstep.
    fn ttl(&self, negative: bool) -> Duration {
        if negative {
            return self.config.negative_ttl;
        }
        let base = self.config.ttl.as_secs_f64();
        let seed = self.jitter_seed.fetch_add(1, Ordering::Relaxed);
        // Uniform in [-1, 1) from a randomly keyed hash: no RNG dependency for one number.
        let unit =
            (RandomState::new().hash_one(seed) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        Duration::from_secs_f64((base * (1.0 + self.config.ttl_jitter * unit)).max(1.0))
    }
}

fn shard_of(db: &Db, id: i64) -> u16 {
    db.shards().owner(id).map_or(u16::MAX, db::Shard::id)
}

/// `None` when the bytes do not decode (an entry of another schema): treated as a miss.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<Option<T>> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(error = %err, "undecodable cache entry; treated as a miss");
            None
        }
    }
}

fn count(tier: &'static str, result: &'static str) {
    metrics::counter!(crate::telemetry::metrics::names::CACHE_REQUESTS, "tier" => tier, "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ttls_are_jittered_within_the_configured_fraction() {
        let config = crate::config::Config::default();
        let db = Arc::new(Db::connect_lazy(&config.db).expect("lazy pools"));
        let cache = Cache::new(
            &CacheConfig {
                strategy: CacheStrategy::None,
                ..config.cache.clone()
            },
            db,
        )
        .expect("cache");
        let ttls: Vec<f64> = (0..200).map(|_| cache.ttl(false).as_secs_f64()).collect();
        assert!(
            ttls.iter().all(|t| (270.0..=330.0).contains(t)),
            "within +-10 % of 300 s"
        );
        let spread = ttls.iter().cloned().fold(f64::MIN, f64::max)
            - ttls.iter().cloned().fold(f64::MAX, f64::min);
        assert!(
            spread > 30.0,
            "jitter spreads the expiries: spread {spread}"
        );
        assert_eq!(
            cache.ttl(true),
            Duration::from_secs(30),
            "negative entries are short and exact"
        );
    }
}
