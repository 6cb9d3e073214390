//! A circuit breaker: stop calling a dependency that is failing, and find out cheaply when
//! it is back.
//!
//! Without one, every request to a dead dependency pays the full connect or acquire timeout
//! (seconds), holds a worker and a connection slot meanwhile, and the pile-up takes the
//! healthy parts of the service down with it. With one, after `failure_threshold`
//! consecutive failures the breaker *opens*: calls fail at once (the caller answers 503 with
//! `Retry-After`). After `open` it is *half-open*: one trial call goes through; success
//! closes it, failure opens it again. A background health probe may also [`trip`] it (a
//! failed probe) or close it (a good one), so a dead dependency is found without traffic and
//! a recovered one within one probe interval.
//!
//! [`trip`]: CircuitBreaker::trip
//!
//! Trade-off: while open, requests that might have succeeded are refused (a flapping
//! dependency is treated as down for `open`), and `failure_threshold` requests pay the
//! timeout before it opens. Lock-free: the hot path is one atomic load when closed.
//!
//! Hand-written rather than a crate: the maintained Rust breakers (failsafe, recloser) wrap
//! calls in their own future types and error enums, need their own dependency trees, and have
//! no hook for an external health probe; this is ~100 lines on two atomics.
//!
//! A breaker given a name with [`CircuitBreaker::named`] exports its state as the gauge
//! `circuit_breaker_state{breaker="<name>"}` (0 closed, 1 open, 2 half-open with its trial
//! in flight), set on each transition, so the closed hot path never touches it. An open
//! breaker whose `open` has passed reads 1 until the next call becomes the trial. It also
//! counts its openings in `circuit_breaker_opens_total{breaker="<name>"}`: an open that closed
//! again between two scrapes is missed by the gauge, not by the counter.

