//! `[cache]`: which caching strategy serves reads, and its Redis and in-process tiers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SecretUrl;
use super::breaker::BreakerConfig;

/// Which caching strategy serves reads of users, posts and a user's first page of posts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStrategy {
    /// Every read goes to the database.
    None,
    /// Redis in front of the database: read Redis, on a miss read the database and fill.
    CacheAside,
    /// An in-process L1 (moka) in front of cache-aside Redis.
    TwoTier,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `none`, `cache-aside` or `two-tier` (see [`CacheStrategy`]).
    pub strategy: CacheStrategy,
    /// Redis for the `cache-aside` and `two-tier` strategies. May carry a password
    /// (`redis://:pw@host:6379`); `scalable-api config` masks it.
    pub redis_url: SecretUrl,
    /// Every key starts with this (tests use one per test; instances of one deployment share it).
    pub key_prefix: String,
    /// Lifetime of a cached row; each entry gets +-`ttl_jitter` of it at random, so entries
    /// filled together do not expire together.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Fraction of the TTL to jitter by (0.1 = +-10 %).
    pub ttl_jitter: f64,
    /// Lifetime of a cached "not found".
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Posts cached per user page (requests within the first this-many posts are served from it).
    pub page_size: u32,
    /// Two-tier: the most an L1 entry can outlive an invalidation when the invalidation
    /// message is lost.
    #[serde(with = "humantime_serde")]
    pub l1_ttl: Duration,
    /// Two-tier: bytes the L1 holds at most (each entry weighs its JSON plus about 128
    /// bytes), on top of the process's other memory.
    pub l1_max_bytes: u64,
    /// Bound on each Redis command (and on connecting, with at least 500 ms): a slow Redis
    /// must not slow every request down to the database's pace plus a timeout. The cache
    /// uses two multiplexed connections per instance, one for lookups and one for fills and
    /// invalidations (see `src/cache/redis_tier.rs`): no pool to size.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// The circuit breaker in front of Redis: while open, reads go straight to the database.
    pub breaker: BreakerConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            strategy: CacheStrategy::CacheAside,
            redis_url: "redis://127.0.0.1:55400".into(),
            key_prefix: "scalable-api".into(),
            ttl: Duration::from_secs(300),
            ttl_jitter: 0.1,
            negative_ttl: Duration::from_secs(30),
            page_size: 20,
            l1_ttl: Duration::from_secs(1),
            l1_max_bytes: 32 * 1024 * 1024,
            command_timeout: Duration::from_millis(50),
            breaker: BreakerConfig::default(),
        }
    }
}

impl CacheConfig {
    /// The longest a cached entry may live: past this, TTL arithmetic (jitter, fences at
    /// twice the TTL) would overflow, and nothing should be cached for longer anyway.
    const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        for (name, ttl) in [
            ("ttl", self.ttl),
            ("negative_ttl", self.negative_ttl),
            ("l1_ttl", self.l1_ttl),
        ] {
            anyhow::ensure!(
                !ttl.is_zero() && ttl <= Self::MAX_TTL,
                "cache.{name} must be more than 0s and at most 30 days"
            );
        }
        anyhow::ensure!(
            self.ttl_jitter.is_finite() && (0.0..=0.5).contains(&self.ttl_jitter),
            "cache.ttl_jitter must be between 0.0 and 0.5 (a fraction of the TTL)"
        );
        anyhow::ensure!(
            !self.command_timeout.is_zero(),
            "cache.command_timeout must be more than 0s"
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
