//! `[shedding]`: the adaptive concurrency limit and its priority queue (the limiter itself is
//! `src/traffic/shed/`, the HTTP layer that classifies requests `src/http/shed.rs`).

use std::time::Duration;

use anyhow::ensure;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SheddingConfig {
    /// Admit requests through the adaptive limit; `false` admits everything at once.
    pub enabled: bool,
    /// Requests in flight allowed at start, before any latency has been measured.
    pub initial_limit: usize,
    /// The limit never drops below this, however slow answers get: a floor of useful work.
    /// Also the concurrency of the calibration probes that measure the latency baseline, so
    /// it should be low enough that requests do not queue inside the service at it (a few per
    /// core).
    pub min_limit: usize,
    /// Nor grows above this, however fast they are.
    pub max_limit: usize,
    /// How far the median latency of a sample window may drift above its baseline (the
    /// lowest recent window median) before the limit shrinks: `2.0` lets it double.
    pub tolerance: f64,
    /// The most one window may cut: the limit is multiplied by at least this (0 < backoff < 1).
    pub backoff: f64,
    /// Latencies are gathered this long (and at least 10 answers) before the limit moves.
    #[serde(with = "humantime_serde")]
    pub sample_window: Duration,
    /// How long a baseline is remembered (it is the lowest window median of the last one to
    /// two of these, so it can rise when the service legitimately got slower), and how often
    /// a probe window at `min_limit` measures it afresh.
    #[serde(with = "humantime_serde")]
    pub baseline_window: Duration,
    /// Requests that may wait for a slot; past them the lowest priority is refused at once.
    pub queue_size: usize,
    /// A waiting request gets a slot within this, or a 503.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Whether anonymous lists (the lowest priority) may queue too. Off by default: they are
    /// refused the moment they are over their share, so under overload they cost a fast 503
    /// instead of holding a connection and a queue place for `max_wait` before the same 503
    /// (measured: queued, they capped a 2-core instance's answers at about 2,600 a second,
    /// places x 1 / max_wait, and every class's latency with them).
    pub lowest_priority_waits: bool,
}

impl Default for SheddingConfig {
    /// Sized for a 2-core machine: a cached read takes ~0.2 ms, so a few dozen requests in
    /// flight keep both cores busy, and the limit finds its own level from there; 4 requests
    /// (2 per core) are the floor and the probes' concurrency. The queue holds
    /// a closed-loop benchmark's 64 connections with room to spare, and 100 ms of waiting is
    /// hundreds of service times: a request waiting longer is standing in a queue that is not
    /// draining, and is better told at once.
    fn default() -> Self {
        Self {
            enabled: true,
            initial_limit: 32,
            min_limit: 4,
            max_limit: 512,
            tolerance: 2.0,
            backoff: 0.5,
            sample_window: Duration::from_millis(100),
            baseline_window: Duration::from_secs(30),
            queue_size: 256,
            max_wait: Duration::from_millis(100),
            lowest_priority_waits: false,
        }
    }
}

impl SheddingConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.min_limit >= 1, "shedding.min_limit must be at least 1");
        ensure!(
            self.min_limit <= self.initial_limit && self.initial_limit <= self.max_limit,
            "shedding: min_limit <= initial_limit <= max_limit must hold ({} / {} / {})",
            self.min_limit,
            self.initial_limit,
            self.max_limit
        );
        ensure!(
            self.tolerance.is_finite() && self.tolerance >= 1.0,
            "shedding.tolerance must be a number of at least 1.0 (the baseline itself)"
        );
        ensure!(
            self.backoff > 0.0 && self.backoff < 1.0,
            "shedding.backoff must be between 0 and 1 (exclusive)"
        );
        ensure!(
            !self.sample_window.is_zero(),
            "shedding.sample_window must be more than 0s"
        );
        ensure!(
            self.baseline_window >= self.sample_window,
            "shedding.baseline_window must be at least shedding.sample_window"
        );
        ensure!(
            self.queue_size == 0 || !self.max_wait.is_zero(),
            "shedding.max_wait must be more than 0s when requests may queue (queue_size > 0)"
        );
        Ok(())
    }
}
