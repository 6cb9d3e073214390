//! User rows on their shards: batched reads by id, lists in id order, row changes.
//!
//! Reads go to replicas (the shard's routing decides); a user row never carries its password
//! hash here: only the login path reads it, as [`Credentials`](crate::domain::Credentials),
//! from the directory's repository.

use std::collections::HashMap;

use sqlx::PgExecutor;

use super::rows_by_id;

use crate::{
    db::{Cluster, Conn, Error, Session, cluster::instrument::Op},
    domain::{Email, Tier, User, UserName},
};

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
        rows_by_id(
            self.cluster,
            session,
            ids,
            |user: &User| user.id,
            |mut db, id| async move { select_user(&mut *db, id).await },
            |mut db, ids| async move {
                sqlx::query_as!(
                    User,
                    "SELECT id, email, name, tier AS \"tier: Tier\", created_at, updated_at \
                     FROM users WHERE id = ANY($1)",
                    &ids[..]
                )
                .fetch_all(&mut *db)
                .await
            },
        )
        .await
    }

    /// The user's credentials version, from the primary (`None`: no such user).
    pub async fn credentials_version(
        &self,
        session: &Session,
        id: i64,
    ) -> Result<Option<i32>, Error> {
        let Some(shard) = self.cluster.owner(id) else {
            return Ok(None);
        };
        shard
            .read_primary_as(session, Op::Credentials, |mut db| async move {
                sqlx::query_scalar!("SELECT credentials_version FROM users WHERE id = $1", id)
                    .fetch_optional(&mut *db)
                    .await
            })
            .await
    }

    /// A page of whole user rows in id order (what a list costs with no cache).
    pub async fn list(&self, session: &Session, list: UserList) -> Result<Vec<User>, Error> {
        self.walk(session, list, |mut db, step| async move {
            match step {
                Step::Offset { limit, offset } => {
                    sqlx::query_as!(
                        User,
                        "SELECT id, email, name, tier AS \"tier: Tier\", created_at, updated_at \
                         FROM users ORDER BY id LIMIT $1 OFFSET $2",
                        limit,
                        offset
                    )
                    .fetch_all(&mut *db)
                    .await
                }
                Step::After { after, limit } => {
                    sqlx::query_as!(
                        User,
                        "SELECT id, email, name, tier AS \"tier: Tier\", created_at, updated_at \
                         FROM users WHERE id > $1 ORDER BY id LIMIT $2",
                        after,
                        limit
                    )
                    .fetch_all(&mut *db)
                    .await
                }
            }
        })
        .await
    }

    /// The ids of a page of users in id order: what the cache keeps of a list (each user's
    /// row is its own entry). An index-only scan on each shard visited.
    pub async fn list_ids(&self, session: &Session, list: UserList) -> Result<Vec<i64>, Error> {
        self.walk(session, list, |mut db, step| async move {
            match step {
                Step::Offset { limit, offset } => {
                    sqlx::query_scalar!(
                        "SELECT id FROM users ORDER BY id LIMIT $1 OFFSET $2",
                        limit,
                        offset
                    )
                    .fetch_all(&mut *db)
                    .await
                }
                Step::After { after, limit } => {
                    sqlx::query_scalar!(
                        "SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2",
                        after,
                        limit
                    )
                    .fetch_all(&mut *db)
                    .await
                }
            }
        })
        .await
    }

    /// Users in id order across shards.
    ///
    /// Range sharding keeps id order: the walk visits shards in range order and stops once
    /// the page is full. A keyset page skips the shards whose range ends before its key (no
    /// query) and costs one index range scan per shard visited, usually one. An offset page
    /// costs an extra `count(*)` (an index-only scan) on each shard the offset skips
    /// entirely, and reads and drops `offset` rows: the reason offsets are bounded and
    /// cursors are offered.
    ///
    /// `query` reads one shard's part of the page (a [`Step`]). It is a closure, not SQL
    /// text, so that each caller's statement is a checked macro where it is written.
    async fn walk<T, Q, Fut>(
        &self,
        session: &Session,
        list: UserList,
        query: Q,
    ) -> Result<Vec<T>, Error>
    where
        Q: Fn(Conn, Step) -> Fut,
        Fut: Future<Output = Result<Vec<T>, sqlx::Error>>,
    {
        let query = &query;
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
            let step = match list {
                UserList::Offset(_) => Step::Offset {
                    limit: wanted,
                    offset,
                },
                UserList::After { .. } => Step::After {
                    after,
                    limit: wanted,
                },
            };
            let found = shard.read(session, |db| query(db, step)).await?;
            if found.is_empty() && offset > 0 {
                // The offset reaches past this shard: count it to carry the rest over.
                let count = shard
                    .read(session, |mut db| async move {
                        sqlx::query_scalar!("SELECT count(*) AS \"count!\" FROM users")
                            .fetch_one(&mut *db)
                            .await
                    })
                    .await?;
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
            .write(session, |mut db| async move {
                update_user_row(&mut *db, id, update).await
            })
            .await
    }
}

/// One shard's part of a walk of users in id order; `limit` is what the page still wants.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `ORDER BY id LIMIT limit OFFSET offset`.
    Offset { limit: i64, offset: i64 },
    /// `WHERE id > after ORDER BY id LIMIT limit`.
    After { after: i64, limit: i64 },
}

pub(crate) async fn select_user(
    db: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "SELECT id, email, name, tier AS \"tier: Tier\", created_at, updated_at \
         FROM users WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

async fn update_user_row(
    db: impl PgExecutor<'_>,
    id: i64,
    update: &UserUpdate,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        "UPDATE users SET email = COALESCE($2, email), name = COALESCE($3, name), \
         password_hash = COALESCE($4, password_hash), \
         credentials_version = credentials_version + CASE WHEN $4 IS NULL THEN 0 ELSE 1 END, \
         updated_at = now() \
         WHERE id = $1 RETURNING id, email, name, tier AS \"tier: Tier\", created_at, updated_at",
        id,
        update.email.as_ref().map(Email::as_str),
        update.name.as_ref().map(UserName::as_str),
        update.password_hash.as_deref()
    )
    .fetch_optional(db)
    .await
}
