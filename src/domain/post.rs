use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Checks, text};
use crate::error::{Error, FieldError};

/// A post row; it lives on its author's shard, so joins with its author stay local.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
pub struct Post {
    pub id: i64,
    pub user_id: i64,
    pub title: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The longest title, in characters.
pub const TITLE_MAX_CHARS: usize = 200;
/// The longest body, in characters (up to four bytes each in UTF-8). GraphQL prices a `body`
/// by it (`src/graphql/limits.rs`).
pub const BODY_MAX_CHARS: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostTitle(String);

impl PostTitle {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        text("title", raw, 1, TITLE_MAX_CHARS, false).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostBody(String);

impl PostBody {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        text("body", raw, 1, BODY_MAX_CHARS, true).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug)]
pub struct NewPost {
    pub title: PostTitle,
    pub body: PostBody,
}

impl NewPost {
    pub fn parse(title: &str, body: &str) -> Result<Self, Error> {
        let mut checks = Checks::default();
        let title = checks.check(PostTitle::parse(title));
        let body = checks.check(PostBody::parse(body));
        checks.finish()?;
        match (title, body) {
            (Some(title), Some(body)) => Ok(Self { title, body }),
            _ => unreachable!("Checks::finish returns an error when any field failed"),
        }
    }
}

/// A validated partial update; at least one field is present.
#[derive(Debug)]
pub struct PostPatch {
    pub title: Option<PostTitle>,
    pub body: Option<PostBody>,
}

impl PostPatch {
    pub fn parse(title: Option<&str>, body: Option<&str>) -> Result<Self, Error> {
        if title.is_none() && body.is_none() {
            return Err(Error::validation(
                "body",
                "give at least one of title, body",
            ));
        }
        let mut checks = Checks::default();
        let title = title.and_then(|t| checks.check(PostTitle::parse(t)));
        let body = body.and_then(|b| checks.check(PostBody::parse(b)));
        checks.finish()?;
        Ok(Self { title, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(PostTitle::parse("  hi  ").expect("valid").as_str(), "hi");
        assert!(PostTitle::parse("   ").is_err());
        assert!(PostTitle::parse(&"x".repeat(201)).is_err());
    }

    #[test]
    fn bodies_keep_newlines_but_not_other_control_characters() {
        assert!(PostBody::parse("line one\nline two").is_ok());
        assert!(PostBody::parse("bell\u{7}").is_err());
    }
}
