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
    /// The name as configured.
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

/// What a request costs the service, as the limits group routes: each class has its own
/// budget per tier, so a burst of reads never spends the budget for writes or logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteClass {
    /// `GET` and `HEAD` (REST, the GraphiQL page, unknown paths).
    Reads,
    /// Every other method outside `/v1/auth/`.
    Writes,
    /// `/v1/auth/*` (register, login), and GraphQL operations that check a password: each is
    /// an argon2 run and, for a login, a guess.
    Auth,
    /// `POST /graphql`, charged by the query's computed cost rather than 1 per request.
    Graphql,
}

impl RouteClass {
    pub const ALL: [RouteClass; 4] = [Self::Reads, Self::Writes, Self::Auth, Self::Graphql];

    /// As in config (`ratelimit.tiers.<tier>.<class>`) and the `class` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reads => "reads",
            Self::Writes => "writes",
            Self::Auth => "auth",
            Self::Graphql => "graphql",
        }
    }
}

/// One tier's budget for one route class. REST requests cost 1 unit; GraphQL requests cost
/// their computed query cost (`graphql.max_complexity` bounds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassLimit {
    /// Units per `ratelimit.window`: the steady rate.
    pub rate: u32,
    /// Units admitted at once from idle (the token bucket's capacity, GCRA's tolerance; the
    /// window algorithms admit `rate` at once and ignore it).
    pub burst: u32,
    /// Units per UTC day (a 24 h window on Redis's clock), enforced in the same script call as
    /// the rate.
    pub daily_quota: u32,
}

impl ClassLimit {
    const fn new(rate: u32, burst: u32, daily_quota: u32) -> Self {
        Self {
            rate,
            burst,
            daily_quota,
        }
    }
}

/// One tier's budgets, per route class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierBudgets {
    pub reads: ClassLimit,
    pub writes: ClassLimit,
    pub auth: ClassLimit,
    pub graphql: ClassLimit,
}

impl TierBudgets {
    pub fn class(&self, class: RouteClass) -> ClassLimit {
        match class {
            RouteClass::Reads => self.reads,
            RouteClass::Writes => self.writes,
            RouteClass::Auth => self.auth,
            RouteClass::Graphql => self.graphql,
        }
    }
}

/// Every tier's budgets: `[ratelimit.tiers.<tier>.<class>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierTable {
    pub anonymous: TierBudgets,
    pub free: TierBudgets,
    pub pro: TierBudgets,
    pub service: TierBudgets,
}

impl TierTable {
    pub fn get(&self, tier: LimitTier, class: RouteClass) -> ClassLimit {
        let limits = match tier {
            LimitTier::Anonymous => &self.anonymous,
            LimitTier::Free => &self.free,
            LimitTier::Pro => &self.pro,
            LimitTier::Service => &self.service,
        };
        limits.class(class)
    }
}

impl Default for TierTable {
    /// Per minute (the default window): an anonymous address reads 20/s with bursts of 300
    /// (an office behind one NAT address is many people); each paid tier multiplies it.
    /// Logins are few at every tier: each is an argon2 run. GraphQL counts cost units: the
    /// nested 50 users x 5 posts query costs about 1,500, and every burst admits at least
    /// one query of `graphql.max_complexity` (20,000).
    fn default() -> Self {
        let l = ClassLimit::new;
        Self {
            anonymous: TierBudgets {
                reads: l(1_200, 300, 50_000),
                writes: l(120, 30, 2_000),
                auth: l(60, 30, 1_000),
                graphql: l(60_000, 20_000, 1_000_000),
            },
            free: TierBudgets {
                reads: l(3_000, 600, 200_000),
                writes: l(300, 60, 10_000),
                auth: l(60, 30, 1_000),
                graphql: l(150_000, 40_000, 5_000_000),
            },
            pro: TierBudgets {
                reads: l(12_000, 2_000, 2_000_000),
                writes: l(1_200, 200, 100_000),
                auth: l(120, 60, 5_000),
                graphql: l(600_000, 100_000, 50_000_000),
            },
            service: TierBudgets {
                reads: l(60_000, 10_000, 50_000_000),
                writes: l(6_000, 1_000, 2_000_000),
                auth: l(120, 60, 10_000),
                graphql: l(3_000_000, 400_000, 500_000_000),
            },
        }
    }
}

