//! The email directory: `email -> user id` in one designated database.
//!
//! Why: emails must be unique across shards, and login by email must not ask every shard.
//! Why it is delicate: registering, re-emailing and deleting a user each touch two databases
//! (the directory and a shard) and there is no distributed transaction manager.
//!
//! # Protocol: a reserve/confirm saga with repair
//!
//! - **Register**: take an id from the chosen shard; *reserve* the email (`pending`, from
//!   this moment no other shard can take it); insert the user row; *confirm* (`active`).
//! - **Change email**: reserve the new address (`pending`); update the row; in one directory
//!   transaction confirm the new entry and drop the old one. If the reservation was repaired
//!   away meanwhile, the address is claimed again, or, when another user took it, the row is
//!   put back and the change fails.
//! - **Delete**: delete the row (and, by cascade, the posts); drop the user's entries.
//!
//! A step that fails releases what the saga reserved (the compensating step). A process that
//! *dies* between steps compensates nothing, and leaves one of these behind:
//!
//! | crash after           | directory                 | shard row          |
//! |-----------------------|---------------------------|--------------------|
//! | register: reserve     | `pending` new             | none               |
//! | register: insert      | `pending` new             | exists, same email |
//! | email change: reserve | `pending` new, `active` old | old email        |
//! | email change: update  | `pending` new, `active` old | new email        |
//! | delete: row deleted   | `active` old              | none               |
//!
//! One rule repairs every row of that table: **an entry is valid exactly when its user row
//! exists with that email.** A valid `pending` entry is confirmed, an invalid entry of either
//! state is removed. The rule is applied (1) by a background pass to `pending` entries older
//! than `db.directory_repair.grace` (a live saga finishes long before), and at start-up;
//! (2) on the spot when a registration hits a taken email, to the entry holding it; (3) at
//! login, to a stale `pending` entry. So after any crash there is no duplicate email, the
//! user can log in (or cleanly does not exist), and the address can be registered again.
//!
//! Known gap: a registration slower than the grace period whose reservation the repair
//! already removed, *and* whose process then dies before undoing its row, leaves an
//! unreachable row that blocks that email on that one shard (its local unique index).
//!
//! # Why not two-phase commit
//!
//! `PREPARE TRANSACTION` on both databases would make each step atomic, but a coordinator
//! that dies between prepare and commit leaves in-doubt transactions *holding their locks*
//! (on the email's index entry, on the user row) until something resolves them, and needs
//! `max_prepared_transactions` and a durable coordinator log. The saga holds no lock across
//! databases; its intermediate state is an ordinary row that the rule above can judge from
//! the shard's own data, with no log of its own.

use std::{sync::Arc, time::Duration};

use sqlx::Connection;
use tokio::task::JoinHandle;

use super::users::{UserUpdate, select_user};
use crate::{
    db::{Db, Error, Session, cluster::Shard},
    domain::{Credentials, Email, NewUser, Tier, User},
};

/// What the repair rule did with an entry.
#[derive(Debug, PartialEq, Eq)]
enum Repair {
    /// Valid: kept (and confirmed if it was pending).
    Kept,
    /// Invalid: removed; the email is free.
    Removed,
    /// A fresh `pending` entry: a saga is still running; left alone.
    InFlight,
}

/// The directory repository: `db.directory()`. Everything that keeps the directory and the
/// shards in step lives here; the users repository only ever changes rows.
#[derive(Debug, Clone, Copy)]
pub struct Directory<'a> {
    pub(crate) db: &'a Db,
}

