//! Posts: create, read, change, delete, and the cross-shard feed.

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use super::views::PostView;
use crate::{
    AppState,
    auth::AuthUser,
    db::{Page, Session},
    error::Result,
    http::{
        conditional::{Audience, conditional_json},
        extract::{Id, Json},
    },
    operations::posts as ops,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/posts", get(feed).post(create))
        .route("/posts/{id}", get(show).patch(update).delete(remove))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    title: String,
    body: String,
}

/// `POST /v1/posts`: written on the author's shard.
async fn create(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse> {
    let post = ops::create(&app, &session, me, &body.title, &body.body).await?;
    let location = format!("/v1/posts/{}", post.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(PostView::from(post)),
    ))
}

async fn show(
    State(app): State<AppState>,
    session: Session,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Response> {
    let post = ops::get(&app, &session, id).await?;
    conditional_json(&headers, &PostView::from(post), Audience::Public)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    title: Option<String>,
    body: Option<String>,
}

async fn update(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Id(id): Id,
    Json(body): Json<UpdateBody>,
) -> Result<Json<PostView>> {
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

async fn remove(
    State(app): State<AppState>,
    session: Session,
    me: AuthUser,
    Id(id): Id,
) -> Result<StatusCode> {
    ops::delete(&app, &session, me, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/posts?limit&offset`: every shard's posts, newest first.
async fn feed(
    State(app): State<AppState>,
    session: Session,
    page: Page,
) -> Result<Json<Vec<PostView>>> {
    let posts = ops::feed(&app, &session, page).await?;
    Ok(Json(posts.into_iter().map(PostView::from).collect()))
}
