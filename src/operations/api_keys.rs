//! API keys: created, listed and revoked by their owner, and looked up for verification.
//!
//! Managing keys takes a [`TokenUser`] (an access token): no key may mint or revoke keys
//! (`src/auth/principal.rs` says why). The key's text is made in `src/auth/api_key.rs`, shown
//! once in [`IssuedKey`], and never stored; the directory keeps its hash.

use std::sync::Arc;

use secrecy::SecretString;

use super::audit;
use crate::{
    App,
    auth::{
        KeyHolder, KeyStore, LimitTier, MintedSecret, StoredKey, TokenUser, api_key::KeyLookup,
    },
    db::{Db, KeyRecord},
    domain::{ApiKey, NewApiKey},
    error::{Error, Result},
};

/// A key just created: its description, and the whole key, which nobody can see again.
#[derive(Debug)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: SecretString,
}

/// Creates a key for `me` with `name` and `scope` (`read` or `write`), under the `service`
/// tier; 409 when `me` already holds `auth.api_keys.max_per_user` live keys.
pub async fn create(app: &App, me: TokenUser, name: &str, scope: &str) -> Result<IssuedKey> {
    let result = async {
        let new = NewApiKey::parse(name, scope)?;
        let minted = MintedSecret::new()?;
        let max = i64::from(app.config.auth.api_keys.max_per_user);
        let key = app
            .db
            .api_keys()
            .create(me.id, &new, minted.hash(), max)
            .await?
            .ok_or(Error::Conflict(
                "this account holds as many API keys as allowed; revoke one first",
            ))?;
        let secret = minted.key(key.id);
        Ok(IssuedKey { key, secret })
    }
    .await;
    let subject = result.as_ref().ok().map(|issued| issued.key.id);
    audit::record("api_key.create", Some(me.into()), subject, &result);
    result
}

/// `me`'s live keys, oldest first; never a secret (nothing holds one).
pub async fn list(app: &App, me: TokenUser) -> Result<Vec<ApiKey>> {
    Ok(app.db.api_keys().live_of(me.id).await?)
}

/// Revokes `me`'s key `id`: refused here at once, on other instances within
/// `auth.api_keys.cache_ttl`. Someone else's key, an unknown id and a key already revoked
/// are all the same 404: a stranger learns nothing about which ids exist.
pub async fn revoke(app: &App, me: TokenUser, id: i64) -> Result<()> {
    let result = async {
        if !app.db.api_keys().revoke(me.id, id).await? {
            return Err(Error::NotFound("you have no live API key with this id"));
        }
        app.api_keys.forget(id).await;
        Ok(())
    }
    .await;
    audit::record("api_key.revoke", Some(me.into()), Some(id), &result);
    result
}

/// Revokes every key of a deleted account. Best effort: the account is gone either way, and
/// a key left live acts for a user that no longer exists (its writes are refused).
pub(crate) async fn revoke_all_of(app: &App, user_id: i64) {
    match app.db.api_keys().revoke_all(user_id).await {
        Ok(ids) => {
            for id in ids {
                app.api_keys.forget(id).await;
            }
        }
        Err(err) => {
            tracing::warn!(user_id, error = %err, "could not revoke a deleted account's API keys")
        }
    }
}

/// The [`KeyStore`] the verifier asks on a cache miss: the directory database.
pub struct DirectoryKeys(pub Arc<Db>);

impl KeyStore for DirectoryKeys {
    fn find(&self, id: i64) -> KeyLookup<'_> {
        Box::pin(async move {
            let Some(record) = self.0.api_keys().find(id).await? else {
                return Ok(None);
            };
            stored(record).map(Some)
        })
    }
}

fn stored(record: KeyRecord) -> Result<StoredKey> {
    let tier = LimitTier::ALL
        .into_iter()
        .find(|tier| tier.as_str() == record.tier)
        .ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "API key {} has an unknown tier {:?}",
                record.id,
                record.tier
            ))
        })?;
    Ok(StoredKey {
        holder: KeyHolder {
            key_id: record.id,
            owner: record.user_id,
            scope: record.scope,
            tier,
        },
        secret_hash: record.secret_hash,
        revoked: record.revoked,
    })
}
