//! Prometheus metrics: one recorder per process behind the `metrics` facade, rendered at
//! `/metrics` (served by `src/http/metrics.rs`).
//!
//! Code anywhere emits with the facade (`metrics::counter!(names::CACHE_REQUESTS, ...)`);
//! nothing is passed around. The recorder is process-wide because the facade is: [`install`]
//! installs it the first time and hands out the same [`PrometheusHandle`] afterwards, so
//! several apps in one process (the tests under `cargo test`) share it instead of failing.
//!
//! Labels are bounded by construction: `route` is the matched route *template*
//! (`/v1/users/{id}`), never the raw path, so ids cannot explode the series count; `method`
//! is one of the standard methods or `_OTHER`; `shard`, `role`, `op` come from the shard map.
//!
//! Cost: an update is an atomic add (counters, gauges) or a push into a lock-free bucket
//! (histograms) after a hash lookup of the series; series that are known up front (per shard
//! and role) are registered once and skip the lookup. Rendering walks every series, so a
//! scrape costs O(series), about a few hundred here.

use std::{sync::OnceLock, time::Duration};

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::names;

/// Histogram buckets for a millisecond API, in seconds: fine below 10 ms where a cached read
/// lands, coarse up to the 10 s request timeout. Every histogram gets them (so a layer that
/// adds one gets real buckets, not a summary that cannot be aggregated across instances).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// SQL is finer at the low end: a primary-key read on a warm pool takes ~100 µs.
const SQL_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A stale value's age runs from the milliseconds of an invalidation in flight or a replica's
/// replay, through `cache.l1_ttl` (seconds), to a missed invalidation's whole TTL (minutes).
const STALENESS_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes (they
/// accumulate unboundedly otherwise).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder the first time, and returns its handle.
///
/// Call it before building anything that registers series up front (the shard map does):
/// a series registered while no recorder is installed stays a no-op for good.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = buckets(PrometheusBuilder::new()).build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                // Someone (an embedding program) installed another recorder: ours stays
                // empty and /metrics shows nothing, which is visible, not fatal.
                tracing::warn!("a metrics recorder is already installed; /metrics stays empty");
            }
            describe();
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            if let Err(err) = spawned {
                tracing::warn!(error = %err, "no metrics upkeep thread; histograms drain at scrape only");
            }
            handle
        })
        .clone()
}

fn buckets(builder: PrometheusBuilder) -> PrometheusBuilder {
    const NON_EMPTY: &str = "bucket lists are non-empty constants";
    builder
        .set_buckets(LATENCY_BUCKETS)
        .expect(NON_EMPTY)
        .set_buckets_for_metric(Matcher::Full(names::DB_QUERY_DURATION.into()), SQL_BUCKETS)
        .expect(NON_EMPTY)
        .set_buckets_for_metric(
            Matcher::Full(names::STALE_READ_AGE.into()),
            STALENESS_BUCKETS,
        )
        .expect(NON_EMPTY)
}

