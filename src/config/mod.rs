//! One typed configuration, layered: built-in defaults -> a TOML file -> environment.
//!
//! The defaults describe the local stack (`scripts/stack up`), so `scalable-api serve` works
//! on a developer machine with no file at all. Production sets `profile = "production"`,
//! which refuses to start with the development JWT secret.
//!
//! Sources, later ones win:
//! 1. [`Config::default`]
//! 2. the TOML file named by `--config` or `SCALABLE_API_CONFIG` (see `config/example.toml`)
//! 3. environment variables `SCALABLE_API_<SECTION>__<FIELD>` (listed below). Values parse
//!    as TOML, so the whole shard map fits in one variable:
//!    `SCALABLE_API_DB__SHARDS='[{id=0, first_id=1, last_id=1000000000, primary="postgres://..", replicas=[]}]'`.
//!
//! One struct per concern, each with its defaults and its own checks: [`HttpConfig`],
//! [`AuthConfig`], [`DbConfig`], [`CacheConfig`], [`ApiConfig`], [`GraphqlConfig`],
//! [`TelemetryConfig`], [`RateLimitConfig`], [`SheddingConfig`]. Unknown keys are errors, not
//! silently ignored.
//!
//! Durations are written with a unit: `250ms`, `5s`, `5m`, `24h` (humantime syntax; a bare
//! number is refused, since it would not say which unit it means). URLs that may carry a
//! password are [`SecretUrl`]s and the JWT secret a [`secrecy::SecretString`]: `Debug` hides them and
//! `scalable-api config` prints [`Config::redacted`].
//!
//! ## Environment variables
//!
//! Every setting, with the default of each duration (the field docs say what each one does):
//!
//! - `SCALABLE_API_PROFILE`: `dev` or `production`
//! - `SCALABLE_API_HTTP__ADDR`: the listen address
//! - `SCALABLE_API_HTTP__BODY_LIMIT_BYTES`
//! - `SCALABLE_API_HTTP__REQUEST_TIMEOUT` (default `10s`): then 503
//! - `SCALABLE_API_HTTP__SHUTDOWN_GRACE` (default `20s`): drain time on SIGTERM
//! - `SCALABLE_API_HTTP__SHUTDOWN_LINGER` (default `1s`): open connections still served
//!   (and closed after their next answer) before idle ones are closed
//! - `SCALABLE_API_HTTP__MAX_CONNECTIONS`: connections served at once
//! - `SCALABLE_API_HTTP__HEADER_READ_TIMEOUT` (default `10s`)
//! - `SCALABLE_API_HTTP__CORS_ORIGINS`: origins allowed to call from a browser, TOML array
//!   (`'["https://app.example.com"]'`); none by default
//! - `SCALABLE_API_HTTP__HSTS`: `true` only behind TLS
//! - `SCALABLE_API_HTTP__TRUSTED_PROXIES`: networks of the proxies in front, TOML array
//!   (`'["10.0.0.0/8"]'`); none by default
//! - `SCALABLE_API_HTTP__VERSIONING__DEFAULT`: `v1` or `v2`, what an unversioned path serves
//!   when `Accept` names no version
//! - `SCALABLE_API_HTTP__VERSIONING__V1_DEPRECATED_AT`: RFC 3339 (`2026-01-01T00:00:00Z`);
//!   unset by default: no deprecation headers
//! - `SCALABLE_API_HTTP__VERSIONING__V1_SUNSET_AT`: RFC 3339; unset by default
//! - `SCALABLE_API_HTTP__IDEMPOTENCY__ENABLED`: `Idempotency-Key` honoured on POST
//! - `SCALABLE_API_HTTP__IDEMPOTENCY__TTL` (default `1day`): how long an answer is replayed
//! - `SCALABLE_API_HTTP__IDEMPOTENCY__LEASE` (default `10s`): a running request's hold on its
//!   key; unset, `http.request_timeout`
//! - `SCALABLE_API_HTTP__IDEMPOTENCY__REDIS_URL`: may carry a password
//! - `SCALABLE_API_HTTP__IDEMPOTENCY__KEY_PREFIX`
//! - `SCALABLE_API_HTTP__IDEMPOTENCY__COMMAND_TIMEOUT` (default `200ms`)
//! - `SCALABLE_API_HTTP__IDEMPOTENCY__BREAKER__FAILURE_THRESHOLD`
//! - `SCALABLE_API_HTTP__IDEMPOTENCY__BREAKER__OPEN` (default `2s`)
//! - `SCALABLE_API_HTTP__COMPRESSION__ENABLED`: gzip, br or zstd by `Accept-Encoding`
//! - `SCALABLE_API_HTTP__COMPRESSION__MIN_BYTES`: smaller answers go out uncompressed
//! - `SCALABLE_API_AUTH__JWT_SECRET`: at least 32 bytes, from a secret store
//! - `SCALABLE_API_AUTH__ISSUER`
//! - `SCALABLE_API_AUTH__AUDIENCE`
//! - `SCALABLE_API_AUTH__ACCESS_TOKEN_TTL` (default `1h`)
//! - `SCALABLE_API_AUTH__MAX_CONCURRENT_HASHES`: argon2 runs at once, `0` = one per core
//! - `SCALABLE_API_AUTH__MAX_QUEUED_HASHES`: may wait for a hashing slot, then 503
//! - `SCALABLE_API_AUTH__HASH_WAIT` (default `2s`)
//! - `SCALABLE_API_AUTH__REVOCATION_CHECK_TTL` (default `10s`): the most an access token
//!   revoked on another instance (password change, deleted account) lives on here
//! - `SCALABLE_API_AUTH__REVOCATION_CACHE_MAX_ENTRIES`
//! - `SCALABLE_API_AUTH__API_KEYS__CACHE_TTL` (default `30s`): the most a revoked key lives on
//!   other instances
//! - `SCALABLE_API_AUTH__API_KEYS__CACHE_MAX_ENTRIES`
//! - `SCALABLE_API_AUTH__API_KEYS__MAX_PER_USER`
//! - `SCALABLE_API_AUTH__LOGIN_LIMITS__ACCOUNT_TRIES`
//! - `SCALABLE_API_AUTH__LOGIN_LIMITS__ADDRESS_TRIES`
//! - `SCALABLE_API_AUTH__LOGIN_LIMITS__WINDOW` (default `15m`)
//! - `SCALABLE_API_DB__DIRECTORY_URL`: may carry a password
//! - `SCALABLE_API_DB__SHARDS`: the whole shard map, as a TOML array
//! - `SCALABLE_API_DB__POOL_MAX_CONNECTIONS`
//! - `SCALABLE_API_DB__ACQUIRE_TIMEOUT` (default `2s`): then 503
//! - `SCALABLE_API_DB__STATEMENT_TIMEOUT` (default `5s`)
//! - `SCALABLE_API_DB__REPLICAS__CHECK_INTERVAL` (default `250ms`)
//! - `SCALABLE_API_DB__REPLICAS__MAX_LAG_BYTES`
//! - `SCALABLE_API_DB__REPLICAS__MAX_LAG` (default `5s`)
//! - `SCALABLE_API_DB__REPLICAS__REJOIN_AFTER`
//! - `SCALABLE_API_DB__REPLICAS__ACQUIRE_TIMEOUT` (default `250ms`): then the primary
//! - `SCALABLE_API_DB__PRIMARY_BREAKER__FAILURE_THRESHOLD`
//! - `SCALABLE_API_DB__PRIMARY_BREAKER__OPEN` (default `2s`)
//! - `SCALABLE_API_DB__DIRECTORY_REPAIR__GRACE` (default `30s`)
//! - `SCALABLE_API_DB__DIRECTORY_REPAIR__INTERVAL` (default `1m`)
//! - `SCALABLE_API_CACHE__STRATEGY`: `none`, `cache-aside` or `two-tier`
//! - `SCALABLE_API_CACHE__REDIS_URL`: may carry a password
//! - `SCALABLE_API_CACHE__KEY_PREFIX`
//! - `SCALABLE_API_CACHE__TTL` (default `5m`)
//! - `SCALABLE_API_CACHE__TTL_JITTER`
//! - `SCALABLE_API_CACHE__NEGATIVE_TTL` (default `30s`)
//! - `SCALABLE_API_CACHE__PAGE_SIZE`
//! - `SCALABLE_API_CACHE__L1_TTL` (default `1s`)
//! - `SCALABLE_API_CACHE__L1_MAX_BYTES`
//! - `SCALABLE_API_CACHE__COMMAND_TIMEOUT` (default `50ms`)
//! - `SCALABLE_API_CACHE__BREAKER__FAILURE_THRESHOLD`
//! - `SCALABLE_API_CACHE__BREAKER__OPEN` (default `2s`)
//! - `SCALABLE_API_CONSISTENCY__AUDIT__SAMPLE_RATE`: the share of cache and replica reads
//!   re-read on the primary to measure staleness, 0..=1; 0 (the default) is off
//! - `SCALABLE_API_CONSISTENCY__AUDIT__MAX_IN_FLIGHT`: audits at once; past it, skipped
//! - `SCALABLE_API_RATELIMIT__ENABLED`: the shield and every limit
//! - `SCALABLE_API_RATELIMIT__ALGORITHM`: `token-bucket`, `fixed-window`, `sliding-log`,
//!   `sliding-window` or `gcra`
//! - `SCALABLE_API_RATELIMIT__REDIS_URL`: may carry a password
//! - `SCALABLE_API_RATELIMIT__KEY_PREFIX`
//! - `SCALABLE_API_RATELIMIT__COMMAND_TIMEOUT` (default `50ms`)
//! - `SCALABLE_API_RATELIMIT__POOL_MAX_CONNECTIONS`
//! - `SCALABLE_API_RATELIMIT__BREAKER__FAILURE_THRESHOLD`
//! - `SCALABLE_API_RATELIMIT__BREAKER__OPEN` (default `2s`)
//! - `SCALABLE_API_RATELIMIT__WINDOW` (default `1m`): the window of every tier's `rate`
//! - `SCALABLE_API_RATELIMIT__FALLBACK_INSTANCES`: each instance's share while Redis is out
//! - `SCALABLE_API_RATELIMIT__MAX_LEASE` (default 256; 1: no local leases, exact)
//! - `SCALABLE_API_RATELIMIT__LEASE_TTL` (default `200ms`)
//! - `SCALABLE_API_RATELIMIT__SHIELD__ENABLED`
//! - `SCALABLE_API_RATELIMIT__SHIELD__PER_SECOND`: per client address, per instance
//! - `SCALABLE_API_RATELIMIT__SHIELD__BURST`
//! - `SCALABLE_API_RATELIMIT__TIERS__<TIER>__<CLASS>__RATE`: `<TIER>` is `ANONYMOUS`, `FREE`,
//!   `PRO` or `SERVICE`; `<CLASS>` is `READS`, `WRITES`, `AUTH` or `GRAPHQL`
//! - `SCALABLE_API_RATELIMIT__TIERS__<TIER>__<CLASS>__BURST`
//! - `SCALABLE_API_RATELIMIT__TIERS__<TIER>__<CLASS>__DAILY_QUOTA`
//! - `SCALABLE_API_SHEDDING__ENABLED`
//! - `SCALABLE_API_SHEDDING__INITIAL_LIMIT`: requests in flight at start
//! - `SCALABLE_API_SHEDDING__MIN_LIMIT`
//! - `SCALABLE_API_SHEDDING__MAX_LIMIT`
//! - `SCALABLE_API_SHEDDING__TOLERANCE`: latency drift over the baseline before the limit shrinks
//! - `SCALABLE_API_SHEDDING__BACKOFF`: the most one window cuts (a factor)
//! - `SCALABLE_API_SHEDDING__SAMPLE_WINDOW` (default `100ms`)
//! - `SCALABLE_API_SHEDDING__BASELINE_WINDOW` (default `30s`)
//! - `SCALABLE_API_SHEDDING__QUEUE_SIZE`
//! - `SCALABLE_API_SHEDDING__MAX_WAIT` (default `100ms`): then 503
//! - `SCALABLE_API_SHEDDING__LOWEST_PRIORITY_WAITS`: whether anonymous lists may queue
//! - `SCALABLE_API_API__MAX_PAGE_SIZE`
//! - `SCALABLE_API_API__MAX_OFFSET`
//! - `SCALABLE_API_GRAPHQL__MAX_DEPTH`
//! - `SCALABLE_API_GRAPHQL__MAX_COMPLEXITY`
//! - `SCALABLE_API_GRAPHQL__INTROSPECTION`: unset by default (on in dev, off in production)
//! - `SCALABLE_API_GRAPHQL__GRAPHIQL`: unset by default (on in dev, off in production)
//! - `SCALABLE_API_GRAPHQL__MAX_ROOT_FIELDS`
//! - `SCALABLE_API_GRAPHQL__MAX_RESPONSE_BYTES`
//! - `SCALABLE_API_GRAPHQL__MAX_READS`
//! - `SCALABLE_API_GRAPHQL__MAX_CONCURRENT_READS`
//! - `SCALABLE_API_GRAPHQL__DATALOADERS`
//! - `SCALABLE_API_GRAPHQL__BATCH_WINDOW` (default `20ms`)
//! - `SCALABLE_API_GRAPHQL__EXECUTOR` (`planned` or `resolvers`)
//! - `SCALABLE_API_TELEMETRY__LOG_FORMAT`: `auto`, `text` or `json`
//! - `SCALABLE_API_TELEMETRY__LOG_FILTER`: `RUST_LOG` syntax
//! - `SCALABLE_API_TELEMETRY__METRICS`
//! - `SCALABLE_API_TELEMETRY__METRICS_ADDR`: unset by default
//! - `SCALABLE_API_TELEMETRY__OTLP_ENDPOINT`: unset by default
//! - `SCALABLE_API_TELEMETRY__TRACE_SAMPLE_RATIO`
//! - `SCALABLE_API_TELEMETRY__TRACE_QUEUE_SIZE`
//! - `SCALABLE_API_TELEMETRY__OTLP_TIMEOUT` (default `3s`)
//! - `SCALABLE_API_TELEMETRY__SERVICE_NAME`
//! - `SCALABLE_API_TELEMETRY__SERVER_TIMING`: unset by default (on in dev, off in
//!   production); `false` leaves the `Server-Timing` header out
//!
//! `SCALABLE_API_CONFIG` names the file; the stack's `SCALABLE_API_STACK_*` share the prefix
//! but are not settings.