use std::{
    sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde::Serialize;

pub use crate::config::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// The breaker refused the call; retry after this long.
#[derive(Debug, Clone, Copy)]
pub struct Rejected {
    pub retry_after: Duration,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
/// Half-open with the single trial call in flight.
const TRIAL: u8 = 2;

#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    /// `circuit_breaker_state{breaker}`, when named.
    gauge: Option<metrics::Gauge>,
    /// `circuit_breaker_opens_total{breaker}`, when named.
    opens: Option<metrics::Counter>,
    state: AtomicU8,
    failures: AtomicU32,
    /// When the breaker last opened, or (half-open) when the trial started, in ms since
    /// `epoch`.
    opened_at_ms: AtomicU64,
    /// How long a half-open trial may go unreported before it is presumed lost.
    trial_lease_ms: u64,
    epoch: Instant,
}

/// A trial whose caller was cancelled (a request timeout, a client that went away) or took a
/// path that records nothing never reports, and a breaker waiting for it would stay
/// half-open, rejecting every call, for good: Redis has no health probe to close it. After
/// this long the next caller becomes the trial. It is longer than any bounded call here (a
/// statement times out after 5 s), so a slow live trial is not doubled.
const TRIAL_LEASE_MS: u64 = 10_000;

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            gauge: None,
            opens: None,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at_ms: AtomicU64::new(0),
            trial_lease_ms: TRIAL_LEASE_MS,
            epoch: Instant::now(),
        }
    }

    #[cfg(test)]
    fn with_trial_lease(mut self, lease: Duration) -> Self {
        self.trial_lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Names the breaker (`shard0-primary`, `redis`) and exports its state under that name.
    /// Name it after the metrics recorder is installed (`App::build` does that first).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        let gauge = metrics::gauge!(
            crate::telemetry::names::CIRCUIT_BREAKER_STATE,
            "breaker" => name.clone()
        );
        gauge.set(f64::from(self.state.load(Ordering::Acquire)));
        self.gauge = Some(gauge);
        let opens = metrics::counter!(
            crate::telemetry::names::CIRCUIT_BREAKER_OPENS,
            "breaker" => name
        );
        // Registered at zero, so a rate over it exists before the first opening.
        opens.increment(0);
        self.opens = Some(opens);
        self
    }

    /// Asks to make a call. `Err` means fail fast without touching the dependency.
    pub fn admit(&self) -> Result<(), Rejected> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Ok(()),
            OPEN => {
                let remaining = self.open_remaining();
                if remaining.is_zero()
                    && self
                        .state
                        .compare_exchange(OPEN, TRIAL, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    // This caller is the half-open trial; the stamp starts its lease.
                    self.opened_at_ms.store(self.now_ms(), Ordering::Release);
                    self.publish(TRIAL);
                    return Ok(());
                }
                Err(Rejected {
                    retry_after: remaining.max(Duration::from_secs(1)),
                })
            }
            _ => {
                let started = self.opened_at_ms.load(Ordering::Acquire);
                let now = self.now_ms();
                if now.saturating_sub(started) >= self.trial_lease_ms
                    && self
                        .opened_at_ms
                        .compare_exchange(started, now, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    // The trial's lease ran out without a verdict: this caller replaces it.
                    return Ok(());
                }
                Err(Rejected {
                    retry_after: Duration::from_secs(1),
                })
            }
        }
    }

    /// The dependency answered: close.
    pub fn record_success(&self) {
        // Loads first: on the hot path (closed, no failures) this writes nothing, so callers
        // on many cores do not fight over the cache line.
        if self.failures.load(Ordering::Acquire) != 0 {
            self.failures.store(0, Ordering::Release);
        }
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.state.store(CLOSED, Ordering::Release);
            self.publish(CLOSED);
        }
    }

    /// The dependency failed (unreachable, timed out): count, and open past the threshold or
    /// when a half-open trial fails.
    pub fn record_failure(&self) {
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let state = self.state.load(Ordering::Acquire);
        if state == TRIAL || (state == CLOSED && failures >= self.config.failure_threshold) {
            self.open();
        }
    }

    /// Opens at once, whatever the count: for a health probe's verdict, which is stronger
    /// evidence than one failed request. A probe that succeeds closes it again.
    pub fn trip(&self) {
        self.failures.fetch_add(1, Ordering::AcqRel);
        if self.state.load(Ordering::Acquire) != OPEN {
            self.open();
        }
    }

    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN if self.open_remaining().is_zero() => BreakerState::HalfOpen,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    fn open(&self) {
        self.opened_at_ms.store(self.now_ms(), Ordering::Release);
        // Failing callers racing past the threshold may all get here: only the one that
        // made the transition counts it.
        let previous = self.state.swap(OPEN, Ordering::AcqRel);
        self.publish(OPEN);
        if previous != OPEN
            && let Some(opens) = &self.opens
        {
            opens.increment(1);
        }
    }

    /// The gauge's values are the state constants: 0 closed, 1 open, 2 half-open.
    fn publish(&self, state: u8) {
        if let Some(gauge) = &self.gauge {
            gauge.set(f64::from(state));
        }
    }

    fn open_remaining(&self) -> Duration {
        let elapsed = self
            .now_ms()
            .saturating_sub(self.opened_at_ms.load(Ordering::Acquire));
        self.config
            .open
            .saturating_sub(Duration::from_millis(elapsed))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open: Duration) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open,
        })
    }

    #[test]
    fn it_opens_after_the_threshold_of_consecutive_failures() {
        let b = breaker(Duration::from_secs(60));
        b.record_failure();
        b.record_failure();
        assert!(b.admit().is_ok(), "two failures are below the threshold");
        b.record_failure();
        let rejected = b.admit().expect_err("open after three");
        assert!(rejected.retry_after > Duration::from_secs(50));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = breaker(Duration::from_secs(60));
        b.record_failure();
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert!(b.admit().is_ok());
    }

    #[test]
    fn a_named_breaker_exports_every_transition_and_counts_its_openings() {
        // A recorder of its own, so no other test's series can interfere.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let b = metrics::with_local_recorder(&recorder, || {
            breaker(Duration::ZERO).named("test-dependency")
        });
        let state = || {
            handle
                .render()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(r#"circuit_breaker_state{breaker="test-dependency"} "#)
                })
                .map(str::to_owned)
        };
        let opens = || {
            handle
                .render()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(r#"circuit_breaker_opens_total{breaker="test-dependency"} "#)
                })
                .map(str::to_owned)
        };
        assert_eq!(state().as_deref(), Some("0"), "closed from the start");
        assert_eq!(opens().as_deref(), Some("0"), "registered at zero");
        for _ in 0..4 {
            b.record_failure();
        }
        assert_eq!(state().as_deref(), Some("1"), "open");
        b.trip();
        assert_eq!(
            opens().as_deref(),
            Some("1"),
            "one opening, however many failures"
        );
        assert!(b.admit().is_ok(), "the trial");
        assert_eq!(state().as_deref(), Some("2"), "half-open");
        b.record_failure();
        assert_eq!(
            opens().as_deref(),
            Some("2"),
            "a failed trial opens it again"
        );
        assert!(b.admit().is_ok(), "the next trial");
        b.record_success();
        assert_eq!(state().as_deref(), Some("0"), "closed again");
    }

    #[test]
    fn a_trial_that_never_reports_is_replaced_after_its_lease() {
        let b = breaker(Duration::ZERO).with_trial_lease(Duration::from_millis(30));
        for _ in 0..3 {
            b.record_failure();
        }
        assert!(
            b.admit().is_ok(),
            "the trial, whose caller is then cancelled"
        );
        assert!(b.admit().is_err(), "its lease is still running");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok(), "a new trial after the lease");
        assert!(b.admit().is_err(), "and again only one");
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_exactly_one_trial_through_and_its_outcome_decides() {
        let b = breaker(Duration::ZERO);
        for _ in 0..3 {
            b.record_failure();
        }
        assert!(b.admit().is_ok(), "the trial");
        assert!(b.admit().is_err(), "only one trial at a time");
        b.record_failure();
        assert!(b.admit().is_ok(), "open = 0s: the next trial");
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit().is_ok() && b.admit().is_ok());
    }
}
