//! Posts: anyone reads, anyone signed in creates, only the author changes or deletes.

use std::collections::HashMap;

use super::{audit, users::NO_USER};
use crate::{
    App,
    auth::AuthUser,
    db::{AuthorWrite, Page, PostKey, Session},
    domain::{NewPost, Post, PostPatch},
    error::{Error, Result},
};

/// The answer for a post id that nothing has: REST and GraphQL say it the same way.
pub const NO_POST: Error = Error::NotFound("no post has this id");
pub const NOT_AUTHOR: Error = Error::Forbidden("only the author may change this post");

/// Post `id`, or `None` when there is none.
pub async fn find(app: &App, session: &Session, id: i64) -> Result<Option<Post>> {
    Ok(app.cache.post(session, id).await?)
}

/// Post `id`, or [`NO_POST`].
pub async fn get(app: &App, session: &Session, id: i64) -> Result<Post> {
    find(app, session, id).await?.ok_or(NO_POST)
}

/// Posts by id (what a DataLoader asks for). Ids with no post are absent.
pub async fn by_ids(app: &App, session: &Session, ids: &[i64]) -> Result<HashMap<i64, Post>> {
    Ok(app.cache.posts(session, ids).await?)
}

/// A page of user `user_id`'s posts, newest first, or [`NO_USER`].
pub async fn of_user(app: &App, session: &Session, user_id: i64, page: Page) -> Result<Vec<Post>> {
    app.cache
        .user_posts(session, user_id, page)
        .await?
        .ok_or(NO_USER)
}

/// Up to `limit` of user `user_id`'s posts older than post `before`, newest first (cursor
/// pagination past the first page, which [`of_user`] serves from the cache). Not cached:
/// deep pages are read once per walk.
pub async fn of_user_before(
    app: &App,
    session: &Session,
    user_id: i64,
    before: i64,
    limit: i64,
) -> Result<Vec<Post>> {
    Ok(app
        .db
        .posts()
        .of_user_before(session, user_id, before, limit)
        .await?)
}

/// The newest `first` posts of each of `user_ids` (what a DataLoader asks for). Users
/// without posts map to an empty list.
pub async fn newest_of_users(
    app: &App,
    session: &Session,
    user_ids: &[i64],
    first: i64,
) -> Result<HashMap<i64, Vec<Post>>> {
    Ok(app.cache.newest_posts(session, user_ids, first).await?)
}

/// An offset page of every shard's posts, newest first (REST v1): the page's ids from a
/// merge of each shard's newest keys, the rows through the cache.
pub async fn feed(app: &App, session: &Session, page: Page) -> Result<Vec<Post>> {
    let ids = app.db.feed().page_ids(session, page).await?;
    let mut posts = app.cache.posts(session, &ids).await?;
    // A post deleted between the two steps is simply absent; the rest keep feed order.
    Ok(ids.iter().filter_map(|id| posts.remove(id)).collect())
}

/// Up to `limit` posts older than `before`, newest first (cursor pagination). Not cached:
/// every post written anywhere changes it.
pub async fn before(
    app: &App,
    session: &Session,
    before: Option<PostKey>,
    limit: i64,
) -> Result<Vec<Post>> {
    Ok(app.db.feed().before(session, before, limit).await?)
}

/// Creates a post on its author's shard.
pub async fn create(
    app: &App,
    session: &Session,
    me: AuthUser,
    title: &str,
    body: &str,
) -> Result<Post> {
    let result = async {
        let new = NewPost::parse(title, body)?;
        let post = app.db.posts().create(session, me.id, &new).await?;
        app.cache.post_written(session, post.id, me.id).await;
        Ok(post)
    }
    .await;
    let subject = result.as_ref().ok().map(|post| post.id);
    audit::record("post.create", Some(me), subject, &result);
    result
}

/// Changes the title and/or body of post `id`, if `me` wrote it.
pub async fn update(
    app: &App,
    session: &Session,
    me: AuthUser,
    id: i64,
    title: Option<&str>,
    body: Option<&str>,
) -> Result<Post> {
    let result = async {
        let patch = PostPatch::parse(title, body)?;
        let post = authored(app.db.posts().update(session, id, me.id, &patch).await?)?;
        app.cache.post_written(session, id, me.id).await;
        Ok(post)
    }
    .await;
    audit::record("post.update", Some(me), Some(id), &result);
    result
}

/// Deletes post `id`, if `me` wrote it.
pub async fn delete(app: &App, session: &Session, me: AuthUser, id: i64) -> Result<()> {
    let result = async {
        authored(app.db.posts().delete(session, id, me.id).await?)?;
        app.cache.post_written(session, id, me.id).await;
        Ok(())
    }
    .await;
    audit::record("post.delete", Some(me), Some(id), &result);
    result
}

/// What an author-only write's outcome means to the client: someone else's post is
/// `Forbidden`, a missing one `NotFound`.
fn authored<T>(outcome: AuthorWrite<T>) -> Result<T> {
    match outcome {
        AuthorWrite::Done(value) => Ok(value),
        AuthorWrite::NotFound => Err(NO_POST),
        AuthorWrite::NotAuthor => Err(NOT_AUTHOR),
    }
}
