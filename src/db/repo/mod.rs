//! Repositories, one per resource: what each query means, not where it runs (the cluster's
//! routing decides that). Reached through [`Db`](super::Db): `db.users()`, `db.posts()`,
//! `db.feed()`, `db.directory()`, `db.api_keys()`.
//!
//! The directory's repository is the only one that touches two databases: registering,
//! re-emailing and deleting a user go through its saga, which calls the users repository for
//! the row changes (never the other way round).

pub(crate) mod api_keys;
pub(crate) mod directory;
pub(crate) mod feed;
pub(crate) mod posts;
pub(crate) mod users;

use std::collections::HashMap;

use super::{Cluster, Conn, Error, Session};

/// Runs `query` on a replica of each shard that owns some of `ids`, concurrently, with that
/// shard's ids; returns every shard's rows: a batch read costs one statement per shard
/// involved, whatever the number of ids.
///
/// The statement is the caller's closure (`|mut db, ids| async move { sqlx::query_as!(..) }`)
/// rather than SQL text handed in, so that it is a checked macro at its call site: the
/// compiler, not a test, finds a column the struct lacks. `query` may run twice (replica,
/// then primary, see [`Shard::read`](super::cluster::Shard::read)).
async fn read_by_ids<T, Q, Fut>(
    cluster: &Cluster,
    session: &Session,
    ids: &[i64],
    query: Q,
) -> Result<Vec<T>, Error>
where
    Q: Fn(Conn, Vec<i64>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, sqlx::Error>>,
{
    let query = &query;
    cluster
        .on_owning_shards(ids, |shard, mine| async move {
            shard.read(session, |db| query(db, mine.clone())).await
        })
        .await
}

/// Rows by id, keyed by `id_of`: `one` (the primary-key statement) for a single id, `many`
/// (`= ANY`, through [`read_by_ids`]) for several. A single id is what every single read and
/// every one-key cache miss asks for, and the server runs `WHERE id = $1` more cheaply than
/// `= ANY` over a one-element array.
async fn rows_by_id<T, O, OFut, M, MFut>(
    cluster: &Cluster,
    session: &Session,
    ids: &[i64],
    id_of: fn(&T) -> i64,
    one: O,
    many: M,
) -> Result<HashMap<i64, T>, Error>
where
    O: Fn(Conn, i64) -> OFut,
    OFut: Future<Output = Result<Option<T>, sqlx::Error>>,
    M: Fn(Conn, Vec<i64>) -> MFut,
    MFut: Future<Output = Result<Vec<T>, sqlx::Error>>,
{
    let rows: Vec<T> = match ids {
        &[id] => match cluster.owner(id) {
            Some(shard) => shard
                .read(session, |db| one(db, id))
                .await?
                .into_iter()
                .collect(),
            None => Vec::new(),
        },
        _ => read_by_ids(cluster, session, ids, many).await?,
    };
    Ok(rows.into_iter().map(|row| (id_of(&row), row)).collect())
}