impl Directory<'_> {
    /// Registers a user: pick a shard by the placement policy, take an id from that shard's
    /// range, reserve the email, insert the row, confirm.
    pub async fn register(
        &self,
        session: &Session,
        user: &NewUser,
        password_hash: &str,
    ) -> Result<User, Error> {
        let email = user.email.as_str();
        let mut last_err = Error::ShardFull;
        for shard in self.db.placement.candidates(&self.db.cluster) {
            // Sequences are not transactional: an id taken here and not used is a harmless gap.
            let id = match shard
                .write(session, |mut db| async move {
                    sqlx::query_scalar!("SELECT nextval('users_id_seq') AS \"id!\"")
                        .fetch_one(&mut *db)
                        .await
                })
                .await
            {
                Ok(id) => id,
                // This shard cannot take the user now; the next candidate may.
                Err(
                    err @ (Error::ShardFull
                    | Error::Unavailable(_)
                    | Error::Busy(_)
                    | Error::PrimaryDown { .. }),
                ) => {
                    tracing::warn!(shard = shard.id(), error = %err, "placement skipped a shard");
                    last_err = err;
                    continue;
                }
                Err(err) => return Err(err),
            };
            self.reserve_email(session, email, id).await?;
            fail_point!(self.db, "register:reserved");
            let inserted = shard
                .write(session, |mut db| async move {
                    sqlx::query_as!(
                        User,
                        "INSERT INTO users (id, email, name, password_hash) \
                         VALUES ($1, $2, $3, $4) \
                         RETURNING id, email, name, tier AS \"tier: Tier\", created_at, updated_at",
                        id,
                        email,
                        user.name.as_str(),
                        password_hash
                    )
                    .fetch_one(&mut *db)
                    .await
                })
                .await;
            let created = match inserted {
                Ok(created) => created,
                Err(err) => {
                    self.release(email, id).await;
                    return Err(err);
                }
            };
            fail_point!(self.db, "register:inserted");
            if !confirm(&self.db.directory, email, id).await? {
                // The repair pass judged this reservation abandoned (this saga outlived the
                // grace period) and may already have given the email to someone else: undo.
                shard
                    .write(session, |mut db| async move {
                        sqlx::query!("DELETE FROM users WHERE id = $1", id)
                            .execute(&mut *db)
                            .await
                    })
                    .await?;
                return Err(Error::SagaExpired);
            }
            return Ok(created);
        }
        Err(last_err)
    }

    /// Finds the credentials behind an email for login: one directory lookup, then one shard.
    ///
    /// The shard read goes to the primary, not a replica: a replica that lags behind a
    /// password change still holds the old hash and would let the old password in (and one
    /// that lags behind a registration would refuse the new user). Login is rare next to
    /// other reads and its cost is the argon2 verification, so one primary-key read on the
    /// primary is cheap insurance. This is the only read of a password hash.
    pub async fn credentials(
        &self,
        session: &Session,
        email: &Email,
    ) -> Result<Option<Credentials>, Error> {
        let Some(entry) = self.entry(email.as_str()).await? else {
            return Ok(None);
        };
        if entry.state == "pending" && self.repair(session, &entry).await? != Repair::Kept {
            return Ok(None);
        }
        let Some(shard) = self.db.cluster.owner(entry.user_id) else {
            return Ok(None);
        };
        let id = entry.user_id;
        let credentials: Option<Credentials> = shard
            .read_primary(session, |mut db| async move {
                sqlx::query_as!(
                    Credentials,
                    "SELECT id, email, password_hash, tier AS \"tier: Tier\", credentials_version \
                     FROM users WHERE id = $1",
                    id
                )
                .fetch_optional(&mut *db)
                .await
            })
            .await?;
        match credentials {
            Some(found) if found.email == entry.email => Ok(Some(found)),
            // The entry outlived its row or its address (a crash mid-delete or mid-change):
            // it must not log anyone in. Repair it on the way out.
            _ => {
                self.repair(
                    session,
                    &Entry {
                        stale: true,
                        ..entry
                    },
                )
                .await?;
                Ok(None)
            }
        }
    }

    /// Changes a user. A new email is first reserved in the directory (so it stays unique
    /// across shards), then written to the shard, then confirmed; any other change is a row
    /// update alone.
    pub async fn update_user(
        &self,
        session: &Session,
        id: i64,
        update: UserUpdate,
    ) -> Result<Option<User>, Error> {
        let users = self.db.users();
        let Some(email) = update.email.as_ref() else {
            return users.update_row(session, id, &update).await;
        };
        let Some(shard) = self.db.cluster.owner(id) else {
            return Ok(None);
        };
        let Some(current) = shard
            .read_primary(
                session,
                |mut db| async move { select_user(&mut *db, id).await },
            )
            .await?
        else {
            return Ok(None);
        };
        if current.email == email.as_str() {
            return users.update_row(session, id, &update).await;
        }
        self.change_email(session, shard, &current, email, &update)
            .await
    }

    /// Deletes a user and their posts (in one transaction on their shard), then releases
    /// their email in the directory. Returns the ids of the deleted posts (for cache
    /// invalidation), or `None` when there was no such user.
    pub async fn delete_user(&self, session: &Session, id: i64) -> Result<Option<Vec<i64>>, Error> {
        let Some(shard) = self.db.cluster.owner(id) else {
            return Ok(None);
        };
        let deleted: Option<(String, Vec<i64>)> = shard
            .write(session, |mut db| async move {
                let mut tx = db.begin().await?;
                // Explicit rather than left to ON DELETE CASCADE: the cache needs the ids.
                let posts =
                    sqlx::query_scalar!("DELETE FROM posts WHERE user_id = $1 RETURNING id", id)
                        .fetch_all(&mut *tx)
                        .await?;
                let email =
                    sqlx::query_scalar!("DELETE FROM users WHERE id = $1 RETURNING email", id)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok(email.map(|email| (email, posts)))
            })
            .await?;
        let Some((email, posts)) = deleted else {
            return Ok(None);
        };
        fail_point!(self.db, "delete:shard_deleted");
        self.release_email(&email, id).await?;
        Ok(Some(posts))
    }

    /// Re-emails a user: reserve the new address, update the row, then in one directory
    /// transaction confirm the new entry and drop the old one.
    ///
    /// The confirmation can find the reservation gone: a repair that judged it while the
    /// row still held the old address removed it (a saga slower than the grace period).
    /// Dropping the old entry then would leave the user with no entry at all, and the new
    /// address free for anyone: so the step claims the address again, and if somebody took
    /// it meanwhile, the row goes back to what it was and the change fails as a taken email.
    async fn change_email(
        &self,
        session: &Session,
        shard: &Shard,
        current: &User,
        email: &Email,
        update: &UserUpdate,
    ) -> Result<Option<User>, Error> {
        let id = current.id;
        self.reserve_email(session, email.as_str(), id).await?;
        fail_point!(self.db, "email:reserved");
        let updated = shard
            .write(session, |mut db| async move {
                update_user_row_keeping_old(&mut *db, id, update).await
            })
            .await;
        let (updated, before) = match updated {
            Ok(Some(changed)) => changed,
            Ok(None) => {
                self.release(email.as_str(), id).await;
                return Ok(None);
            }
            Err(err) => {
                self.release(email.as_str(), id).await;
                return Err(err);
            }
        };
        fail_point!(self.db, "email:updated");
        let mut tx = self.db.directory.begin().await?;
        if !confirm(&mut *tx, email.as_str(), id).await? && !claim(&mut *tx, email, id).await? {
            tx.rollback().await?;
            self.restore_row(session, shard, &before, email).await;
            return Err(Error::EmailTaken);
        }
        sqlx::query!(
            "DELETE FROM directory_entries WHERE email = $1 AND user_id = $2",
            current.email,
            id
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(updated))
    }

    /// The compensating step when the new address was lost after the row took it: puts the
    /// row back as it was, unless it changed again since. If even this fails, the row keeps
    /// an address whose entry is gone; login by it fails (no entry) and the old entry still
    /// logs in nobody (its row's email differs), so the repair rule removes it at the next
    /// login attempt, and the user re-emails. Logged loudly: it needs both databases to fail
    /// in one request.
    async fn restore_row(
        &self,
        session: &Session,
        shard: &Shard,
        before: &RowBefore,
        email: &Email,
    ) {
        let restored = shard
            .write(session, |mut db| async move {
                sqlx::query!(
                    "UPDATE users SET email = $2, name = $3, password_hash = $4, updated_at = now() \
                     WHERE id = $1 AND email = $5",
                    before.id,
                    before.email,
                    before.name,
                    before.password_hash,
                    email.as_str()
                )
                .execute(&mut *db)
                .await
            })
            .await;
        if let Err(err) = restored {
            tracing::error!(user_id = before.id, error = %err, "could not restore a user row after losing its new email");
        }
    }

    /// Removes a deleted user's entry.
    async fn release_email(&self, email: &str, id: i64) -> Result<(), Error> {
        sqlx::query!(
            "DELETE FROM directory_entries WHERE email = $1 AND user_id = $2",
            email,
            id
        )
        .execute(&self.db.directory)
        .await?;
        Ok(())
    }

    /// Takes `email` for `id`, or fails with [`Error::EmailTaken`]. When the email is held,
    /// the holding entry is judged by the repair rule first: an orphan does not block.
    async fn reserve_email(&self, session: &Session, email: &str, id: i64) -> Result<(), Error> {
        for _ in 0..3 {
            let reserved = sqlx::query!(
                "INSERT INTO directory_entries (email, user_id, state) VALUES ($1, $2, 'pending') \
                 ON CONFLICT (email) DO NOTHING",
                email,
                id
            )
            .execute(&self.db.directory)
            .await?;
            if reserved.rows_affected() == 1 {
                return Ok(());
            }
            let Some(holder) = self.entry(email).await? else {
                continue; // released meanwhile: try again
            };
            if self.repair(session, &holder).await? != Repair::Removed {
                return Err(Error::EmailTaken);
            }
        }
        Err(Error::EmailTaken)
    }

    /// The compensating step when a shard write failed: give a reserved email back. If even
    /// this fails, the entry stays `pending` for the repair pass; the caller's error stands.
    async fn release(&self, email: &str, id: i64) {
        let released = sqlx::query!(
            "DELETE FROM directory_entries WHERE email = $1 AND user_id = $2 AND state = 'pending'",
            email,
            id
        )
        .execute(&self.db.directory)
        .await;
        if let Err(err) = released {
            tracing::error!(error = %err, user_id = id, "could not release a pending directory entry");
        }
    }

    async fn entry(&self, email: &str) -> Result<Option<Entry>, Error> {
        Ok(sqlx::query_as!(
            Entry,
            "SELECT email, user_id, state, \
             updated_at < now() - make_interval(secs => $2::float8 / 1000) AS \"stale!\" \
             FROM directory_entries WHERE email = $1",
            email,
            self.db.config.directory_repair.grace.as_millis() as f64
        )
        .fetch_optional(&self.db.directory)
        .await?)
    }

    /// Applies the repair rule (see the module doc) to one entry.
    async fn repair(&self, session: &Session, entry: &Entry) -> Result<Repair, Error> {
        if entry.state == "pending" && !entry.stale {
            return Ok(Repair::InFlight);
        }
        let id = entry.user_id;
        let row_email: Option<String> = match self.db.cluster.owner(id) {
            Some(shard) => {
                shard
                    .read_primary(session, |mut db| async move {
                        sqlx::query_scalar!("SELECT email FROM users WHERE id = $1", id)
                            .fetch_optional(&mut *db)
                            .await
                    })
                    .await?
            }
            None => None,
        };
        // Conditional on the state we judged, so a concurrent saga step is not overridden.
        if row_email.as_deref() == Some(entry.email.as_str()) {
            if entry.state == "pending" {
                sqlx::query!(
                    "UPDATE directory_entries SET state = 'active', updated_at = now() \
                     WHERE email = $1 AND user_id = $2 AND state = 'pending'",
                    entry.email,
                    id
                )
                .execute(&self.db.directory)
                .await?;
                tracing::info!(
                    user_id = id,
                    "directory repair: confirmed an abandoned reservation"
                );
            }
            return Ok(Repair::Kept);
        }
        sqlx::query!(
            "DELETE FROM directory_entries WHERE email = $1 AND user_id = $2 AND state = $3",
            entry.email,
            id,
            entry.state
        )
        .execute(&self.db.directory)
        .await?;
        tracing::info!(user_id = id, state = %entry.state, "directory repair: removed an orphaned entry");
        Ok(Repair::Removed)
    }

    /// One pass of the background repair over stale `pending` entries; returns how many it
    /// looked at.
    pub async fn repair_pass(&self) -> Result<usize, Error> {
        let stale = sqlx::query_as!(
            Entry,
            "SELECT email, user_id, state, true AS \"stale!\" FROM directory_entries \
             WHERE state = 'pending' AND updated_at < now() - make_interval(secs => $1::float8 / 1000) \
             ORDER BY updated_at LIMIT 500",
            self.db.config.directory_repair.grace.as_millis() as f64
        )
        .fetch_all(&self.db.directory)
        .await?;
        let session = Session::background();
        for entry in &stale {
            self.repair(&session, entry).await?;
        }
        Ok(stale.len())
    }
}

