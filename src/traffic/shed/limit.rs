//! [`AdaptiveLimit`]: the concurrency limit, moved by latency (no clock of its own, no locks:
//! the caller passes the time and holds the lock, so it is tested with made-up instants).

use std::time::{Duration, Instant};

use crate::config::SheddingConfig;

/// A window closes with at least this many answers: a median of three says little.
const MIN_SAMPLES: usize = 10;
/// A window keeps at most this many latencies (the most recent, once full), so a window's
/// memory is bounded at any rate.
const MAX_SAMPLES: usize = 1024;

/// AIMD on a latency gradient.
///
/// Answers are gathered in windows (`sample_window`, at least [`MIN_SAMPLES`]). When one
/// closes, its **median** latency is compared with the **baseline**: the lowest window median
/// of the last one to two `baseline_window`s, the latency the service has shown it can reach
/// with the work it gets now. Their ratio is the drift:
///
/// - drift above `tolerance`: requests are queueing *inside* the service (for cores, pool
///   connections, locks), so the limit is cut in proportion: multiplied by
///   `tolerance / drift`, but never below `backoff` in one window (Envoy's adaptive
///   concurrency filter clamps its gradient to 0.5 the same way), nor below `min_limit`;
/// - drift within `tolerance` and some request found no room in this window: there is demand
///   the service can take, so the limit grows by one (additive increase, as in TCP and
///   Netflix's AIMD limit), up to `max_limit`;
/// - otherwise it stays: a limit that is never reached says nothing about capacity.
///
/// **The baseline is measured at low concurrency.** A minimum taken from ordinary windows
/// only knows the latencies the service has shown under the load it had: one that starts
/// overloaded (a deploy in the middle of a peak) would take its overloaded latency for normal
/// and never cut. So, like Envoy's filter, the limiter calibrates: the first window, and one
/// window every `baseline_window` after it, runs with the limit pinned to `min_limit`, only
/// answers to requests admitted during it count, and its median joins the baseline (the
/// limit itself is not moved by it). The cost: during a probe (a sample window plus the time
/// to drain the requests above `min_limit`, about a tenth of a second every half minute by
/// default) an overloaded instance admits only `min_limit` requests, and its low priorities
/// wait or are shed a little more.
///
/// Why the median of a window, not each answer: the service mixes cached reads (~0.2 ms) with
/// feeds and writes (milliseconds), so single answers swing by 10x at any load. A window's
/// median moves only when most answers slow down, and a few slow requests do not cut the
/// limit. Why a decaying baseline: the data grows and dependencies change; a minimum kept
/// forever would hold the limit at its floor after the service legitimately got slower.
/// Latency is measured from admission to the response head, so time spent in the limiter's
/// own queue never feeds back into the limit.
#[derive(Debug)]
pub(super) struct AdaptiveLimit {
    limit: f64,
    min: f64,
    max: f64,
    tolerance: f64,
    backoff: f64,
    sample_window: Duration,
    window: Window,
    baseline: WindowedMin,
    /// The current window is a calibration probe (see the type doc).
    probing: bool,
    /// Counts probes: a probe's samples are those of requests admitted in the same epoch.
    epoch: u64,
    /// When the next probe starts (after the window that is open then); `None` before the
    /// first probe has ended.
    next_probe: Option<Instant>,
    baseline_window: Duration,
}

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    samples: Vec<Duration>,
    seen: usize,
    /// Some request found no room while this window was open.
    saturated: bool,
}

/// What a closed window decided (for the gauges and the tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Adjustment {
    pub median: Duration,
    pub baseline: Duration,
    /// The adapted limit.
    pub limit: usize,
    /// The limit in force from now on: the adapted one, or `min_limit` for a probe.
    pub in_force: usize,
}

impl AdaptiveLimit {
    pub(super) fn new(config: &SheddingConfig) -> Self {
        Self {
            limit: config.initial_limit as f64,
            min: config.min_limit as f64,
            max: config.max_limit as f64,
            tolerance: config.tolerance,
            backoff: config.backoff,
            sample_window: config.sample_window,
            window: Window::default(),
            baseline: WindowedMin::new(config.baseline_window),
            probing: true,
            epoch: 0,
            next_probe: None,
            baseline_window: config.baseline_window,
        }
    }

    /// The limit in force now: requests in flight allowed at once (`min_limit` during a
    /// probe).
    pub(super) fn current(&self) -> usize {
        if self.probing {
            self.min as usize
        } else {
            self.limit.round() as usize
        }
    }

    /// The limit the adaptation has reached (what a probe pins down for a moment).
    pub(super) fn adapted(&self) -> usize {
        self.limit.round() as usize
    }

