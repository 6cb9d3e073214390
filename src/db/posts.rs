//! Posts, stored on their author's shard: a post's shard is found from its own id (ranges are
//! per shard and per table), and a user's posts are one index range scan on one shard.

use sqlx::PgExecutor;

use super::{Db, Error, Page, Scope};
use crate::domain::{NewPost, Post, PostBody, PostPatch, PostTitle};

macro_rules! post_columns {
    () => {
        "id, user_id, title, body, created_at, updated_at"
    };
}
pub(crate) use post_columns;

/// The outcome of a change that only the author may make.
#[derive(Debug)]
pub enum AuthorWrite<T> {
    Done(T),
    NotFound,
    NotAuthor,
}

impl Db {
    /// Creates a post on its author's shard; its id comes from that shard's posts range.
    pub async fn create_post(
        &self,
        scope: &Scope,
        author: i64,
        post: &NewPost,
    ) -> Result<Post, Error> {
        let shard = self.shards.owner(author).ok_or(Error::AuthorMissing)?;
        shard
            .write(scope, |db| async move {
                sqlx::query_as(concat!(
                    "INSERT INTO posts (user_id, title, body) VALUES ($1, $2, $3) RETURNING ",
                    post_columns!()
                ))
                .bind(author)
                .bind(post.title.as_str())
                .bind(post.body.as_str())
                .fetch_one(&db)
                .await
            })
            .await
    }

    pub async fn post(&self, scope: &Scope, id: i64) -> Result<Option<Post>, Error> {
        let Some(shard) = self.shards.owner(id) else {
            return Ok(None);
        };
        shard
            .read(scope, |db| async move { select_post(&db, id).await })
            .await
    }

    /// Updates a post if `author` wrote it. The author check is part of the `UPDATE`, so no
    /// race can slip a change past it; only on a miss is the primary asked why.
    pub async fn update_post(
        &self,
        scope: &Scope,
        id: i64,
        author: i64,
        update: &PostPatch,
    ) -> Result<AuthorWrite<Post>, Error> {
        let Some(shard) = self.shards.owner(id) else {
            return Ok(AuthorWrite::NotFound);
        };
        shard
            .write(scope, |db| async move {
                let updated: Option<Post> = sqlx::query_as(concat!(
                    "UPDATE posts SET title = COALESCE($3, title), body = COALESCE($4, body), ",
                    "updated_at = now() WHERE id = $1 AND user_id = $2 RETURNING ",
                    post_columns!()
                ))
                .bind(id)
                .bind(author)
                .bind(update.title.as_ref().map(PostTitle::as_str))
                .bind(update.body.as_ref().map(PostBody::as_str))
                .fetch_optional(&db)
                .await?;
                match updated {
                    Some(post) => Ok(AuthorWrite::Done(post)),
                    None => why_not_author(&db, id).await,
                }
            })
            .await
    }

    pub async fn delete_post(
        &self,
        scope: &Scope,
        id: i64,
        author: i64,
    ) -> Result<AuthorWrite<()>, Error> {
        let Some(shard) = self.shards.owner(id) else {
            return Ok(AuthorWrite::NotFound);
        };
        shard
            .write(scope, |db| async move {
                let deleted = sqlx::query("DELETE FROM posts WHERE id = $1 AND user_id = $2")
                    .bind(id)
                    .bind(author)
                    .execute(&db)
                    .await?;
                if deleted.rows_affected() == 1 {
                    return Ok(AuthorWrite::Done(()));
                }
                why_not_author(&db, id).await
            })
            .await
    }

    /// A user's posts, newest first, from one shard. `None` when the user does not exist.
    pub async fn user_posts(
        &self,
        scope: &Scope,
        user_id: i64,
        page: Page,
    ) -> Result<Option<Vec<Post>>, Error> {
        let Some(shard) = self.shards.owner(user_id) else {
            return Ok(None);
        };
        shard
            .read(scope, |db| async move {
                // Within a shard ids grow with time, so `id DESC` is newest first and is
                // served by the `(user_id, id DESC)` index without a sort.
                let posts: Vec<Post> = sqlx::query_as(concat!(
                    "SELECT ",
                    post_columns!(),
                    " FROM posts WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3"
                ))
                .bind(user_id)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(&db)
                .await?;
                // An empty page is the only case that needs to know whether the user exists
                // (a non-empty one proves it through the foreign key), so 404s cost a second
                // query and ordinary pages do not.
                if posts.is_empty() {
                    let exists: bool =
                        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
                            .bind(user_id)
                            .fetch_one(&db)
                            .await?;
                    if !exists {
                        return Ok(None);
                    }
                }
                Ok(Some(posts))
            })
            .await
    }
}

pub(crate) async fn select_post(
    db: impl PgExecutor<'_>,
    id: i64,
) -> Result<Option<Post>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        post_columns!(),
        " FROM posts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// After an author-guarded write matched nothing: does the post exist (someone else's) or not?
async fn why_not_author<T>(
    primary: impl PgExecutor<'_>,
    id: i64,
) -> Result<AuthorWrite<T>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM posts WHERE id = $1)")
        .bind(id)
        .fetch_one(primary)
        .await?;
    Ok(if exists {
        AuthorWrite::NotAuthor
    } else {
        AuthorWrite::NotFound
    })
}