#[derive(Debug)]
struct Entry {
    email: String,
    user_id: i64,
    state: String,
    stale: bool,
}

/// The row as it was before an email change, to restore if the change cannot complete.
struct RowBefore {
    id: i64,
    email: String,
    name: String,
    password_hash: String,
}

/// Updates the user row like `update_user_row`, and returns what it held before (locked
/// for the statement, so no other change slips in between).
async fn update_user_row_keeping_old(
    db: impl sqlx::PgExecutor<'_>,
    id: i64,
    update: &UserUpdate,
) -> Result<Option<(User, RowBefore)>, sqlx::Error> {
    let row = sqlx::query!(
        "UPDATE users u SET email = COALESCE($2, u.email), name = COALESCE($3, u.name), \
         password_hash = COALESCE($4, u.password_hash), \
         credentials_version = u.credentials_version + CASE WHEN $4 IS NULL THEN 0 ELSE 1 END, \
         updated_at = now() \
         FROM (SELECT id, email, name, password_hash FROM users WHERE id = $1 FOR UPDATE) AS old \
         WHERE u.id = old.id \
         RETURNING u.id, u.email, u.name, u.tier AS \"tier: Tier\", u.created_at, u.updated_at, \
         old.email AS old_email, old.name AS old_name, old.password_hash AS old_password_hash",
        id,
        update.email.as_ref().map(Email::as_str),
        update.name.as_ref().map(|name| name.as_str()),
        update.password_hash.as_deref()
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| {
        let user = User {
            id: row.id,
            email: row.email,
            name: row.name,
            tier: row.tier,
            created_at: row.created_at,
            updated_at: row.updated_at,
        };
        let before = RowBefore {
            id: row.id,
            email: row.old_email,
            name: row.old_name,
            password_hash: row.old_password_hash,
        };
        (user, before)
    }))
}

