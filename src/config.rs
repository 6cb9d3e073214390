//! One typed configuration, layered: built-in defaults -> a TOML file -> environment.
//!
//! The defaults describe the local stack (`scripts/stack up`), so `scalable-api serve` works
//! on a developer machine with no file at all. Production sets `profile = "production"`,
//! which refuses to start with the development JWT secret.
//!
//! Sources, later ones win:
//! 1. [`Config::default`]
//! 2. the TOML file named by `--config` or `SCALABLE_API_CONFIG` (see `config/example.toml`)
//! 3. environment variables `SCALABLE_API_<SECTION>__<FIELD>`, e.g. `SCALABLE_API_HTTP__ADDR=0.0.0.0:8080`,
//!    `SCALABLE_API_AUTH__JWT_SECRET=...`, `SCALABLE_API_DB__DIRECTORY_URL=postgres://...`.
//!    Nested values parse as TOML, so the whole shard map fits in one variable:
//!    `SCALABLE_API_DB__SHARDS='[{id=0, first_id=1, last_id=1000000000, primary="postgres://..", replicas=[]}]'`.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context, bail, ensure};
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::traffic::BreakerConfig;

/// The JWT secret used when none is configured. Fine on a laptop, refused in production.
pub const DEV_JWT_SECRET: &str = "dev-only-secret-change-me-dev-only-secret";

