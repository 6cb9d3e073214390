//! `[auth]`: how access tokens are signed and checked.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, ensure};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{
    Profile,
    secret::{REDACTED, serialize_secret},
};

/// The JWT secret used when none is configured. Fine on a laptop, refused in production.
pub const DEV_JWT_SECRET: &str = "dev-only-secret-change-me-dev-only-secret";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC secret for HS256 access tokens (at least 32 bytes).
    #[serde(serialize_with = "serialize_secret")]
    pub jwt_secret: SecretString,
    /// `iss` claim written and required.
    pub issuer: String,
    /// `aud` claim written and required.
    pub audience: String,
    /// Lifetime of an access token; tokens count whole seconds (`exp`), so at least `1s`.
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// argon2 runs (hash or verify) at once per instance, each 19 MiB and a core; `0` means
    /// one per core.
    pub max_concurrent_hashes: usize,
    /// Logins and registrations that may wait for a hashing slot; past them, a 503 at once.
    pub max_queued_hashes: usize,
    /// How long a queued login or registration waits for a slot before a 503.
    #[serde(with = "humantime_serde")]
    pub hash_wait: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(DEV_JWT_SECRET),
            issuer: "scalable-api".into(),
            audience: "scalable-api".into(),
            access_token_ttl: Duration::from_secs(3600),
            max_concurrent_hashes: 0,
            max_queued_hashes: 64,
            hash_wait: Duration::from_secs(2),
        }
    }
}

impl AuthConfig {
    /// Whether tokens are signed with the development secret, which anyone who has read this
    /// repository knows: anyone could forge a token for any user.
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_secret.expose_secret() == DEV_JWT_SECRET
    }

    /// A secret long enough for HS256; the development one never in production, nor on an
    /// address other machines can reach (whatever the profile: a forgotten `profile` must not
    /// expose forgeable tokens); tokens that live at least a second.
    pub(super) fn validate(&self, profile: Profile, listen: SocketAddr) -> anyhow::Result<()> {
        let secret = self.jwt_secret.expose_secret();
        ensure!(
            secret.len() >= 32,
            "auth.jwt_secret must be at least 32 bytes"
        );
        if profile == Profile::Production && secret == DEV_JWT_SECRET {
            bail!(
                "auth.jwt_secret: the development secret is refused in production; set SCALABLE_API_AUTH__JWT_SECRET"
            );
        }
        if self.uses_dev_secret() && !listen.ip().is_loopback() {
            bail!(
                "auth.jwt_secret: the development secret is accepted only while the service listens on loopback, and http.addr is {listen}; set SCALABLE_API_AUTH__JWT_SECRET"
            );
        }
        ensure!(
            self.access_token_ttl >= Duration::from_secs(1),
            "auth.access_token_ttl must be at least 1s (`exp` counts whole seconds)"
        );
        Ok(())
    }

    /// This section with the secret masked.
    pub(super) fn redacted(&self) -> Self {
        Self {
            jwt_secret: SecretString::from(REDACTED),
            ..self.clone()
        }
    }
}
