//! The email directory: `email -> user id` in one designated database.
//!
//! Why: emails must be unique across shards, and login by email must not ask every shard.
//! Why it is delicate: registering, re-emailing and deleting a user each touch two databases
//! (the directory and a shard) and there is no distributed transaction manager.
//!
//! Protocol: a **reserve/confirm saga**. An entry is first written `pending` (the email is
//! taken from that moment, so two shards can never both accept it), then the shard row is
//! written, then the entry is flipped to `active`. A failure after the reservation releases
//! it again (the compensating step). Login only trusts `active` entries.
//!
//! We chose a saga over two-phase commit (`PREPARE TRANSACTION`): 2PC holds locks on both
//! databases until the coordinator decides, and a coordinator that dies leaves in-doubt
//! transactions holding those locks until someone resolves them; the saga holds no lock
//! across databases and its intermediate state (`pending`) is an ordinary row that a repair
//! pass can inspect: a pending entry whose user exists on its shard is confirmed, one whose
//! user does not is released.

use sqlx::PgPool;

use super::{Db, Error, Scope, users::UserUpdate};
use crate::domain::{Email, NewUser, User};

impl Db {
    /// Registers a user: pick a shard by the placement policy, take an id from that shard's
    /// range, reserve the email, insert the row, confirm.
    pub async fn register_user(
        &self,
        scope: &Scope,
        user: &NewUser,
        password_hash: &str,
    ) -> Result<User, Error> {
        let mut last_err = Error::ShardFull;
        for shard in self.placement.candidates(&self.shards) {
            let primary = shard.writer(scope);
            // Sequences are not transactional: an id taken here and not used is a harmless gap.
            let id = match sqlx::query_scalar::<_, i64>("SELECT nextval('users_id_seq')")
                .fetch_one(primary)
                .await
                .map_err(Error::classify)
            {
                Ok(id) => id,
                // This shard cannot take the user now; the next candidate may.
                Err(err @ (Error::ShardFull | Error::Unavailable(_))) => {
                    tracing::warn!(shard = shard.id(), error = %err, "placement skipped a shard");
                    last_err = err;
                    continue;
                }
                Err(err) => return Err(err),
            };
            self.reserve_email(user.email.as_str(), id).await?;
            let inserted = sqlx::query_as(concat!(
                "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4) RETURNING ",
                super::users::user_columns!()
            ))
            .bind(id)
            .bind(user.email.as_str())
            .bind(user.name.as_str())
            .bind(password_hash)
            .fetch_one(primary)
            .await;
            let user: User = match inserted {
                Ok(user) => user,
                Err(err) => {
                    self.compensate(user.email.as_str(), id).await;
                    return Err(Error::classify(err));
                }
            };
            self.confirm_email(user.email.as_str(), id).await?;
            return Ok(user);
        }
        Err(last_err)
    }

    /// Finds the user behind an email for login: one directory lookup, then one shard.
    ///
    /// The shard read goes to the primary, not a replica: a replica that lags behind a
    /// password change still holds the old hash and would let the old password in (and one
    /// that lags behind a registration would refuse the new user). Login is rare next to
    /// other reads and its cost is the argon2 verification, so one primary-key read on the
    /// primary is cheap insurance.
    pub async fn user_by_email(&self, scope: &Scope, email: &Email) -> Result<Option<User>, Error> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT user_id FROM directory_entries WHERE email = $1 AND state = 'active'",
        )
        .bind(email.as_str())
        .fetch_optional(&self.directory)
        .await?;
        let Some(shard) = id.and_then(|id| self.shards.owner(id).map(|shard| (id, shard))) else {
            return Ok(None);
        };
        let (id, shard) = shard;
        Ok(super::users::select_user(shard.writer(scope), id).await?)
    }

    /// Re-emails a user: reserve the new address, write the shard, then in one directory
    /// transaction drop the old entry and confirm the new one.
    pub(crate) async fn change_email(
        &self,
        primary: &PgPool,
        current: &User,
        email: &Email,
        update: &UserUpdate,
    ) -> Result<Option<User>, Error> {
        self.reserve_email(email.as_str(), current.id).await?;
        let updated = match super::users::update_user_row(primary, current.id, update).await {
            Ok(Some(user)) => user,
            Ok(None) => {
                self.compensate(email.as_str(), current.id).await;
                return Ok(None);
            }
            Err(err) => {
                self.compensate(email.as_str(), current.id).await;
                return Err(Error::classify(err));
            }
        };
        let mut tx = self.directory.begin().await?;
        sqlx::query("DELETE FROM directory_entries WHERE email = $1 AND user_id = $2")
            .bind(&current.email)
            .bind(current.id)
            .execute(&mut *tx)
            .await?;
        confirm(&mut *tx, email.as_str(), current.id).await?;
        tx.commit().await?;
        Ok(Some(updated))
    }

    /// Removes a deleted user's entry.
    pub(crate) async fn release_email(&self, email: &str, id: i64) -> Result<(), Error> {
        sqlx::query("DELETE FROM directory_entries WHERE email = $1 AND user_id = $2")
            .bind(email)
            .bind(id)
            .execute(&self.directory)
            .await?;
        Ok(())
    }

    /// Step 1: take the email for `id`, or fail with [`Error::EmailTaken`].
    async fn reserve_email(&self, email: &str, id: i64) -> Result<(), Error> {
        let reserved = sqlx::query(
            "INSERT INTO directory_entries (email, user_id, state) VALUES ($1, $2, 'pending') \
             ON CONFLICT (email) DO NOTHING",
        )
        .bind(email)
        .bind(id)
        .execute(&self.directory)
        .await?;
        if reserved.rows_affected() == 0 {
            return Err(Error::EmailTaken);
        }
        Ok(())
    }

    /// Step 3: the shard row exists; the entry becomes usable for login.
    async fn confirm_email(&self, email: &str, id: i64) -> Result<(), Error> {
        Ok(confirm(&self.directory, email, id).await?)
    }

    /// The compensating step when the shard write failed: give the email back. If even this
    /// fails the entry stays `pending` for the repair pass; the caller's error stands.
    async fn compensate(&self, email: &str, id: i64) {
        let released = sqlx::query(
            "DELETE FROM directory_entries WHERE email = $1 AND user_id = $2 AND state = 'pending'",
        )
        .bind(email)
        .bind(id)
        .execute(&self.directory)
        .await;
        if let Err(err) = released {
            tracing::error!(error = %err, user_id = id, "could not release a pending directory entry");
        }
    }
}

async fn confirm(db: impl sqlx::PgExecutor<'_>, email: &str, id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE directory_entries SET state = 'active', updated_at = now() \
         WHERE email = $1 AND user_id = $2",
    )
    .bind(email)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}
