//! Writing posts: create, change, delete (the reads are each version's: see `v1.rs`, `v2.rs`).

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{Version, views::PostView};
use crate::{
    AppState,
    auth::AuthUser,
    db::Session,
    error::Result,
    http::extract::{Id, Json},
    operations::posts as ops,
};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    title: String,
    body: String,
}

/// `POST /v{1,2}/posts`: written on the author's shard.
pub(super) async fn create<V: Version>(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse> {
    let post = ops::create(&app, &session, me, &body.title, &body.body).await?;
    let location = format!("{}/posts/{}", V::PREFIX, post.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(PostView::<V::Id>::from(post)),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    title: Option<String>,
    body: Option<String>,
}

pub(super) async fn update<V: Version>(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Id(id): Id,
    Json(body): Json<UpdateBody>,
) -> Result<Json<PostView<V::Id>>> {
    let post = ops::update(
        &app,
        &session,
        me,
        id,
        body.title.as_deref(),
        body.body.as_deref(),
    )
    .await?;
    Ok(Json(post.into()))
}

pub(super) async fn remove(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Id(id): Id,
) -> Result<StatusCode> {
    ops::delete(&app, &session, me, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
