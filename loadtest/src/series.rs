//! A run over time: the load generator's figures per second of the measured window, the
//! service's health scraped every few hundred milliseconds, and from both, one row per fault.
//!
//! Per second, not per run: a fault lasts seconds, and a run's totals would drown a burst of
//! errors and a p99 spike in the calm around them.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{faults::Verb, metrics::Health};

/// One second's figures as the engine records them.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Answers, any status.
    pub responses: u64,
    /// Answers that are not a success (non-2xx, or a GraphQL answer with errors) plus
    /// requests without an answer.
    pub failed: u64,
    /// Requests without an answer (refused, reset, timed out).
    pub errors: u64,
    /// 503 answers: the service failing fast (breaker open, pool exhausted, shed).
    pub unavailable: u64,
    /// Latency of every answer, microseconds; 2 significant digits (a per-second p99 needs no
    /// more, and a histogram per second stays a few kilobytes).
    pub latency_us: Histogram<u64>,
}

impl Bucket {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            responses: 0,
            failed: 0,
            errors: 0,
            unavailable: 0,
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 2)?,
        })
    }

    fn add(&mut self, other: &Self) -> anyhow::Result<()> {
        self.responses += other.responses;
        self.failed += other.failed;
        self.errors += other.errors;
        self.unavailable += other.unavailable;
        self.latency_us.add(&other.latency_us)?;
        Ok(())
    }

    fn p99_ms(&self) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// The engine's per-second recorder: one bucket per second of the measured window, each
/// behind its own lock (held for one histogram record; the load generator's two or so worker
/// threads seldom meet there).
#[derive(Debug)]
pub struct Series {
    buckets: Vec<Mutex<Bucket>>,
}

