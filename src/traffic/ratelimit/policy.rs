//! What a limit is ([`Policy`]) and what a check answers ([`Decision`], or
//! [`LimiterUnavailable`]).

use std::time::Duration;

use crate::config::LimiterAlgorithm;

/// A limit: `limit` units per `window`, and how large a burst may be.
///
/// What each field means, by algorithm:
///
/// | algorithm | `limit` | `window` | `burst` |
/// |---|---|---|---|
/// | `fixed-window` | units per aligned window | the window; windows start at multiples of it in Redis time | ignored (a window's `limit` is its burst) |
/// | `sliding-log` | units in any span of `window` | the span | ignored |
/// | `sliding-window` | units in any span of `window`, approximately | the span (and the two counters' windows) | ignored |
/// | `token-bucket` | tokens refilled per `window` (the steady rate is `limit / window`) | the refill period | the bucket's capacity: units admitted at once from idle |
/// | `gcra` | units per `window` (one per emission interval `window / limit`) | the period | units admitted back to back from idle (tolerance `burst * window / limit`) |
///
/// A check's `cost` counts in the same units: a request charged `cost = 5` uses five.
///
/// `daily_quota`, whatever the algorithm: at most that many units per UTC day (Redis's
/// clock), charged in the same script call as the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub limit: u32,
    pub window: Duration,
    pub burst: u32,
    pub daily_quota: Option<u32>,
}

impl Policy {
    /// `limit` per `window`, bursts of up to `limit` (the window algorithms' behaviour), no
    /// daily quota.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            burst: limit,
            daily_quota: None,
        }
    }

    pub fn with_burst(self, burst: u32) -> Self {
        Self { burst, ..self }
    }

    pub fn with_daily_quota(self, quota: u32) -> Self {
        Self {
            daily_quota: Some(quota),
            ..self
        }
    }

    /// The most units `algorithm` can ever admit at once: a check costing more is refused
    /// for good (its [`Decision::retry_after`] is `None`).
    pub fn capacity(&self, algorithm: LimiterAlgorithm) -> u32 {
        match algorithm {
            LimiterAlgorithm::TokenBucket | LimiterAlgorithm::Gcra => self.burst,
            LimiterAlgorithm::FixedWindow
            | LimiterAlgorithm::SlidingLog
            | LimiterAlgorithm::SlidingWindow => self.limit,
        }
    }

    /// The window in whole µs (at least 1), as the scripts take it.
    pub(super) fn window_us(&self) -> u64 {
        u64::try_from(self.window.as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// One check's answer: what the `RateLimit` / `RateLimit-Policy` headers and `Retry-After`
/// need (see [`super::render_headers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on; if so, its `cost` has been charged.
    pub allowed: bool,
    /// The policy's `limit` (the headers' quota `q`).
    pub limit: u32,
    /// Units that could still be admitted right now, after this check's charge (0 when
    /// limited, or less than the cost that was refused).
    pub remaining: u32,
    /// How long until the key's usage is back to nothing (the quota fully restored): the
    /// window's end for the fixed window, when the newest charge leaves the window for the
    /// logs, when the bucket is full again for the token bucket and GCRA.
    pub reset_after: Duration,
    /// When limited: how long until the same `cost` would be admitted (`Retry-After`). `None`
    /// when allowed, and when the cost exceeds what the policy can ever admit at once.
    pub retry_after: Option<Duration>,
    /// The daily quota after this check, when the policy has one.
    pub quota: Option<QuotaUsage>,
}

/// The daily quota's state after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUsage {
    /// The policy's `daily_quota`.
    pub limit: u32,
    /// Units left today, after this check's charge.
    pub remaining: u32,
    /// Until the day ends (UTC, Redis's clock) and the quota is whole again.
    pub reset_after: Duration,
    /// This check was refused because the quota is spent (the rate alone would have passed,
    /// or was not asked).
    pub exhausted: bool,
}

/// No decision could be made: Redis is unreachable, slow or the breaker is open. The caller
/// chooses between a local fallback and refusing (see `mod.rs`); nothing was charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimiterUnavailable {
    /// The breaker is open: Redis was not even tried.
    #[error("rate limiter unavailable: its Redis breaker is open")]
    BreakerOpen,
    /// Every pooled connection was busy for the whole wait: this instance is overloaded,
    /// not Redis (the breaker does not count it).
    #[error("rate limiter unavailable: no free Redis connection")]
    Busy,
    /// Connecting, or the script's round trip, failed or timed out.
    #[error("rate limiter unavailable: Redis failed or timed out")]
    Failed,
}
