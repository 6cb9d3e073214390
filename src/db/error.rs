//! Errors of the data layer, classified by what the caller can do about them.

use std::time::Duration;

/// SQLSTATE 2200H: `nextval` went past the sequence's MAXVALUE, i.e. the shard's id range is
/// used up. The sequence is `NO CYCLE`, so ids never wrap into another shard's range.
const SEQUENCE_EXHAUSTED: &str = "2200H";
/// What a violated constraint means to the request, by the constraint's name. By name, not
/// by SQLSTATE alone: a unique violation on any other constraint (a new index, a bug) must
/// surface as the internal error it is, not as "email taken". The names are Postgres'
/// defaults for the columns in `migrations/shard/`.
fn constraint_meaning(name: &str) -> Option<Error> {
    match name {
        // The directory let an email through that the shard still holds (see the directory's
        // saga): the address is in use.
        "users_email_key" => Some(Error::EmailTaken),
        // A post was written for a user that no longer exists (a token outliving its account).
        "posts_user_id_fkey" => Some(Error::AuthorMissing),
        _ => None,
    }
}
/// SQLSTATE 57014: `statement_timeout` (or a cancel) stopped the statement.
const QUERY_CANCELED: &str = "57014";
/// `serialization_failure`: on a hot standby, a read cancelled because it conflicted with
/// WAL being replayed (a vacuum removing rows it could still see).
const SERIALIZATION_FAILURE: &str = "40001";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the email address is already registered")]
    EmailTaken,
    /// A post was written for a user that no longer exists (a token outliving its account).
    #[error("the author does not exist")]
    AuthorMissing,
    #[error("the shard has used up its id range")]
    ShardFull,
    /// The server could not be reached or gave up: connection refused, a connect that timed
    /// out, shutdown.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Every pooled connection to the server stayed in use for the whole checkout bound: the
    /// server is busy, not down. Not counted by a breaker or a replica's health: a spike that
    /// fills a healthy primary's pool must not open its breaker (then every request fails
    /// until it half-opens) or take a healthy replica out of rotation (moving its reads onto
    /// the primary, the opposite of relief).
    #[error("every connection to the database is busy")]
    Busy(#[source] sqlx::Error),
    /// The shard's primary is known to be down (its circuit breaker is open): failed fast,
    /// without touching the network.
    #[error("the shard's primary is unavailable")]
    PrimaryDown { retry_after: Duration },
    /// A statement ran past `statement_timeout`. The server is up (this does not count
    /// against its breaker) but too slow for this request.
    #[error("statement timed out")]
    Timeout(#[source] sqlx::Error),
    /// A registration outlived the directory's repair grace period and was undone.
    #[error("the registration took too long and was rolled back")]
    SagaExpired,
    #[error(transparent)]
    Query(sqlx::Error),
}

impl Error {
    /// Whether the server itself failed (as opposed to the statement): what a circuit
    /// breaker and replica health count.
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// Whether the statement failed on a connection that was (or went) dead, rather than
    /// for want of one: the server restarted or killed the session. A pool timeout is not:
    /// no connection was had, and another checkout would wait just as long.
    /// A connect that timed out is not either: the server did not answer, and asking again at
    /// once would only double the wait.
    pub(crate) fn is_broken_connection(&self) -> bool {
        match self {
            Error::Unavailable(sqlx::Error::Io(io)) => io.kind() != std::io::ErrorKind::TimedOut,
            Error::Unavailable(err) => !matches!(err, sqlx::Error::PoolClosed),
            _ => false,
        }
    }

    /// Whether the pool had no free connection in time (see [`Error::Busy`]).
    pub(crate) fn is_busy(&self) -> bool {
        matches!(self, Error::Busy(_))
    }

    /// A replica cancelled the read to keep replaying WAL: the read is fine, the replica
    /// is healthy, and the primary can answer it.
    pub(crate) fn is_replay_conflict(&self) -> bool {
        matches!(self, Error::Query(sqlx::Error::Database(db)) if db.code().as_deref() == Some(SERIALIZATION_FAILURE))
    }

    /// Sorts a driver error into what it means for the request.
    pub(crate) fn classify(err: sqlx::Error) -> Self {
        match &err {
            // The shard pools report a slow connect as I/O (`pool.rs`), so a checkout that
            // timed out here waited for a connection that others held.
            sqlx::Error::PoolTimedOut => Error::Busy(err),
            sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Error::Unavailable(err),
            sqlx::Error::Database(db) if db.constraint().is_some() => db
                .constraint()
                .and_then(constraint_meaning)
                .unwrap_or(Error::Query(err)),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some(SEQUENCE_EXHAUSTED) => Error::ShardFull,
                Some(QUERY_CANCELED) => Error::Timeout(err),
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
        match err {
            Error::Query(source) => crate::error::Error::Internal(
                anyhow::Error::new(source).context("database query failed"),
            ),
            other => crate::error::Error::from(&other),
        }
    }
}

/// By reference: for errors shared between the waiters of one cache fill.
impl From<&Error> for crate::error::Error {
    fn from(err: &Error) -> Self {
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
            // Logged where it happened (the shard's routing, with the shard and role), not
            // here: a conversion has no side effects.
            Error::Unavailable(_) => Api::Unavailable {
                detail: "a database this request needs is unavailable; try again shortly",
                retry_after: Duration::from_secs(1),
            },
            Error::Busy(_) => Api::Unavailable {
                detail: "every connection to a database this request needs is busy; try again shortly",
                retry_after: Duration::from_secs(1),
            },
            Error::PrimaryDown { retry_after } => Api::Unavailable {
                detail: "the primary of the shard that owns this data is down; writes to it fail fast until it recovers",
                retry_after: *retry_after,
            },
            Error::Timeout(_) => Api::Unavailable {
                detail: "the database took too long to answer; try again shortly",
                retry_after: Duration::from_secs(1),
            },
            Error::SagaExpired => Api::Unavailable {
                detail: "the registration took too long and was rolled back; try again",
                retry_after: Duration::from_secs(1),
            },
            Error::Query(source) => {
                Api::Internal(anyhow::anyhow!("database query failed: {source}"))
            }
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::classify(err)
    }
}
