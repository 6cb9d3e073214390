//! The audit lines of operations: one per attempt at a security-relevant write (and login),
//! with the outcome the client got. What a line holds, and what it never holds, is in
//! [`crate::telemetry::audit`].

use crate::{auth::AuthUser, error::Result, telemetry::audit::AuditEvent};

/// Writes the audit line of one operation's `result`, done by `actor` (through an API key
/// when `actor.key_id` says so).
pub(crate) fn record<T>(
    action: &'static str,
    actor: Option<AuthUser>,
    subject: Option<i64>,
    result: &Result<T>,
) {
    AuditEvent {
        action,
        actor: actor.map(|a| a.id),
        key: actor.and_then(|a| a.key_id),
        subject,
        outcome: match result {
            Ok(_) => "ok",
            Err(err) => err.slug(),
        },
    }
    .record();
}