    /// Stamped on each admitted request and handed back with its latency.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A request found no room (it queued or was refused).
    pub(super) fn saturated(&mut self) {
        self.window.saturated = true;
    }

    /// One answer's latency, at `now`, of a request admitted in `epoch`; when it closes a
    /// window, what the window decided.
    pub(super) fn sample(
        &mut self,
        now: Instant,
        latency: Duration,
        epoch: u64,
    ) -> Option<Adjustment> {
        if self.probing && epoch != self.epoch {
            // Admitted before the probe, at the higher limit: not a low-concurrency latency.
            return None;
        }
        let window = &mut self.window;
        let started = *window.started.get_or_insert(now);
        if window.samples.len() < MAX_SAMPLES {
            window.samples.push(latency);
        } else {
            window.samples[window.seen % MAX_SAMPLES] = latency;
        }
        window.seen += 1;
        if window.seen < MIN_SAMPLES || now.saturating_duration_since(started) < self.sample_window
        {
            return None;
        }
        let middle = window.samples.len() / 2;
        let (_, &mut median, _) = window.samples.select_nth_unstable(middle);
        let saturated = window.saturated;
        window.samples.clear();
        (window.started, window.seen, window.saturated) = (None, 0, false);

        let baseline = self.baseline.observe(now, median);
        let drift = median.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
        if self.probing {
            // The probe's own window sets the baseline and nothing else.
            self.probing = false;
            self.next_probe = Some(now + self.baseline_window);
        } else {
            if drift > self.tolerance {
                let factor = (self.tolerance / drift).max(self.backoff);
                self.limit = (self.limit * factor).max(self.min);
            } else if saturated {
                self.limit = (self.limit + 1.0).min(self.max);
            }
            if self.next_probe.is_some_and(|at| now >= at) {
                self.probing = true;
                self.epoch += 1;
            }
        }
        Some(Adjustment {
            median,
            baseline,
            limit: self.adapted(),
            in_force: self.current(),
        })
    }
}

/// The minimum of the values seen in the current and the previous span: a minimum that
/// forgets values older than one to two spans.
#[derive(Debug)]
struct WindowedMin {
    span: Duration,
    started: Option<Instant>,
    current: Option<Duration>,
    previous: Option<Duration>,
}

impl WindowedMin {
    fn new(span: Duration) -> Self {
        Self {
            span,
            started: None,
            current: None,
            previous: None,
        }
    }

