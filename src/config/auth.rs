//! `[auth]`: how access tokens are signed and checked.

use std::time::Duration;

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
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(DEV_JWT_SECRET),
            issuer: "scalable-api".into(),
            audience: "scalable-api".into(),
            access_token_ttl: Duration::from_secs(3600),
        }
    }
}

impl AuthConfig {
    /// A secret long enough for HS256, never the development one in production, and tokens
    /// that live at least a second.
    pub(super) fn validate(&self, profile: Profile) -> anyhow::Result<()> {
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
