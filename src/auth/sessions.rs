//! Access tokens end with the credentials they were issued under.
//!
//! A JWT is checked without asking anyone, which is its point, and also its weakness: a
//! token stolen before a password change, or held by an account since deleted, would work
//! for its whole lifetime (`auth.access_token_ttl`). So a token carries the user's
//! credentials version (`ver`), a password change bumps `users.credentials_version`, and a
//! request with a token of an older version, or of a user that no longer exists, is a 401.
//! Changing the password signs every session out, the one that changed it included.
//!
//! Cost: the current version is read from the user's shard primary (a replica behind the
//! change would still say the old one) once per user per `auth.revocation_check_ttl` per
//! instance, and kept in a bounded in-process cache; a request otherwise pays one hash-map
//! lookup. The instance that changed the password or deleted the account drops its entry at
//! once; other instances refuse the old tokens within the TTL (the same bound, and the same
//! trade-off, as revoked API keys).
//!
//! If the primary cannot be asked, the token is accepted and nothing is cached: its
//! signature still holds, and turning a primary's outage into a 401 for every signed-in
//! read would make the outage much bigger than the shard. Revocation then waits for the
//! primary, which is logged and counted (`auth_revocation_checks_skipped_total`).

use std::{pin::Pin, sync::Arc, time::Duration};

use moka::future::Cache;

use crate::{config::AuthConfig, error::Error, telemetry::names};

/// Where the current credentials versions are read (the user's shard primary; see
/// `operations::accounts::ShardVersions`): a trait, so that `auth` needs no data layer.
pub trait VersionStore: Send + Sync {
    /// User `id`'s credentials version; `None` when there is no such user.
    fn version(&self, id: i64) -> VersionLookup<'_>;
}

/// What [`VersionStore::version`] returns.
pub type VersionLookup<'a> = Pin<Box<dyn Future<Output = Result<Option<i32>, Error>> + Send + 'a>>;

/// Checks a token's credentials version against the user's current one.
pub struct CredentialVersions {
    store: Arc<dyn VersionStore>,
    /// `None` with a TTL of 0s: every check reads.
    cache: Option<Cache<i64, Option<i32>>>,
}

impl std::fmt::Debug for CredentialVersions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialVersions")
            .field("cached", &self.cache.as_ref().map(Cache::entry_count))
            .finish_non_exhaustive()
    }
}

impl CredentialVersions {
    pub fn new(config: &AuthConfig, store: Arc<dyn VersionStore>) -> Self {
        let ttl = config.revocation_check_ttl;
        let cache = (ttl > Duration::ZERO).then(|| {
            Cache::builder()
                .max_capacity(config.revocation_cache_max_entries)
                .time_to_live(ttl)
                .build()
        });
        Self { store, cache }
    }

    /// `Ok` when a token of `version` for `user_id` still stands.
    pub async fn check(&self, user_id: i64, version: i32) -> Result<(), Error> {
        let current = match &self.cache {
            Some(cache) => match cache.get(&user_id).await {
                Some(current) => current,
                None => match self.read(user_id).await {
                    Some(current) => {
                        cache.insert(user_id, current).await;
                        current
                    }
                    None => return Ok(()),
                },
            },
            None => match self.read(user_id).await {
                Some(current) => current,
                None => return Ok(()),
            },
        };
        match current {
            Some(current) if current == version => Ok(()),
            Some(_) => Err(Error::Unauthorized(
                "the access token was revoked: the password changed after it was issued",
            )),
            None => Err(Error::Unauthorized(
                "the account this access token was issued for no longer exists",
            )),
        }
    }

    /// Sets `in_process_entries{map="credential_versions"}` (sampled at scrape).
    pub fn report_gauges(&self) {
        if let Some(cache) = &self.cache {
            crate::telemetry::metrics::report_entries("credential_versions", cache.entry_count());
        }
    }

    /// Forgets what this instance knew of `user_id` (after its password changed or it was
    /// deleted here), so this instance refuses the old tokens at once.
    pub async fn forget(&self, user_id: i64) {
        if let Some(cache) = &self.cache {
            cache.invalidate(&user_id).await;
        }
    }

    /// The current version (`Some(None)`: no such user); `None` when the primary could not
    /// be asked.
    async fn read(&self, user_id: i64) -> Option<Option<i32>> {
        match self.store.version(user_id).await {
            Ok(current) => Some(current),
            Err(err) => {
                metrics::counter!(names::AUTH_REVOCATION_CHECKS_SKIPPED).increment(1);
                tracing::warn!(user_id, error = %err, "token revocation not checked: the primary could not be asked");
                None
            }
        }
    }
}
