//! Users, posts and API keys: types and validation, no I/O.
//!
//! Parse, don't validate: request bodies become these newtypes at the edge, so everything
//! past the handlers holds values that are already known to be acceptable.

/// Implements `sqlx::Type` and `sqlx::Decode` for an enum stored as `text` (the column's CHECK
/// lists the values): decoded like a string through `$parse` (`&str -> Option<Self>`), and a
/// value this build does not know is a decode error, not a silent default. What lets the
/// checked queries say `tier AS "tier: Tier"` and get a `Tier` straight from the row.
macro_rules! text_column {
    ($ty:ty, $what:literal, $parse:expr) => {
        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(
                value: sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let raw = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                let parse: fn(&str) -> Option<$ty> = $parse;
                parse(raw).ok_or_else(|| format!("unknown {} {raw:?}", $what).into())
            }
        }
    };
}

mod api_key;
mod post;
mod unicode;
mod user;

pub use api_key::{ApiKey, NewApiKey, Scope};
pub use post::{BODY_MAX_CHARS, NewPost, Post, PostBody, PostPatch, PostTitle, TITLE_MAX_CHARS};
pub use user::{Credentials, Email, NewUser, Password, Tier, User, UserName, UserPatch};

use crate::error::{Error, FieldError};

/// A resource id from a client (a REST path segment, a GraphQL `ID`): a positive 64-bit
/// integer written canonically (decimal digits, no sign, no leading zero), else a 400 /
/// `BAD_USER_INPUT`. Canonical, because `+5`, `05` and `5` would otherwise be three URLs,
/// three cache keys and three ETag scopes for one resource. Whether any shard's range holds
/// it is the data layer's question (no shard means "not found", without a query).
pub fn parse_id(raw: &str) -> Result<i64, Error> {
    let canonical = raw.starts_with(|c: char| matches!(c, '1'..='9'))
        && raw.bytes().all(|b| b.is_ascii_digit());
    canonical
        .then(|| raw.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "`{raw}` is not an id: ids are positive integers, written without sign or leading zeros"
            ))
        })
}

/// Collects field errors so a client learns about every bad field in one round trip.
#[derive(Default)]
pub(crate) struct Checks(Vec<FieldError>);

impl Checks {
    pub(crate) fn check<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(self.0))
        }
    }
}

/// Trims `raw` and checks it is `min..=max` characters with no control characters.
pub(crate) fn text(
    field: &'static str,
    raw: &str,
    min: usize,
    max: usize,
    allow_newlines: bool,
) -> Result<String, FieldError> {
    let value = raw.trim();
    let chars = value.chars().count();
    if chars < min {
        return Err(FieldError::new(
            field,
            format!("must be at least {min} characters"),
        ));
    }
    if chars > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !(allow_newlines && matches!(c, '\n' | '\r' | '\t')))
    {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}