    /// Records `value` at `now`; returns the minimum including it.
    fn observe(&mut self, now: Instant, value: Duration) -> Duration {
        let started = *self.started.get_or_insert(now);
        let age = now.saturating_duration_since(started);
        if age >= self.span {
            self.previous = if age >= self.span * 2 {
                None
            } else {
                self.current
            };
            self.current = None;
            self.started = Some(now);
        }
        let current = self.current.map_or(value, |c| c.min(value));
        self.current = Some(current);
        self.previous.map_or(current, |p| p.min(current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limit(initial: usize) -> AdaptiveLimit {
        AdaptiveLimit::new(&SheddingConfig {
            initial_limit: initial,
            min_limit: 8,
            max_limit: 42,
            tolerance: 2.0,
            backoff: 0.5,
            sample_window: Duration::from_millis(100),
            baseline_window: Duration::from_secs(10),
            ..SheddingConfig::default()
        })
    }

    /// A limit whose first window, the calibration probe, saw 1 ms answers.
    fn calibrated(initial: usize) -> (AdaptiveLimit, Instant) {
        let (mut limit, mut now) = (self::limit(initial), Instant::now());
        assert_eq!(limit.current(), 8, "the probe runs at min_limit");
        let probe = window(&mut limit, &mut now, MS);
        assert_eq!(
            (probe.baseline, probe.limit, probe.in_force),
            (MS, initial, initial)
        );
        (limit, now)
    }

    /// One whole window of answers that all took `latency`.
    fn window(limit: &mut AdaptiveLimit, now: &mut Instant, latency: Duration) -> Adjustment {
        window_of(limit, now, &[latency; MIN_SAMPLES])
    }

    /// Feeds `latencies` as one window of requests admitted now: the first answer at `*now`,
    /// the last 100 ms later; returns what it decided and moves `*now` past it.
    fn window_of(
        limit: &mut AdaptiveLimit,
        now: &mut Instant,
        latencies: &[Duration],
    ) -> Adjustment {
        let (start, last, epoch) = (*now, latencies.len() - 1, limit.epoch());
        let mut decided = None;
        for (i, latency) in latencies.iter().enumerate() {
            let at = if i == last { 100 * MS } else { i as u32 * MS };
            decided = limit.sample(start + at, *latency, epoch);
            if i < last {
                assert_eq!(decided, None, "the window closes with its last answer");
            }
        }
        *now = start + 101 * MS;
        decided.expect("a whole window closes")
    }

    #[test]
    fn a_median_drifting_past_the_tolerance_cuts_the_limit_by_the_drift() {
        let (mut limit, mut now) = calibrated(40);
        // Twice the baseline: within the tolerance, no cut.
        assert_eq!(window(&mut limit, &mut now, 2 * MS).limit, 40);
        // 2.5x: cut by 2 / 2.5 = 0.8.
        assert_eq!(window(&mut limit, &mut now, MS * 5 / 2).limit, 32);
        // 10x: 2 / 10 would be 0.2; one window cuts at most by `backoff`, 0.5.
        assert_eq!(window(&mut limit, &mut now, 10 * MS).limit, 16);
        assert_eq!(window(&mut limit, &mut now, 10 * MS).limit, 8);
        // Never below min_limit.
        assert_eq!(window(&mut limit, &mut now, 10 * MS).limit, 8);
    }

    #[test]
    fn good_windows_raise_the_limit_by_one_only_when_some_request_found_no_room() {
        let (mut limit, mut now) = calibrated(40);
        assert_eq!(window(&mut limit, &mut now, MS).limit, 40, "not reached");
        limit.saturated();
        assert_eq!(window(&mut limit, &mut now, MS).limit, 41);
        assert_eq!(
            window(&mut limit, &mut now, MS).limit,
            41,
            "the flag is per window"
        );
        for _ in 0..5 {
            limit.saturated();
            window(&mut limit, &mut now, MS);
        }
        assert_eq!(limit.current(), 42, "never above max_limit");
        // Demand, but slow answers: the drift wins (5x: the most one window cuts, half).
        limit.saturated();
        assert_eq!(window(&mut limit, &mut now, 5 * MS).limit, 21);
    }

    #[test]
    fn a_few_slow_answers_do_not_move_the_median() {
        let (mut limit, mut now) = calibrated(40);
        let mut latencies = vec![MS; 7];
        latencies.extend([Duration::from_secs(1); 4]);
        let decided = window_of(&mut limit, &mut now, &latencies);
        assert_eq!((decided.median, decided.limit), (MS, 40));
    }

    #[test]
    fn a_window_closes_after_its_time_and_ten_answers() {
        let (mut limit, start) = (limit(40), Instant::now());
        for i in 0..9 {
            assert_eq!(limit.sample(start + Duration::from_secs(i), MS, 0), None);
        }
        assert!(
            limit
                .sample(start + Duration::from_secs(9), MS, 0)
                .is_some()
        );
        for i in 0..20 {
            let at = start + Duration::from_secs(10) + MS * i;
            assert_eq!(limit.sample(at, MS, 0), None);
        }
    }

    #[test]
    fn the_baseline_forgets_minimums_older_than_two_baseline_windows() {
        let (mut limit, mut now) = calibrated(40);
        // Within the baseline window, 5 ms is a 5x drift: cut.
        assert_eq!(window(&mut limit, &mut now, 5 * MS).limit, 20);
        // 20 s later the 1 ms minimum is forgotten: 5 ms is the new normal.
        now += Duration::from_secs(20);
        let later = window(&mut limit, &mut now, 5 * MS);
        assert_eq!((later.baseline, later.limit), (5 * MS, 20));
    }

    #[test]
    fn a_probe_every_baseline_window_runs_at_min_limit_and_counts_only_its_own_requests() {
        let (mut limit, mut now) = calibrated(40);
        // Ordinary windows until the baseline window has passed since the first probe.
        let mut next = window(&mut limit, &mut now, MS);
        while next.in_force == 40 {
            assert!(next.limit == 40, "{next:?}");
            now += Duration::from_secs(1);
            next = window(&mut limit, &mut now, MS);
        }
        assert_eq!((next.in_force, limit.current(), limit.epoch()), (8, 8, 1));
        // Requests admitted before the probe answer slowly: they are not its samples.
        for i in 0..50 {
            assert_eq!(limit.sample(now + i * MS, Duration::from_secs(1), 0), None);
        }
        // Its own do; it moves the baseline, not the limit, and the limit is back.
        now += 50 * MS;
        let probe = window(&mut limit, &mut now, MS / 2);
        assert_eq!(
            (probe.baseline, probe.limit, probe.in_force),
            (MS / 2, 40, 40)
        );
    }
}
