//! Batched reads: many keys, one statement per shard involved.
//!
//! These serve the GraphQL DataLoaders (`src/graphql/loaders.rs`). A resolver asks for one
//! user or one user's posts; the loader collects the keys that every resolver of the same
//! level asked for and calls one of these once. Keys are grouped by the shard that owns them
//! (the id says which: no lookup), each shard gets one statement, and the shards run
//! concurrently, so a level of a query costs one round trip per shard involved, whatever the
//! number of parents. Like every read, they go to a replica of each shard (`Shard::reader`).

use std::collections::HashMap;

use futures_util::future::try_join_all;
use sqlx::{FromRow, postgres::PgRow};

use super::{Db, Error, Scope, posts::post_columns, users::user_columns};
use crate::domain::{Post, User};

impl Db {
    /// Users by id: `WHERE id = ANY($1)`, one statement per shard involved. Ids that no user
    /// has (or no shard owns) are absent from the map.
    pub async fn users_by_ids(
        &self,
        scope: &Scope,
        ids: &[i64],
    ) -> Result<HashMap<i64, User>, Error> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = ANY($1)");
        let users: Vec<User> = self.on_owning_shards(scope, ids, SQL, None).await?;
        Ok(users.into_iter().map(|u| (u.id, u)).collect())
    }

    /// Posts by id: `WHERE id = ANY($1)`, one statement per shard involved.
    pub async fn posts_by_ids(
        &self,
        scope: &Scope,
        ids: &[i64],
    ) -> Result<HashMap<i64, Post>, Error> {
        const SQL: &str = concat!("SELECT ", post_columns!(), " FROM posts WHERE id = ANY($1)");
        let posts: Vec<Post> = self.on_owning_shards(scope, ids, SQL, None).await?;
        Ok(posts.into_iter().map(|p| (p.id, p)).collect())
    }

    /// The newest `per_user` posts of each user, newest first: one statement per shard
    /// involved. Users without posts (or that do not exist) are absent from the map.
    ///
    /// A top-k per group. The statement unnests the ids and runs, for each, a `LATERAL`
    /// subquery `WHERE user_id = u.id ORDER BY id DESC LIMIT k`: one short range scan of the
    /// `(user_id, id DESC)` index per user, reading exactly k rows each. A window function
    /// (`row_number() OVER (PARTITION BY user_id ORDER BY id DESC) <= k`) would say the same
    /// but read every post of those users before filtering: fine for 5 posts each, not for a
    /// user with 100,000.
    pub async fn posts_of_users(
        &self,
        scope: &Scope,
        user_ids: &[i64],
        per_user: i64,
    ) -> Result<HashMap<i64, Vec<Post>>, Error> {
        const SQL: &str = concat!(
            "SELECT p.* FROM unnest($1::bigint[]) AS u(id) CROSS JOIN LATERAL (SELECT ",
            post_columns!(),
            " FROM posts WHERE user_id = u.id ORDER BY id DESC LIMIT $2) p ",
            "ORDER BY p.user_id, p.id DESC"
        );
        let rows: Vec<Post> = self
            .on_owning_shards(scope, user_ids, SQL, Some(per_user))
            .await?;
        let mut posts: HashMap<i64, Vec<Post>> = HashMap::new();
        for post in rows {
            posts.entry(post.user_id).or_default().push(post);
        }
        Ok(posts)
    }

    /// Runs `sql` on a replica of each shard that owns some of `ids`, concurrently, with that
    /// shard's ids as `$1` (and `limit`, if any, as `$2`); returns every shard's rows. Shards
    /// that own none of the ids cost nothing, and neither do ids no shard owns.
    async fn on_owning_shards<T>(
        &self,
        scope: &Scope,
        ids: &[i64],
        sql: &'static str,
        limit: Option<i64>,
    ) -> Result<Vec<T>, Error>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let per_shard = self.shards.iter().filter_map(|shard| {
            let mine: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| shard.range().contains(id))
                .collect();
            (!mine.is_empty()).then_some(async move {
                let mine = &mine;
                shard
                    .read(scope, |db| async move {
                        let mut query = sqlx::query_as::<_, T>(sql).bind(mine);
                        if let Some(limit) = limit {
                            query = query.bind(limit);
                        }
                        query.fetch_all(&db).await
                    })
                    .await
            })
        });
        let rows = try_join_all(per_shard).await?;
        Ok(rows.into_iter().flatten().collect())
    }
}
