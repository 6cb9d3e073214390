//! What a client sees of users, posts and API keys: one set of views for both versions,
//! generic over how an id is written ([`IdRepr`]: a JSON number in v1, a string in v2).

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr, Schema,
        schema::{ObjectBuilder, Type},
    },
};

use crate::domain::{ApiKey, Post, User};

/// How a version writes an id.
pub(crate) trait IdRepr: Serialize + ToSchema + Send + Sync + Copy + 'static {
    fn new(id: i64) -> Self;
}

/// v1: the id as a JSON number.
impl IdRepr for i64 {
    fn new(id: i64) -> Self {
        id
    }
}

/// v2: the id as a JSON string (`"42"`), written without allocating one. JavaScript loses
/// integers past 2^53, and an id is a name, not a quantity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StringId(i64);

impl IdRepr for StringId {
    fn new(id: i64) -> Self {
        Self(id)
    }
}

/// In the OpenAPI description: a decimal string.
impl PartialSchema for StringId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[1-9][0-9]*$"))
            .examples(["42"])
            .into()
    }
}

impl ToSchema for StringId {}

impl Serialize for StringId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserView<I> {
    #[schema(inline)]
    pub id: I,
    pub name: String,
    /// Only for the user themself: an email is personal data, not a public profile field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    /// v2's `include=posts`: the user's newest posts.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(inline)]
    pub posts: Option<Vec<PostView<I>>>,
}

impl<I: IdRepr> UserView<I> {
    /// Renders `user` for `viewer` (the authenticated user's id, if any).
    pub fn new(user: User, viewer: Option<i64>) -> Self {
        Self {
            id: I::new(user.id),
            email: user.email_for(viewer).map(str::to_owned),
            name: user.name,
            created_at: user.created_at,
            posts: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PostView<I> {
    #[schema(inline)]
    pub id: I,
    #[schema(inline)]
    pub user_id: I,
    pub title: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl<I: IdRepr> From<Post> for PostView<I> {
    fn from(post: Post) -> Self {
        Self {
            id: I::new(post.id),
            user_id: I::new(post.user_id),
            title: post.title,
            body: post.body,
            created_at: post.created_at,
            updated_at: post.updated_at,
        }
    }
}

/// An API key as its owner lists it: never its secret or the secret's hash.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiKeyView<I> {
    #[schema(inline)]
    pub id: I,
    pub name: String,
    pub scope: &'static str,
    /// The rate-limit tier its requests are sized by.
    pub tier: String,
    pub created_at: DateTime<Utc>,
}

impl<I: IdRepr> From<ApiKey> for ApiKeyView<I> {
    fn from(key: ApiKey) -> Self {
        Self {
            id: I::new(key.id),
            name: key.name,
            scope: key.scope.as_str(),
            tier: key.tier,
            created_at: key.created_at,
        }
    }
}

/// The answer to creating a key: its description and, this once, the key itself.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedApiKeyView<I> {
    #[serde(flatten)]
    #[schema(inline)]
    pub api_key: ApiKeyView<I>,
    /// `sk_<id>_<secret>`: send it as `X-Api-Key` or `Authorization: ApiKey <key>`.
    pub key: String,
}
