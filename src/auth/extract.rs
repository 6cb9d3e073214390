//! The extractors handlers take: who a request acts as, for reading, writing, or managing
//! keys. Each reads the request's one [`Principal`] and asks it the question of its route
//! (see `principal.rs` for what an API key may do).
//!
//! | extractor | access token | `write` key | `read` key | none |
//! |---|---|---|---|---|
//! | [`MaybeAuthUser`] (reads) | its user | the owner | the owner | anonymous |
//! | [`AuthUser`] (writes) | its user | the owner | 403 | 401 |
//! | [`TokenUser`] (managing keys) | its user | 403 | 403 | 401 |

use axum::{extract::FromRequestParts, http::request::Parts};

use crate::{AppState, error::Error};

use super::{AuthUser, Principal, RefusedCredentials, TokenUser};

/// For public routes that show more to a signed-in viewer (a user's own email). No header
/// means anonymous; a header with bad credentials is still a 401, not silently anonymous.
#[derive(Debug, Clone, Copy)]
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl MaybeAuthUser {
    pub fn id(&self) -> Option<i64> {
        self.0.map(|user| user.id)
    }
}

/// Write routes: an access token or a `write` key.
impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Error> {
        Principal::from_request_parts(parts, app).await?.writer()
    }
}

impl FromRequestParts<AppState> for MaybeAuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Error> {
        let principal = Principal::from_request_parts(parts, app).await?;
        Ok(Self(principal.viewer()))
    }
}

/// Routes no API key may use: an access token only.
impl FromRequestParts<AppState> for TokenUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Error> {
        Principal::from_request_parts(parts, app)
            .await?
            .token_user()
    }
}

/// The principal the traffic layer resolved for this request (it stores it in the request's
/// extensions), the refusal it noted ([`RefusedCredentials`]), or resolved here when no layer
/// did.
impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Error> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(*principal);
        }
        if let Some(RefusedCredentials(detail)) = parts.extensions.get::<RefusedCredentials>() {
            return Err(Error::Unauthorized(detail));
        }
        match Principal::resolve(app, &parts.headers).await {
            Ok(principal) => {
                parts.extensions.insert(principal);
                Ok(principal)
            }
            Err(err) => {
                RefusedCredentials::note(&err, &mut parts.extensions);
                Err(err)
            }
        }
    }
}
