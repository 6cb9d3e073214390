//! The service's own counters around a measured window: SQL statements and cache lookups.
//!
//! Read from its Prometheus `/metrics` before and after the window; the difference over the
//! requests answered in between is "SQL per request" and "cache hit ratio". The scrapes
//! happen while the load runs, so a few requests in flight at either edge are counted on
//! one side only: with thousands of requests per window that is well under 1 %.
//!
//! The staleness auditor's families too, when the service runs it
//! (`consistency.audit.sample_rate`): reads audited, found stale, skipped, and the age
//! histogram's buckets, from which the window's p99 age is interpolated as Prometheus'
//! `histogram_quantile` does.
//!
//! [`Health`] is the other reading, taken every few hundred milliseconds during a run with
//! faults: what the service does instead of failing (reads moved to the primary, cache
//! lookups that skip Redis, rate limits decided locally) and what it has taken out of
//! rotation (replicas, breakers).
//!
//! The text format is parsed by hand: we need a few families summed over their labels, a few
//! lines of code, where a parser crate would bring its own dependency tree.

use std::{collections::BTreeMap, time::Duration};

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::{series::label, target::Target};

/// The upper bounds of the service's `stale_read_age_seconds` buckets (its
/// `src/telemetry/metrics.rs`), `+Inf` last.
pub const AGE_BOUNDS: [f64; 17] = [
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    f64::INFINITY,
];

/// The samples of a Prometheus text exposition: (name, labels without their braces, value);
/// comments and lines that do not parse are skipped.
fn samples(text: &str) -> impl Iterator<Item = (&str, &str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse::<f64>().ok()?;
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            Some((name, labels.trim_end_matches('}'), value))
        })
}

/// Counter totals at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// `db_queries_total`, every shard, role and op but the staleness auditor's (`audit`):
    /// data-layer calls made for requests, one statement each except a few rare paths (see
    /// the service's `src/db/cluster/instrument.rs`); the directory's statements (login,
    /// registration) are not in it.
    pub sql: f64,
    /// `stale_reads_audited_total`, every label: served reads checked against the primary.
    #[serde(default)]
    pub audited: f64,
    /// `stale_reads_total`: of those, stale.
    #[serde(default)]
    pub stale: f64,
    /// `stale_reads_skipped_total`: sampled but not audited (every slot busy, or an error).
    #[serde(default)]
    pub audit_skipped: f64,
    /// Of `audited`, reads whose client sent its consistency token (`token="yes"`).
    #[serde(default)]
    pub audited_with_token: f64,
    /// Of `stale`, those (read-your-writes promises 0 of them).
    #[serde(default)]
    pub stale_with_token: f64,
    /// `stale_read_age_seconds_bucket` by [`AGE_BOUNDS`], cumulative, summed over labels.
    #[serde(default)]
    pub age_buckets: [f64; AGE_BOUNDS.len()],
    /// `cache_requests_total` lookups that found the entry (`result="hit"`, any tier).
    pub cache_hits: f64,
    /// Lookups that did not: Redis `miss` and `bypass` (an L1 miss goes on to Redis and is
    /// counted there).
    pub cache_misses: f64,
}

impl Counters {
    pub fn parse(text: &str) -> Self {
        let mut counters = Self::default();
        for (name, labels, value) in samples(text) {
            match name {
                "db_queries_total" if !labels.contains("op=\"audit\"") => counters.sql += value,
                "stale_reads_audited_total" => {
                    counters.audited += value;
                    if labels.contains("token=\"yes\"") {
                        counters.audited_with_token += value;
                    }
                }
                "stale_reads_total" => {
                    counters.stale += value;
                    if labels.contains("token=\"yes\"") {
                        counters.stale_with_token += value;
                    }
                }
                "stale_reads_skipped_total" => counters.audit_skipped += value,
                "stale_read_age_seconds_bucket" => {
                    if let Some(i) = bucket_of(labels) {
                        counters.age_buckets[i] += value;
                    }
                }
                "cache_requests_total" => {
                    if labels.contains("result=\"hit\"") {
                        counters.cache_hits += value;
                    } else if labels.contains("result=\"miss\"")
                        || labels.contains("result=\"bypass\"")
                    {
                        counters.cache_misses += value;
                    }
                }
                _ => {}
            }
        }
        counters
    }

