//! The `RateLimit-Policy` and `RateLimit` response headers of the IETF httpapi working
//! group's draft, revision `draft-ietf-httpapi-ratelimit-headers-10` (September 2025; the
//! structured-field syntax below dates from -08):
//!
//! ```text
//! RateLimit-Policy: "default";q=100;w=60
//! RateLimit: "default";r=42;t=17
//! Retry-After: 17
//! ```
//!
//! Both are structured-field lists (RFC 9651) of items named by the policy: `q` the quota
//! (units per window), `w` the window in seconds; `r` the units remaining, `t` the seconds
//! until the quota is restored. The draft's values are whole seconds, so a sub-second window
//! or reset is rounded up (`w=1`): a client that waits that long is never early.
//!
//! A policy with a daily quota is two policies to the draft, each its own list item: the
//! rate under its name, the day under `<name>-daily` (`w=86400`):
//!
//! ```text
//! RateLimit-Policy: "free-reads";q=3000;w=60, "free-reads-daily";q=200000;w=86400
//! RateLimit: "free-reads";r=599;t=1, "free-reads-daily";r=199999;t=40000
//! ```

use std::time::Duration;

use super::{Decision, Policy};

/// The header values for one decision under one named policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `RateLimit-Policy`
    pub policy: String,
    /// `RateLimit`
    pub ratelimit: String,
    /// `Retry-After` (delay-seconds), on a limited decision that a retry can pass.
    pub retry_after: Option<String>,
}

/// Renders the headers. `name` is ours (`"default"`, `"free-writes"`); it is written as an
/// sf-string: `"` and `\` escaped, characters outside printable ASCII dropped.
pub fn render_headers(name: &str, policy: &Policy, decision: &Decision) -> RateLimitHeaders {
    let quoted = sf_string(name);
    let mut policies = format!(
        "{quoted};q={};w={}",
        decision.limit,
        whole_seconds(policy.window).max(1)
    );
    let mut ratelimit = format!(
        "{quoted};r={};t={}",
        decision.remaining,
        whole_seconds(decision.reset_after)
    );
    if let Some(quota) = &decision.quota {
        let daily = sf_string(&format!("{name}-daily"));
        policies.push_str(&format!(", {daily};q={};w=86400", quota.limit));
        ratelimit.push_str(&format!(
            ", {daily};r={};t={}",
            quota.remaining,
            whole_seconds(quota.reset_after)
        ));
    }
    RateLimitHeaders {
        policy: policies,
        ratelimit,
        retry_after: decision
            .retry_after
            .filter(|_| !decision.allowed)
            .map(|d| whole_seconds(d).max(1).to_string()),
    }
}

/// Seconds, rounded up.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(allowed: bool, remaining: u32, reset_ms: u64, retry_ms: Option<u64>) -> Decision {
        Decision {
            allowed,
            limit: 100,
            remaining,
            reset_after: Duration::from_millis(reset_ms),
            retry_after: retry_ms.map(Duration::from_millis),
            quota: None,
        }
    }

    #[test]
    fn an_allowed_decision_renders_quota_window_remaining_and_reset() {
        let policy = Policy::new(100, Duration::from_secs(60));
        let headers = render_headers("default", &policy, &decision(true, 42, 16_200, None));
        assert_eq!(headers.policy, r#""default";q=100;w=60"#);
        assert_eq!(headers.ratelimit, r#""default";r=42;t=17"#, "rounded up");
        assert_eq!(headers.retry_after, None);
    }

    #[test]
    fn a_limited_decision_adds_retry_after_in_whole_seconds_never_zero() {
        let policy = Policy::new(100, Duration::from_millis(500));
        let headers = render_headers("free", &policy, &decision(false, 0, 300, Some(20)));
        assert_eq!(headers.policy, r#""free";q=100;w=1"#, "sub-second window");
        assert_eq!(headers.ratelimit, r#""free";r=0;t=1"#);
        assert_eq!(headers.retry_after.as_deref(), Some("1"));
    }

    #[test]
    fn a_daily_quota_is_a_second_item_in_each_header() {
        let policy = Policy::new(100, Duration::from_secs(60)).with_daily_quota(5000);
        let mut refused = decision(false, 40, 2_000, Some(3_600_500));
        refused.quota = Some(super::super::QuotaUsage {
            limit: 5000,
            remaining: 0,
            reset_after: Duration::from_millis(3_600_500),
            exhausted: true,
        });
        let headers = render_headers("free-reads", &policy, &refused);
        assert_eq!(
            headers.policy,
            r#""free-reads";q=100;w=60, "free-reads-daily";q=5000;w=86400"#
        );
        assert_eq!(
            headers.ratelimit,
            r#""free-reads";r=40;t=2, "free-reads-daily";r=0;t=3601"#
        );
        assert_eq!(headers.retry_after.as_deref(), Some("3601"));
    }

    #[test]
    fn the_policy_name_is_a_valid_sf_string() {
        let policy = Policy::new(1, Duration::from_secs(1));
        let headers = render_headers("a\"b\\c\u{e9}\n", &policy, &decision(true, 0, 0, None));
        assert_eq!(headers.ratelimit, r#""a\"b\\c";r=0;t=0"#);
    }
}
