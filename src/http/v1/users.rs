//! Users: list, read, change, delete; and a user's posts.

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
};
use serde::Deserialize;

use super::views::{PostView, UserView};
use crate::{
    AppState,
    auth::{AuthUser, MaybeAuthUser},
    db::{Page, Session},
    error::Result,
    http::{
        conditional::{Audience, conditional_json},
        extract::{Id, Json},
    },
    operations::{accounts, posts as post_ops, users as ops},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list))
        .route("/users/{id}", get(show).patch(update).delete(remove))
        .route("/users/{id}/posts", get(posts))
}

/// `GET /v1/users?limit&offset`, ordered by id across shards.
async fn list(
    State(app): State<AppState>,
    session: Session,
    viewer: MaybeAuthUser,
    page: Page,
) -> Result<Json<Vec<UserView>>> {
    let users = ops::list(&app, &session, page).await?;
    Ok(Json(
        users
            .into_iter()
            .map(|u| UserView::new(u, viewer.id()))
            .collect(),
    ))
}

async fn show(
    State(app): State<AppState>,
    session: Session,
    viewer: MaybeAuthUser,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Response> {
    let user = ops::get(&app, &session, id).await?;
    conditional_json(
        &headers,
        &UserView::new(user, viewer.id()),
        Audience::PerViewer,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    email: Option<String>,
    name: Option<String>,
    password: Option<String>,
}

/// `PATCH /v1/users/{id}`: the user themself only.
async fn update(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Id(id): Id,
    Json(body): Json<UpdateBody>,
) -> Result<Json<UserView>> {
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

/// `DELETE /v1/users/{id}`: the user themself only; their posts go with them.
async fn remove(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Id(id): Id,
) -> Result<StatusCode> {
    accounts::delete(&app, &session, me, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/users/{id}/posts?limit&offset`, newest first.
async fn posts(
    State(app): State<AppState>,
    session: Session,
    Id(id): Id,
    page: Page,
) -> Result<Json<Vec<PostView>>> {
    let posts = post_ops::of_user(&app, &session, id, page).await?;
    Ok(Json(posts.into_iter().map(PostView::from).collect()))
}
