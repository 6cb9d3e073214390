//! Where one request's time went, for its `Server-Timing` header.
//!
//! [W3C Server Timing](https://www.w3.org/TR/server-timing/) is a response header that browsers
//! show next to their own timings: open the devtools' Network tab, pick a request, and its
//! Timing tab lists the server's entries under "Server Timing". Every answer gets one:
//!
//! ```text
//! Server-Timing: db;dur=1.23;desc="2 queries", cache;dur=0.31;desc="1 round trip", batch;dur=20.10;desc="1 batch", ser;dur=0.05, total;dur=23.40
//! ```
//!
//! - `db`: the SQL calls and their time, pool checkout included (a saturated pool shows up
//!   here), as measured in `src/db/cluster/instrument.rs`;
//! - `cache`: the Redis round trips of the cache (lookups, fills, invalidations), pool
//!   checkout included; an L1 hit costs none and shows none;
//! - `batch`: how long GraphQL DataLoader batches waited for their keys before loading (the
//!   batch window, `graphql.batch_window`; see `src/graphql/loaders.rs`);
//! - `ser`: turning the answer into JSON bytes;
//! - `total`: the whole request inside the service, from the session middleware's point of
//!   view (`src/http/session.rs`): after the outer layers, around everything else.
//!
//! Entries that did not happen are left out (a warm two-tier read has no `db` and no
//! `cache`); `total` is always there. Durations are sums: the two shards of a cross-shard
//! read are asked concurrently, so `db` can exceed the wall-clock time it took, and the parts
//! need not add up to `total` (routing, auth, rate limits and the handler's own work are the
//! rest).
//!
//! Unlike the dev-only debug trace (`X-Db-Route`, `X-Cache`), this is always collected: it
//! is a handful of atomics inside the request's `db::Session`, which is allocated anyway, and
//! a clock read around each call that is already measured for the metrics. Relaxed atomics
//! suffice: the header is written after the request's work has finished, and every task that
//! recorded into it handed its result back through a channel or a join first. Showing it is
//! `telemetry.server_timing`: it tells every client how long the service spent and on what
//! (a cache hit answers without `db`), which a deployment that treats timings as a side
//! channel turns off.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

/// What a recorded span of time was spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One SQL call through the shard routing.
    Db,
    /// One Redis round trip of the cache.
    Cache,
    /// One DataLoader batch's wait before its load.
    Batch,
    /// Serialising the answer's body.
    Serialize,
}

/// One request's accumulated time per [`Phase`]; see the module doc.
#[derive(Debug, Default)]
pub struct ServerTiming {
    phases: [Tally; 4],
}

#[derive(Debug, Default)]
struct Tally {
    count: AtomicU32,
    nanos: AtomicU64,
}

/// Per phase: the metric's name, and how a count is described (`None`: no `desc`).
const ENTRIES: [(&str, Option<(&str, &str)>); 4] = [
    ("db", Some(("query", "queries"))),
    ("cache", Some(("round trip", "round trips"))),
    ("batch", Some(("batch", "batches"))),
    ("ser", None),
];

impl ServerTiming {
    /// Adds one occurrence of `phase` that took `elapsed`.
    pub fn record(&self, phase: Phase, elapsed: Duration) {
        let tally = &self.phases[phase as usize];
        tally.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        tally.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many occurrences of `phase` were recorded, and their total time.
    pub fn get(&self, phase: Phase) -> (u32, Duration) {
        let tally = &self.phases[phase as usize];
        (
            tally.count.load(Ordering::Relaxed),
            Duration::from_nanos(tally.nanos.load(Ordering::Relaxed)),
        )
    }

    /// The header's value, with `total` as the last entry.
    pub fn header_value(&self, total: Duration) -> String {
        let mut out = String::with_capacity(160);
        for (phase, (name, desc)) in [Phase::Db, Phase::Cache, Phase::Batch, Phase::Serialize]
            .into_iter()
            .zip(ENTRIES)
        {
            let (count, time) = self.get(phase);
            if count == 0 {
                continue;
            }
            // Writing to a String cannot fail.
            let _ = write!(out, "{name};dur={:.2}", millis(time));
            if let Some((one, many)) = desc {
                let noun = if count == 1 { one } else { many };
                let _ = write!(out, ";desc=\"{count} {noun}\"");
            }
            out.push_str(", ");
        }
        let _ = write!(out, "total;dur={:.2}", millis(total));
        out
    }
}

fn millis(time: Duration) -> f64 {
    time.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_lists_what_happened_with_counts_and_always_the_total() {
        let timing = ServerTiming::default();
        assert_eq!(
            timing.header_value(Duration::from_micros(1_500)),
            "total;dur=1.50"
        );
        timing.record(Phase::Db, Duration::from_micros(1_000));
        timing.record(Phase::Db, Duration::from_micros(234));
        timing.record(Phase::Cache, Duration::from_micros(310));
        timing.record(Phase::Serialize, Duration::from_nanos(49_999));
        assert_eq!(
            timing.header_value(Duration::from_micros(23_400)),
            "db;dur=1.23;desc=\"2 queries\", cache;dur=0.31;desc=\"1 round trip\", ser;dur=0.05, total;dur=23.40"
        );
        timing.record(Phase::Batch, Duration::from_millis(20));
        assert!(
            timing
                .header_value(Duration::ZERO)
                .contains("batch;dur=20.00;desc=\"1 batch\", ser;")
        );
    }
}
