//! The authenticated user, from `Authorization: Bearer <token>`.

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};

use crate::{AppState, domain::Tier, error::Error};

/// A request with a valid access token. Missing or bad credentials reject with 401.
#[derive(Debug, Clone, Copy)]
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
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Self(None));
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
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let (id, tier) = app.jwt.verify(token)?;
        Ok(Self(Some(AuthUser { id, tier })))
    }
}
