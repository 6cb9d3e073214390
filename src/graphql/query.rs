//! The query root: single users and posts, the two paginated lists, and the viewer.

use async_graphql::{
    Context, ID, Object, Result,
    connection::{Connection, CursorType, Edge, OpaqueCursor},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    RequestData, limits,
    types::{PostNode, UserNode},
};
use crate::{
    domain,
    error::Error,
    operations::{posts as post_ops, users as user_ops},
};

pub struct QueryRoot;

/// Where a walk of `users` stands. Opaque to clients (base64 JSON): what is inside can change
/// without breaking them, and nobody builds cursors by hand.
#[derive(Serialize, Deserialize)]
pub(super) struct UserCursor {
    pub(super) id: i64,
}

/// Where a newest-first walk of `posts` stands: the last post's `(createdAt, id)`.
#[derive(Serialize, Deserialize)]
pub(super) struct PostCursor {
    pub(super) at: DateTime<Utc>,
    pub(super) id: i64,
}

type UserConnection = Connection<OpaqueCursor<UserCursor>, UserNode>;
type PostConnection = Connection<OpaqueCursor<PostCursor>, PostNode>;

#[Object(name = "Query")]
impl QueryRoot {
    /// A user by id; null when there is none.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Result<Option<UserNode>> {
        let rq = RequestData::of(ctx)?;
        let id = domain::parse_id(&id)?;
        let user = rq.loaders.user(id).await?;
        Ok(user.map(|user| UserNode::new(user, rq.viewer_id())))
    }

    /// Users in id order, across shards. Keyset pagination: pass the previous page's
    /// `pageInfo.endCursor` as `after`; a deep page costs what the first one does.
    #[graphql(complexity = "limits::page_cost(first, child_complexity)")]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<UserConnection> {
        let rq = RequestData::of(ctx)?;
        let first = rq.page_size(first)?;
        let after = after.as_deref().map(decode::<UserCursor>).transpose()?;
        let users = rq
            .budget
            .read(user_ops::after(
                &rq.app,
                &rq.session,
                after.as_ref().map(|c| c.id),
                first + 1,
            ))
            .await?;
        rq.loaders.know_users(&users).await;
        let viewer = rq.viewer_id();
        Ok(connection(users, first, after.is_some(), |user| {
            let cursor = UserCursor { id: user.id };
            (cursor, UserNode::new(user, viewer))
        }))
    }

    /// A post by id; null when there is none.
    async fn post(&self, ctx: &Context<'_>, id: ID) -> Result<Option<PostNode>> {
        let rq = RequestData::of(ctx)?;
        let id = domain::parse_id(&id)?;
        Ok(rq.loaders.post(id).await?.map(PostNode))
    }

    /// Every shard's posts, newest first (a k-way merge of each shard's newest). Keyset
    /// pagination on `(createdAt, id)`: pass the previous page's `pageInfo.endCursor` as
    /// `after`.
    #[graphql(complexity = "limits::page_cost(first, child_complexity)")]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<PostConnection> {
        let rq = RequestData::of(ctx)?;
        let first = rq.page_size(first)?;
        let after = after.as_deref().map(decode::<PostCursor>).transpose()?;
        let cursor = after.as_ref().map(|c| (c.at, c.id));
        let posts = rq
            .budget
            .read(post_ops::before(&rq.app, &rq.session, cursor, first + 1))
            .await?;
        Ok(connection(posts, first, after.is_some(), |post| {
            let cursor = PostCursor {
                at: post.created_at,
                id: post.id,
            };
            (cursor, PostNode(post))
        }))
    }

    /// The user the request acts as: its access token's user or its API key's owner; null
    /// when the request has neither.
    async fn viewer(&self, ctx: &Context<'_>) -> Result<Option<UserNode>> {
        let rq = RequestData::of(ctx)?;
        let Some(me) = rq.viewer() else {
            return Ok(None);
        };
        let user = rq.loaders.user(me.id).await?;
        Ok(user.map(|user| UserNode::new(user, Some(me.id))))
    }
}

/// A page of a connection from `rows`, fetched as `first + 1` so that the extra row says
/// whether there is a next page (no count query). `hasPreviousPage` is whether the walk
/// started from a cursor: forward-only pagination, as Relay allows.
fn connection<T, C, N>(
    mut rows: Vec<T>,
    first: i64,
    from_cursor: bool,
    edge: impl FnMut(T) -> (C, N),
) -> Connection<OpaqueCursor<C>, N>
where
    C: Serialize + serde::de::DeserializeOwned + Send + Sync,
    N: async_graphql::OutputType,
{
    let has_next = rows.len() as i64 > first;
    rows.truncate(usize::try_from(first).unwrap_or(0));
    let mut page = Connection::new(from_cursor, has_next);
    page.edges = rows
        .into_iter()
        .map(edge)
        .map(|(cursor, node)| Edge::new(OpaqueCursor(cursor), node))
        .collect();
    page
}

/// An `after` argument back into the cursor it came from; anything else is a client error.
pub(super) fn decode<T: Serialize + serde::de::DeserializeOwned>(raw: &str) -> Result<T, Error> {
    OpaqueCursor::<T>::decode_cursor(raw)
        .map(|cursor| cursor.0)
        .map_err(|_| {
            Error::BadRequest(format!(
                "`{raw}` is not a cursor of this list: pass a `pageInfo.endCursor` it returned"
            ))
        })
}