/// `[ratelimit.shield]`: the per-address flood guard in front of everything but the probes
/// (`src/http/shield.rs`). Its state is in this process's memory: each instance admits this
/// much per address, which is the point (it costs no round trip and keeps a flood off Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShieldConfig {
    pub enabled: bool,
    /// Requests per second per client address, steady.
    pub per_second: u32,
    /// Requests per client address admitted back to back from idle.
    pub burst: u32,
}

impl Default for ShieldConfig {
    /// Far above any tier's read rate: the shield stops floods, the tiers shape use.
    fn default() -> Self {
        Self {
            enabled: true,
            per_second: 200,
            burst: 400,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// The switch for the shield and every distributed limit. Off, no request is limited and
    /// no `RateLimit` header is sent (the benchmark's baseline).
    pub enabled: bool,
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
    /// The window every tier's `rate` counts in (the headers' `w`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Instances expected to share the load while the limiter's Redis is unusable: each then
    /// enforces, in its own memory, its share of every limit (`rate / fallback_instances`,
    /// at least 1). Reads, writes and GraphQL fall back this way; `auth` refuses with 503
    /// instead (a local limit would multiply password guesses by the instance count).
    pub fallback_instances: u32,
    /// The most units one instance charges in Redis ahead of time for one key (a local
    /// lease, `src/traffic/ratelimit/lease.rs`), spent without a round trip. The lease
    /// shrinks as the budget runs low (`remaining / (8 * fallback_instances)`), down to 1
    /// near the limit. `1`: no leases, one Redis call per limited request (exact headers).
    pub max_lease: u32,
    /// How long a lease may be spent: unspent units are then dropped (charged in Redis but
    /// never admitted). Also ends at a fixed window's or the daily quota's boundary.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// The per-address flood guard.
    pub shield: ShieldConfig,
    /// The budgets per tier and route class.
    pub tiers: TierTable,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            algorithm: LimiterAlgorithm::Gcra,
            redis_url: "redis://127.0.0.1:55400".into(),
            key_prefix: "scalable-api:ratelimit".into(),
            command_timeout: Duration::from_millis(50),
            pool_max_connections: 32,
            breaker: BreakerConfig::default(),
            window: Duration::from_secs(60),
            fallback_instances: 2,
            max_lease: 256,
            lease_ttl: Duration::from_millis(200),
            shield: ShieldConfig::default(),
            tiers: TierTable::default(),
        }
    }
}

impl RateLimitConfig {
    /// `max_query_cost` is `graphql.max_complexity`: every tier's GraphQL budget must admit
    /// one such query at once and in a day, or a valid query could never pass.
    pub(super) fn validate(&self, max_query_cost: u32) -> anyhow::Result<()> {
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
        ensure!(
            self.window >= Duration::from_millis(1),
            "ratelimit.window must be at least 1ms"
        );
        ensure!(
            self.fallback_instances >= 1,
            "ratelimit.fallback_instances must be at least 1"
        );
        ensure!(
            self.max_lease >= 1,
            "ratelimit.max_lease must be at least 1 (1: no leases)"
        );
        ensure!(
            !self.lease_ttl.is_zero(),
            "ratelimit.lease_ttl must be more than zero"
        );
        ensure!(
            self.shield.per_second >= 1 && self.shield.burst >= 1,
            "ratelimit.shield.per_second and ratelimit.shield.burst must be at least 1"
        );
        for tier in LimitTier::ALL {
            for class in RouteClass::ALL {
                let limit = self.tiers.get(tier, class);
                let name = format!("ratelimit.tiers.{}.{}", tier.as_str(), class.as_str());
                ensure!(
                    limit.rate >= 1 && limit.burst >= 1 && limit.daily_quota >= 1,
                    "{name}: rate, burst and daily_quota must be at least 1"
                );
                if class == RouteClass::Graphql {
                    let smallest = limit.rate.min(limit.burst).min(limit.daily_quota);
                    ensure!(
                        smallest >= max_query_cost,
                        "{name}: rate, burst and daily_quota ({smallest} at the least) must be at least graphql.max_complexity ({max_query_cost}), or a query the schema accepts could never pass"
                    );
                }
            }
        }
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
