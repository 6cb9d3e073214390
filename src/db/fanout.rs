//! Reads that span shards.
//!
//! Range sharding keeps id order across shards, so a list by id walks the shards in range
//! order and stops once the page is full. A newest-first feed has no such luck (time is not
//! range-partitioned), so it is a k-way merge of each shard's newest rows.

use std::{cmp::Reverse, collections::BinaryHeap};

use chrono::{DateTime, Utc};

use super::{Db, Error, Page, Scope, posts::post_columns};
use crate::domain::{Post, User};

impl Db {
    /// Users ordered by id, across shards.
    ///
    /// Cost: one query per shard visited; a shard the offset skips entirely costs an extra
    /// `count(*)` (an index-only scan), which is why `offset` is bounded.
    pub async fn list_users(&self, scope: &Scope, page: Page) -> Result<Vec<User>, Error> {
        let mut users = Vec::new();
        let mut offset = page.offset;
        for shard in self.shards.iter() {
            let wanted = page.limit - users.len() as i64;
            if wanted == 0 {
                break;
            }
            let (rows, count) = shard
                .read(scope, |db| async move {
                    let rows = super::users::select_users_page(&db, wanted, offset).await?;
                    if rows.is_empty() && offset > 0 {
                        // The offset reaches past this shard: count it to carry the rest over.
                        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
                            .fetch_one(&db)
                            .await?;
                        return Ok((rows, count));
                    }
                    Ok((rows, 0))
                })
                .await?;
            if rows.is_empty() && offset > 0 {
                offset = (offset - count).max(0);
            } else {
                offset = 0;
                users.extend(rows);
            }
        }
        Ok(users)
    }

    /// All posts, newest first (`created_at DESC, id DESC`), across shards.
    ///
    /// Each shard returns the keys of its newest `offset + limit` posts (index-only, no
    /// bodies), the keys are merged, and only the page's rows are fetched, one query per shard
    /// that contributes. Cost grows with `offset` on every shard: the reason v2 uses cursors.
    pub async fn feed(&self, scope: &Scope, page: Page) -> Result<Vec<Post>, Error> {
        let depth = page.offset + page.limit;
        let mut per_shard = Vec::with_capacity(self.shards.len());
        for shard in self.shards.iter() {
            let keys: Vec<(DateTime<Utc>, i64)> = shard
                .read(scope, |db| async move {
                    sqlx::query_as("SELECT created_at, id FROM posts ORDER BY created_at DESC, id DESC LIMIT $1")
                        .bind(depth)
                        .fetch_all(&db)
                        .await
                })
                .await?;
            per_shard.push(keys);
        }
        let page_keys: Vec<(DateTime<Utc>, i64)> = merge_descending(per_shard)
            .skip(page.offset as usize)
            .take(page.limit as usize)
            .collect();

        let mut posts = Vec::with_capacity(page_keys.len());
        for shard in self.shards.iter() {
            let ids: Vec<i64> = page_keys
                .iter()
                .map(|&(_, id)| id)
                .filter(|id| shard.range().contains(id))
                .collect();
            if ids.is_empty() {
                continue;
            }
            let ids = &ids;
            let rows: Vec<Post> = shard
                .read(scope, |db| async move {
                    sqlx::query_as(concat!(
                        "SELECT ",
                        post_columns!(),
                        " FROM posts WHERE id = ANY($1)"
                    ))
                    .bind(ids)
                    .fetch_all(&db)
                    .await
                })
                .await?;
            posts.extend(rows);
        }
        // A row deleted between the two steps is simply absent; the rest keep feed order.
        posts.sort_unstable_by_key(|p| std::cmp::Reverse((p.created_at, p.id)));
        Ok(posts)
    }
}

/// Merges lists that are each sorted descending into one descending sequence: a k-way merge
/// with a heap of each list's head, O(n log k).
pub(crate) fn merge_descending<T: Ord>(lists: Vec<Vec<T>>) -> impl Iterator<Item = T> {
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