mod api;
mod auth;
mod breaker;
mod cache;
mod consistency;
mod db;
mod graphql;
mod http;
mod idempotency;
mod ratelimit;
mod secret;
mod shedding;
mod telemetry;
mod versioning;

use std::path::Path;

use anyhow::{Context, ensure};
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

pub use self::{
    api::ApiConfig,
    auth::{ApiKeyConfig, AuthConfig, DEV_JWT_SECRET, LoginLimitsConfig},
    breaker::BreakerConfig,
    cache::{CacheConfig, CacheStrategy},
    consistency::{AuditConfig, ConsistencyConfig},
    db::{DbConfig, DirectoryRepairConfig, MAX_ID, ReplicaHealthConfig, ShardConfig},
    graphql::{Executor, GraphqlConfig},
    http::{CompressionConfig, HttpConfig},
    idempotency::IdempotencyConfig,
    ratelimit::{
        ClassLimit, LimitTier, LimiterAlgorithm, RateLimitConfig, RouteClass, ShieldConfig,
        TierBudgets, TierTable,
    },
    secret::SecretUrl,
    shedding::SheddingConfig,
    telemetry::{LogFormat, TelemetryConfig},
    versioning::{ApiVersion, VersioningConfig},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `dev` turns on the learner's debug headers (`X-Db-Route`, `X-Cache`, `Server-Timing`),
    /// GraphQL introspection, suggestions and GraphiQL, and readable logs; `production` turns
    /// them off (an explicit setting of each still wins) and demands real secrets.
    pub profile: Profile,
    /// The listener and the bounds on every request.
    pub http: HttpConfig,
    /// Access tokens: their secret, claims and lifetime.
    pub auth: AuthConfig,
    /// The directory, the shard map, pools, replica health and repair.
    pub db: DbConfig,
    /// The caching strategy and its tiers.
    pub cache: CacheConfig,
    /// The staleness auditor: how stale the caches and replicas really are.
    pub consistency: ConsistencyConfig,
    /// Limits shared by REST and GraphQL.
    pub api: ApiConfig,
    /// Metrics, logs and traces (see `src/telemetry/`).
    pub telemetry: TelemetryConfig,
    /// GraphQL limits and DataLoaders.
    pub graphql: GraphqlConfig,
    /// The shield, the distributed rate limits (tiers x route classes) and their Redis.
    pub ratelimit: RateLimitConfig,
    /// The adaptive concurrency limit and its priority queue (load shedding).
    pub shedding: SheddingConfig,
}

