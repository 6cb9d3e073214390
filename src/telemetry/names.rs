//! The metric names, in one leaf module every layer uses (the data layer, the cache, the
//! breakers, HTTP), so a name is typed once and no layer imports another to find it.
//! Prometheus naming rules: base units (`_seconds`, `_bytes`), `_total` on counters.

/// Histogram; `method`, `route` (the matched template, or `unmatched`), `status`.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// Counter; `version` (`v1`, `v2`), `route` (the matched template, `/v1/users/{id}`): REST
/// requests per API version, whichever way the version was chosen (path or `Accept`). Who
/// still calls v1, and where, before its sunset.
pub const HTTP_API_VERSION_REQUESTS: &str = "http_api_version_requests_total";
/// Counter; `shard`, `role` (`primary` | `replica`), `op` (`read` | `write` |
/// `commit_lsn` | `replay_lsn`; see `src/db/cluster/instrument.rs`).
pub const DB_QUERIES: &str = "db_queries_total";
/// Histogram, same labels as [`DB_QUERIES`]: pool checkout plus the statement's round trip.
pub const DB_QUERY_DURATION: &str = "db_query_duration_seconds";
/// Gauge; `shard` (or `directory`), `role`, `state` (`idle` | `in_use`), sampled at scrape.
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
/// Gauge; `shard`, `replica` (index): WAL bytes the replica is behind its primary.
pub const DB_REPLICA_LAG: &str = "db_replica_lag_bytes";
/// Gauge; `shard`, `replica`: 1 while the replica takes reads.
pub const DB_REPLICA_IN_ROTATION: &str = "db_replica_in_rotation";
/// Counter; `shard`, `reason`: reads that wanted a replica and got the primary.
pub const DB_READ_FALLBACK: &str = "db_read_fallback_total";
/// Gauge; `breaker`: 0 closed, 1 open, 2 half-open (one trial call in flight).
pub const CIRCUIT_BREAKER_STATE: &str = "circuit_breaker_state";
/// Counter; `breaker`: times it opened (the failure threshold reached, a half-open trial
/// failed, or a health probe tripped it). A scrape sees the state gauge at one instant; an
/// open that closed again between two scrapes shows only here.
pub const CIRCUIT_BREAKER_OPENS: &str = "circuit_breaker_opens_total";
/// Counter; `tier` (`l1` | `redis`), `result`: `hit`, `miss`, `bypass` (Redis unusable,
/// read from the database), one per lookup (a Redis miss answered without a database read,
/// by a second look or by a finished flight whose fill is on its way, counts as a hit); and
/// `fill`, one per entry stored after a miss, `fill_dropped`, one per fill dropped because
/// the background filler's queue was full. Hit ratio: `hit / (hit + miss)`.
pub const CACHE_REQUESTS: &str = "cache_requests_total";
/// Counter: cache entries invalidated after writes.
pub const CACHE_INVALIDATIONS: &str = "cache_invalidations_total";
/// Counter, one per rate-limited request (`src/traffic/ratelimit/routes.rs`); `tier`
/// (`anonymous` | `free` | `pro` | `service`), `class` (`reads` | `writes` | `auth` |
/// `graphql`), `decision`: `allowed`, `limited` (the rate), `quota_spent` (the daily quota),
/// `fallback_allowed` / `fallback_limited` (Redis unusable: this instance's share decided),
/// `unavailable` (Redis unusable on an `auth` route: 503).
pub const RATELIMIT_DECISIONS: &str = "ratelimit_decisions_total";
/// Counter: script calls the distributed rate limiter sent (or tried to send) to Redis. Compared with
/// `ratelimit_decisions_total`, it shows how many decisions local leases answered without
/// a round trip (`src/traffic/ratelimit/lease.rs`).
pub const RATELIMIT_REDIS_CALLS: &str = "ratelimit_redis_calls_total";
/// Counter, one per login or registration attempt checked against the login limits
/// (`src/traffic/login.rs`); `attempt` (`login` | `register`), `decision`: `allowed`,
/// `limited_address`, `limited_account`, `unavailable` (limiter unusable: 503).
pub const LOGIN_LIMIT_DECISIONS: &str = "login_limit_decisions_total";
/// Counter: requests the per-address shield (`src/http/shield.rs`) refused with a 429.
pub const SHIELD_REFUSALS: &str = "ratelimit_shield_refusals_total";
/// Gauge; `map`: entries of an in-process map, sampled at scrape: `single_flight` (cache loads
/// in flight), `l1` (the two-tier L1), `cache_pending_invalidations` (queued while Redis was
/// unusable), `ratelimit_leases` (local lease slots), `api_keys` (verified keys cached). What
/// a soak watches: a map that only grows is a leak. Moka's counts lag its pending work by
/// moments.
pub const IN_PROCESS_ENTRIES: &str = "in_process_entries";
/// Gauge: what the two-tier L1's entries weigh against `cache.l1_max_bytes` (JSON length plus
/// key), sampled at scrape.
pub const CACHE_L1_BYTES: &str = "cache_l1_weighted_bytes";
/// Gauge: the process's resident memory (`VmRSS`), in bytes, sampled at scrape (Linux only).
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// Gauge: the adaptive concurrency limit now (requests in flight allowed at once;
/// `src/traffic/shed/`).
pub const LOAD_SHED_LIMIT: &str = "load_shed_concurrency_limit";
/// Gauge: requests admitted by the limiter and not answered yet.
pub const LOAD_SHED_IN_FLIGHT: &str = "load_shed_in_flight_requests";
/// Gauge: requests waiting in the limiter's queue.
pub const LOAD_SHED_QUEUED: &str = "load_shed_queued_requests";
/// Gauge: the median latency of the last closed sample window (what the limit reacts to).
pub const LOAD_SHED_WINDOW_LATENCY: &str = "load_shed_window_latency_seconds";
/// Gauge: the baseline that median is compared with (the lowest recent window median).
pub const LOAD_SHED_BASELINE_LATENCY: &str = "load_shed_baseline_latency_seconds";
/// Counter; `priority` (`anonymous_lists` | `reads` | `paid_reads` | `critical`), `decision`:
/// `admitted` (at once), `admitted_after_wait`, or shed: `shed_queue_full` (no place, nobody
/// lower to replace), `shed_wait_timeout` (no slot within `shedding.max_wait`), `shed_evicted`
/// (its place went to a higher priority), `shed_at_once` (anonymous lists over their share,
/// which do not queue unless `shedding.lowest_priority_waits`).
pub const LOAD_SHED_REQUESTS: &str = "load_shed_requests_total";
/// Counter, one per POST that carried an `Idempotency-Key` and reached the store
/// (`src/http/idempotency/`); `outcome`: `stored` (ran, answer kept), `replayed` (a retry got
/// the kept answer), `conflict` (the key's first request still runs: 409), `mismatch` (the
/// key came with another request: 422), `released` (ran, answer not kept: a 5xx, a 429 or a
/// `no-store` answer), `unavailable` (the store's Redis was unusable: a 503 before anything
/// ran, or, rarer, an answer that ran but could not be kept).
pub const HTTP_IDEMPOTENCY: &str = "http_idempotency_total";

