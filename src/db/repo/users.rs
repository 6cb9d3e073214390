//! User rows on their shards: batched reads by id, lists in id order, row changes.
//!
//! Reads go to replicas (the shard's routing decides); a user row never carries its password
//! hash here: only the login path reads it, as [`Credentials`](crate::domain::Credentials),
//! from the directory's repository.

use std::collections::HashMap;

use sqlx::{FromRow, PgExecutor, postgres::PgRow};

use super::read_by_ids;

use crate::{
    db::{Cluster, Error, Session},
    domain::{Email, User, UserName},
};

/// The user columns every query that returns a [`User`] selects.
macro_rules! user_columns {
    () => {
        "id, email, name, tier, created_at, updated_at"
    };
}
pub(crate) use user_columns;

/// Offset pagination, already bounded by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// A page of users in id order, across shards: by offset (REST v1) or after a key (cursors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UserList {
    Offset(Page),
    After { after: i64, limit: i64 },
}

/// A partial update of a user, fields already validated (and the password already hashed).
#[derive(Debug, Default)]
pub struct UserUpdate {
    pub email: Option<Email>,
    pub name: Option<UserName>,
    pub password_hash: Option<String>,
}

/// The users repository: `db.users()`.
#[derive(Debug, Clone, Copy)]
pub struct Users<'a> {
    pub(crate) cluster: &'a Cluster,
}

impl Users<'_> {
    /// Users by id: `WHERE id = ANY($1)`, one statement per shard involved, concurrently.
    /// Ids that no user has (or no shard owns) are absent from the map.
    pub async fn by_ids(
        &self,
        session: &Session,
        ids: &[i64],
    ) -> Result<HashMap<i64, User>, Error> {
        const SQL: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = ANY($1)");
        let users: Vec<User> = read_by_ids(self.cluster, session, ids, SQL, None).await?;
        Ok(users.into_iter().map(|u| (u.id, u)).collect())
    }

    /// A page of whole user rows in id order (what a list costs with no cache).
    pub async fn list(&self, session: &Session, list: UserList) -> Result<Vec<User>, Error> {
        self.walk(session, list).await
    }

    /// The ids of a page of users in id order: what the cache keeps of a list (each user's
    /// row is its own entry). An index-only scan on each shard visited.
    pub async fn list_ids(&self, session: &Session, list: UserList) -> Result<Vec<i64>, Error> {
        let ids: Vec<UserId> = self.walk(session, list).await?;
        Ok(ids.into_iter().map(|row| row.id).collect())
    }

    /// Users in id order across shards.
    ///
    /// Range sharding keeps id order: the walk visits shards in range order and stops once
    /// the page is full. A keyset page skips the shards whose range ends before its key (no
    /// query) and costs one index range scan per shard visited, usually one. An offset page
    /// costs an extra `count(*)` (an index-only scan) on each shard the offset skips
    /// entirely, and reads and drops `offset` rows: the reason offsets are bounded and
    /// cursors are offered.
    async fn walk<T: Listed>(&self, session: &Session, list: UserList) -> Result<Vec<T>, Error> {
        let (limit, mut offset, after) = match list {
            UserList::Offset(page) => (page.limit, page.offset, 0),
            UserList::After { after, limit } => (limit, 0, after),
        };
        let mut rows = Vec::new();
        for shard in self.cluster.iter().filter(|s| *s.range().end() > after) {
            let wanted = limit - rows.len() as i64;
            if wanted <= 0 {
                break;
            }
            let (found, count) = shard
                .read(session, |db| async move {
                    let found: Vec<T> = match list {
                        UserList::Offset(_) => {
                            sqlx::query_as(T::PAGE)
                                .bind(wanted)
                                .bind(offset)
                                .fetch_all(&db)
                                .await?
                        }
                        UserList::After { .. } => {
                            sqlx::query_as(T::AFTER)
                                .bind(after)
                                .bind(wanted)
                                .fetch_all(&db)
                                .await?
                        }
                    };
                    if !found.is_empty() || offset == 0 {
                        return Ok((found, 0));
                    }
                    // The offset reaches past this shard: count it to carry the rest over.
                    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
                        .fetch_one(&db)
                        .await?;
                    Ok((found, count))
                })
                .await?;
            if found.is_empty() && offset > 0 {
                offset = (offset - count).max(0);
            } else {
                offset = 0;
                rows.extend(found);
            }
        }
        Ok(rows)
    }

    /// Changes a user row on its shard's primary; `None` when there is no such user. An email
    /// change must go through the directory's saga (`db.directory().update_user`) instead.
    pub(crate) async fn update_row(
        &self,
        session: &Session,
        id: i64,
        update: &UserUpdate,
    ) -> Result<Option<User>, Error> {
        let Some(shard) = self.cluster.owner(id) else {
            return Ok(None);
        };
        shard
            .write(session, |db| async move {
                update_user_row(&db, id, update).await
            })
            .await
    }
}

/// What a walk of users in id order reads: whole rows, or ids alone.
trait Listed: for<'r> FromRow<'r, PgRow> + Send + Unpin {
    /// `$1` limit, `$2` offset.
    const PAGE: &'static str;
    /// `$1` the key to start after, `$2` limit.
    const AFTER: &'static str;
}

impl Listed for User {
    const PAGE: &'static str = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users ORDER BY id LIMIT $1 OFFSET $2"
    );
    const AFTER: &'static str = concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
    );
}

#[derive(FromRow)]
struct UserId {
    id: i64,
}

impl Listed for UserId {
    const PAGE: &'static str = "SELECT id FROM users ORDER BY id LIMIT $1 OFFSET $2";
    const AFTER: &'static str = "SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2";
}

pub(crate) async fn select_user(
    db: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub(crate) async fn update_user_row(
    db: impl PgExecutor<'_>,
    id: i64,
    update: &UserUpdate,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE users SET email = COALESCE($2, email), name = COALESCE($3, name), ",
        "password_hash = COALESCE($4, password_hash), updated_at = now() ",
        "WHERE id = $1 RETURNING ",
        user_columns!()
    ))
    .bind(id)
    .bind(update.email.as_ref().map(Email::as_str))
    .bind(update.name.as_ref().map(UserName::as_str))
    .bind(update.password_hash.as_deref())
    .fetch_optional(db)
    .await
}
