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

use std::collections::{BTreeMap, HashMap};

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};

use crate::{
    AppState,
    db::Session,
    domain::{Post, User},
    operations::{posts, users},
};

/// One request's loaders.
pub struct Loaders {
    users: DataLoader<UsersById, HashMapCache>,
    posts: DataLoader<PostsById, HashMapCache>,
    newest_posts: DataLoader<NewestPostsOfUsers, HashMapCache>,
}

impl Loaders {
    /// `graphql.dataloaders = false` is the N+1 switch; `graphql.batch_window` the window.
    pub fn new(app: &AppState, session: &Session) -> Self {
        let config = &app.config.graphql;
        let window = config.dataloaders.then_some(config.batch_window);
        let source = || Source {
            app: app.clone(),
            session: session.clone(),
        };
        Self {
            users: loader(UsersById(source()), window),
            posts: loader(PostsById(source()), window),
            newest_posts: loader(NewestPostsOfUsers(source()), window),
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
fn loader<T>(source: T, window: Option<std::time::Duration>) -> DataLoader<T, HashMapCache> {
    let loader = DataLoader::with_cache(source, tokio::spawn, HashMapCache::default());
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
}

struct UsersById(Source);

impl Loader<i64> for UsersById {
    type Value = User;
    type Error = async_graphql::Error;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, User>, Self::Error> {
        let Source { app, session } = &self.0;
        Ok(users::by_ids(app, session, ids).await?)
    }
}

struct PostsById(Source);

impl Loader<i64> for PostsById {
    type Value = Post;
    type Error = async_graphql::Error;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, Post>, Self::Error> {
        let Source { app, session } = &self.0;
        Ok(posts::by_ids(app, session, ids).await?)
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
        let Source { app, session } = &self.0;
        let mut by_page_size: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for key in keys {
            by_page_size.entry(key.first).or_default().push(key.user_id);
        }
        let mut found = HashMap::with_capacity(keys.len());
        for (first, user_ids) in by_page_size {
            let mut posts = posts::newest_of_users(app, session, &user_ids, first).await?;
            for user_id in user_ids {
                let key = UserPosts { user_id, first };
                found.insert(key, posts.remove(&user_id).unwrap_or_default());
            }
        }
        Ok(found)
    }
}
