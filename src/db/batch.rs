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

use super::{Db, Error, Scope, Shard, posts::post_columns, users::user_columns};
use crate::domain::{Post, User};

impl Db {
    /// Users by id: `WHERE id = ANY($1)`, one statement per shard involved. Ids that no user
    /// has (or no shard owns) are absent from the map.
    pub async fn users_by_ids(
        &self,
        scope: &Scope,
        ids: &[i64],
    ) -> Result<HashMap<i64, User>, Error> {
        let rows = try_join_all(self.by_shard(ids).map(|(shard, ids)| async move {
            sqlx::query_as::<_, User>(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = ANY($1)"
            ))
            .bind(ids)
            .fetch_all(shard.reader(scope))
            .await
        }))
        .await?;
        Ok(rows.into_iter().flatten().map(|u| (u.id, u)).collect())
    }

    /// Posts by id: `WHERE id = ANY($1)`, one statement per shard involved.
    pub async fn posts_by_ids(
        &self,
        scope: &Scope,
        ids: &[i64],
    ) -> Result<HashMap<i64, Post>, Error> {
        let rows = try_join_all(self.by_shard(ids).map(|(shard, ids)| async move {
            sqlx::query_as::<_, Post>(concat!(
                "SELECT ",
                post_columns!(),
                " FROM posts WHERE id = ANY($1)"
            ))
            .bind(ids)
            .fetch_all(shard.reader(scope))
            .await
        }))
        .await?;
        Ok(rows.into_iter().flatten().map(|p| (p.id, p)).collect())
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
        let rows = try_join_all(self.by_shard(user_ids).map(|(shard, ids)| async move {
            sqlx::query_as::<_, Post>(concat!(
                "SELECT p.* FROM unnest($1::bigint[]) AS u(id) CROSS JOIN LATERAL (SELECT ",
                post_columns!(),
                " FROM posts WHERE user_id = u.id ORDER BY id DESC LIMIT $2) p ",
                "ORDER BY p.user_id, p.id DESC"
            ))
            .bind(ids)
            .bind(per_user)
            .fetch_all(shard.reader(scope))
            .await
        }))
        .await?;
        let mut posts: HashMap<i64, Vec<Post>> = HashMap::new();
        for post in rows.into_iter().flatten() {
            posts.entry(post.user_id).or_default().push(post);
        }
        Ok(posts)
    }

    /// `ids` grouped by the shard whose range holds them, in shard order; shards that own
    /// none of them are left out (they cost nothing), and so are ids no shard owns.
    fn by_shard<'a>(&'a self, ids: &'a [i64]) -> impl Iterator<Item = (&'a Shard, Vec<i64>)> {
        self.shards.iter().filter_map(|shard| {
            let mine: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| shard.range().contains(id))
                .collect();
            (!mine.is_empty()).then_some((shard, mine))
        })
    }
}