/// Largest id a shard range may reach: ids are JSON numbers in v1, and JavaScript clients
/// lose precision past 2^53 - 1.
pub const MAX_ID: i64 = (1 << 53) - 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `dev` turns on the learner's debug headers (`X-Db-Route`) and readable logs;
    /// `production` turns them off and demands real secrets.
    pub profile: Profile,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub db: DbConfig,
    pub cache: CacheConfig,
    pub api: ApiConfig,
    /// Metrics, logs and traces (see `src/telemetry/`).
    pub telemetry: TelemetryConfig,
    pub graphql: GraphqlConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Dev,
    Production,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on. Port 0 picks a free port (tests do this).
    pub addr: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub body_limit_bytes: usize,
    /// A request still running after this long is answered with 503.
    pub request_timeout_ms: u64,
    /// On SIGTERM/Ctrl-C, in-flight requests get this long to finish before the process exits.
    pub shutdown_grace_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HMAC secret for HS256 access tokens (at least 32 bytes).
    #[serde(serialize_with = "serialize_secret")]
    pub jwt_secret: SecretString,
    /// `iss` claim written and required.
    pub issuer: String,
    /// `aud` claim written and required.
    pub audience: String,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    /// The email directory (`email -> user id`): one database, not sharded.
    pub directory_url: String,
    /// The shard map, ordered by id range. Each shard owns a closed range of ids.
    pub shards: Vec<ShardConfig>,
    /// Connections per pool (one pool per primary and per replica).
    pub pool_max_connections: u32,
    /// How long a request waits for a pooled connection, including opening a new one, before
    /// failing with 503. Without it a dead server would hold every request for the OS's TCP
    /// connect timeout.
    pub acquire_timeout_ms: u64,
    /// `statement_timeout` set on every connection: no query runs away with a connection.
    pub statement_timeout_ms: u64,
    /// Replica health checks, and the lag bounds past which a replica leaves rotation.
    pub replicas: ReplicaHealthConfig,
    /// The circuit breaker in front of each shard's primary.
    pub primary_breaker: BreakerConfig,
    /// Repair of directory entries a crash left half-done (see `src/db/repo/directory.rs`).
    pub directory_repair: DirectoryRepairConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaHealthConfig {
    /// How often each shard's primary and replicas are checked.
    pub check_interval_ms: u64,
    /// A replica further behind its primary than this many bytes of WAL leaves rotation.
    pub max_lag_bytes: u64,
    /// A replica whose replay is older than this leaves rotation.
    pub max_lag_ms: u64,
    /// Healthy checks in a row before a replica that left rotation rejoins it.
    pub rejoin_after: u32,
    /// How long a read waits for a replica connection before falling back to the primary.
    /// Shorter than `db.acquire_timeout_ms`: a read always has the primary to go to, so a
    /// replica that just died should cost it milliseconds, not the full pool timeout.
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryRepairConfig {
    /// A `pending` entry older than this is presumed abandoned by a crashed saga and repaired
    /// (a live saga finishes well within it).
    pub grace_ms: u64,
    /// How often the background pass looks for such entries.
    pub interval_ms: u64,
}

/// One shard: the closed id range it owns and where its primary and replicas are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    pub id: u16,
    /// First id of this shard's range (inclusive).
    pub first_id: i64,
    /// Last id of this shard's range (inclusive). Once the range is used up the shard takes
    /// no new rows: ids never wrap into another shard's range.
    pub last_id: i64,
    pub primary: String,
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Whether the placement policy may put new users here (turn off to drain a full shard).
    #[serde(default = "yes")]
    pub accepts_new_users: bool,
}

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
    pub strategy: CacheStrategy,
    /// Redis for the `cache-aside` and `two-tier` strategies.
    pub redis_url: String,
    /// Every key starts with this (tests use one per test; instances of one deployment share it).
    pub key_prefix: String,
    /// Lifetime of a cached row; each entry gets +-`ttl_jitter` of it at random, so entries
    /// filled together do not expire together.
    pub ttl_secs: u64,
    /// Fraction of the TTL to jitter by (0.1 = +-10 %).
    pub ttl_jitter: f64,
    /// Lifetime of a cached "not found".
    pub negative_ttl_secs: u64,
    /// Posts cached per user page (requests within the first this-many posts are served from it).
    pub page_size: u32,
    /// Two-tier: the most an L1 entry can outlive an invalidation when the invalidation
    /// message is lost.
    pub l1_ttl_ms: u64,
    /// Two-tier: entries the L1 holds at most.
    pub l1_max_entries: u64,
    /// Bound on each Redis command, pool checkout and connect: a slow Redis must not slow
    /// every request down to the database's pace plus a timeout.
    pub command_timeout_ms: u64,
    /// Redis connections per instance.
    pub pool_max_connections: usize,
    /// The circuit breaker in front of Redis: while open, reads go straight to the database.
    pub breaker: BreakerConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            strategy: CacheStrategy::CacheAside,
            redis_url: "redis://127.0.0.1:55400".into(),
            key_prefix: "scalable-api".into(),
            ttl_secs: 300,
            ttl_jitter: 0.1,
            negative_ttl_secs: 30,
            page_size: 20,
            l1_ttl_ms: 1_000,
            l1_max_entries: 100_000,
            command_timeout_ms: 50,
            pool_max_connections: 32,
            breaker: BreakerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest page a client may ask for: `limit` in REST, `first` in GraphQL.
    pub max_page_size: u32,
    /// Largest `offset` a list endpoint accepts. Offset pagination costs O(offset) rows per
    /// shard, so it is bounded; cursors (v2) have no such cost.
    pub max_offset: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `auto`: readable text in the dev profile, JSON lines in production. `text` or `json`
    /// force one.
    pub log_format: LogFormat,
    /// Which log lines are written, in `RUST_LOG` syntax; `RUST_LOG` wins when set. The
    /// access log (one line per request) is the target `scalable_api::access`:
    /// `info,scalable_api::access=off` silences it.
    pub log_filter: String,
    /// Prometheus metrics at `/metrics`. Off: no recorder is installed, every metric call in
    /// the code is a no-op, and `/metrics` is a 404.
    pub metrics: bool,
    /// Serve `/metrics` on this address instead of the API's (an admin port that the public
    /// load balancer does not route). Unset: on the API's own address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<SocketAddr>,
    /// Where spans go: the full OTLP/HTTP traces URL of a collector (Jaeger accepts OTLP:
    /// `http://127.0.0.1:4318/v1/traces`). Unset: no exporter, nothing leaves the process.
    /// Plain `http://` only: the collector is expected on the node or as a sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces recorded and exported, 0.0 to 1.0. A request whose
    /// `traceparent` says its caller sampled it is always recorded, so a trace is whole.
    pub trace_sample_ratio: f64,
    /// Finished spans buffered for export. When the collector is slow or gone and the buffer
    /// is full, new spans are dropped: a request never waits for the exporter.
    pub trace_queue_size: usize,
    /// Bound on one export request to the collector.
    pub otlp_timeout_ms: u64,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// The limits a public GraphQL endpoint needs (see `src/graphql/limits.rs`), and the
/// DataLoader switch. Page sizes (`first`) are bounded by `api.max_page_size`, like REST's
/// `limit`; the body size by `http.body_limit_bytes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlConfig {
    /// Deepest nesting of fields a query may have. `User.posts` and `Post.author` make the
    /// schema cyclic, so without a bound one request could nest them a thousand times.
    pub max_depth: u32,
    /// Largest cost a query may have. A field costs 1 plus its selections; a field with
    /// `first: n` costs n times its selection, so `users(first: 50) { ... posts(first: 5) }`
    /// weighs in at what it really asks for (250 posts), not at its few lines of text.
    pub max_complexity: u32,
    /// Answer `__schema` / `__type` introspection. GraphiQL and code generators need it; a
    /// production API may turn it off so that the schema is not a map for attackers.
    pub introspection: bool,
    /// Batch reads through per-request DataLoaders (one statement per shard per level). Off,
    /// every parent costs its own statement: the N+1 the loaders remove, kept switchable so it
    /// can be measured.
    pub dataloaders: bool,
    /// How long a DataLoader collects the keys of one level before it loads them. Longer
    /// windows keep a level in one batch when a busy machine polls its resolvers slowly; every
    /// level of every query waits this long, which is most of a nested query's latency at
    /// low load. Compare with `scripts/loadtest --vary graphql.batch_window_ms=1,5,20
    /// --workloads graphql_nested`.
    pub batch_window_ms: u64,
}

