//! `[ratelimit]`: the distributed rate limiter's algorithm, its Redis, and its bounds (the
//! limiter itself is `src/traffic/ratelimit/`).

use std::time::Duration;

use anyhow::ensure;
use serde::{Deserialize, Serialize};

use super::SecretUrl;
use super::breaker::BreakerConfig;

/// How a decision counts usage. Each is one atomic Lua script in Redis; they differ in
/// memory per key, exactness and how bursts pass (`docs/patterns/rate-limiting.md` compares
/// them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimiterAlgorithm {
    /// A bucket of `burst` tokens refilled at `limit / window`: bursts up to `burst`, then
    /// the steady rate.
    TokenBucket,
    /// A counter per aligned window: cheapest, but up to twice `limit` passes in a short
    /// span straddling a window boundary.
    FixedWindow,
    /// A timestamp per admitted request: exact (never more than `limit` in any window),
    /// memory grows with the rate.
    SlidingLog,
    /// Two fixed-window counters weighted by the elapsed fraction of the current window:
    /// an approximation of the sliding log at the cost of the fixed window.
    SlidingWindow,
    /// The generic cell rate algorithm: one timestamp per key, the token bucket's
    /// behaviour (bursts up to `burst`, then one request per `window / limit`).
    Gcra,
}

impl LimiterAlgorithm {
    /// The name as configured (and as the `algorithm` label of `ratelimit_decisions_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenBucket => "token-bucket",
            Self::FixedWindow => "fixed-window",
            Self::SlidingLog => "sliding-log",
            Self::SlidingWindow => "sliding-window",
            Self::Gcra => "gcra",
        }
    }
}

/// The tier a request's limits are sized by: the account's [`Tier`] for users, `Service` for
/// API keys, `Anonymous` without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitTier {
    Anonymous,
    Free,
    Pro,
    Service,
}

impl LimitTier {
    pub const ALL: [LimitTier; 4] = [Self::Anonymous, Self::Free, Self::Pro, Self::Service];

    /// As in config (`ratelimit.tiers.<name>`) and the `tier` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Free => "free",
            Self::Pro => "pro",
            Self::Service => "service",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// `token-bucket`, `fixed-window`, `sliding-log`, `sliding-window` or `gcra` (see
    /// [`LimiterAlgorithm`]).
    pub algorithm: LimiterAlgorithm,
    /// The Redis every instance shares, so that they enforce one limit together. May carry a
    /// password; `scalable-api config` masks it. Defaults to the cache's local Redis.
    pub redis_url: SecretUrl,
    /// Every key starts with this (tests use one per test; instances of one deployment share it).
    pub key_prefix: String,
    /// Bound on each decision's round trip, pool checkout and connect: the limiter sits in
    /// front of every request, so a slow Redis must cost little.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Redis connections per instance.
    pub pool_max_connections: usize,
    /// The circuit breaker in front of the limiter's Redis: while open, decisions come back
    /// unavailable at once and the caller applies its fallback.
    pub breaker: BreakerConfig,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            algorithm: LimiterAlgorithm::Gcra,
            redis_url: "redis://127.0.0.1:55400".into(),
            key_prefix: "scalable-api:ratelimit".into(),
            command_timeout: Duration::from_millis(50),
            pool_max_connections: 32,
            breaker: BreakerConfig::default(),
        }
    }
}

impl RateLimitConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            !self.command_timeout.is_zero(),
            "ratelimit.command_timeout must be more than zero"
        );
        ensure!(
            self.pool_max_connections >= 1,
            "ratelimit.pool_max_connections must be at least 1"
        );
        ensure!(
            !self.key_prefix.is_empty(),
            "ratelimit.key_prefix must not be empty: the limiter's keys would mix with others'"
        );
        ensure!(
            self.breaker.failure_threshold >= 1,
            "ratelimit.breaker.failure_threshold must be at least 1"
        );
        Ok(())
    }

    /// This section with the Redis password masked.
    pub(super) fn redacted(&self) -> Self {
        Self {
            redis_url: self.redis_url.redacted(),
            ..self.clone()
        }
    }
}
