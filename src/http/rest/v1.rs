//! REST v1: JSON integer ids, offset pagination (`?limit&offset`, the offset bounded by
//! `api.max_offset`), lists as bare arrays.

use utoipa::openapi::{
    RefOr, Schema,
    path::Parameter,
    schema::{ObjectBuilder, Type},
};

use super::{Reads, Version, spec, views};
use crate::{
    AppState,
    auth::MaybeAuthUser,
    db::{Page, Session},
    error::Result,
    http::{
        conditional::{Audience, conditional_json},
        extract::{Id, Json},
    },
    operations::{posts as post_ops, users as user_ops},
};
use axum::{
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::get,
};

pub(crate) struct V1;

type UserView = views::UserView<i64>;
type PostView = views::PostView<i64>;
type ApiKeyView = views::ApiKeyView<i64>;

impl Version for V1 {
    const PREFIX: &'static str = "/v1";
    const NAME: &'static str = "V1";

    type Id = i64;

    type ApiKeys = Vec<ApiKeyView>;
    fn api_keys(keys: Vec<ApiKeyView>) -> Vec<ApiKeyView> {
        keys
    }

    fn reads() -> Reads {
        Reads {
            users: get(list_users),
            user: get(show_user),
            user_posts: get(user_posts),
            feed: get(feed),
            post: get(show_post),
        }
    }

    fn list_schema(item: RefOr<Schema>) -> RefOr<Schema> {
        spec::array_of(item)
    }

    fn shape(schema: RefOr<Schema>) -> RefOr<Schema> {
        schema
    }

    fn list_params(_users: bool) -> Vec<Parameter> {
        vec![
            spec::limit(),
            spec::query(
                "offset",
                "Rows to skip, 0 to 10,000 (v2's cursors have no such bound)",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(10_000)),
            ),
        ]
    }

    fn show_params(_users: bool) -> Vec<Parameter> {
        Vec::new()
    }
}

/// `GET /v1/users?limit&offset`, ordered by id across shards; private, since the viewer's
/// own entry carries their email.
async fn list_users(
    State(app): State<AppState>,
    session: Session,
    viewer: MaybeAuthUser,
    page: Page,
) -> Result<Response> {
    let users = user_ops::list(&app, &session, page).await?;
    let users: Vec<UserView> = users
        .into_iter()
        .map(|u| UserView::new(u, viewer.id()))
        .collect();
    let mut response = Json(users).into_response();
    Audience::PerViewer.mark(response.headers_mut());
    Ok(response)
}

async fn show_user(
    State(app): State<AppState>,
    session: Session,
    viewer: MaybeAuthUser,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Response> {
    let user = user_ops::get(&app, &session, id).await?;
    conditional_json(
        &headers,
        &UserView::new(user, viewer.id()),
        Audience::PerViewer,
    )
}

/// `GET /v1/users/{id}/posts?limit&offset`, newest first.
async fn user_posts(
    State(app): State<AppState>,
    session: Session,
    Id(id): Id,
    page: Page,
) -> Result<Json<Vec<PostView>>> {
    let posts = post_ops::of_user(&app, &session, id, page).await?;
    Ok(Json(posts.into_iter().map(PostView::from).collect()))
}

/// `GET /v1/posts?limit&offset`: every shard's posts, newest first.
async fn feed(
    State(app): State<AppState>,
    session: Session,
    page: Page,
) -> Result<Json<Vec<PostView>>> {
    let posts = post_ops::feed(&app, &session, page).await?;
    Ok(Json(posts.into_iter().map(PostView::from).collect()))
}

async fn show_post(
    State(app): State<AppState>,
    session: Session,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Response> {
    let post = post_ops::get(&app, &session, id).await?;
    conditional_json(&headers, &PostView::from(post), Audience::Public)
}
