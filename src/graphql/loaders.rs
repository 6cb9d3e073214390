//! DataLoaders: the posts of fifty users in one statement per shard, not fifty.
//!
//! Without them a nested query is an N+1: `users(first: 50) { posts { author } }` resolves
//! `posts` once per user and `author` once per post, each its own statement: 1 + 50 + 250.
//! A DataLoader instead collects the keys every resolver of a level asks for while they are
//! polled together (async-graphql resolves a list's items concurrently), waits a moment
//! (`delay`, `graphql.batch_window`), and loads them with one call of a batch operation
//! (`src/operations/`), which reads them through the cache: every cached key costs nothing,
//! the misses one statement per shard involved. The nested query then costs at most one
//! statement per shard per level, whatever the page size, and none when the cache is warm.
//!
//! The loaders are built for each request (see [`RequestData`](super::RequestData)): their
//! cache deduplicates within the request (the same author of twenty posts is loaded once) and
//! dies with it. A cache on the schema would be shared by every request and every user, and
//! never invalidated. Sharing across requests is the cache layer's job, with its
//! invalidation; a DataLoader has none.
//!
//! `graphql.dataloaders = false` keeps the same code path but sets the batch size to one and
//! turns the cache off: every parent then costs its own statement, which is how the tests and
//! the README show the N+1 the loaders remove.
//!
//! What the window costs shows in the `batch` entry of `Server-Timing`
//! (`src/telemetry/timing.rs`): each loader's cache notes when the batch being collected got
//! its first key (a key the cache does not have is a key the next load asks for), and the
//! load takes the time since then. With the loaders off there is no window and no entry.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_graphql::dataloader::{CacheFactory, CacheStorage, DataLoader, HashMapCache, Loader};

use super::budget::RequestBudget;
use crate::{
    AppState,
    db::Session,
    domain::{Post, User},
    operations::{posts, users},
    telemetry::Phase,
};

/// One request's loaders.
pub struct Loaders {
    users: DataLoader<UsersById, TimedCache>,
    posts: DataLoader<PostsById, TimedCache>,
    newest_posts: DataLoader<NewestPostsOfUsers, TimedCache>,
}

impl Loaders {
    /// `graphql.dataloaders = false` is the N+1 switch; `graphql.batch_window` the window.
    /// Every load is one of `budget`'s reads.
    pub fn new(app: &AppState, session: &Session, budget: &Arc<RequestBudget>) -> Self {
        let config = &app.config.graphql;
        let window = config.dataloaders.then_some(config.batch_window);
        let source = |clock| Source {
            app: app.clone(),
            session: session.clone(),
            budget: budget.clone(),
            clock,
        };
        Self {
            users: loader(|clock| UsersById(source(clock)), window),
            posts: loader(|clock| PostsById(source(clock)), window),
            newest_posts: loader(|clock| NewestPostsOfUsers(source(clock)), window),
        }
    }

    pub async fn user(&self, id: i64) -> async_graphql::Result<Option<User>> {
        self.users.load_one(id).await
    }

    /// Primes the user loader with users this request already read (a page of `users`), so
    /// `Post.author` of their own posts costs no statement at all.
    pub async fn know_users(&self, users: &[User]) {
        self.users
            .feed_many(users.iter().map(|user| (user.id, user.clone())))
            .await;
    }

    pub async fn post(&self, id: i64) -> async_graphql::Result<Option<Post>> {
        self.posts.load_one(id).await
    }

    /// The newest `first` posts of `user_id`, newest first.
    pub async fn posts_of(&self, user_id: i64, first: i64) -> async_graphql::Result<Vec<Post>> {
        let key = UserPosts { user_id, first };
        Ok(self.newest_posts.load_one(key).await?.unwrap_or_default())
    }
}

/// A loader that batches the keys asked for within `window` (no window: one key per load,
/// the N+1). The default window (`graphql.batch_window`, 20 ms) is far above
/// async-graphql's 1 ms because 1 ms split batches here: polling the `author` resolvers of
/// 2,500 posts takes longer than that (more so in a debug build on a busy 2-core machine),
/// and the late ones started a second batch. Each level pays up to the window in latency for
/// its one statement per shard; `loadtest/reports/` measures the trade-off.
///
/// `source` gets the batch clock that the loader's cache starts (see [`TimedCache`]).
fn loader<T>(
    source: impl FnOnce(Arc<BatchClock>) -> T,
    window: Option<Duration>,
) -> DataLoader<T, TimedCache> {
    let clock = Arc::new(BatchClock::default());
    let loader = DataLoader::with_cache(source(clock.clone()), tokio::spawn, TimedCache(clock));
    match window {
        // No batch-size cap: a level's keys are bounded by the complexity limit already, and
        // the default cap (1,000 requested keys, duplicates included) split the authors of
        // 50 x 50 posts into three statements.
        Some(window) => loader.delay(window).max_batch_size(usize::MAX),
        None => {
            let loader = loader.max_batch_size(1);
            loader.enable_all_cache(false);
            loader
        }
    }
}

