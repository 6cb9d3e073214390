//! Errors of the data layer, classified by what the caller can do about them.

use std::time::Duration;

/// SQLSTATE 2200H: `nextval` went past the sequence's MAXVALUE, i.e. the shard's id range is
/// used up. The sequence is `NO CYCLE`, so ids never wrap into another shard's range.
const SEQUENCE_EXHAUSTED: &str = "2200H";
/// SQLSTATE 23505 and 23503.
const UNIQUE_VIOLATION: &str = "23505";
const FOREIGN_KEY_VIOLATION: &str = "23503";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the email address is already registered")]
    EmailTaken,
    /// A post was written for a user that no longer exists (a token outliving its account).
    #[error("the author does not exist")]
    AuthorMissing,
    #[error("the shard has used up its id range")]
    ShardFull,
    /// The server could not be reached or gave up: connection refused, pool timeout, shutdown.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Query(sqlx::Error),
}

impl Error {
    /// Sorts a driver error into what it means for the request.
    pub(crate) fn classify(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Error::Unavailable(err),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some(SEQUENCE_EXHAUSTED) => Error::ShardFull,
                Some(FOREIGN_KEY_VIOLATION) => Error::AuthorMissing,
                // The only unique constraint a request can hit is a shard's `users.email`
                // (primary keys come from sequences): the directory let an email through that
                // the shard still holds, which means the address is in use.
                Some(UNIQUE_VIOLATION) => Error::EmailTaken,
                // Class 57 (operator intervention: shutdown, crash recovery) and class 08
                // (connection exceptions): the server is going away, not the query being wrong.
                Some(code) if code.starts_with("57") || code.starts_with("08") => {
                    Error::Unavailable(err)
                }
                _ => Error::Query(err),
            },
            _ => Error::Query(err),
        }
    }
}

impl From<Error> for crate::error::Error {
    fn from(err: Error) -> Self {
        use crate::error::Error as Api;
        match err {
            Error::EmailTaken => Api::Conflict("the email address is already registered"),
            Error::AuthorMissing => {
                Api::Unauthorized("the account behind this token no longer exists")
            }
            Error::ShardFull => Api::Unavailable {
                detail: "the shard that owns this data has no ids left; an operator must add capacity",
                retry_after: Duration::from_secs(60),
            },
            Error::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                Api::Unavailable {
                    detail: "a database this request needs is unavailable; try again shortly",
                    retry_after: Duration::from_secs(1),
                }
            }
            Error::Query(source) => {
                Api::Internal(anyhow::Error::new(source).context("database query failed"))
            }
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::classify(err)
    }
}
