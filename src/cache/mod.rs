//! The cache layer: between the operations and the data layer, caching data (a user, a post,
//! a user's first page of posts, the ids of a page of the user list), never HTTP responses,
//! so REST and GraphQL share entries and each renders them for its viewer.
//!
//! Every read takes one path ([`read`]), for one key or many: the L1, then one Redis round
//! trip for every key, then one single-flighted database read per shard for the misses,
//! filled back under the same fences by a background [`filler`] the request does not wait
//! for. REST's single reads and lists and GraphQL's
//! DataLoaders all read through it, so the strategy matters to every transport.
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
//! the older value wins until its TTL; invalidating (deleting) is order-independent. See
//! `docs/decisions/0002-fenced-cache-fills.md`.
//!
//! Every miss is [single-flighted](single_flight), fills are fenced against stale reads (see
//! [`redis_tier`]), TTLs are jittered, "not found" is cached briefly, and Redis trouble turns
//! into database reads (`bypass`), never into errors.

pub mod audit;
mod filler;
pub mod keys;
mod l1;
mod read;
pub mod redis_tier;
mod single_flight;

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::{
    config::{AuditConfig, CacheConfig, CacheStrategy},
    db::{self, Db, Page, Session, UserList},
    domain::{Post, User},
    telemetry::names,
    traffic::BreakerState,
};
use audit::{Auditor, Recheck, Source};
use filler::Filler;
use keys::Key;
use l1::L1;
use redis_tier::{Invalidation, RedisTier};
use single_flight::SingleFlight;

/// A read that failed: the database's error, shared by every request that waited on the
/// same load.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct Error(pub Arc<db::Error>);

/// What a flight shares with its followers: the JSON of the value (`null` for "none"), or
/// the load's error.
type Loaded = Result<Arc<[u8]>, Arc<db::Error>>;

impl From<db::Error> for Error {
    fn from(err: db::Error) -> Self {
        Self(Arc::new(err))
    }
}

impl From<Error> for crate::error::Error {
    fn from(err: Error) -> Self {
        crate::error::Error::from(err.0.as_ref())
    }
}

#[derive(Debug)]
pub struct Cache {
    config: CacheConfig,
    db: Arc<Db>,
    redis: Option<Arc<RedisTier>>,
    l1: Option<L1>,
    /// Fills after misses, sent in the background (see [`filler`]); with `redis`.
    filler: Option<Filler>,
    flights: Arc<SingleFlight<Loaded>>,
    jitter_seed: AtomicU64,
    /// Re-reads a sample of served values on the primary (see [`audit`]); `None` when off.
    auditor: Option<Auditor>,
}

impl Cache {
    pub fn new(config: &CacheConfig, db: Arc<Db>) -> anyhow::Result<Self> {
        let redis = match config.strategy {
            CacheStrategy::None => None,
            CacheStrategy::CacheAside | CacheStrategy::TwoTier => {
                Some(Arc::new(RedisTier::new(config)?))
            }
        };
        let l1 = (config.strategy == CacheStrategy::TwoTier).then(|| L1::new(config));
        let filler = redis
            .as_ref()
            .map(|redis| Filler::new(redis.clone(), l1.clone()));
        Ok(Self {
            config: config.clone(),
            db,
            redis,
            l1,
            filler,
            flights: Arc::default(),
            jitter_seed: AtomicU64::new(0),
            auditor: None,
        })
    }

    /// This cache with the staleness auditor of `config` (off at a sample rate of 0).
    pub fn audited(self, config: &AuditConfig) -> Self {
        let auditor = Auditor::new(config, self.config.strategy);
        Self { auditor, ..self }
    }

    /// The staleness auditor, when on.
    #[doc(hidden)]
    pub fn auditor(&self) -> Option<&Auditor> {
        self.auditor.as_ref()
    }

    /// Sets `in_process_entries` for the maps the cache keeps in memory (sampled at scrape):
    /// loads in flight, the L1's entries, invalidations waiting for Redis.
    pub fn report_gauges(&self) {
        use crate::telemetry::metrics::report_entries;
        report_entries("single_flight", self.flights.in_flight() as u64);
        if let Some(l1) = &self.l1 {
            report_entries("l1", l1.entry_count());
            metrics::gauge!(names::CACHE_L1_BYTES).set(l1.weighted_bytes() as f64);
        }
        if let Some(redis) = &self.redis {
            report_entries(
                "cache_pending_invalidations",
                redis.pending_invalidations() as u64,
            );
        }
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
        self.redis.as_ref().map(|redis| redis.breaker_state())
    }

