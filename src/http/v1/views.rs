//! v1 representations: what a client sees of users, posts and API keys.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{ApiKey, Post, User};

#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: i64,
    pub name: String,
    /// Only for the user themself: an email is personal data, not a public profile field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl UserView {
    /// Renders `user` for `viewer` (the authenticated user's id, if any).
    pub fn new(user: User, viewer: Option<i64>) -> Self {
        Self {
            id: user.id,
            email: user.email_for(viewer).map(str::to_owned),
            name: user.name,
            created_at: user.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PostView {
    pub id: i64,
    pub user_id: i64,
    pub title: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Post> for PostView {
    fn from(post: Post) -> Self {
        Self {
            id: post.id,
            user_id: post.user_id,
            title: post.title,
            body: post.body,
            created_at: post.created_at,
            updated_at: post.updated_at,
        }
    }
}

/// An API key as its owner lists it: never its secret or the secret's hash.
#[derive(Debug, Serialize)]
pub struct ApiKeyView {
    pub id: i64,
    pub name: String,
    pub scope: &'static str,
    /// The rate-limit tier its requests are sized by.
    pub tier: String,
    pub created_at: DateTime<Utc>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            name: key.name,
            scope: key.scope.as_str(),
            tier: key.tier,
            created_at: key.created_at,
        }
    }
}

/// The answer to creating a key: its description and, this once, the key itself.
#[derive(Serialize)]
pub struct CreatedApiKeyView {
    #[serde(flatten)]
    pub api_key: ApiKeyView,
    /// `sk_<id>_<secret>`: send it as `X-Api-Key` or `Authorization: ApiKey <key>`.
    pub key: String,
}
