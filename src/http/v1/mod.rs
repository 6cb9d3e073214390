//! REST v1: JSON integer ids, offset pagination. One file per resource, each with its
//! `router()`; they are merged here.

mod api_keys;
mod auth;
mod posts;
mod users;
mod views;

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(auth::router())
        .merge(api_keys::router())
        .merge(users::router())
        .merge(posts::router())
}
