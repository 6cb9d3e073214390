//! [`Principal`]: who a request acts for, resolved once from its credentials.
//!
//! Three kinds of caller reach the service: anonymous clients (known only by their address),
//! users with an access token, and service clients with an API key. Rate limits are keyed
//! and sized by the principal (`src/traffic/`); the extractors ([`super::AuthUser`],
//! [`super::MaybeAuthUser`], [`super::TokenUser`]) read the same resolution, so a request's
//! credentials are checked once however many layers ask.
//!
//! # What an API key may do
//!
//! A key acts as its owner. Any key may read as them ([`Principal::viewer`]: their own email
//! shows, as with their token). A `write` key may also write as them, everything their token
//! may; a `read` key is refused on every write with a 403 ([`Principal::writer`]). No key
//! may create, list or revoke keys: that needs the owner's access token
//! ([`Principal::token_user`]), or a leaked key could mint successors that outlive its
//! revocation. Every refusal of a key is an `api_key.refused` line in the audit log.

use axum::http::{HeaderMap, header};

use crate::{
    AppState, config::LimitTier, domain::Tier, error::Error, telemetry::audit::AuditEvent,
};

use super::Scope;

impl From<Tier> for LimitTier {
    fn from(tier: Tier) -> Self {
        match tier {
            Tier::Free => Self::Free,
            Tier::Pro => Self::Pro,
        }
    }
}

/// The user of a valid access token, with the tier its claims carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUser {
    pub id: i64,
    pub tier: Tier,
}

/// The user a request acts as: the subject of its access token, or the owner of its API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub id: i64,
    /// The API key the request came with; `None` for an access token. The audit log names it.
    pub key_id: Option<i64>,
}

impl From<TokenUser> for AuthUser {
    fn from(user: TokenUser) -> Self {
        Self {
            id: user.id,
            key_id: None,
        }
    }
}

/// A verified API key: it acts for its owner, within its scope, under its own tier (the
/// `service` tier unless an operator moved it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHolder {
    pub key_id: i64,
    pub owner: i64,
    pub scope: Scope,
    pub tier: LimitTier,
}

/// Left in a request's extensions by the first layer that found its credentials refused (a
/// bad token, an unknown or revoked API key), so that the layers after it and the handler
/// answer the same 401 without checking them again: an unknown API key costs a directory
/// query and an audit line each time it is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedCredentials(pub &'static str);

impl RefusedCredentials {
    /// Notes `err` in `extensions` when it is a refusal of the credentials (a transient
    /// failure, such as the directory being down, is not: the next layer may try again).
    pub fn note(err: &Error, extensions: &mut axum::http::Extensions) {
        if let Error::Unauthorized(detail) = err {
            extensions.insert(Self(detail));
        }
    }
}

/// Who a request acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    User(TokenUser),
    ApiKey(KeyHolder),
}

impl Principal {
    pub fn tier(&self) -> LimitTier {
        match self {
            Self::Anonymous => LimitTier::Anonymous,
            Self::User(user) => user.tier.into(),
            Self::ApiKey(key) => key.tier,
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
        let (id, tier, version) = app.jwt.verify_versioned(token)?;
        app.credential_versions.check(id, version).await?;
        Ok(Self::User(TokenUser { id, tier }))
    }

    /// The user whose view this request gets (their own email shows): a token's user or any
    /// key's owner; `None` when anonymous.
    pub fn viewer(&self) -> Option<AuthUser> {
        match *self {
            Self::Anonymous => None,
            Self::User(user) => Some(user.into()),
            Self::ApiKey(key) => Some(AuthUser {
                id: key.owner,
                key_id: Some(key.key_id),
            }),
        }
    }

    /// The user this request may write as: a token's user, or the owner of a `write` key.
    /// Anonymous is a 401; a `read` key a 403 (audited).
    pub fn writer(&self) -> Result<AuthUser, Error> {
        match *self {
            Self::ApiKey(key) if key.scope == Scope::Read => Err(refused(
                key,
                Error::Forbidden(
                    "this API key has the `read` scope; writes need a `write` key or an access token",
                ),
            )),
            principal => principal.viewer().ok_or(Error::Unauthorized(
                "this route needs an access token (Authorization: Bearer <token>) or a `write` API key (X-Api-Key: <key>)",
            )),
        }
    }

    /// The user of the request's access token, for what no API key may do (managing keys).
    /// Anonymous is a 401; any key a 403 (audited).
    pub fn token_user(&self) -> Result<TokenUser, Error> {
        match *self {
            Self::User(user) => Ok(user),
            Self::ApiKey(key) => Err(refused(
                key,
                Error::Forbidden(
                    "managing API keys needs an access token; an API key cannot create, list or revoke keys",
                ),
            )),
            Self::Anonymous => Err(Error::Unauthorized(
                "this route needs an access token: Authorization: Bearer <token>",
            )),
        }
    }
}

/// Audits a verified key refused for what it tried, and returns the refusal.
fn refused(key: KeyHolder, err: Error) -> Error {
    AuditEvent {
        action: "api_key.refused",
        actor: Some(key.owner),
        key: Some(key.key_id),
        subject: Some(key.key_id),
        outcome: err.slug(),
    }
    .record();
    err
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

/// Checks the key against the directory, through this instance's cache (`api_key.rs`).
async fn resolve_api_key(app: &AppState, raw: &str) -> Result<Principal, Error> {
    app.api_keys.verify(raw).await.map(Principal::ApiKey)
}
