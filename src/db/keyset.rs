//! Cursor (keyset) pagination across shards.
//!
//! A keyset page says "the rows after this key", not "skip n rows": every shard seeks its
//! index to the key and reads only the page, so page 1,000 costs what page 1 costs (offset
//! pagination, `super::fanout`, reads and throws away everything before the offset, on every
//! shard). The price is that a client can only walk forward from a cursor, not jump to page n.
//! GraphQL's connections use these; REST v2 will too.

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;

use super::{Db, Error, Scope, fanout::merge_descending, posts::post_columns, users::user_columns};
use crate::domain::{Post, User};

/// Where a newest-first walk of posts stands: the last post seen. Posts are ordered by
/// `(created_at, id)` descending; the id breaks ties between posts of the same instant.
pub type PostKey = (DateTime<Utc>, i64);

impl Db {
    /// Up to `limit` users with `id > after`, in id order, across shards.
    ///
    /// Range sharding keeps id order: the walk visits shards in range order, skips those whose
    /// range ends before the cursor (no query), and stops as soon as the page is full. Cost:
    /// one index range scan per shard visited, usually one.
    pub async fn users_after(
        &self,
        scope: &Scope,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<User>, Error> {
        let after = after.unwrap_or(0);
        let mut users = Vec::new();
        for shard in self.shards.iter().filter(|s| *s.range().end() > after) {
            let wanted = limit - users.len() as i64;
            if wanted <= 0 {
                break;
            }
            let rows: Vec<User> = shard
                .read(scope, |db| async move {
                    sqlx::query_as(concat!(
                        "SELECT ",
                        user_columns!(),
                        " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
                    ))
                    .bind(after)
                    .bind(wanted)
                    .fetch_all(&db)
                    .await
                })
                .await?;
            users.extend(rows);
        }
        Ok(users)
    }

    /// Up to `limit` posts older than `before` (all posts when `None`), newest first, across
    /// shards.
    ///
    /// Time is not range-partitioned, so every shard is asked (concurrently) for its newest
    /// `limit` posts past the cursor, each an index scan of `(created_at DESC, id DESC)` that
    /// starts at the cursor; a k-way merge keeps the page. Cost: one statement per shard, and
    /// up to `limit` rows read per shard for `limit` kept. Unlike the offset feed, that
    /// over-read does not grow with depth, so the rows come whole in one statement instead of
    /// keys first and rows second.
    pub async fn posts_before(
        &self,
        scope: &Scope,
        before: Option<PostKey>,
        limit: i64,
    ) -> Result<Vec<Post>, Error> {
        let per_shard = try_join_all(self.shards.iter().map(|shard| {
            shard.read(scope, move |replica| async move {
                let replica = &replica;
                match before {
                    // Two statements rather than one with `$1 IS NULL OR ...`: each gets a plan
                    // that seeks the index, instead of a generic plan that must serve both cases.
                    None => {
                        sqlx::query_as::<_, Post>(concat!(
                            "SELECT ",
                            post_columns!(),
                            " FROM posts ORDER BY created_at DESC, id DESC LIMIT $1"
                        ))
                        .bind(limit)
                        .fetch_all(replica)
                        .await
                    }
                    Some((at, id)) => {
                        sqlx::query_as::<_, Post>(concat!(
                            "SELECT ",
                            post_columns!(),
                            " FROM posts WHERE (created_at, id) < ($1, $2) ",
                            "ORDER BY created_at DESC, id DESC LIMIT $3"
                        ))
                        .bind(at)
                        .bind(id)
                        .bind(limit)
                        .fetch_all(replica)
                        .await
                    }
                }
            })
        }))
        .await?;
        let mut rows: std::collections::HashMap<i64, Post> = std::collections::HashMap::new();
        let keys: Vec<Vec<PostKey>> = per_shard
            .into_iter()
            .map(|posts| {
                posts
                    .into_iter()
                    .map(|post| {
                        let key = (post.created_at, post.id);
                        rows.insert(post.id, post);
                        key
                    })
                    .collect()
            })
            .collect();
        Ok(merge_descending(keys)
            .take(usize::try_from(limit).unwrap_or(0))
            .filter_map(|(_, id)| rows.remove(&id))
            .collect())
    }
}
