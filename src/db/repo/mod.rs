//! Repositories, one per resource: what each query means, not where it runs (the cluster's
//! routing decides that). Reached through [`Db`](super::Db): `db.users()`, `db.posts()`,
//! `db.feed()`, `db.directory()`.
//!
//! The directory's repository is the only one that touches two databases: registering,
//! re-emailing and deleting a user go through its saga, which calls the users repository for
//! the row changes (never the other way round).

pub(crate) mod directory;
pub(crate) mod feed;
pub(crate) mod posts;
pub(crate) mod users;

use sqlx::{FromRow, postgres::PgRow};

use super::{Cluster, Error, Session};

/// Runs `sql` on a replica of each shard that owns some of `ids`, concurrently, with that
/// shard's ids as `$1` (and `limit`, if any, as `$2`); returns every shard's rows: a batch
/// read costs one statement per shard involved, whatever the number of ids.
async fn read_by_ids<T>(
    cluster: &Cluster,
    session: &Session,
    ids: &[i64],
    sql: &'static str,
    limit: Option<i64>,
) -> Result<Vec<T>, Error>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    cluster
        .on_owning_shards(ids, |shard, mine| async move {
            let mine = &mine;
            shard
                .read(session, |db| async move {
                    let mut query = sqlx::query_as::<_, T>(sql).bind(mine);
                    if let Some(limit) = limit {
                        query = query.bind(limit);
                    }
                    query.fetch_all(&db).await
                })
                .await
        })
        .await
}
