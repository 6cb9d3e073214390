//! Posts: create, read, change, delete, and the cross-shard feed.

use axum::{
    Router,
    extract::State,
    http::HeaderMap,
    http::{StatusCode, header},
    response::IntoResponse,
    response::Response,
    routing::get,
};
use serde::Deserialize;

use super::views::PostView;
use crate::{
    AppState,
    auth::AuthUser,
    db::{AuthorWrite, Page, Scope},
    domain::{NewPost, PostPatch},
    error::{Error, Result},
    http::{
        conditional::{Audience, conditional_json},
        extract::{Id, Json},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/posts", get(feed).post(create))
        .route("/posts/{id}", get(show).patch(update).delete(remove))
}

const NO_POST: Error = Error::NotFound("no post has this id");
const NOT_AUTHOR: Error = Error::Forbidden("only the author may change this post");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    title: String,
    body: String,
}

/// `POST /v1/posts`: written on the author's shard.
async fn create(
    State(app): State<AppState>,
    scope: Scope,
    me: AuthUser,
    Json(body): Json<CreateBody>,
) -> Result<impl IntoResponse> {
    let new = NewPost::parse(&body.title, &body.body)?;
    let post = app.db.create_post(&scope, me.id, &new).await?;
    app.cache.post_written(&scope, post.id, me.id).await;
    let location = format!("/v1/posts/{}", post.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(PostView::from(post)),
    ))
}

async fn show(
    State(app): State<AppState>,
    scope: Scope,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Response> {
    let post = app.cache.post(&scope, id).await?.ok_or(NO_POST)?;
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
    scope: Scope,
    me: AuthUser,
    Id(id): Id,
    Json(body): Json<UpdateBody>,
) -> Result<Json<PostView>> {
    let patch = PostPatch::parse(body.title.as_deref(), body.body.as_deref())?;
    match app.db.update_post(&scope, id, me.id, &patch).await? {
        AuthorWrite::Done(post) => {
            app.cache.post_written(&scope, post.id, me.id).await;
            Ok(Json(post.into()))
        }
        AuthorWrite::NotFound => Err(NO_POST),
        AuthorWrite::NotAuthor => Err(NOT_AUTHOR),
    }
}

async fn remove(
    State(app): State<AppState>,
    scope: Scope,
    me: AuthUser,
    Id(id): Id,
) -> Result<StatusCode> {
    match app.db.delete_post(&scope, id, me.id).await? {
        AuthorWrite::Done(()) => {
            app.cache.post_written(&scope, id, me.id).await;
            Ok(StatusCode::NO_CONTENT)
        }
        AuthorWrite::NotFound => Err(NO_POST),
        AuthorWrite::NotAuthor => Err(NOT_AUTHOR),
    }
}

/// `GET /v1/posts?limit&offset`: every shard's posts, newest first.
async fn feed(
    State(app): State<AppState>,
    scope: Scope,
    page: Page,
) -> Result<Json<Vec<PostView>>> {
    let posts = app.db.feed(&scope, page).await?;
    Ok(Json(posts.into_iter().map(PostView::from).collect()))
}