    /// Invalidations waiting for Redis to come back.
    pub fn pending_invalidations(&self) -> usize {
        self.redis
            .as_ref()
            .map_or(0, |redis| redis.pending_invalidations())
    }

    pub async fn user(&self, session: &Session, id: i64) -> Result<Option<User>, Error> {
        Ok(self.users(session, &[id]).await?.remove(&id))
    }

    /// Users by id, each its own entry: hits cost no SQL, the misses of all of them one
    /// statement per shard. Ids with no user are absent (and cached as such, briefly).
    pub async fn users(&self, session: &Session, ids: &[i64]) -> Result<HashMap<i64, User>, Error> {
        let db = &self.db;
        self.read(
            session,
            ids,
            |id| self.key(Key::user, id),
            |session, ids| async move { db.users().by_ids(&session, &ids).await },
            || {
                Recheck::new(
                    &self.db,
                    |db, session, ids| async move { db.users().by_ids(&session, &ids).await },
                    |user| Some(user.updated_at),
                )
            },
        )
        .await
    }

    pub async fn post(&self, session: &Session, id: i64) -> Result<Option<Post>, Error> {
        Ok(self.posts(session, &[id]).await?.remove(&id))
    }

    /// Posts by id, each its own entry (see [`Cache::users`]).
    pub async fn posts(&self, session: &Session, ids: &[i64]) -> Result<HashMap<i64, Post>, Error> {
        let db = &self.db;
        self.read(
            session,
            ids,
            |id| self.key(Key::post, id),
            |session, ids| async move { db.posts().by_ids(&session, &ids).await },
            || {
                Recheck::new(
                    &self.db,
                    |db, session, ids| async move { db.posts().by_ids(&session, &ids).await },
                    |post| Some(post.updated_at),
                )
            },
        )
        .await
    }

    /// A user's posts, newest first; `None` when the user does not exist. Pages within the
    /// first `cache.page_size` posts come from one cached entry per user; deeper pages go to
    /// the database.
    pub async fn user_posts(
        &self,
        session: &Session,
        user_id: i64,
        page: Page,
    ) -> Result<Option<Vec<Post>>, Error> {
        if self.redis.is_none() || page.offset + page.limit > i64::from(self.config.page_size) {
            self.record_bypass(session);
            let db = &self.db;
            return self
                .uncached(
                    session,
                    user_id,
                    |session| async move { db.posts().of_user(&session, user_id, page).await },
                    || {
                        Recheck::new(
                            &self.db,
                            move |db, session, ids| async move {
                                let mut pages = HashMap::with_capacity(ids.len());
                                for id in ids {
                                    let posts = db.posts().of_user(&session, id, page).await?;
                                    pages.extend(posts.map(|posts| (id, posts)));
                                }
                                Ok(pages)
                            },
                            |posts| posts.iter().map(|post| post.updated_at).max(),
                        )
                    },
                )
                .await;
        }
        let mut pages = self.first_pages(session, &[user_id]).await?;
        Ok(pages.remove(&user_id).map(|posts| {
            let skip = usize::try_from(page.offset).unwrap_or(0);
            let take = usize::try_from(page.limit).unwrap_or(0);
            posts.into_iter().skip(skip).take(take).collect()
        }))
    }

    /// The newest `first` posts of each user, newest first (a user without posts maps to an
    /// empty list; one that does not exist is absent). Within the cached page size, from each
    /// user's first-page entry; past it (or with no cache), one statement per shard.
    pub async fn newest_posts(
        &self,
        session: &Session,
        user_ids: &[i64],
        first: i64,
    ) -> Result<HashMap<i64, Vec<Post>>, Error> {
        if self.redis.is_none() || first > i64::from(self.config.page_size) {
            self.record_bypass(session);
            return Ok(self
                .db
                .posts()
                .first_pages(session, user_ids, first)
                .await?);
        }
        let mut pages = self.first_pages(session, user_ids).await?;
        let first = usize::try_from(first).unwrap_or(0);
        for posts in pages.values_mut() {
            posts.truncate(first);
        }
        Ok(pages)
    }