/// `# HELP` lines, so a learner reading `/metrics` sees what each series means.
fn describe() {
    use names::*;
    metrics::describe_histogram!(
        HTTP_SERVER_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP requests by method, matched route template and status, from the first byte in to the response head out"
    );
    metrics::describe_counter!(
        HTTP_API_VERSION_REQUESTS,
        "REST requests by API version and matched route template (path- or Accept-versioned alike)"
    );
    metrics::describe_counter!(
        DB_QUERIES,
        "Data-layer calls (one SQL statement each) by shard, role and op"
    );
    metrics::describe_histogram!(
        DB_QUERY_DURATION,
        Unit::Seconds,
        "Data-layer call time by shard, role and op: pool checkout plus the statement's round trip"
    );
    metrics::describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Open pool connections by shard, role and state (idle, in_use), sampled at scrape"
    );
    metrics::describe_gauge!(
        DB_REPLICA_LAG,
        Unit::Bytes,
        "WAL bytes a replica has not replayed yet, from the health monitor"
    );
    metrics::describe_gauge!(
        DB_REPLICA_IN_ROTATION,
        "1 while the replica serves reads, 0 while it is out of rotation"
    );
    metrics::describe_counter!(
        DB_READ_FALLBACK,
        "Reads that wanted a replica and were served by the primary, by reason"
    );
    metrics::describe_gauge!(
        CIRCUIT_BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open"
    );
    metrics::describe_counter!(
        CIRCUIT_BREAKER_OPENS,
        "Times a circuit breaker opened (failure threshold, failed trial, or a probe's trip)"
    );
    metrics::describe_counter!(
        CACHE_REQUESTS,
        "Cache lookups by tier and result (hit, miss, bypass), and fills after misses (fill)"
    );
    metrics::describe_counter!(
        CACHE_INVALIDATIONS,
        "Cache entries invalidated after writes"
    );
    metrics::describe_counter!(
        names::AUTH_REVOCATION_CHECKS_SKIPPED,
        "Access tokens accepted without their revocation check (the primary unreachable)"
    );
    metrics::describe_counter!(
        STALE_READS_AUDITED,
        "Served reads (L1, Redis or a replica) read again on the primary by the staleness auditor, by strategy, source and whether the client sent a consistency token"
    );
    metrics::describe_counter!(
        STALE_READS,
        "Audited reads whose value was stale: the primary already held a newer one when it was served"
    );
    metrics::describe_counter!(
        STALE_READS_SKIPPED,
        "Sampled reads the staleness auditor skipped: every audit slot busy, or the primary read failed"
    );
    metrics::describe_histogram!(
        STALE_READ_AGE,
        Unit::Seconds,
        "How long the primary had held a newer value when a stale one was served"
    );
    metrics::describe_counter!(
        RATELIMIT_DECISIONS,
        "Rate-limited requests by tier, route class and decision (allowed, limited, quota_spent, fallback_allowed, fallback_limited, unavailable)"
    );
    metrics::describe_counter!(
        RATELIMIT_REDIS_CALLS,
        "Script calls the distributed rate limiter sent to Redis (decisions minus these: answered from local leases)"
    );
    metrics::describe_counter!(
        LOGIN_LIMIT_DECISIONS,
        "Login and registration attempts by the login limits' decision (allowed, limited_address, limited_account, unavailable)"
    );
    metrics::describe_counter!(
        SHIELD_REFUSALS,
        "Requests the per-address shield refused (429) before any other limit"
    );
    metrics::describe_gauge!(
        IN_PROCESS_ENTRIES,
        "Entries of an in-process map by map (single_flight, l1, cache_pending_invalidations, ratelimit_leases, api_keys), sampled at scrape"
    );
    metrics::describe_gauge!(
        CACHE_L1_BYTES,
        Unit::Bytes,
        "What the two-tier L1's entries weigh against cache.l1_max_bytes, sampled at scrape"
    );
    metrics::describe_gauge!(
        PROCESS_RESIDENT_MEMORY,
        Unit::Bytes,
        "Resident memory of the process (VmRSS), sampled at scrape"
    );
    metrics::describe_gauge!(
        LOAD_SHED_LIMIT,
        "The adaptive concurrency limit: requests in flight this instance admits at once"
    );
    metrics::describe_gauge!(
        LOAD_SHED_IN_FLIGHT,
        "Requests admitted by the concurrency limiter and not answered yet"
    );
    metrics::describe_gauge!(
        LOAD_SHED_QUEUED,
        "Requests waiting for a slot in the concurrency limiter's priority queue"
    );
    metrics::describe_gauge!(
        LOAD_SHED_WINDOW_LATENCY,
        Unit::Seconds,
        "Median latency of the concurrency limiter's last sample window"
    );
    metrics::describe_gauge!(
        LOAD_SHED_BASELINE_LATENCY,
        Unit::Seconds,
        "The latency baseline the window median is compared with (lowest recent window median)"
    );
    metrics::describe_counter!(
        LOAD_SHED_REQUESTS,
        "Concurrency limiter decisions by priority: admitted, admitted after waiting, or shed (queue full, wait timeout, evicted, at once)"
    );
}

/// Sets [`names::PROCESS_RESIDENT_MEMORY`] from `/proc/self/status`; elsewhere (no `/proc`)
/// the gauge is not set.
pub fn report_process_gauges() {
    if let Some(bytes) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| resident_bytes(&status))
    {
        metrics::gauge!(names::PROCESS_RESIDENT_MEMORY).set(bytes as f64);
    }
}

/// `VmRSS:    58120 kB` in a `/proc/<pid>/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Sets `in_process_entries{map}`.
pub fn report_entries(map: &'static str, entries: u64) {
    metrics::gauge!(names::IN_PROCESS_ENTRIES, "map" => map).set(entries as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resident_memory_is_read_from_vmrss() {
        let status = "Name:\tscalable-api\nVmHWM:\t   58120 kB\nVmRSS:\t   51000 kB\n";
        assert_eq!(resident_bytes(status), Some(51_000 * 1024));
        assert_eq!(resident_bytes("VmHWM:\t 1 kB\n"), None);
        assert_eq!(resident_bytes("VmRSS:\t lots kB\n"), None);
    }
}