/// What every loader reads through: the operations, with the request's session.
struct Source {
    app: AppState,
    session: Session,
    /// The request's reads: every load is one.
    budget: Arc<RequestBudget>,
    /// Shared with the loader's cache, which starts it.
    clock: Arc<BatchClock>,
}

impl Source {
    /// Called as a load starts: the batch's wait goes into the request's timing.
    fn batch_loads(&self) {
        if let Some(waited) = self.clock.stop() {
            self.session.timing().record(Phase::Batch, waited);
        }
    }
}

/// When the batch a loader is collecting received its first key.
#[derive(Debug)]
struct BatchClock {
    origin: Instant,
    /// Nanoseconds from `origin` to the first key, plus one; 0 while no batch is collecting.
    first_key: AtomicU64,
}

impl Default for BatchClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            first_key: AtomicU64::new(0),
        }
    }
}

impl BatchClock {
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// A key was queued: the first one since the last load starts the clock.
    fn key_queued(&self) {
        let _ =
            self.first_key
                .compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A load starts: how long its batch collected keys, if a key was queued since the last.
    /// (A key queued between the loader taking its batch and this call goes into that batch's
    /// successor uncounted: the next load then reports nothing rather than too much.)
    fn stop(&self) -> Option<Duration> {
        match self.first_key.swap(0, Ordering::Relaxed) {
            0 => None,
            first => Some(Duration::from_nanos(self.now().saturating_sub(first))),
        }
    }
}

/// The loader's per-request cache (a `HashMapCache`), which starts the [`BatchClock`] on every
/// miss: the DataLoader asks its cache for each key under its lock, and queues the ones it
/// does not have for the next load. (With the cache off, as `graphql.dataloaders = false`
/// sets it, nothing is asked and nothing timed: each key is loaded at once.)
struct TimedCache(Arc<BatchClock>);

impl CacheFactory for TimedCache {
    fn create<K, V>(&self) -> Box<dyn CacheStorage<Key = K, Value = V>>
    where
        K: Send + Sync + Clone + Eq + Hash + 'static,
        V: Send + Sync + Clone + 'static,
    {
        Box::new(TimedStorage {
            values: HashMapCache::default().create::<K, V>(),
            clock: self.0.clone(),
        })
    }
}

struct TimedStorage<K, V> {
    values: Box<dyn CacheStorage<Key = K, Value = V>>,
    clock: Arc<BatchClock>,
}

impl<K, V> CacheStorage for TimedStorage<K, V>
where
    K: Send + Sync + Clone + Eq + Hash + 'static,
    V: Send + Sync + Clone + 'static,
{
    type Key = K;
    type Value = V;

    fn get(&mut self, key: &K) -> Option<&V> {
        let found = self.values.get(key);
        if found.is_none() {
            self.clock.key_queued();
        }
        found
    }

    fn insert(&mut self, key: Cow<'_, K>, value: Cow<'_, V>) {
        self.values.insert(key, value);
    }

    fn remove(&mut self, key: &K) {
        self.values.remove(key);
    }

    fn clear(&mut self) {
        self.values.clear();
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&'_ K, &'_ V)> + '_> {
        self.values.iter()
    }
}

struct UsersById(Source);

impl Loader<i64> for UsersById {
    type Value = User;
    type Error = async_graphql::Error;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, User>, Self::Error> {
        self.0.batch_loads();
        let Source {
            app,
            session,
            budget,
            ..
        } = &self.0;
        Ok(budget.read(users::by_ids(app, session, ids)).await?)
    }
}

struct PostsById(Source);

impl Loader<i64> for PostsById {
    type Value = Post;
    type Error = async_graphql::Error;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Post>, Self::Error> {
        self.0.batch_loads();
        let Source {
            app,
            session,
            budget,
            ..
        } = &self.0;
        Ok(budget.read(posts::by_ids(app, session, ids)).await?)
    }
}

/// The key of one user's newest posts: the page size is part of it, since `posts(first: 5)`
/// and `posts(first: 10)` of the same user are different answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct UserPosts {
    user_id: i64,
    first: i64,
}

struct NewestPostsOfUsers(Source);

impl Loader<UserPosts> for NewestPostsOfUsers {
    type Value = Vec<Post>;
    type Error = async_graphql::Error;

    /// One batch call per distinct page size (a query normally has one), each one statement
    /// per shard. Users without posts get an empty list, so the cache remembers them too.
    async fn load(&self, keys: &[UserPosts]) -> Result<HashMap<UserPosts, Vec<Post>>, Self::Error> {
        self.0.batch_loads();
        let Source {
            app,
            session,
            budget,
            ..
        } = &self.0;
        let mut by_page_size: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for key in keys {
            by_page_size.entry(key.first).or_default().push(key.user_id);
        }
        let mut found = HashMap::with_capacity(keys.len());
        for (first, user_ids) in by_page_size {
            let mut posts = budget
                .read(posts::newest_of_users(app, session, &user_ids, first))
                .await?;
            for user_id in user_ids {
                let key = UserPosts { user_id, first };
                found.insert(key, posts.remove(&user_id).unwrap_or_default());
            }
        }
        Ok(found)
    }
}