fn yes() -> bool {
    true
}

fn serialize_secret<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    // Figment round-trips defaults through serialization; the value never reaches a log.
    s.serialize_str(secret.expose_secret())
}

impl Default for Config {
    fn default() -> Self {
        Self {
            profile: Profile::Dev,
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            db: DbConfig::default(),
            cache: CacheConfig::default(),
            api: ApiConfig::default(),
            graphql: GraphqlConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_filter: "info,sqlx=warn".into(),
            metrics: true,
            metrics_addr: None,
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
            trace_queue_size: 2048,
            otlp_timeout_ms: 3_000,
            service_name: "scalable-api".into(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
            shutdown_grace_ms: 20_000,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: SecretString::from(DEV_JWT_SECRET),
            issuer: "scalable-api".into(),
            audience: "scalable-api".into(),
            access_token_ttl_secs: 3600,
        }
    }
}

/// The local stack's layout (see `scripts/stack`): two shards, a primary and a replica each,
/// and the directory on shard 0's primary server (its own database).
impl Default for DbConfig {
    fn default() -> Self {
        let shard = |id: u16, port: u16| ShardConfig {
            id,
            first_id: i64::from(id) * 1_000_000_000 + 1,
            last_id: (i64::from(id) + 1) * 1_000_000_000,
            primary: format!("postgres://postgres@127.0.0.1:{port}/scalable_api"),
            replicas: vec![format!(
                "postgres://postgres@127.0.0.1:{}/scalable_api",
                port + 1
            )],
            accepts_new_users: true,
        };
        Self {
            directory_url: "postgres://postgres@127.0.0.1:55410/scalable_api_directory".into(),
            shards: vec![shard(0, 55410), shard(1, 55420)],
            pool_max_connections: 16,
            acquire_timeout_ms: 2_000,
            statement_timeout_ms: 5_000,
            replicas: ReplicaHealthConfig::default(),
            primary_breaker: BreakerConfig::default(),
            directory_repair: DirectoryRepairConfig::default(),
        }
    }
}

impl Default for ReplicaHealthConfig {
    fn default() -> Self {
        Self {
            check_interval_ms: 250,
            max_lag_bytes: 16 * 1024 * 1024,
            max_lag_ms: 5_000,
            rejoin_after: 2,
            acquire_timeout_ms: 250,
        }
    }
}

impl Default for DirectoryRepairConfig {
    fn default() -> Self {
        Self {
            grace_ms: 30_000,
            interval_ms: 60_000,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_page_size: 100,
            max_offset: 10_000,
        }
    }
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            max_depth: 10,
            // `users(first: 50) { ... posts(first: 50) { id title author { id name } } }`
            // costs about 12,800: it passes; `first: 100` at both levels (10,000 posts) does not.
            max_complexity: 20_000,
            introspection: true,
            dataloaders: true,
            batch_window_ms: 20,
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

    /// Checks what types cannot: the shard map is a partition of disjoint ranges, and
    /// production has real secrets.
    pub fn validate(&self) -> anyhow::Result<()> {
        let shards = &self.db.shards;
        ensure!(
            !shards.is_empty(),
            "db.shards: at least one shard is required"
        );
        for (i, s) in shards.iter().enumerate() {
            ensure!(
                1 <= s.first_id && s.first_id <= s.last_id && s.last_id <= MAX_ID,
                "db.shards[{i}]: need 1 <= first_id <= last_id <= {MAX_ID}"
            );
            if let Some(next) = shards.get(i + 1) {
                ensure!(
                    s.last_id < next.first_id,
                    "db.shards: shard {} and shard {} overlap or are out of order (ranges must ascend)",
                    s.id,
                    next.id
                );
            }
            ensure!(
                shards.iter().filter(|o| o.id == s.id).count() == 1,
                "db.shards: shard id {} appears twice",
                s.id
            );
        }
        ensure!(
            shards.iter().all(|s| s.primary != self.db.directory_url),
            "db.directory_url must be its own database, not a shard's: the two schemas keep separate migration histories"
        );
        ensure!(
            shards.iter().any(|s| s.accepts_new_users),
            "db.shards: no shard accepts new users"
        );
        ensure!(
            self.api.max_page_size >= 1,
            "api.max_page_size must be at least 1"
        );
        self.telemetry.validate(self.http.addr)?;
        ensure!(
            self.graphql.max_depth >= 1 && self.graphql.max_complexity >= 1,
            "graphql.max_depth and graphql.max_complexity must be at least 1"
        );
        let secret = self.auth.jwt_secret.expose_secret();
        ensure!(
            secret.len() >= 32,
            "auth.jwt_secret must be at least 32 bytes"
        );
        if self.profile == Profile::Production && secret == DEV_JWT_SECRET {
            bail!(
                "auth.jwt_secret: the development secret is refused in production; set SCALABLE_API_AUTH__JWT_SECRET"
            );
        }
        Ok(())
    }