impl Series {
    pub fn new(window: Duration) -> anyhow::Result<Self> {
        let seconds = window.as_secs_f64().ceil().max(1.0) as usize;
        Ok(Self {
            buckets: (0..seconds)
                .map(|_| Bucket::new().map(Mutex::new))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    fn bucket(&self, offset: Duration) -> Option<std::sync::MutexGuard<'_, Bucket>> {
        let slot = self.buckets.get(offset.as_secs() as usize)?;
        Some(slot.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// An answer at `offset` into the window.
    pub fn answer(&self, offset: Duration, status: u16, success: bool, micros: u64) {
        if let Some(mut b) = self.bucket(offset) {
            b.responses += 1;
            b.failed += u64::from(!success);
            b.unavailable += u64::from(status == 503);
            b.latency_us.saturating_record(micros);
        }
    }

    /// A request without an answer, at `offset` (when it failed, not when it was sent: a
    /// timeout shows `--timeout` after the request).
    pub fn failure(&self, offset: Duration) {
        if let Some(mut b) = self.bucket(offset) {
            b.errors += 1;
            b.failed += 1;
        }
    }

    pub fn into_buckets(self) -> Vec<Bucket> {
        self.buckets
            .into_iter()
            .map(|b| b.into_inner().unwrap_or_else(PoisonError::into_inner))
            .collect()
    }
}

/// One second as reported and charted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds into the window: this is `[t, t + 1)`.
    pub t: u32,
    pub responses: u64,
    pub failed: u64,
    pub errors: u64,
    pub unavailable: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub fn seconds(buckets: &[Bucket]) -> Vec<Second> {
    buckets
        .iter()
        .enumerate()
        .map(|(t, b)| Second {
            t: t as u32,
            responses: b.responses,
            failed: b.failed,
            errors: b.errors,
            unavailable: b.unavailable,
            p50_ms: if b.latency_us.is_empty() {
                0.0
            } else {
                b.latency_us.value_at_quantile(0.5) as f64 / 1000.0
            },
            p99_ms: b.p99_ms(),
        })
        .collect()
}

/// One fault command as it ran: seconds into the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub verb: Verb,
    pub node: String,
    /// When the command was started.
    pub issued: f64,
    /// When it returned (a `start` returns once the node takes connections, and a replica
    /// streams).
    pub done: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A fault as it happened: its command and the command that undid it (if one did, in the
/// window).
#[derive(Debug, Clone)]
pub struct Span<'a> {
    pub fault: &'a Applied,
    pub undo: Option<&'a Applied>,
}

/// What a fault did to the load and how the service took it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRow {
    /// `stop shard1-replica`.
    pub fault: String,
    /// When it was applied, seconds into the window.
    pub at: f64,
    /// When it was undone (the undo command returned); `None`: after the window.
    pub undone_at: Option<f64>,
    /// The window its figures cover: from the fault to its recovery (or to its undo, or to
    /// the end of the run, whichever comes first that exists), in whole seconds.
    pub window: (u32, u32),
    pub requests: u64,
    /// Requests without a successful answer in the window.
    pub failed: u64,
    /// 503 answers among them.
    pub unavailable: u64,
    pub p99_ms: f64,
    /// From the fault to the first scrape that shows the service took the node out (replica
    /// out of rotation, breaker open or opened since the last scrape); `None`: it never did.
    pub left_after: Option<f64>,
    /// From the undo to the node back in rotation and a second without a failed request;
    /// `None`: not undone, or not recovered in the window.
    pub recovered_after: Option<f64>,
    /// Reads that wanted a replica and went to the primary, in the window.
    pub read_fallbacks: f64,
    /// Cache lookups that skipped Redis (read from the database), in the window.
    pub cache_bypasses: f64,
    /// Rate-limit decisions made locally because Redis was unusable, in the window.
    pub ratelimit_fallbacks: f64,
}

/// One row per fault, from the per-second figures (`buckets`, second `i` is `[i, i + 1)`) and
/// the scraped `health` (in time order).
pub fn fault_rows(spans: &[Span<'_>], buckets: &[Bucket], health: &[Health]) -> Vec<FaultRow> {
    let end = buckets.len() as f64;
    spans
        .iter()
        .map(|span| {
            let node = span.fault.node.as_str();
            let at = span.fault.issued;
            let undone_at = span.undo.map(|u| u.done);
            let left_at = health
                .iter()
                .enumerate()
                .filter(|(_, h)| h.at >= at && undone_at.is_none_or(|u| h.at <= u))
                .find(|(i, h)| {
                    out_of_rotation(node, i.checked_sub(1).map(|p| &health[p]), h) == Some(true)
                })
                .map(|(_, h)| h.at);
            let recovered_at = undone_at.and_then(|undone| recovery(node, undone, buckets, health));
            let until = recovered_at.or(undone_at).unwrap_or(end).clamp(at, end);
            let first = (at.floor() as usize).min(buckets.len().saturating_sub(1));
            let last = ((until.ceil() as usize).max(first + 1)).min(buckets.len());
            let mut window = Bucket::new().expect("constant histogram bounds are valid");
            for bucket in buckets.get(first..last).unwrap_or_default() {
                // Same bounds and precision: adding cannot fail.
                let _ = window.add(bucket);
            }
            let counted = |value: fn(&Health) -> f64| {
                let inside: Vec<&Health> = health
                    .iter()
                    .filter(|h| h.at >= first as f64 && h.at <= last as f64)
                    .collect();
                match (inside.first(), inside.last()) {
                    (Some(a), Some(b)) => (value(b) - value(a)).max(0.0),
                    _ => 0.0,
                }
            };
            FaultRow {
                fault: format!("{} {node}", span.fault.verb),
                at,
                undone_at,
                window: (first as u32, last as u32),
                requests: window.responses + window.errors,
                failed: window.failed,
                unavailable: window.unavailable,
                p99_ms: window.p99_ms(),
                left_after: left_at.map(|t| t - at),
                recovered_after: recovered_at.map(|t| (t - undone_at.unwrap_or(t)).max(0.0)),
                read_fallbacks: counted(|h| h.read_fallbacks),
                cache_bypasses: counted(|h| h.cache_bypasses),
                ratelimit_fallbacks: counted(|h| h.ratelimit_fallbacks),
            }
        })
        .collect()
}

/// When the service had recovered from a fault undone at `undone`: the node is back in
/// rotation (the first scrape from `undone` on that does not show it out) and a whole second
/// from then on passes without a failed request. That second's start, or the scrape if later.
fn recovery(node: &str, undone: f64, buckets: &[Bucket], health: &[Health]) -> Option<f64> {
    let back = health
        .iter()
        .enumerate()
        .filter(|(_, h)| h.at >= undone)
        .find(|(i, h)| out_of_rotation(node, i.checked_sub(1).map(|p| &health[p]), h) != Some(true))
        .map(|(_, h)| h.at)
        // Without scrapes the service's view is unknown: errors alone decide.
        .or_else(|| health.is_empty().then_some(undone))?;
    let clean = (back.floor() as usize..buckets.len()).find(|&s| buckets[s].failed == 0)?;
    Some(back.max(clean as f64))
}

/// Whether the service shows `node` out of rotation at `now`: a replica's
/// `db_replica_in_rotation` at 0; for a primary, its breaker not closed or opened since
/// `before` (an opening that closed again between two scrapes); for Redis, the same of any of
/// the breakers in front of it (the cache's, the rate limiter's, the idempotency store's).
/// `None`: the scrape has no such series.
pub fn out_of_rotation(node: &str, before: Option<&Health>, now: &Health) -> Option<bool> {
    if let Some(shard) = node.strip_suffix("-replica") {
        return now.replicas_in_rotation.get(shard).map(|v| *v < 1.0);
    }
    let breakers: &[&str] = if node == "redis" {
        &["redis", "ratelimit", "idempotency"]
    } else {
        &[node]
    };
    let mut seen = false;
    let mut out = false;
    for breaker in breakers {
        let Some(state) = now.breakers.get(*breaker) else {
            continue;
        };
        seen = true;
        let opened = match (
            now.breaker_opens.get(*breaker),
            before.and_then(|b| b.breaker_opens.get(*breaker)),
        ) {
            (Some(now), Some(before)) => now > before,
            _ => false,
        };
        out |= *state != 0.0 || opened;
    }
    seen.then_some(out)
}

/// Gauges per node over the run, for the chart: 1 while out of rotation.
pub fn rotation_track(node: &str, health: &[Health]) -> Vec<(f64, bool)> {
    health
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            out_of_rotation(node, i.checked_sub(1).map(|p| &health[p]), h).map(|out| (h.at, out))
        })
        .collect()
}

/// A figure's first, last and highest reading over a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// The first reading: at the start of the measured window, after the warm-up.
    pub start: f64,
    pub end: f64,
    pub max: f64,
}

impl Drift {
    fn of(values: impl Iterator<Item = f64>) -> Option<Self> {
        values.fold(None, |drift, v| {
            Some(match drift {
                None => Self {
                    start: v,
                    end: v,
                    max: v,
                },
                Some(d) => Self {
                    end: v,
                    max: d.max.max(v),
                    ..d
                },
            })
        })
    }