    async fn first_pages(
        &self,
        session: &Session,
        user_ids: &[i64],
    ) -> Result<HashMap<i64, Vec<Post>>, Error> {
        let (db, per_user) = (&self.db, i64::from(self.config.page_size));
        self.read(
            session,
            user_ids,
            |id| self.key(Key::posts_page, id),
            |session, ids| async move { db.posts().first_pages(&session, &ids, per_user).await },
            || {
                Recheck::new(
                    &self.db,
                    move |db, session, ids| async move {
                        db.posts().first_pages(&session, &ids, per_user).await
                    },
                    // A page's newest change: a post created or edited on it.
                    |posts| posts.iter().map(|post| post.updated_at).max(),
                )
            },
        )
        .await
    }

    /// A page of the user list, in id order. The cache keeps the page's ids (one entry per
    /// page shape, in the `{users}` family that registrations and deletions retire) and each
    /// user's own entry, so a warm page costs no SQL and a renamed user is not stale in any
    /// page that holds them.
    pub async fn user_list(&self, session: &Session, list: UserList) -> Result<Vec<User>, Error> {
        if self.redis.is_none() {
            return Ok(self.db.users().list(session, list).await?);
        }
        let shape = match list {
            UserList::Offset(page) => format!("o{}l{}", page.offset, page.limit),
            UserList::After { after, limit } => format!("a{after}l{limit}"),
        };
        let key = Key::users_page(&self.config.key_prefix, &shape, self.shard_ids());
        let db = &self.db;
        let mut ids = self
            .read(
                session,
                &[list],
                |_| Some(key.clone()),
                |session, lists| async move { list_ids(db, session, lists).await },
                || {
                    Recheck::new(
                        &self.db,
                        |db, session, lists| async move { list_ids(&db, session, lists).await },
                        // A page of ids carries no version: a stale one has no age.
                        |_| None,
                    )
                },
            )
            .await?;
        let ids = ids.remove(&list).unwrap_or_default();
        let mut users = self.users(session, &ids).await?;
        // A user deleted since the page was cached is absent: the page is one short, never
        // wrong (the deletion retired the page too; this only happens within the race).
        Ok(ids.iter().filter_map(|id| users.remove(id)).collect())
    }

    /// After a user registered: their entry and posts page (a cached "not found" for the new
    /// id), and every page of the user list.
    pub async fn user_created(&self, session: &Session, id: i64) {
        let keys = [self.key(Key::user, id), self.key(Key::posts_page, id)];
        let keys = keys.into_iter().flatten().chain([self.users_family()]);
        self.invalidate(session, id, keys.collect()).await;
    }

    /// After a user's own fields changed: their entry (lists hold ids only).
    pub async fn user_changed(&self, session: &Session, id: i64) {
        let keys = self.key(Key::user, id).into_iter().collect();
        self.invalidate(session, id, keys).await;
    }

    /// After a user and their posts were deleted.
    pub async fn user_deleted(&self, session: &Session, id: i64, posts: &[i64]) {
        let rows = [self.key(Key::user, id), self.key(Key::posts_page, id)];
        let posts = posts.iter().map(|&post| self.key(Key::post, post));
        let keys = rows.into_iter().chain(posts).flatten();
        let keys = keys.chain([self.users_family()]).collect();
        self.invalidate(session, id, keys).await;
    }

    /// After a post was created, changed or deleted: the post and its author's page.
    pub async fn post_written(&self, session: &Session, post: i64, author: i64) {
        let keys = [self.key(Key::post, post), self.key(Key::posts_page, author)];
        let keys = keys.into_iter().flatten().collect();
        self.invalidate(session, author, keys).await;
    }

    /// A read of `id`'s row (or rows) that no cache serves, through `load`; when the auditor
    /// samples it and a replica answered, handed to the auditor like a cached read.
    async fn uncached<T, F, Fut>(
        &self,
        session: &Session,
        id: i64,
        load: F,
        recheck: impl FnOnce() -> Recheck<i64, T>,
    ) -> Result<Option<T>, Error>
    where
        T: serde::Serialize + Clone + Send + 'static,
        F: FnOnce(Session) -> Fut,
        Fut: Future<Output = Result<Option<T>, db::Error>>,
    {
        let Some(auditor) = self.auditor.as_ref().filter(|auditor| auditor.sampled()) else {
            return Ok(load(session.clone()).await?);
        };
        let recording = session.recording();
        let value = load(recording.clone()).await?;
        let shard = self.db.cluster().owner(id).map(db::Shard::id);
        if let Some(source) = shard.and_then(|shard| Source::loaded(&recording, shard)) {
            let token = !session.required_token().is_empty();
            auditor.submit(recheck(), token, vec![(id, source, value.clone())]);
        }
        Ok(value)
    }

