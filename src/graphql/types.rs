//! The object types: what a user, a post and an access token look like in GraphQL.
//!
//! Ids are GraphQL `ID`s (strings) holding the same integers as REST v1: a client can move
//! between the two APIs without translating ids.

use async_graphql::{Context, ID, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::{RequestData, limits};
use crate::{
    auth::IssuedToken,
    domain::{Post, User},
    error::Error,
};

/// A user, as seen by one viewer (the email is only for the user themself).
pub struct UserNode {
    user: User,
    viewer: Option<i64>,
}

impl UserNode {
    /// Renders `user` for `viewer` (the authenticated user's id, if any).
    pub fn new(user: User, viewer: Option<i64>) -> Self {
        Self { user, viewer }
    }
}

/// A user's public profile, and their posts.
#[Object(name = "User")]
impl UserNode {
    async fn id(&self) -> ID {
        ID(self.user.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.user.name
    }

    /// Only for the user themself (null for everyone else): an email is personal data.
    async fn email(&self) -> Option<&str> {
        self.user.email_for(self.viewer)
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.user.created_at
    }

    /// The user's newest posts, newest first; `first` is at most the page-size limit (100 by
    /// default). Batched: the posts of every user in a list cost one statement per shard.
    #[graphql(complexity = "limits::page_cost(first, child_complexity)")]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
    ) -> Result<Vec<PostNode>> {
        let rq = RequestData::of(ctx)?;
        let first = rq.page_size(first)?;
        let posts = rq.loaders.posts_of(self.user.id, first).await?;
        Ok(posts.into_iter().map(PostNode).collect())
    }
}

/// A post; it lives on its author's shard.
pub struct PostNode(pub Post);

#[Object(name = "Post")]
impl PostNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn title(&self) -> &str {
        &self.0.title
    }

    /// The post's text, up to 20,000 characters. Costs 21 toward the query's cost limit (1
    /// per thousand characters it may hold), not 1 like a short field.
    #[graphql(complexity = "limits::BODY_COST")]
    async fn body(&self) -> &str {
        &self.0.body
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// Batched: the authors of every post in a list cost one statement per shard.
    async fn author(&self, ctx: &Context<'_>) -> Result<UserNode> {
        let rq = RequestData::of(ctx)?;
        let author = rq
            .loaders
            .user(self.0.user_id)
            .await?
            .ok_or(Error::NotFound("the author of this post no longer exists"))?;
        Ok(UserNode::new(author, rq.viewer_id()))
    }
}

/// What `login` returns: send `accessToken` as `Authorization: Bearer <accessToken>`.
#[derive(SimpleObject)]
pub struct AccessToken {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Lifetime of the token, in seconds.
    pub expires_in: u64,
}

impl From<IssuedToken> for AccessToken {
    fn from(token: IssuedToken) -> Self {
        Self {
            access_token: token.access_token,
            token_type: token.token_type,
            expires_in: token.expires_in,
        }
    }
}
