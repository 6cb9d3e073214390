//! Reading users: one user, many by id, and pages of the user list, all through the cache.

use std::collections::HashMap;

use crate::{
    App,
    db::{Page, Session, UserList},
    domain::User,
    error::{Error, Result},
};

/// The answer for a user id that nothing has: REST and GraphQL say it the same way.
pub const NO_USER: Error = Error::NotFound("no user has this id");

/// User `id`, or `None` when there is none.
pub async fn find(app: &App, session: &Session, id: i64) -> Result<Option<User>> {
    Ok(app.cache.user(session, id).await?)
}

/// User `id`, or [`NO_USER`].
pub async fn get(app: &App, session: &Session, id: i64) -> Result<User> {
    find(app, session, id).await?.ok_or(NO_USER)
}

/// Users by id (what a DataLoader asks for): cached entries first, the rest in one statement
/// per shard. Ids with no user are absent.
pub async fn by_ids(app: &App, session: &Session, ids: &[i64]) -> Result<HashMap<i64, User>> {
    Ok(app.cache.users(session, ids).await?)
}

/// An offset page of users in id order (REST v1).
pub async fn list(app: &App, session: &Session, page: Page) -> Result<Vec<User>> {
    Ok(app.cache.user_list(session, UserList::Offset(page)).await?)
}

/// Up to `limit` users after id `after`, in id order (cursor pagination).
pub async fn after(
    app: &App,
    session: &Session,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<User>> {
    let list = UserList::After {
        after: after.unwrap_or(0),
        limit,
    };
    Ok(app.cache.user_list(session, list).await?)
}