    /// The entry of row `id`, on its owner's shard; `None` for an id no shard owns: nothing
    /// can exist there, so it costs neither a lookup nor a query, and nothing is cached.
    fn key(&self, key: fn(&str, i64, u16) -> Key, id: i64) -> Option<Key> {
        let shard = self.db.cluster().owner(id)?.id();
        Some(key(&self.config.key_prefix, id, shard))
    }

    fn users_family(&self) -> Key {
        Key::users_family(&self.config.key_prefix, self.shard_ids())
    }

    fn shard_ids(&self) -> Vec<u16> {
        self.db.cluster().iter().map(db::Shard::id).collect()
    }

    /// A read the cache does not serve (with a cache configured): shown as `bypass`.
    fn record_bypass(&self, session: &Session) {
        if self.redis.is_some()
            && let Some(trace) = session.trace()
        {
            trace.cache_outcome("bypass");
        }
    }

    /// Runs after the write has committed: drops the entries here and in Redis, bumps their
    /// versions and fences them at the write's commit LSN (read from the shard that owns
    /// `owner_id`, which is the shard the write went to).
    ///
    /// The work runs in a task of its own, which the request only waits for: once the write
    /// has committed, its invalidation must happen even if the request does not live to see
    /// it (the client hung up, the request timed out). Inside the request's future, a drop at
    /// that moment would leave the old row (a deleted account's profile, say) served until
    /// its TTL. What is left is the commit's own round trip: a request dropped while its
    /// COMMIT is in flight may commit without invalidating; the TTL bounds that window.
    async fn invalidate(&self, session: &Session, owner_id: i64, keys: Vec<Key>) {
        let Some(redis) = &self.redis else {
            return;
        };
        let work = Invalidator {
            db: self.db.clone(),
            redis: redis.clone(),
            l1: self.l1.clone(),
            session: session.clone(),
        };
        let task = tokio::spawn(work.run(owner_id, keys).in_current_span());
        if let Err(err) = task.await {
            // Only a panic gets here (nothing aborts the task); the write itself is done.
            tracing::error!(error = %err, "cache invalidation task failed");
        }
    }
}

/// What an invalidation needs, owned, so that it can outlive the request that started it.
struct Invalidator {
    db: Arc<Db>,
    redis: Arc<RedisTier>,
    l1: Option<L1>,
    session: Session,
}

impl Invalidator {
    async fn run(self, owner_id: i64, keys: Vec<Key>) {
        crate::db::fail_point!(self.db, "cache:invalidate");
        let lines: Vec<String> = keys.iter().map(l1::line).collect();
        apply_to_l1(self.l1.as_ref(), &lines).await;
        let shard = self
            .db
            .cluster()
            .owner(owner_id)
            .map_or(u16::MAX, db::Shard::id);
        let lsn = match self.db.cluster().commit_lsn(&self.session, shard).await {
            Ok(lsn) => lsn.0,
            // Without the LSN the fence cannot be raised; the version bump and delete still
            // stop fills that raced the write. Fills that start later read replicas as usual.
            Err(err) => {
                tracing::warn!(error = %err, "no commit LSN for a cache fence");
                0
            }
        };
        metrics::counter!(names::CACHE_INVALIDATIONS).increment(keys.len() as u64);
        self.redis
            .invalidate(
                self.session.timing(),
                Invalidation {
                    keys,
                    shard,
                    lsn,
                    message: lines.join("\n"),
                },
            )
            .await;
        // Once more: a read that looked Redis up after the first removal but before the
        // version bump may have put the old value back since (see `l1.rs`).
        apply_to_l1(self.l1.as_ref(), &lines).await;
    }
}

async fn apply_to_l1(l1: Option<&L1>, lines: &[String]) {
    if let Some(l1) = l1 {
        for line in lines {
            l1.apply(line).await;
        }
    }
}

impl Cache {
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

/// The ids of each page of the user list in `lists`.
async fn list_ids(
    db: &Db,
    session: Session,
    lists: Vec<UserList>,
) -> Result<HashMap<UserList, Vec<i64>>, db::Error> {
    let mut pages = HashMap::with_capacity(lists.len());
    for list in lists {
        pages.insert(list, db.users().list_ids(&session, list).await?);
    }
    Ok(pages)
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