/// Where the instance runs: what it shows and what it refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Debug headers, GraphQL introspection and GraphiQL, readable logs, the development JWT
    /// secret accepted.
    Dev,
    /// None of those, unless set explicitly (debug headers never).
    Production,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            profile: Profile::Dev,
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            db: DbConfig::default(),
            cache: CacheConfig::default(),
            consistency: ConsistencyConfig::default(),
            api: ApiConfig::default(),
            graphql: GraphqlConfig::default(),
            telemetry: TelemetryConfig::default(),
            ratelimit: RateLimitConfig::default(),
            shedding: SheddingConfig::default(),
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then `SCALABLE_API_*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            .merge(
                Env::prefixed("SCALABLE_API_")
                    .filter(|key| is_setting(key.as_str()))
                    .split("__"),
            )
            .extract()
            .context("Failed to read the configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types cannot, each section its own rules: the shard map is a partition
    /// of disjoint ranges, limits are at least 1, and production has real secrets.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.http.validate()?;
        self.db.validate()?;
        self.consistency.validate()?;
        self.api.validate()?;
        self.telemetry.validate(self.http.addr)?;
        self.cache.validate()?;
        // `/metrics` and the detailed `/readyz` show the shard layout, replicas' LSNs and
        // error rates: in production, only on an address of their own.
        anyhow::ensure!(
            self.profile != Profile::Production
                || !self.telemetry.metrics
                || self.telemetry.metrics_addr.is_some(),
            "telemetry.metrics_addr must be set in the production profile (or telemetry.metrics off): /metrics shows the deployment's internals and must not be on the API's address"
        );
        self.graphql.validate()?;
        self.auth.validate(self.profile, self.http.addr)?;
        self.ratelimit.validate(self.graphql.max_complexity)?;
        self.shedding.validate()?;
        Ok(())
    }

    /// The configuration as JSON with every secret masked: the JWT secret whole, and the
    /// password of each database and Redis URL (user, host, port and database stay visible:
    /// they are what one checks when a connection fails). `scalable-api config` prints it.
    pub fn redacted(&self) -> serde_json::Value {
        let shown = Self {
            http: self.http.redacted(),
            auth: self.auth.redacted(),
            db: self.db.redacted(),
            cache: self.cache.redacted(),
            ratelimit: self.ratelimit.redacted(),
            ..self.clone()
        };
        serde_json::to_value(shown)
            .expect("a Config serialises to JSON: its maps have string keys only")
    }

    pub fn is_dev(&self) -> bool {
        self.profile == Profile::Dev
    }

    /// Whether GraphQL answers introspection (and suggests field names): as set, else in dev.
    pub fn introspection(&self) -> bool {
        self.graphql.introspection.unwrap_or(self.is_dev())
    }

    /// Whether `GET /graphql` serves GraphiQL: as set, else in dev.
    pub fn graphiql(&self) -> bool {
        self.graphql.graphiql.unwrap_or(self.is_dev())
    }

    /// Whether answers carry `Server-Timing`: as set, else in dev. It tells every client
    /// where the time went (a cache hit shows), a side channel a production API closes.
    pub fn server_timing(&self) -> bool {
        self.telemetry.server_timing.unwrap_or(self.is_dev())
    }

    /// The log format in effect: `auto` follows the profile.
    pub fn log_format(&self) -> LogFormat {
        match (self.telemetry.log_format, self.profile) {
            (LogFormat::Auto, Profile::Dev) => LogFormat::Text,
            (LogFormat::Auto, Profile::Production) => LogFormat::Json,
            (format, _) => format,
        }
    }
}

/// Whether `key` (an environment variable name less the prefix, as the environment spells it,
/// e.g. `HTTP__ADDR`) names a setting. Only our sections do: `SCALABLE_API_CONFIG` and the
/// stack's `SCALABLE_API_STACK_*` share the prefix but are not settings. Figment lowercases
/// keys only after this filter, hence the case-insensitive match.
fn is_setting(key: &str) -> bool {
    let section = key.split("__").next().unwrap_or_default();
    [
        "profile",
        "http",
        "auth",
        "db",
        "cache",
        "consistency",
        "api",
        "graphql",
        "telemetry",
        "ratelimit",
        "shedding",
    ]
    .iter()
    .any(|s| s.eq_ignore_ascii_case(section))
}

#[cfg(test)]
mod tests;
