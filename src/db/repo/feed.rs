//! The newest-first feed across shards.
//!
//! Time is not range-partitioned, so every shard holds some of the newest posts: a feed page
//! is a k-way merge of each shard's newest rows, every shard asked concurrently (the page
//! costs the slowest shard's latency, not the sum).

use std::{cmp::Reverse, collections::BinaryHeap};

use chrono::{DateTime, Utc};
use futures_util::future::try_join_all;

use super::users::Page;
use crate::{
    db::{Cluster, Error, Session},
    domain::Post,
};

/// Where a newest-first walk of posts stands: the last post seen. Posts are ordered by
/// `(created_at, id)` descending; the id breaks ties between posts of the same instant.
pub type PostKey = (DateTime<Utc>, i64);

/// The feed repository: `db.feed()`.
#[derive(Debug, Clone, Copy)]
pub struct Feed<'a> {
    pub(crate) cluster: &'a Cluster,
}

impl Feed<'_> {
    /// The ids of an offset page of the feed, newest first.
    ///
    /// Each shard returns the keys of its newest `offset + limit` posts (an index-only scan
    /// of `(created_at DESC, id DESC)`, no bodies), the keys are merged, and only the page's
    /// ids are kept: the caller reads those rows by id (through the cache). Cost grows with
    /// `offset` on every shard: the reason offsets are bounded and cursors offered.
    pub async fn page_ids(&self, session: &Session, page: Page) -> Result<Vec<i64>, Error> {
        let depth = page.offset + page.limit;
        let per_shard = try_join_all(self.cluster.iter().map(|shard| {
            shard.read(session, move |mut db| async move {
                sqlx::query!(
                    "SELECT created_at, id FROM posts ORDER BY created_at DESC, id DESC LIMIT $1",
                    depth
                )
                .map(|key| (key.created_at, key.id))
                .fetch_all(&mut *db)
                .await
            })
        }))
        .await?;
        Ok(merge_descending(per_shard)
            .skip(usize::try_from(page.offset).unwrap_or(0))
            .take(usize::try_from(page.limit).unwrap_or(0))
            .map(|(_, id)| id)
            .collect())
    }

    /// Up to `limit` posts older than `before` (all posts when `None`), newest first.
    ///
    /// Every shard is asked (concurrently) for its newest `limit` posts past the cursor, each
    /// an index scan of `(created_at DESC, id DESC)` that starts at the cursor; a k-way merge
    /// keeps the page. Cost: one statement per shard, and up to `limit` rows read per shard
    /// for `limit` kept. Unlike the offset feed, that over-read does not grow with depth, so
    /// the rows come whole in one statement instead of keys first and rows second.
    pub async fn before(
        &self,
        session: &Session,
        before: Option<PostKey>,
        limit: i64,
    ) -> Result<Vec<Post>, Error> {
        let per_shard = try_join_all(self.cluster.iter().map(|shard| {
            shard.read(session, move |mut replica| async move {
                let replica = &mut *replica;
                match before {
                    // Two statements rather than one with `$1 IS NULL OR ...`: each gets a plan
                    // that seeks the index, instead of a generic plan that must serve both cases.
                    None => {
                        sqlx::query_as!(
                            Post,
                            "SELECT id, user_id, title, body, created_at, updated_at \
                             FROM posts ORDER BY created_at DESC, id DESC LIMIT $1",
                            limit
                        )
                        .fetch_all(replica)
                        .await
                    }
                    Some((at, id)) => {
                        sqlx::query_as!(
                            Post,
                            "SELECT id, user_id, title, body, created_at, updated_at \
                             FROM posts WHERE (created_at, id) < ($1, $2) \
                             ORDER BY created_at DESC, id DESC LIMIT $3",
                            at,
                            id,
                            limit
                        )
                        .fetch_all(replica)
                        .await
                    }
                }
            })
        }))
        .await?;
        let newest_first = per_shard
            .into_iter()
            .map(|posts| posts.into_iter().map(Newest).collect())
            .collect();
        Ok(merge_descending(newest_first)
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|Newest(post)| post)
            .collect())
    }
}

/// A post ordered by its feed key, `(created_at, id)`.
struct Newest(Post);

impl Newest {
    fn key(&self) -> PostKey {
        (self.0.created_at, self.0.id)
    }
}

impl PartialEq for Newest {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Newest {}
impl PartialOrd for Newest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Newest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// Merges lists that are each sorted descending into one descending sequence: a k-way merge
/// with a heap of each list's head, O(n log k).
fn merge_descending<T: Ord>(lists: Vec<Vec<T>>) -> impl Iterator<Item = T> {
    let mut heads = BinaryHeap::new();
    let mut iters: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    for (i, iter) in iters.iter_mut().enumerate() {
        if let Some(head) = iter.next() {
            heads.push((head, Reverse(i)));
        }
    }
    std::iter::from_fn(move || {
        let (item, Reverse(i)) = heads.pop()?;
        if let Some(next) = iters.get_mut(i).and_then(Iterator::next) {
            heads.push((next, Reverse(i)));
        }
        Some(item)
    })
}

#[cfg(test)]
mod tests {
    use super::merge_descending;

    #[test]
    fn merging_keeps_descending_order_and_every_item() {
        let merged: Vec<i32> =
            merge_descending(vec![vec![9, 6, 2], vec![], vec![8, 7, 1, 0], vec![5]]).collect();
        assert_eq!(merged, [9, 8, 7, 6, 5, 2, 1, 0]);
    }
}
