//! The extractors handlers take: the authenticated user, or maybe one.

use axum::{extract::FromRequestParts, http::request::Parts};

use crate::{AppState, domain::Tier, error::Error};

use super::Principal;

/// A request with a valid access token. Missing or bad credentials reject with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthUser {
    pub id: i64,
    pub tier: Tier,
}

/// For public routes that show more to a signed-in viewer (a user's own email). No header
/// means anonymous; a header with a bad token is still a 401, not silently anonymous.
#[derive(Debug, Clone, Copy)]
pub struct MaybeAuthUser(pub Option<AuthUser>);

impl MaybeAuthUser {
    pub fn id(&self) -> Option<i64> {
        self.0.map(|user| user.id)
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Error> {
        MaybeAuthUser::from_request_parts(parts, app)
            .await?
            .0
            .ok_or(Error::Unauthorized(
                "this route needs an access token: Authorization: Bearer <token>",
            ))
    }
}

impl FromRequestParts<AppState> for MaybeAuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Error> {
        let principal = Principal::from_request_parts(parts, app).await?;
        Ok(Self(match principal {
            Principal::User(user) => Some(user),
            Principal::Anonymous | Principal::ApiKey(_) => None,
        }))
    }
}

/// The principal the traffic layer resolved for this request (it stores it in the request's
/// extensions), or resolved here when no layer did.
impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Error> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(*principal);
        }
        let principal = Principal::resolve(app, &parts.headers).await?;
        parts.extensions.insert(principal);
        Ok(principal)
    }
}
