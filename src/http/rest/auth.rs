//! Registration and login.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{Version, views::UserView};
use crate::{
    AppState,
    auth::IssuedToken,
    db::Session,
    error::Result,
    http::{client::ClientAddr, extract::Json},
    operations::accounts,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterBody {
    email: String,
    name: String,
    password: String,
}

/// `POST /v{1,2}/auth/register` -> 201 with the user (and its `Location`); 409 if the email is
/// taken on any shard; 422 with every invalid field; 429 past the login limits.
pub(super) async fn register<V: Version>(
    State(app): State<AppState>,
    session: Session,
    ClientAddr(client): ClientAddr,
    Json(body): Json<RegisterBody>,
) -> Result<impl IntoResponse> {
    let user = accounts::register(
        &app,
        &session,
        client,
        &body.email,
        &body.name,
        &body.password,
    )
    .await?;
    let location = format!("{}/users/{}", V::PREFIX, user.id);
    let id = user.id;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(UserView::<V::Id>::new(user, Some(id))),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    email: String,
    password: String,
}

/// `POST /v{1,2}/auth/login` -> an access token. Unknown email and wrong password get the same
/// 401, in about the same time; too many tries for the account or from the address a 429
/// (see [`accounts::login`]). `Cache-Control: no-store` (RFC 6749 5.1): no cache on the way,
/// and not the idempotency store either, keeps a copy of the token.
pub(super) async fn login(
    State(app): State<AppState>,
    session: Session,
    ClientAddr(client): ClientAddr,
    Json(body): Json<LoginBody>,
) -> Result<impl IntoResponse> {
    let token = accounts::login(
        &app,
        &session,
        client,
        &body.email,
        SecretString::from(body.password),
    )
    .await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json::<IssuedToken>(token),
    ))
}
