//! Changing and deleting users (the reads are each version's: see `v1.rs`, `v2.rs`).

use axum::{extract::State, http::StatusCode};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{Version, views::UserView};
use crate::{
    AppState,
    auth::AuthUser,
    db::Session,
    error::Result,
    http::extract::{Id, Json},
    operations::accounts,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    email: Option<String>,
    name: Option<String>,
    password: Option<String>,
}

/// `PATCH /v{1,2}/users/{id}`: the user themself only.
pub(super) async fn update<V: Version>(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Id(id): Id,
    Json(body): Json<UpdateBody>,
) -> Result<Json<UserView<V::Id>>> {
    let user = accounts::update(
        &app,
        &session,
        me,
        id,
        body.email.as_deref(),
        body.name.as_deref(),
        body.password.as_deref(),
    )
    .await?;
    Ok(Json(UserView::new(user, Some(me.id))))
}

/// `DELETE /v{1,2}/users/{id}`: the user themself only; their posts go with them.
pub(super) async fn remove(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Id(id): Id,
) -> Result<StatusCode> {
    accounts::delete(&app, &session, me, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
