//! The audit log: who did what to which account, post or API key, when, from where, and how
//! it ended.
//!
//! One line per attempt at a security-relevant operation, successful or not, on its own log
//! target `scalable_api::audit`, so a log pipeline can keep it apart from (and longer than)
//! the access log. Operations write theirs through `src/operations/audit.rs`; the API key
//! checks of `src/auth/` write the refusals. Its fields:
//!
//! - `action`: `account.register`, `account.login`, `account.update`, `account.delete`,
//!   `post.create`, `post.update`, `post.delete`, `api_key.create`, `api_key.revoke`,
//!   `api_key.refused` (a key presented and refused: unknown, revoked or malformed, or out
//!   of its scope);
//! - `actor`: the user who acted (none for a registration or a refused login);
//! - `key`: the API key the actor acted through, when it was one;
//! - `subject`: the account, post or key acted on, when known (a login for an unknown email
//!   has none);
//! - `outcome`: `ok`, or the problem's slug (`forbidden`, `not-found`, `conflict`,
//!   `unauthorized`, `validation`, `too-many-requests`, `unavailable`, ...), the same one the
//!   client got;
//! - when: the line's `timestamp`; from where: the request span's `client.address` and
//!   `request_id`, which every line of a request carries.
//!
//! Never an email, a password, a token or an API key: the log says that account 42 failed to
//! log in from 203.0.113.7, not with what. In the same process as the write, so an instance
//! that dies between the commit and the log line loses that line: a store that must never
//! miss one writes it in the transaction instead (an outbox), at a statement per write.

/// One audit line.
#[derive(Debug, Clone, Copy)]
pub struct AuditEvent {
    pub action: &'static str,
    pub actor: Option<i64>,
    pub key: Option<i64>,
    pub subject: Option<i64>,
    pub outcome: &'static str,
}

impl AuditEvent {
    /// Writes the line.
    pub fn record(self) {
        let Self {
            action,
            actor,
            key,
            subject,
            outcome,
        } = self;
        tracing::info!(target: "scalable_api::audit", action, actor, key, subject, outcome, "audit");
    }
}