    /// Scrapes `path` on `target`; `None` when there is no such endpoint (the hello-world
    /// baseline) or it does not answer 200.
    pub async fn scrape(target: &Target, path: &str) -> Option<Self> {
        match target.fetch(Method::GET, path, None, None).await {
            Ok((StatusCode::OK, body)) => Some(Self::parse(&String::from_utf8_lossy(&body))),
            _ => None,
        }
    }

    pub fn since(self, before: Self) -> Self {
        let mut age_buckets = self.age_buckets;
        for (after, before) in age_buckets.iter_mut().zip(before.age_buckets) {
            *after -= before;
        }
        Self {
            sql: self.sql - before.sql,
            cache_hits: self.cache_hits - before.cache_hits,
            cache_misses: self.cache_misses - before.cache_misses,
            audited: self.audited - before.audited,
            stale: self.stale - before.stale,
            audit_skipped: self.audit_skipped - before.audit_skipped,
            audited_with_token: self.audited_with_token - before.audited_with_token,
            stale_with_token: self.stale_with_token - before.stale_with_token,
            age_buckets,
        }
    }

    /// The `q` quantile of the stale reads' age in seconds, interpolated within its bucket;
    /// `None` without a stale read of known age. Past the last finite bound: that bound.
    pub fn age_quantile(&self, q: f64) -> Option<f64> {
        let count = *self.age_buckets.last()?;
        if count <= 0.0 {
            return None;
        }
        let rank = q * count;
        let i = self.age_buckets.iter().position(|&c| c >= rank)?;
        let (below, lower) = match i.checked_sub(1) {
            Some(j) => (self.age_buckets[j], AGE_BOUNDS[j]),
            None => (0.0, 0.0),
        };
        let upper = AGE_BOUNDS[i];
        if upper.is_infinite() {
            return Some(lower);
        }
        let within = self.age_buckets[i] - below;
        let fraction = if within > 0.0 {
            (rank - below) / within
        } else {
            1.0
        };
        Some(lower + (upper - lower) * fraction)
    }

    /// Hits over lookups; `None` without lookups (no cache).
    pub fn hit_ratio(self) -> Option<f64> {
        let lookups = self.cache_hits + self.cache_misses;
        (lookups > 0.0).then(|| self.cache_hits / lookups)
    }
}

/// The index in [`AGE_BOUNDS`] of a bucket line's `le` label.
fn bucket_of(labels: &str) -> Option<usize> {
    let le = labels.split("le=\"").nth(1)?.split('"').next()?;
    let le: f64 = if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().ok()?
    };
    AGE_BOUNDS
        .iter()
        .position(|&bound| bound == le || (bound - le).abs() < 1e-9)
}

/// The service's fallbacks and rotation at one instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Seconds into the measured window.
    pub at: f64,
    /// `db_read_fallback_total`, every shard and reason: reads that wanted a replica and were
    /// served by the primary.
    pub read_fallbacks: f64,
    /// `cache_requests_total{result="bypass"}`: lookups that skipped an unusable Redis.
    pub cache_bypasses: f64,
    /// `ratelimit_decisions_total{decision="fallback_*"}`: limits decided by this instance
    /// alone because Redis was unusable.
    pub ratelimit_fallbacks: f64,
    /// `circuit_breaker_state` by breaker (`redis`, `shard0-primary`, ...): 0 closed, 1 open,
    /// 2 half-open.
    pub breakers: BTreeMap<String, f64>,
    /// `circuit_breaker_opens_total` by breaker (absent from services that predate it).
    #[serde(default)]
    pub breaker_opens: BTreeMap<String, f64>,
    /// `db_replica_in_rotation` by shard (`shard0`): the lowest of its replicas, so 0 when
    /// any is out.
    pub replicas_in_rotation: BTreeMap<String, f64>,
    /// `process_resident_memory_bytes`; `None` from a service that does not export it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<f64>,
    /// `in_process_entries` by map (`single_flight`, `l1`, `ratelimit_leases`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub maps: BTreeMap<String, f64>,
}

