//! API keys: an owner creates, lists and revokes their own, with an access token.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{
    Version,
    views::{ApiKeyView, CreatedApiKeyView},
};
use crate::{
    AppState,
    auth::TokenUser,
    error::Result,
    http::extract::{Id, Json},
    operations::api_keys as ops,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: String,
    scope: String,
}

/// `POST /v{1,2}/api-keys` -> 201 with the key, the only time it is ever shown; `no-store`, so
/// no cache on the way keeps a copy. 422 for a bad name or scope; 409 past
/// `auth.api_keys.max_per_user`.
pub(super) async fn create<V: Version>(
    State(app): State<AppState>,
    me: TokenUser,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse> {
    let issued = ops::create(&app, me, &body.name, &body.scope).await?;
    let view = CreatedApiKeyView::<V::Id> {
        api_key: issued.key.into(),
        key: issued.secret.expose_secret().to_owned(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(view),
    ))
}

/// `GET /v{1,2}/api-keys`: the caller's live keys, without their secrets (nothing stores them).
pub(super) async fn list<V: Version>(
    State(app): State<AppState>,
    me: TokenUser,
) -> Result<Json<V::ApiKeys>> {
    let keys = ops::list(&app, me).await?;
    Ok(Json(V::api_keys(
        keys.into_iter().map(ApiKeyView::from).collect(),
    )))
}

/// `DELETE /v{1,2}/api-keys/{id}` -> 204; 404 unless it is one of the caller's live keys.
pub(super) async fn revoke(
    State(app): State<AppState>,
    me: TokenUser,
    Id(id): Id,
) -> Result<StatusCode> {
    ops::revoke(&app, me, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
