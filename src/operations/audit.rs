//! The audit log: who did what to which account or post, when, from where, and how it ended.
//!
//! One line per attempt at a security-relevant operation (registering, logging in, changing
//! or deleting an account, writing a post), successful or not, on its own log target
//! `scalable_api::audit`, so a log pipeline can keep it apart from (and longer than) the
//! access log. Its fields:
//!
//! - `action`: `account.register`, `account.login`, `account.update`, `account.delete`,
//!   `post.create`, `post.update`, `post.delete`;
//! - `actor`: the signed-in user who acted (none for a registration or a refused login);
//! - `subject`: the account or post acted on, when known (a login for an unknown email has
//!   none);
//! - `outcome`: `ok`, or the problem's slug (`forbidden`, `not-found`, `conflict`,
//!   `unauthorized`, `validation`, `unavailable`, ...), the same one the client got;
//! - when: the line's `timestamp`; from where: the request span's `client.address` and
//!   `request_id`, which every line of a request carries.
//!
//! Never an email, a password or a token: the log says that account 42 failed to log in from
//! 203.0.113.7, not with what. In the same process as the write, so an instance that dies
//! between the commit and the log line loses that line: a store that must never miss one
//! writes it in the transaction instead (an outbox), at a statement per write.

use crate::error::Result;

/// Writes the audit line of one operation's `result`.
pub(crate) fn record<T>(
    action: &'static str,
    actor: Option<i64>,
    subject: Option<i64>,
    result: &Result<T>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(err) => err.slug(),
    };
    tracing::info!(target: "scalable_api::audit", action, actor, subject, outcome, "audit");
}
