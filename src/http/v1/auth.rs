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
    auth::{IssuedToken, password},
    db::Scope,
    domain::{Email, NewUser},
    error::{Error, Result},
    http::extract::Json,
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
/// taken on any shard; 422 with every invalid field.
async fn register(
    State(app): State<AppState>,
    scope: Scope,
    Json(body): Json<RegisterBody>,
) -> Result<impl IntoResponse> {
    let new = NewUser::parse(&body.email, &body.name, &body.password)?;
    let hash = password::hash(&new.password.0).await?;
    let user = app.db.register_user(&scope, &new, &hash).await?;
    // A "not found" for this new id may be cached (someone asked for it before): drop it.
    app.cache.user_written(&scope, user.id).await;
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
/// 401, in about the same time (see [`password::verify`]).
async fn login(
    State(app): State<AppState>,
    scope: Scope,
    Json(body): Json<LoginBody>,
) -> Result<Json<IssuedToken>> {
    const REFUSED: Error = Error::Unauthorized("the email or password is wrong");
    let secret = SecretString::from(body.password);
    let user = match Email::parse(&body.email) {
        Ok(email) => app.db.user_by_email(&scope, &email).await?,
        Err(_) => None,
    };
    let (stored, tier, id) = match user {
        Some(user) => (Some(user.password_hash), user.tier, user.id),
        None => (None, crate::domain::Tier::Free, 0),
    };
    if !password::verify(&secret, stored).await? {
        return Err(REFUSED);
    }
    Ok(Json(app.jwt.issue(id, tier)?))
}