impl Health {
    pub fn parse(at: f64, text: &str) -> Self {
        let mut health = Self {
            at,
            ..Self::default()
        };
        for (name, labels, value) in samples(text) {
            match name {
                "db_read_fallback_total" => health.read_fallbacks += value,
                "cache_requests_total" if label(labels, "result") == Some("bypass") => {
                    health.cache_bypasses += value;
                }
                "ratelimit_decisions_total"
                    if label(labels, "decision").is_some_and(|d| d.starts_with("fallback_")) =>
                {
                    health.ratelimit_fallbacks += value;
                }
                "circuit_breaker_state" | "circuit_breaker_opens_total" => {
                    if let Some(breaker) = label(labels, "breaker") {
                        let map = if name == "circuit_breaker_state" {
                            &mut health.breakers
                        } else {
                            &mut health.breaker_opens
                        };
                        map.insert(breaker.to_owned(), value);
                    }
                }
                "process_resident_memory_bytes" => health.rss_bytes = Some(value),
                // Reported with the maps: the L1's size in bytes next to its entries.
                "cache_l1_weighted_bytes" => {
                    health.maps.insert("l1_bytes".to_owned(), value);
                }
                "in_process_entries" => {
                    if let Some(map) = label(labels, "map") {
                        health.maps.insert(map.to_owned(), value);
                    }
                }
                "db_replica_in_rotation" => {
                    if let Some(shard) = label(labels, "shard") {
                        let lowest = health
                            .replicas_in_rotation
                            .entry(format!("shard{shard}"))
                            .or_insert(value);
                        *lowest = lowest.min(value);
                    }
                }
                _ => {}
            }
        }
        health
    }

