//! REST, both versions from one set of handlers.
//!
//! A version is a [`Version`]: how it writes ids (the views in `views.rs` are shared), and its
//! reads (the lists, and the single reads v2 shapes with `fields=` and `include=`). Everything
//! else (registering, logging in, every write) is one generic handler per operation in
//! `auth.rs`, `api_keys.rs`, `users.rs` and `posts.rs`, mounted once per version, so a fix
//! to a write lands in both versions at once. Both call the same operations
//! (`src/operations/`), so the data path, the cache and its invalidation are shared too.
//!
//! - v1 (`v1.rs`): integer ids, offset pages (bounded by `api.max_offset`), bare arrays.
//! - v2 (`v2.rs`): string ids, `{data, next_cursor}` lists with keyset cursors
//!   (`../cursor.rs`), `include=posts`, `fields=`.

mod api_keys;
mod auth;
mod posts;
pub(crate) mod spec;
mod users;
pub(crate) mod v1;
pub(crate) mod v2;
mod views;

use axum::{
    Router,
    routing::{MethodRouter, delete, get, post},
};
use serde::Serialize;

use utoipa::openapi::{RefOr, Schema, path::Parameter};

use crate::AppState;
use views::{ApiKeyView, IdRepr};

/// What differs between versions.
pub(crate) trait Version: Send + Sync + 'static {
    /// The path prefix (`/v1`): `Location` headers point into the same version.
    const PREFIX: &'static str;
    /// The suffix of its schemas' names in the OpenAPI description (`UserV1`).
    const NAME: &'static str;

    /// How ids are written.
    type Id: IdRepr;

    /// How the caller's API keys are listed (a short list, never paged).
    type ApiKeys: Serialize + Send;
    fn api_keys(keys: Vec<ApiKeyView<Self::Id>>) -> Self::ApiKeys;

    /// The version's reads: the lists and single reads (`GET`s) of users and posts.
    fn reads() -> Reads;

    /// OpenAPI: a list of `item` as this version answers it.
    fn list_schema(item: RefOr<Schema>) -> RefOr<Schema>;
    /// OpenAPI: a user's or a post's schema as this version may shape it.
    fn shape(schema: RefOr<Schema>) -> RefOr<Schema>;
    /// OpenAPI: the query parameters of a list of users (`users`) or posts.
    fn list_params(users: bool) -> Vec<Parameter>;
    /// OpenAPI: the query parameters of a single user (`users`) or post.
    fn show_params(users: bool) -> Vec<Parameter>;
}

/// The `GET` handlers of a version, by route (each a `get(handler)`).
pub(crate) struct Reads {
    pub users: MethodRouter<AppState>,
    pub user: MethodRouter<AppState>,
    pub user_posts: MethodRouter<AppState>,
    pub feed: MethodRouter<AppState>,
    pub post: MethodRouter<AppState>,
}

/// Every route of version `V`, relative to its prefix: the one route table of both versions.
pub(crate) fn router<V: Version>() -> Router<AppState> {
    let reads = V::reads();
    Router::new()
        .route("/auth/register", post(auth::register::<V>))
        .route("/auth/login", post(auth::login))
        .route(
            "/api-keys",
            get(api_keys::list::<V>).post(api_keys::create::<V>),
        )
        .route("/api-keys/{id}", delete(api_keys::revoke))
        .route("/users", reads.users)
        .route(
            "/users/{id}",
            reads.user.patch(users::update::<V>).delete(users::remove),
        )
        .route("/users/{id}/posts", reads.user_posts)
        .route("/posts", reads.feed.post(posts::create::<V>))
        .route(
            "/posts/{id}",
            reads.post.patch(posts::update::<V>).delete(posts::remove),
        )
}
