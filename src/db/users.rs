//! Users on their shards: reads from replicas, writes on the owning shard's primary.

use sqlx::{PgExecutor, PgPool};

use super::{Db, Error, Scope};
use crate::domain::{Email, User, UserName};

/// The user columns, in one place for every query that returns a [`User`].
macro_rules! user_columns {
    () => {
        "id, email, name, password_hash, tier, created_at, updated_at"
    };
}
pub(crate) use user_columns;

/// Offset pagination, already bounded by the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// A partial update of a user, fields already validated (and the password already hashed).
#[derive(Debug, Default)]
pub struct UserUpdate {
    pub email: Option<Email>,
    pub name: Option<UserName>,
    pub password_hash: Option<String>,
}

impl Db {
    /// Reads a user from a replica of its shard. `None` when no such user exists, including
    /// ids that no shard's range holds (no query is sent for those).
    pub async fn user(&self, scope: &Scope, id: i64) -> Result<Option<User>, Error> {
        let Some(shard) = self.shards.owner(id) else {
            return Ok(None);
        };
        shard
            .read(scope, |db| async move { select_user(&db, id).await })
            .await
    }

    /// Changes a user. A new email is first reserved in the directory (so it stays unique
    /// across shards), then written to the shard, then confirmed; see [`super::directory`].
    pub async fn update_user(
        &self,
        scope: &Scope,
        id: i64,
        update: UserUpdate,
    ) -> Result<Option<User>, Error> {
        let Some(shard) = self.shards.owner(id) else {
            return Ok(None);
        };
        let update = &update;
        let write = |db: PgPool| async move { update_user_row(&db, id, update).await };
        let Some(email) = update.email.as_ref() else {
            return shard.write(scope, write).await;
        };
        let Some(current) = shard
            .read_primary(scope, |db| async move { select_user(&db, id).await })
            .await?
        else {
            return Ok(None);
        };
        if current.email == email.as_str() {
            return shard.write(scope, write).await;
        }
        self.change_email(scope, shard, &current, email, update)
            .await
    }

    /// Deletes a user and their posts (in one transaction on their shard), then releases
    /// their email in the directory. Returns the ids of the deleted posts (for cache
    /// invalidation), or `None` when there was no such user.
    pub async fn delete_user(&self, scope: &Scope, id: i64) -> Result<Option<Vec<i64>>, Error> {
        let Some(shard) = self.shards.owner(id) else {
            return Ok(None);
        };
        let deleted: Option<(String, Vec<i64>)> = shard
            .write(scope, |db| async move {
                let mut tx = db.begin().await?;
                // Explicit rather than left to ON DELETE CASCADE: the cache needs the ids.
                let posts: Vec<i64> =
                    sqlx::query_scalar("DELETE FROM posts WHERE user_id = $1 RETURNING id")
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                let email: Option<String> =
                    sqlx::query_scalar("DELETE FROM users WHERE id = $1 RETURNING email")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok(email.map(|email| (email, posts)))
            })
            .await?;
        let Some((email, posts)) = deleted else {
            return Ok(None);
        };
        crate::db::directory::fail_point!(self, "delete:shard_deleted");
        self.release_email(&email, id).await?;
        Ok(Some(posts))
    }
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

/// Users of one shard in id order, for the cross-shard walk in [`super::fanout`].
pub(crate) async fn select_users_page(
    db: impl PgExecutor<'_>,
    limit: i64,
    offset: i64,
) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        user_columns!(),
        " FROM users ORDER BY id LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(db)
    .await
}