    /// Scrapes `path`, giving up after `patience` (a missing sample is a gap in the chart,
    /// not a reason to stall the run).
    pub async fn scrape(target: &Target, path: &str, at: f64, patience: Duration) -> Option<Self> {
        match tokio::time::timeout(patience, target.fetch(Method::GET, path, None, None)).await {
            Ok(Ok((StatusCode::OK, body))) => {
                Some(Self::parse(at, &String::from_utf8_lossy(&body)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_fallbacks_breakers_and_rotation() {
        let text = "\
# TYPE db_read_fallback_total counter
db_read_fallback_total{shard=\"0\",reason=\"replica_failed\"} 3
db_read_fallback_total{shard=\"1\",reason=\"no_replica_in_rotation\"} 40
cache_requests_total{tier=\"redis\",result=\"bypass\"} 12
cache_requests_total{tier=\"redis\",result=\"hit\"} 1000
ratelimit_decisions_total{tier=\"anonymous\",class=\"reads\",decision=\"fallback_allowed\"} 5
ratelimit_decisions_total{tier=\"anonymous\",class=\"reads\",decision=\"allowed\"} 500
circuit_breaker_state{breaker=\"redis\"} 1
circuit_breaker_state{breaker=\"shard0-primary\"} 0
circuit_breaker_opens_total{breaker=\"redis\"} 2
db_replica_in_rotation{shard=\"1\",replica=\"0\"} 0
db_replica_in_rotation{shard=\"1\",replica=\"1\"} 1
db_replica_in_rotation{shard=\"0\",replica=\"0\"} 1
process_resident_memory_bytes 52428800
in_process_entries{map=\"single_flight\"} 3
in_process_entries{map=\"l1\"} 9000
cache_l1_weighted_bytes 1048576
";
        let h = Health::parse(2.5, text);
        assert_eq!(h.at, 2.5);
        assert_eq!(h.read_fallbacks, 43.0);
        assert_eq!(h.cache_bypasses, 12.0);
        assert_eq!(h.ratelimit_fallbacks, 5.0);
        assert_eq!(h.breakers["redis"], 1.0);
        assert_eq!(h.breakers["shard0-primary"], 0.0);
        assert_eq!(h.breaker_opens["redis"], 2.0);
        assert_eq!(h.replicas_in_rotation["shard1"], 0.0, "one replica out");
        assert_eq!(h.replicas_in_rotation["shard0"], 1.0);
        assert_eq!(h.rss_bytes, Some(52_428_800.0));
        assert_eq!(h.maps["single_flight"], 3.0);
        assert_eq!(h.maps["l1"], 9000.0);
        assert_eq!(h.maps["l1_bytes"], 1_048_576.0);
        assert_eq!(Health::parse(0.0, "").rss_bytes, None);
    }

    #[test]
    fn counters_sum_their_families_over_labels_and_skip_the_rest() {
        let text = "\
# HELP db_queries_total SQL statements
# TYPE db_queries_total counter
db_queries_total{shard=\"0\",role=\"replica\",op=\"select\"} 10
db_queries_total{shard=\"1\",role=\"primary\",op=\"insert\"} 5
db_query_duration_seconds_count{shard=\"0\"} 99
cache_requests_total{tier=\"l1\",result=\"hit\"} 30
cache_requests_total{tier=\"redis\",result=\"hit\"} 7
cache_requests_total{tier=\"redis\",result=\"miss\"} 2
cache_requests_total{tier=\"redis\",result=\"bypass\"} 1
cache_requests_total{tier=\"redis\",result=\"fill\"} 2
garbage line
";
        let c = Counters::parse(text);
        assert_eq!(c.sql, 15.0);
        assert_eq!(c.cache_hits, 37.0);
        assert_eq!(c.cache_misses, 3.0);
        assert_eq!(c.hit_ratio(), Some(0.925));
        let later = Counters {
            sql: 25.0,
            cache_hits: 40.0,
            cache_misses: 3.0,
            ..Counters::default()
        };
        assert_eq!(later.since(c).sql, 10.0);
        assert_eq!(later.since(c).hit_ratio(), Some(1.0));
        assert_eq!(Counters::default().hit_ratio(), None);
    }

    #[test]
    fn the_auditors_figures_are_summed_and_the_age_quantile_interpolated() {
        let text = "\
db_queries_total{shard=\"0\",role=\"primary\",op=\"audit\"} 40
db_queries_total{shard=\"0\",role=\"replica\",op=\"read\"} 10
stale_reads_audited_total{strategy=\"none\",source=\"shard0-replica\",token=\"no\"} 90
stale_reads_audited_total{strategy=\"none\",source=\"shard1-replica\",token=\"no\"} 10
stale_reads_total{strategy=\"none\",source=\"shard0-replica\",token=\"no\"} 4
stale_reads_audited_total{strategy=\"none\",source=\"shard0-replica\",token=\"yes\"} 20
stale_reads_total{strategy=\"none\",source=\"shard0-replica\",token=\"yes\"} 1
stale_reads_skipped_total{strategy=\"none\",reason=\"busy\"} 3
stale_read_age_seconds_bucket{strategy=\"none\",source=\"shard0-replica\",token=\"no\",le=\"0.001\"} 0
stale_read_age_seconds_bucket{strategy=\"none\",source=\"shard0-replica\",token=\"no\",le=\"0.0025\"} 2
stale_read_age_seconds_bucket{strategy=\"none\",source=\"shard0-replica\",token=\"no\",le=\"0.005\"} 4
stale_read_age_seconds_bucket{strategy=\"none\",source=\"shard0-replica\",token=\"no\",le=\"+Inf\"} 4
";
        let c = Counters::parse(text);
        assert_eq!(
            c.sql, 10.0,
            "the audits' own statements are not the requests'"
        );
        assert_eq!((c.audited, c.stale, c.audit_skipped), (120.0, 5.0, 3.0));
        assert_eq!((c.audited_with_token, c.stale_with_token), (20.0, 1.0));
        let p50 = c.age_quantile(0.5).expect("stale reads of known age");
        assert!((p50 - 0.0025).abs() < 1e-12, "{p50}");
        let p99 = c.age_quantile(0.99).expect("stale reads of known age");
        assert!(p99 > 0.0025 && p99 <= 0.005, "{p99}");
        assert_eq!(Counters::default().age_quantile(0.99), None);
    }
}
