//! JWT access tokens: HS256 only, issuer and audience pinned.
//!
//! Pinning the algorithm matters: a verifier that trusts the token's own `alg` header accepts
//! `alg: none` (no signature at all) or an HMAC signed with a public key. jsonwebtoken's
//! `Validation::new(HS256)` accepts HS256 and nothing else.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::{config::AuthConfig, domain::Tier, error::Error};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (RFC 7519 makes `sub` a string).
    pub sub: String,
    pub tier: Tier,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    /// The user's credentials version at issue: a password change bumps it, and tokens of an
    /// older version are refused (`sessions.rs`).
    #[serde(default)]
    pub ver: i32,
}

/// What login returns.
#[derive(Debug, Serialize)]
pub struct IssuedToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(config: &AuthConfig) -> Self {
        let secret = config.jwt_secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        // Instances' clocks drift a little; a minute of grace would keep a revoked session
        // alive for too long.
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_secs: config.access_token_ttl.as_secs(),
        }
    }

    pub fn issue(&self, user_id: i64, tier: Tier, version: i32) -> anyhow::Result<IssuedToken> {
        let now = now();
        let claims = Claims {
            sub: user_id.to_string(),
            tier,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + self.ttl_secs,
            iat: now,
            ver: version,
        };
        let access_token = self.sign(&claims)?;
        Ok(IssuedToken {
            access_token,
            token_type: "Bearer",
            expires_in: self.ttl_secs,
        })
    }

    /// Signs arbitrary claims; tests use it to mint expired tokens.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    /// Verifies signature, algorithm, issuer, audience and expiry; returns the user id.
    pub fn verify(&self, token: &str) -> Result<(i64, Tier), Error> {
        self.verify_versioned(token)
            .map(|(id, tier, _version)| (id, tier))
    }

    /// As [`JwtKeys::verify`], with the credentials version the token was issued under (which
    /// the caller must still check against the user's current one).
    pub fn verify_versioned(&self, token: &str) -> Result<(i64, Tier, i32), Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| {
                Error::Unauthorized(match err.kind() {
                    ErrorKind::ExpiredSignature => "the access token has expired",
                    ErrorKind::InvalidSignature => "the access token's signature is invalid",
                    ErrorKind::InvalidAlgorithm => {
                        "the access token uses an algorithm this API does not accept"
                    }
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                        "the access token was not issued for this API"
                    }
                    _ => "the access token is malformed",
                })
            })?;
        let id = data
            .claims
            .sub
            .parse::<i64>()
            .map_err(|_| Error::Unauthorized("the access token is malformed"))?;
        Ok((id, data.claims.tier, data.claims.ver))
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&AuthConfig::default())
    }

    #[test]
    fn an_issued_token_verifies_to_its_user() {
        let keys = keys();
        let token = keys
            .issue(42, Tier::Pro, 0)
            .expect("signing works")
            .access_token;
        let (id, tier) = keys.verify(&token).expect("valid token");
        assert_eq!((id, tier), (42, Tier::Pro));
    }

    #[test]
    fn an_unsigned_alg_none_token_is_refused() {
        let keys = keys();
        let token = keys
            .issue(42, Tier::Free, 0)
            .expect("signing works")
            .access_token;
        let mut parts = token.split('.');
        let (_, payload) = (parts.next(), parts.next().expect("three parts"));
        // {"alg":"none","typ":"JWT"}
        let forged = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(matches!(keys.verify(&forged), Err(Error::Unauthorized(_))));
    }
}
