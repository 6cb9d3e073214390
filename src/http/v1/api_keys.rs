//! API keys: an owner creates, lists and revokes their own, with an access token.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{delete, get},
};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::views::{ApiKeyView, CreatedApiKeyView};
use crate::{
    AppState,
    auth::TokenUser,
    error::Result,
    http::extract::{Id, Json},
    operations::api_keys as ops,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list).post(create))
        .route("/api-keys/{id}", delete(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    scope: String,
}

/// `POST /v1/api-keys` -> 201 with the key, the only time it is ever shown; `no-store`, so
/// no cache on the way keeps a copy. 422 for a bad name or scope; 409 past
/// `auth.api_keys.max_per_user`.
async fn create(
    State(app): State<AppState>,
    me: TokenUser,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse> {
    let issued = ops::create(&app, me, &body.name, &body.scope).await?;
    let view = CreatedApiKeyView {
        key: issued.secret.expose_secret().to_owned(),
        api_key: issued.key.into(),
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(view),
    ))
}

/// `GET /v1/api-keys`: the caller's live keys, without their secrets (nothing stores them).
async fn list(State(app): State<AppState>, me: TokenUser) -> Result<Json<Vec<ApiKeyView>>> {
    let keys = ops::list(&app, me).await?;
    Ok(Json(keys.into_iter().map(ApiKeyView::from).collect()))
}

/// `DELETE /v1/api-keys/{id}` -> 204; 404 unless it is one of the caller's live keys.
async fn revoke(State(app): State<AppState>, me: TokenUser, Id(id): Id) -> Result<StatusCode> {
    ops::revoke(&app, me, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
