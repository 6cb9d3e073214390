//! [`Principal`]: who a request acts for, resolved once from its credentials.
//!
//! Three kinds of caller reach the service: anonymous clients (known only by their address),
//! users with an access token, and service clients with an API key. Rate limits are keyed
//! and sized by the principal (`src/traffic/`); the extractors ([`super::AuthUser`],
//! [`super::MaybeAuthUser`]) read the same resolution, so a request's credentials are checked
//! once however many layers ask.

use axum::http::{HeaderMap, header};

use crate::{AppState, config::LimitTier, domain::Tier, error::Error};

use super::AuthUser;

impl From<Tier> for LimitTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Free => Self::Free,
            Tier::Pro => Self::Pro,
        }
    }
}

/// What an API key may do: `Read` keys are refused on every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

/// A verified API key: it acts for its owner, within its scope, under the `service` tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHolder {
    pub key_id: i64,
    pub owner: i64,
    pub scope: Scope,
}

/// Who a request acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    User(AuthUser),
    ApiKey(KeyHolder),
}

impl Principal {
    pub fn tier(&self) -> LimitTier {
        match self {
            Self::Anonymous => LimitTier::Anonymous,
            Self::User(user) => user.tier.into(),
            Self::ApiKey(_) => LimitTier::Service,
        }
    }

    /// The user this request acts as, if any: the token's subject or the key's owner.
    pub fn user_id(&self) -> Option<i64> {
        match self {
            Self::Anonymous => None,
            Self::User(user) => Some(user.id),
            Self::ApiKey(key) => Some(key.owner),
        }
    }

    /// Resolves the request's credentials: `Authorization: Bearer <jwt>`, or an API key in
    /// `X-Api-Key` / `Authorization: ApiKey <key>`. No credentials is `Anonymous`; bad
    /// credentials are a 401, never silently anonymous.
    pub async fn resolve(app: &AppState, headers: &HeaderMap) -> Result<Self, Error> {
        if let Some(raw) = api_key(headers)? {
            return resolve_api_key(app, raw).await;
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Self::Anonymous);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Error::Unauthorized(
                "the Authorization header must be `Bearer <token>` or `ApiKey <key>`",
            ))?;
        let (id, tier) = app.jwt.verify(token)?;
        Ok(Self::User(AuthUser { id, tier }))
    }
}

/// The raw API key, from `X-Api-Key` or `Authorization: ApiKey <key>`; both at once is a 401
/// (which one would count is a guess).
fn api_key(headers: &HeaderMap) -> Result<Option<&str>, Error> {
    let from_header = headers.get("x-api-key");
    let from_authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("ApiKey "));
    match (from_header, from_authorization) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Error::Unauthorized(
            "send the API key once: in X-Api-Key or in Authorization, not both",
        )),
        (Some(value), None) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| Error::Unauthorized("the X-Api-Key header is not a valid API key")),
        (None, Some(value)) => Ok(Some(value.trim())),
    }
}

/// Looks the key up and checks it (filled in with the API keys' store).
async fn resolve_api_key(_app: &AppState, _raw: &str) -> Result<Principal, Error> {
    Err(Error::Unauthorized("API keys are not accepted yet"))
}
