//! Writing posts: anyone signed in creates, only the author changes or deletes.

use crate::{
    App,
    auth::AuthUser,
    db::{AuthorWrite, Scope},
    domain::{NewPost, Post, PostPatch},
    error::{Error, Result},
};

/// The answer for a post id that nothing has: REST and GraphQL say it the same way.
pub const NO_POST: Error = Error::NotFound("no post has this id");
pub const NOT_AUTHOR: Error = Error::Forbidden("only the author may change this post");

/// Creates a post on its author's shard.
pub async fn create(
    app: &App,
    scope: &Scope,
    me: AuthUser,
    title: &str,
    body: &str,
) -> Result<Post> {
    let new = NewPost::parse(title, body)?;
    let post = app.db.create_post(scope, me.id, &new).await?;
    app.cache.post_written(scope, post.id, me.id).await;
    Ok(post)
}

/// Changes the title and/or body of post `id`, if `me` wrote it.
pub async fn update(
    app: &App,
    scope: &Scope,
    me: AuthUser,
    id: i64,
    title: Option<&str>,
    body: Option<&str>,
) -> Result<Post> {
    let patch = PostPatch::parse(title, body)?;
    let post = authored(app.db.update_post(scope, id, me.id, &patch).await?)?;
    app.cache.post_written(scope, id, me.id).await;
    Ok(post)
}

/// Deletes post `id`, if `me` wrote it.
pub async fn delete(app: &App, scope: &Scope, me: AuthUser, id: i64) -> Result<()> {
    authored(app.db.delete_post(scope, id, me.id).await?)?;
    app.cache.post_written(scope, id, me.id).await;
    Ok(())
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