    pub fn is_dev(&self) -> bool {
        self.profile == Profile::Dev
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

impl TelemetryConfig {
    fn validate(&self, api_addr: SocketAddr) -> anyhow::Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.trace_sample_ratio),
            "telemetry.trace_sample_ratio must be between 0.0 and 1.0"
        );
        ensure!(
            self.trace_queue_size >= 1,
            "telemetry.trace_queue_size must be at least 1"
        );
        if let Some(endpoint) = &self.otlp_endpoint {
            // The exporter is built without TLS (no second TLS stack in the binary); an https
            // URL would fail on every export, silently, so it is refused here instead.
            ensure!(
                endpoint.starts_with("http://"),
                "telemetry.otlp_endpoint must be an http:// URL (a collector on the node or a sidecar), got {endpoint}"
            );
        }
        if let Some(addr) = self.metrics_addr {
            ensure!(
                addr != api_addr || addr.port() == 0,
                "telemetry.metrics_addr must differ from http.addr (leave it unset to serve /metrics on the API's address)"
            );
        }
        Ok(())
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
        "api",
        "graphql",
        "telemetry",
    ]
    .iter()
    .any(|s| s.eq_ignore_ascii_case(section))
}

impl DbConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_describe_a_valid_two_shard_local_stack() {
        let config = Config::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.db.shards.len(), 2);
        assert_eq!(config.db.shards[1].first_id, 1_000_000_001);
    }

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let from_file: Config = Figment::new()
            .merge(Toml::file(&path))
            .extract()
            .expect("config/example.toml parses");
        let (file, defaults) = (
            serde_json::to_value(&from_file).expect("serializes"),
            serde_json::to_value(Config::default()).expect("serializes"),
        );
        assert_eq!(
            file, defaults,
            "config/example.toml and Config::default() drifted apart"
        );
    }

    #[test]
    fn environment_variables_name_settings_in_upper_case() {
        assert!(is_setting("HTTP__ADDR"));
        assert!(is_setting("TELEMETRY__OTLP_ENDPOINT"));
        assert!(is_setting("PROFILE"));
        assert!(!is_setting("STACK_SHARD0_PRIMARY"));
        assert!(!is_setting("CONFIG"));
    }

    #[test]
    fn an_https_collector_is_refused_since_the_exporter_has_no_tls() {
        let mut config = Config::default();
        config.telemetry.otlp_endpoint = Some("https://collector:4318/v1/traces".into());
        let err = config.validate().expect_err("https must be refused");
        assert!(err.to_string().contains("otlp_endpoint"), "{err}");
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure must return figment's own (large) error type"
    )]
    fn environment_variables_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SCALABLE_API_GRAPHQL__DATALOADERS", "false");
            jail.set_env("SCALABLE_API_API__MAX_PAGE_SIZE", "50");
            jail.set_env("SCALABLE_API_STACK_PORT_BASE", "55400");
            let config = Config::load(None).map_err(|err| err.to_string())?;
            assert!(!config.graphql.dataloaders);
            assert_eq!(config.api.max_page_size, 50);
            Ok(())
        });
    }

    #[test]
    fn overlapping_shard_ranges_are_refused() {
        let mut config = Config::default();
        config.db.shards[1].first_id = config.db.shards[0].last_id;
        let err = config.validate().expect_err("overlap must be refused");
        assert!(err.to_string().contains("overlap"), "{err}");
    }

    #[test]
    fn production_refuses_the_development_secret() {
        let config = Config {
            profile: Profile::Production,
            ..Config::default()
        };
        let err = config.validate().expect_err("dev secret must be refused");
        assert!(err.to_string().contains("production"), "{err}");
    }
}