    /// From start to end, in percent of the start; `None` from 0.
    pub fn change_pct(&self) -> Option<f64> {
        (self.start > 0.0).then(|| (self.end - self.start) / self.start * 100.0)
    }
}

/// What a soak watches: the service's resident memory and its in-process maps, from the
/// warm-up's end to the run's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// `process_resident_memory_bytes`, in MiB.
    pub rss_mib: Option<Drift>,
    /// `in_process_entries` by map.
    pub maps: BTreeMap<String, Drift>,
}

pub fn memory(health: &[Health]) -> Memory {
    let mut names: Vec<&String> = health.iter().flat_map(|h| h.maps.keys()).collect();
    names.sort_unstable();
    names.dedup();
    Memory {
        rss_mib: Drift::of(
            health
                .iter()
                .filter_map(|h| h.rss_bytes)
                .map(|b| b / 1024.0 / 1024.0),
        ),
        maps: names
            .into_iter()
            .filter_map(|name| {
                Drift::of(health.iter().filter_map(|h| h.maps.get(name).copied()))
                    .map(|d| (name.clone(), d))
            })
            .collect(),
    }
}

/// Per-second rate of a counter of the scrapes, as `(t, per second)` between consecutive
/// scrapes (a counter reset, the service restarting, reads as 0).
pub fn rate(health: &[Health], value: fn(&Health) -> f64) -> Vec<(f64, f64)> {
    health
        .windows(2)
        .filter(|w| w[1].at > w[0].at)
        .map(|w| {
            let per_sec = ((value(&w[1]) - value(&w[0])) / (w[1].at - w[0].at)).max(0.0);
            (w[1].at, per_sec)
        })
        .collect()
}