/// Takes `email` for `id` as an `active` entry, unless another user holds it.
async fn claim(db: impl sqlx::PgExecutor<'_>, email: &Email, id: i64) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query!(
        "INSERT INTO directory_entries (email, user_id, state) VALUES ($1, $2, 'active') \
         ON CONFLICT (email) DO NOTHING",
        email.as_str(),
        id
    )
    .execute(db)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// The saga's last step: the entry becomes usable for login. `false` if the reservation is
/// gone (removed by repair).
async fn confirm(db: impl sqlx::PgExecutor<'_>, email: &str, id: i64) -> Result<bool, sqlx::Error> {
    let confirmed = sqlx::query!(
        "UPDATE directory_entries SET state = 'active', updated_at = now() \
         WHERE email = $1 AND user_id = $2",
        email,
        id
    )
    .execute(db)
    .await?;
    Ok(confirmed.rows_affected() == 1)
}

/// The background repair pass: at start-up, then every `db.directory_repair.interval`.
pub(crate) fn spawn_repair(db: Arc<Db>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = db
            .config
            .directory_repair
            .interval
            .max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            match db.directory().repair_pass().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "directory repair pass"),
                Err(err) => {
                    tracing::warn!(error = %err, "directory repair pass failed; retrying later")
                }
            }
        }
    })
}
