//! The mutation root: the writes of REST v1, through the same [`operations`](crate::operations).
//!
//! Same rules, same meanings: a stranger changing an account is `FORBIDDEN` here where REST
//! says 403, invalid fields are `BAD_USER_INPUT` with every field in `extensions.errors`
//! where REST says 422, a taken email is `CONFLICT` where REST says 409.

use async_graphql::{Context, ID, Object, Result};
use secrecy::SecretString;

use super::{
    RequestData,
    types::{AccessToken, PostNode, UserNode},
};
use crate::{
    domain,
    operations::{accounts, posts},
};

pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Creates an account (as `POST /v1/auth/register`). The new user's email is shown to
    /// them in the result, as REST does.
    async fn register(
        &self,
        ctx: &Context<'_>,
        email: String,
        name: String,
        password: String,
    ) -> Result<UserNode> {
        let rq = RequestData::of(ctx)?;
        let user =
            accounts::register(&rq.app, &rq.session, rq.client, &email, &name, &password).await?;
        let id = user.id;
        Ok(UserNode::new(user, Some(id)))
    }

    /// Exchanges an email and password for an access token (as `POST /v1/auth/login`).
    /// Unknown email and wrong password get the same `UNAUTHENTICATED` error; tries count
    /// against the same per-account and per-address limits as REST's (`TOO_MANY_REQUESTS`).
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> Result<AccessToken> {
        let rq = RequestData::of(ctx)?;
        let token = accounts::login(
            &rq.app,
            &rq.session,
            rq.client,
            &email,
            SecretString::from(password),
        )
        .await?;
        Ok(token.into())
    }

    /// Creates a post by the signed-in user, on their shard.
    async fn create_post(
        &self,
        ctx: &Context<'_>,
        title: String,
        body: String,
    ) -> Result<PostNode> {
        let rq = RequestData::of(ctx)?;
        let post = posts::create(&rq.app, &rq.session, rq.me()?, &title, &body).await?;
        Ok(PostNode(post))
    }

    /// Changes a post's title and/or body: its author only.
    async fn update_post(
        &self,
        ctx: &Context<'_>,
        id: ID,
        title: Option<String>,
        body: Option<String>,
    ) -> Result<PostNode> {
        let rq = RequestData::of(ctx)?;
        let me = rq.me()?;
        let id = domain::parse_id(&id)?;
        let post = posts::update(
            &rq.app,
            &rq.session,
            me,
            id,
            title.as_deref(),
            body.as_deref(),
        )
        .await?;
        Ok(PostNode(post))
    }

    /// Deletes a post: its author only. Returns the deleted post's id.
    async fn delete_post(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let rq = RequestData::of(ctx)?;
        let me = rq.me()?;
        posts::delete(&rq.app, &rq.session, me, domain::parse_id(&id)?).await?;
        Ok(id)
    }

    /// Changes an account: the user themself only. Give at least one of the fields.
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        id: ID,
        email: Option<String>,
        name: Option<String>,
        password: Option<String>,
    ) -> Result<UserNode> {
        let rq = RequestData::of(ctx)?;
        let me = rq.me()?;
        let user = accounts::update(
            &rq.app,
            &rq.session,
            me,
            domain::parse_id(&id)?,
            email.as_deref(),
            name.as_deref(),
            password.as_deref(),
        )
        .await?;
        Ok(UserNode::new(user, Some(me.id)))
    }

    /// Deletes an account and its posts: the user themself only. Returns the deleted id.
    async fn delete_user(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let rq = RequestData::of(ctx)?;
        let me = rq.me()?;
        accounts::delete(&rq.app, &rq.session, me, domain::parse_id(&id)?).await?;
        Ok(id)
    }
}