/// Counter: access tokens accepted without their revocation check, the primary unreachable.
pub const AUTH_REVOCATION_CHECKS_SKIPPED: &str = "auth_revocation_checks_skipped_total";

/// Counter; `strategy` (`none` | `cache-aside` | `two-tier`), `source` (`l1` | `redis` |
/// `shard{N}-replica`, `shard{N}-replica2`, ...: the tier or server that served the value),
/// `token` (`yes` when the request carried an `X-Consistency-Token`, else `no`): sampled
/// reads the staleness auditor (`src/cache/audit.rs`) read again on the shard's primary.
pub const STALE_READS_AUDITED: &str = "stale_reads_audited_total";
/// Counter, same labels: audited reads that were stale, i.e. the primary already held a
/// newer value when this one was served. Stale share: this over [`STALE_READS_AUDITED`].
pub const STALE_READS: &str = "stale_reads_total";
/// Counter; `strategy`, `reason`: sampled reads not audited, `busy` (every audit slot taken:
/// dropped, never waited for) or `error` (the primary read failed).
pub const STALE_READS_SKIPPED: &str = "stale_reads_skipped_total";
/// Histogram, same labels as [`STALE_READS`]: how long the primary had held the newer value
/// when the stale one was served (served at minus the newer row's `updated_at`). Stale reads
/// of values without a version (a cached page of ids, a row deleted since) are counted in
/// [`STALE_READS`] but have no age.
pub const STALE_READ_AGE: &str = "stale_read_age_seconds";
