//! `[auth]`: how access tokens are signed and checked, how API keys are cached, and how many
//! password tries an account and an address get.

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
    /// API keys: how long an instance trusts a verified one, how many an owner may hold.
    pub api_keys: ApiKeyConfig,
    /// How long an instance trusts a user's credentials version without reading it again:
    /// the longest an access token revoked on another instance (a password change, a deleted
    /// account) goes on working here. `0s` reads on every request.
    #[serde(with = "humantime_serde")]
    pub revocation_check_ttl: Duration,
    /// Users whose credentials version an instance keeps; the least recently used go first.
    pub revocation_cache_max_entries: u64,
    /// Tries of login and registration per account and per client address.
    pub login_limits: LoginLimitsConfig,
}

/// `[auth.api_keys]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeyConfig {
    /// How long an instance trusts a key it verified without asking the directory again:
    /// the longest a key revoked (or re-tiered) on another instance goes on working here.
    /// `0s` asks the directory on every request.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Verified keys kept per instance; the least recently used go first.
    pub cache_max_entries: u64,
    /// Live keys one user may hold; creating one more is a 409.
    pub max_per_user: u32,
}

impl Default for ApiKeyConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(30),
            cache_max_entries: 100_000,
            max_per_user: 20,
        }
    }
}

/// `[auth.login_limits]`: password guessing slowed down in Redis, for every instance
/// together (`src/traffic/login.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginLimitsConfig {
    /// Login tries per account (by normalised email, known or not) per `window`, and as many
    /// registration tries per email; successful ones count too.
    pub account_tries: u32,
    /// Login tries per client address per `window`, and as many registration tries. Higher
    /// than `account_tries`: many people can share one address (an office, a carrier NAT).
    pub address_tries: u32,
    /// The period the tries are counted over; a spent budget comes back gradually over it
    /// (with `ratelimit.algorithm`'s shape).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for LoginLimitsConfig {
    fn default() -> Self {
        Self {
            account_tries: 10,
            address_tries: 100,
            window: Duration::from_secs(15 * 60),
        }
    }
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
            api_keys: ApiKeyConfig::default(),
            revocation_check_ttl: Duration::from_secs(10),
            revocation_cache_max_entries: 100_000,
            login_limits: LoginLimitsConfig::default(),
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
        ensure!(
            self.api_keys.max_per_user >= 1,
            "auth.api_keys.max_per_user must be at least 1"
        );
        let limits = &self.login_limits;
        ensure!(
            limits.account_tries >= 1 && limits.address_tries >= 1,
            "auth.login_limits: account_tries and address_tries must be at least 1 (0 would refuse every login)"
        );
        ensure!(
            !limits.window.is_zero(),
            "auth.login_limits.window must be more than zero"
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
