//! Posts, stored on their author's shard: a post's shard is found from its own id (ranges are
//! per shard and per table), and a user's posts are one index range scan on one shard.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{read_by_ids, rows_by_id, users::Page};
use crate::{
    db::{Cluster, Error, Session},
    domain::{NewPost, Post, PostBody, PostPatch, PostTitle},
};

/// The outcome of a change that only the author may make.
#[derive(Debug)]
pub enum AuthorWrite<T> {
    Done(T),
    NotFound,
    NotAuthor,
}

/// The posts repository: `db.posts()`.
#[derive(Debug, Clone, Copy)]
pub struct Posts<'a> {
    pub(crate) cluster: &'a Cluster,
}

impl Posts<'_> {
    /// Creates a post on its author's shard; its id comes from that shard's posts range.
    pub async fn create(
        &self,
        session: &Session,
        author: i64,
        post: &NewPost,
    ) -> Result<Post, Error> {
        let shard = self.cluster.owner(author).ok_or(Error::AuthorMissing)?;
        shard
            .write(session, |mut db| async move {
                sqlx::query_as!(
                    Post,
                    "INSERT INTO posts (user_id, title, body) VALUES ($1, $2, $3) \
                     RETURNING id, user_id, title, body, created_at, updated_at",
                    author,
                    post.title.as_str(),
                    post.body.as_str()
                )
                .fetch_one(&mut *db)
                .await
            })
            .await
    }

    /// Posts by id: `WHERE id = ANY($1)`, one statement per shard involved, concurrently.
    pub async fn by_ids(
        &self,
        session: &Session,
        ids: &[i64],
    ) -> Result<HashMap<i64, Post>, Error> {
        rows_by_id(
            self.cluster,
            session,
            ids,
            |post: &Post| post.id,
            |mut db, id| async move {
                sqlx::query_as!(
                    Post,
                    "SELECT id, user_id, title, body, created_at, updated_at \
                     FROM posts WHERE id = $1",
                    id
                )
                .fetch_optional(&mut *db)
                .await
            },
            |mut db, ids| async move {
                sqlx::query_as!(
                    Post,
                    "SELECT id, user_id, title, body, created_at, updated_at \
                     FROM posts WHERE id = ANY($1)",
                    &ids[..]
                )
                .fetch_all(&mut *db)
                .await
            },
        )
        .await
    }

    /// Updates a post if `author` wrote it. The author check is part of the `UPDATE`, so no
    /// race can slip a change past it; only on a miss is the primary asked why.
    pub async fn update(
        &self,
        session: &Session,
        id: i64,
        author: i64,
        update: &PostPatch,
    ) -> Result<AuthorWrite<Post>, Error> {
        let Some(shard) = self.cluster.owner(id) else {
            return Ok(AuthorWrite::NotFound);
        };
        shard
            .write(session, |mut db| async move {
                let updated = sqlx::query_as!(
                    Post,
                    "UPDATE posts SET title = COALESCE($3, title), body = COALESCE($4, body), \
                     updated_at = now() WHERE id = $1 AND user_id = $2 \
                     RETURNING id, user_id, title, body, created_at, updated_at",
                    id,
                    author,
                    update.title.as_ref().map(PostTitle::as_str),
                    update.body.as_ref().map(PostBody::as_str)
                )
                .fetch_optional(&mut *db)
                .await?;
                match updated {
                    Some(post) => Ok(AuthorWrite::Done(post)),
                    None => why_not_author(&mut *db, id).await,
                }
            })
            .await
    }

    pub async fn delete(
        &self,
        session: &Session,
        id: i64,
        author: i64,
    ) -> Result<AuthorWrite<()>, Error> {
        let Some(shard) = self.cluster.owner(id) else {
            return Ok(AuthorWrite::NotFound);
        };
        shard
            .write(session, |mut db| async move {
                let deleted = sqlx::query!(
                    "DELETE FROM posts WHERE id = $1 AND user_id = $2",
                    id,
                    author
                )
                .execute(&mut *db)
                .await?;
                if deleted.rows_affected() == 1 {
                    return Ok(AuthorWrite::Done(()));
                }
                why_not_author(&mut *db, id).await
            })
            .await
    }

    /// A page of one user's posts, newest first, at any offset. `None` when the user does not
    /// exist. For deep pages; the first page of every user is read in batches
    /// ([`Posts::first_pages`]) and cached.
    pub async fn of_user(
        &self,
        session: &Session,
        user_id: i64,
        page: Page,
    ) -> Result<Option<Vec<Post>>, Error> {
        let Some(shard) = self.cluster.owner(user_id) else {
            return Ok(None);
        };
        shard
            .read(session, |mut db| async move {
                // Within a shard ids grow with time, so `id DESC` is newest first and is
                // served by the `(user_id, id DESC)` index without a sort.
                let posts = sqlx::query_as!(
                    Post,
                    "SELECT id, user_id, title, body, created_at, updated_at \
                     FROM posts WHERE user_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
                    user_id,
                    page.limit,
                    page.offset
                )
                .fetch_all(&mut *db)
                .await?;
                // An empty page is the only case that needs to know whether the user exists
                // (a non-empty one proves it through the foreign key), so 404s cost a second
                // query and ordinary pages do not.
                if posts.is_empty() {
                    let exists = sqlx::query_scalar!(
                        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS \"exists!\"",
                        user_id
                    )
                    .fetch_one(&mut *db)
                    .await?;
                    if !exists {
                        return Ok(None);
                    }
                }
                Ok(Some(posts))
            })
            .await
    }

    /// Up to `limit` of user `user_id`'s posts with an id below `before`, newest first: the
    /// pages of a cursor walk after the first. One index seek on `(user_id, id DESC)`, so a
    /// page deep in the list costs what the first does. Empty, not `None`, for a user that no
    /// longer exists: the walk began while they did.
    pub async fn of_user_before(
        &self,
        session: &Session,
        user_id: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Post>, Error> {
        let Some(shard) = self.cluster.owner(user_id) else {
            return Ok(Vec::new());
        };
        shard
            .read(session, |mut db| async move {
                sqlx::query_as!(
                    Post,
                    "SELECT id, user_id, title, body, created_at, updated_at \
                     FROM posts WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                    user_id,
                    before,
                    limit
                )
                .fetch_all(&mut *db)
                .await
            })
            .await
    }

    /// The first `per_user` posts (newest first) of each user that exists: one statement per
    /// shard involved. A user without posts maps to an empty list; a user that does not exist
    /// is absent, so the cache can tell "no posts yet" from "no such user" (a 404).
    ///
    /// A top-k per group: users `LEFT JOIN LATERAL` their newest posts, one primary-key probe
    /// per user and one short range scan of the `(user_id, id DESC)` index reading exactly
    /// `per_user` rows. A window function (`row_number() OVER (PARTITION BY user_id ...) <=
    /// k`) would say the same but read every post of those users before filtering: fine for
    /// 5 posts each, not for a user with 100,000.
    pub async fn first_pages(
        &self,
        session: &Session,
        user_ids: &[i64],
        per_user: i64,
    ) -> Result<HashMap<i64, Vec<Post>>, Error> {
        // `?` on every post column: the macro cannot tell that the LEFT JOIN makes them
        // nullable (a user without posts), and would decode a NULL as an error.
        let rows = read_by_ids(self.cluster, session, user_ids, |mut db, ids| async move {
            sqlx::query_as!(
                PageRow,
                "SELECT u.id AS owner, p.id AS \"id?\", p.user_id AS \"user_id?\", \
                 p.title AS \"title?\", p.body AS \"body?\", p.created_at AS \"created_at?\", \
                 p.updated_at AS \"updated_at?\" \
                 FROM users u LEFT JOIN LATERAL (SELECT id, user_id, title, body, created_at, \
                 updated_at FROM posts WHERE user_id = u.id ORDER BY id DESC LIMIT $2) p ON true \
                 WHERE u.id = ANY($1) ORDER BY u.id, p.id DESC",
                &ids[..],
                per_user
            )
            .fetch_all(&mut *db)
            .await
        })
        .await?;
        let mut pages: HashMap<i64, Vec<Post>> = HashMap::new();
        for row in rows {
            let page = pages.entry(row.owner).or_default();
            page.extend(row.post());
        }
        Ok(pages)
    }
}

/// A row of [`Posts::first_pages`]: the user, and one of their posts if they have any.
struct PageRow {
    owner: i64,
    id: Option<i64>,
    user_id: Option<i64>,
    title: Option<String>,
    body: Option<String>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
}

impl PageRow {
    fn post(self) -> Option<Post> {
        Some(Post {
            id: self.id?,
            user_id: self.user_id?,
            title: self.title?,
            body: self.body?,
            created_at: self.created_at?,
            updated_at: self.updated_at?,
        })
    }
}

/// After an author-guarded write matched nothing: does the post exist (someone else's) or not?
async fn why_not_author<T>(
    primary: impl PgExecutor<'_>,
    id: i64,
) -> Result<AuthorWrite<T>, sqlx::Error> {
    let exists = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM posts WHERE id = $1) AS \"exists!\"",
        id
    )
    .fetch_one(primary)
    .await?;
    Ok(if exists {
        AuthorWrite::NotAuthor
    } else {
        AuthorWrite::NotFound
    })
}
