//! API keys in the directory database: created (a bounded number per owner), listed, looked
//! up by id for verification, revoked.
//!
//! The directory, not a shard: a key is presented without its owner's id, so the key's own id
//! must find its row in one lookup wherever the owner lives. Revoking keeps the row (with
//! `revoked_at`) so that the key ids in the audit log still name something.

use crate::{
    db::{Db, Error},
    domain::{ApiKey, NewApiKey, Scope},
};

/// What verifying a presented key needs: its owner, scope and tier, the hash of its secret,
/// and whether it was revoked.
#[derive(Clone)]
pub struct KeyRecord {
    pub id: i64,
    pub user_id: i64,
    pub scope: Scope,
    pub tier: String,
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("scope", &self.scope)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// The API keys repository: `db.api_keys()`.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeys<'a> {
    pub(crate) db: &'a Db,
}

impl ApiKeys<'_> {
    /// Stores a new key for `user_id`, unless they already have `max` live ones (`None`).
    ///
    /// The count and the insert are one statement, but two creations by one owner racing each
    /// other can both see room for one more: the bound may be passed by as many keys as that
    /// owner creates at the same instant. It bounds the table's growth, not a security
    /// property, so a lock per owner is not worth its round trips.
    pub async fn create(
        &self,
        user_id: i64,
        new: &NewApiKey,
        secret_hash: &[u8],
        max: i64,
    ) -> Result<Option<ApiKey>, Error> {
        Ok(sqlx::query_as!(
            ApiKey,
            "INSERT INTO api_keys (user_id, name, scope, secret_hash) \
             SELECT $1, $2, $3, $4 \
             WHERE (SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL) < $5 \
             RETURNING id, user_id, name, scope AS \"scope: Scope\", tier, created_at",
            user_id,
            new.name,
            new.scope.as_str(),
            secret_hash,
            max
        )
        .fetch_optional(&self.db.directory)
        .await?)
    }

    /// `user_id`'s live keys, oldest first.
    pub async fn live_of(&self, user_id: i64) -> Result<Vec<ApiKey>, Error> {
        Ok(sqlx::query_as!(
            ApiKey,
            "SELECT id, user_id, name, scope AS \"scope: Scope\", tier, created_at \
             FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id",
            user_id
        )
        .fetch_all(&self.db.directory)
        .await?)
    }

    /// Key `id` as verification needs it, revoked or not; `None` when there is no such key.
    pub async fn find(&self, id: i64) -> Result<Option<KeyRecord>, Error> {
        Ok(sqlx::query_as!(
            KeyRecord,
            "SELECT id, user_id, scope AS \"scope: Scope\", tier, secret_hash, \
             revoked_at IS NOT NULL AS \"revoked!\" \
             FROM api_keys WHERE id = $1",
            id
        )
        .fetch_optional(&self.db.directory)
        .await?)
    }

    /// Revokes key `id` if `user_id` owns it and it is live; `false` otherwise (someone
    /// else's key, an unknown id and an already revoked key look the same to the caller).
    pub async fn revoke(&self, user_id: i64, id: i64) -> Result<bool, Error> {
        let revoked = sqlx::query_scalar!(
            "UPDATE api_keys SET revoked_at = now() \
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING id",
            id,
            user_id
        )
        .fetch_optional(&self.db.directory)
        .await?;
        Ok(revoked.is_some())
    }

    /// Revokes every live key of `user_id` (their account is gone); returns their ids.
    pub async fn revoke_all(&self, user_id: i64) -> Result<Vec<i64>, Error> {
        Ok(sqlx::query_scalar!(
            "UPDATE api_keys SET revoked_at = now() \
             WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
            user_id
        )
        .fetch_all(&self.db.directory)
        .await?)
    }
}