/// The label value of `key` in `{a="x",b="y"}`'s inside.
pub fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let start = labels
        .split(',')
        .find_map(|pair| pair.trim().strip_prefix(key)?.strip_prefix("=\""))?;
    start.split('"').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape at `at` with every node in rotation, then `apply`.
    fn health_at(at: f64, apply: impl FnOnce(&mut Health)) -> Health {
        let mut h = Health {
            at,
            breakers: BTreeMap::from([
                ("redis".to_owned(), 0.0),
                ("shard0-primary".to_owned(), 0.0),
            ]),
            breaker_opens: BTreeMap::from([
                ("redis".to_owned(), 0.0),
                ("shard0-primary".to_owned(), 0.0),
            ]),
            replicas_in_rotation: BTreeMap::from([("shard1".to_owned(), 1.0)]),
            ..Health::default()
        };
        apply(&mut h);
        h
    }

    /// `n` seconds of 100 answers at 2 ms, then `failed[i]` failures and `slow[i]` slow
    /// answers (500 ms) in second `i`.
    fn buckets(n: usize, failed: &[(usize, u64)], slow: &[(usize, u64)]) -> Vec<Bucket> {
        let series = Series::new(Duration::from_secs(n as u64)).expect("series");
        for s in 0..n {
            let at = Duration::from_secs(s as u64) + Duration::from_millis(500);
            for _ in 0..100 {
                series.answer(at, 200, true, 2_000);
            }
        }
        for &(s, count) in failed {
            let at = Duration::from_secs(s as u64);
            for i in 0..count {
                if i % 2 == 0 {
                    series.failure(at);
                } else {
                    series.answer(at, 503, false, 1_000);
                }
            }
        }
        for &(s, count) in slow {
            for _ in 0..count {
                series.answer(Duration::from_secs(s as u64), 200, true, 500_000);
            }
        }
        series.into_buckets()
    }

    fn applied(verb: Verb, node: &str, issued: f64, done: f64) -> Applied {
        Applied {
            verb,
            node: node.to_owned(),
            issued,
            done,
            error: None,
        }
    }

    #[test]
    fn a_replica_stop_row_times_its_exit_and_return_and_counts_its_window() {
        // Stopped at 10.2 s, out of rotation from the scrape at 11.0, restarted (command
        // returned) at 18.4, back in rotation at the scrape of 19.0; failures at 10 and 11 and
        // one more at 19, so the first clean second is 20.
        let buckets = buckets(30, &[(10, 6), (11, 4), (19, 2)], &[(10, 20)]);
        let health: Vec<Health> = (0..60)
            .map(|i| {
                let at = f64::from(i) * 0.5;
                health_at(at, |h| {
                    let out = (11.0..19.0).contains(&at);
                    h.replicas_in_rotation
                        .insert("shard1".to_owned(), if out { 0.0 } else { 1.0 });
                    // A fallback per scrape while out.
                    h.read_fallbacks = (at.clamp(11.0, 19.0) - 11.0) * 2.0;
                })
            })
            .collect();
        let stop = applied(Verb::Stop, "shard1-replica", 10.2, 10.6);
        let start = applied(Verb::Start, "shard1-replica", 18.0, 18.4);
        let rows = fault_rows(
            &[Span {
                fault: &stop,
                undo: Some(&start),
            }],
            &buckets,
            &health,
        );
        let row = &rows[0];
        assert_eq!(row.fault, "stop shard1-replica");
        assert!(
            (row.left_after.expect("left") - 0.8).abs() < 1e-9,
            "{row:?}"
        );
        assert!(
            (row.recovered_after.expect("recovered") - 1.6).abs() < 1e-9,
            "{row:?}"
        );
        assert_eq!(row.window, (10, 20));
        assert_eq!(row.failed, 12);
        assert_eq!(row.unavailable, 6);
        // 100 a second, 20 slow ones, 6 answered 503s and 6 requests without an answer.
        assert_eq!(row.requests, 10 * 100 + 20 + 6 + 6);
        assert!(row.p99_ms >= 490.0, "{row:?}");
        assert_eq!(row.read_fallbacks, 16.0);
        assert_eq!(row.cache_bypasses, 0.0);
    }

    #[test]
    fn a_breaker_that_opened_between_scrapes_counts_and_a_fault_never_seen_has_no_exit() {
        let buckets = buckets(10, &[], &[]);
        // The redis breaker never reads open at a scrape, but its opening count rose by 3.0.
        let health: Vec<Health> = (0..20)
            .map(|i| {
                let at = f64::from(i) * 0.5;
                health_at(at, |h| {
                    h.breaker_opens
                        .insert("redis".to_owned(), if at >= 3.0 { 1.0 } else { 0.0 });
                })
            })
            .collect();
        let pause = applied(Verb::Pause, "redis", 2.0, 2.1);
        let resume = applied(Verb::Resume, "redis", 5.0, 5.1);
        let stop = applied(Verb::Stop, "shard0-primary", 6.0, 6.5);
        let rows = fault_rows(
            &[
                Span {
                    fault: &pause,
                    undo: Some(&resume),
                },
                Span {
                    fault: &stop,
                    undo: None,
                },
            ],
            &buckets,
            &health,
        );
        let near = |got: Option<f64>, want: f64| got.is_some_and(|v| (v - want).abs() < 1e-9);
        assert!(near(rows[0].left_after, 1.0), "{:?}", rows[0]);
        assert!(near(rows[0].recovered_after, 0.4), "{:?}", rows[0]);
        assert_eq!(rows[0].failed, 0);
        assert_eq!(rows[1].left_after, None, "the breaker never opened");
        let mut limiter_open = health_at(1.0, |_| {});
        limiter_open.breakers.insert("ratelimit".to_owned(), 1.0);
        assert_eq!(out_of_rotation("redis", None, &limiter_open), Some(true));
        assert_eq!(
            out_of_rotation("shard0-primary", None, &limiter_open),
            Some(false)
        );
        assert_eq!(out_of_rotation("shard1-primary", None, &limiter_open), None);
        assert_eq!(rows[1].recovered_after, None, "never undone");
        assert_eq!(rows[1].window, (6, 10), "to the end of the run");
    }

    #[test]
    fn a_service_that_keeps_failing_has_not_recovered() {
        let failing = buckets(10, &[(5, 1), (6, 1), (7, 1), (8, 1), (9, 1)], &[]);
        let pause = applied(Verb::Pause, "redis", 2.0, 2.0);
        let resume = applied(Verb::Resume, "redis", 5.5, 5.5);
        let rows = fault_rows(
            &[Span {
                fault: &pause,
                undo: Some(&resume),
            }],
            &failing,
            &[],
        );
        assert_eq!(rows[0].recovered_after, None, "{:?}", rows[0]);
        let rows = fault_rows(
            &[Span {
                fault: &pause,
                undo: Some(&resume),
            }],
            &buckets(10, &[(5, 1)], &[]),
            &[],
        );
        assert_eq!(rows[0].recovered_after, Some(0.5), "the next clean second");
    }

    #[test]
    fn memory_is_each_figures_first_last_and_highest_reading() {
        let mib = 1024.0 * 1024.0;
        let health: Vec<Health> = [(100.0, 0.0), (130.0, 40.0), (110.0, 2.0)]
            .iter()
            .enumerate()
            .map(|(i, &(rss, flights))| {
                health_at(i as f64 * 5.0, |h| {
                    h.rss_bytes = Some(rss * mib);
                    h.maps.insert("single_flight".to_owned(), flights);
                    if i > 0 {
                        h.maps.insert("l1".to_owned(), 10.0 * i as f64);
                    }
                })
            })
            .collect();
        let memory = memory(&health);
        let rss = memory.rss_mib.expect("rss");
        assert_eq!((rss.start, rss.end, rss.max), (100.0, 110.0, 130.0));
        assert!((rss.change_pct().expect("from 100") - 10.0).abs() < 1e-9);
        let flights = memory.maps["single_flight"];
        assert_eq!((flights.start, flights.end, flights.max), (0.0, 2.0, 40.0));
        assert_eq!(flights.change_pct(), None, "no percentage of 0");
        assert_eq!(memory.maps["l1"].start, 10.0, "from its first reading");
        assert_eq!(super::memory(&[]), Memory::default());
    }

    #[test]
    fn labels_are_read_by_key() {
        let labels = r#"shard="1",replica="0",reason="replica_failed""#;
        assert_eq!(label(labels, "shard"), Some("1"));
        assert_eq!(label(labels, "reason"), Some("replica_failed"));
        assert_eq!(label(labels, "tier"), None);
    }

    #[test]
    fn rates_are_per_second_between_scrapes() {
        let health = [
            health_at(0.0, |h| h.cache_bypasses = 0.0),
            health_at(0.5, |h| h.cache_bypasses = 50.0),
            health_at(1.5, |h| h.cache_bypasses = 50.0),
        ];
        assert_eq!(
            rate(&health, |h| h.cache_bypasses),
            [(0.5, 100.0), (1.5, 0.0)]
        );
    }
}
