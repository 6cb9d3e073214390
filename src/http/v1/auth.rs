//! Registration and login.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::post,
};
use secrecy::SecretString;
use serde::Deserialize;

use super::views::UserView;
use crate::{
    AppState,
    auth::IssuedToken,
    db::Session,
    error::Result,
    http::{client::ClientAddr, extract::Json},
    operations::accounts,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    email: String,
    name: String,
    password: String,
}

/// `POST /v1/auth/register` -> 201 with the user (and its `Location`); 409 if the email is
/// taken on any shard; 422 with every invalid field; 429 past the login limits.
async fn register(
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
    let location = format!("/v1/users/{}", user.id);
    let id = user.id;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(UserView::new(user, Some(id))),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    password: String,
}

/// `POST /v1/auth/login` -> an access token. Unknown email and wrong password get the same
/// 401, in about the same time; too many tries for the account or from the address a 429
/// (see [`accounts::login`]).
async fn login(
    State(app): State<AppState>,
    session: Session,
    ClientAddr(client): ClientAddr,
    Json(body): Json<LoginBody>,
) -> Result<Json<IssuedToken>> {
    let token = accounts::login(
        &app,
        &session,
        client,
        &body.email,
        SecretString::from(body.password),
    )
    .await?;
    Ok(Json(token))
}
