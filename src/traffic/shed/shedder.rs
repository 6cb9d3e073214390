//! [`LoadShedder`]: admission through the adaptive limit, the priority queue, and the
//! [`Permit`] a request holds while it runs.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use metrics::{Counter, Gauge};
use tokio::sync::oneshot;

use super::{
    Priority,
    limit::{AdaptiveLimit, Adjustment},
    queue::{Push, Queue},
};
use crate::{config::SheddingConfig, telemetry::names};

/// Why a request was refused. Every case is answered the same way (503 with `Retry-After`);
/// the reason is for the metrics and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// No free slot, the queue full, and nobody of a lower priority in it to replace.
    QueueFull,
    /// It waited `shedding.max_wait` without getting a slot.
    WaitedTooLong,
    /// It was waiting when a higher priority arrived at a full queue, and lost its place.
    Evicted,
    /// The lowest priority over its share, refused without waiting
    /// (`shedding.lowest_priority_waits` off).
    AtOnce,
}

impl Shed {
    /// How long the client should wait before trying again. One second, the smallest a
    /// `Retry-After` header can say: an overload that lasts longer sheds the retry too, and
    /// well-behaved clients add their own backoff and jitter.
    pub const RETRY_AFTER: Duration = Duration::from_secs(1);
}

/// The per-instance adaptive concurrency limiter with priorities (see the module doc).
/// Cloning shares it.
#[derive(Debug, Clone)]
pub struct LoadShedder {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// One short critical section per admission and per answer: a few comparisons, a deque
    /// operation, rarely a window's median. An async-aware lock is not needed since it is
    /// never held across an await.
    state: Mutex<State>,
    max_wait: Duration,
    /// Whether the lowest priority may queue (`shedding.lowest_priority_waits`).
    lowest_waits: bool,
    metrics: Metrics,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    limit: AdaptiveLimit,
    /// Each waiter's sender: an epoch sent is a slot handed over (already counted in
    /// `in_flight`); a sender dropped unsent is a place lost to a higher priority.
    queue: Queue<oneshot::Sender<u64>>,
    next_ticket: u64,
}

impl State {
    fn fits(&self, priority: Priority) -> bool {
        self.in_flight < priority.room(self.limit.current())
    }
}

impl LoadShedder {
    pub fn new(config: &SheddingConfig) -> Self {
        let limit = AdaptiveLimit::new(config);
        let metrics = Metrics::register();
        metrics.limit.set(limit.current() as f64);
        let shared = Shared {
            state: Mutex::new(State {
                in_flight: 0,
                limit,
                queue: Queue::new(config.queue_size),
                next_ticket: 0,
            }),
            max_wait: config.max_wait,
            lowest_waits: config.lowest_priority_waits,
            metrics,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// A slot for a request of `priority`: at once if one is free for it, else after waiting
    /// in the queue for at most `shedding.max_wait`, else refused.
    ///
    /// Cancel-safe: a caller dropped while waiting (a client that went away) leaves the queue,
    /// and a slot handed to it in that instant goes to the next waiter.
    pub async fn acquire(&self, priority: Priority) -> Result<Permit, Shed> {
        let shared = &self.shared;
        let (ticket, rx) = {
            let mut state = shared.lock();
            if state.fits(priority) {
                state.in_flight += 1;
                shared.metrics.levels(&state);
                shared.metrics.count(priority, Decision::Admitted);
                return Ok(self.permit(state.limit.epoch()));
            }
            state.limit.saturated();
            if priority == Priority::LOWEST && !shared.lowest_waits {
                shared.metrics.count(priority, Decision::Shed(Shed::AtOnce));
                return Err(Shed::AtOnce);
            }
            let (tx, rx) = oneshot::channel();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            // An evicted waiter's sender is dropped here: its receiver wakes with an error.
            if let Push::Full = state.queue.push(priority, ticket, tx) {
                shared
                    .metrics
                    .count(priority, Decision::Shed(Shed::QueueFull));
                return Err(Shed::QueueFull);
            }
            shared.metrics.levels(&state);
            (ticket, rx)
        };
        let mut waiting = Waiting {
            shared,
            priority,
            ticket,
            rx,
            settled: false,
        };
        let outcome = match tokio::time::timeout(shared.max_wait, &mut waiting.rx).await {
            Ok(Ok(epoch)) => {
                waiting.settled = true;
                Ok(epoch)
            }
            Ok(Err(_)) => {
                waiting.settled = true;
                Err(Shed::Evicted)
            }
            // A slot may have been handed over in the instant the wait ran out: keep it.
            Err(_) => waiting.leave().ok_or(Shed::WaitedTooLong),
        };
        match outcome {
            Ok(epoch) => {
                shared.metrics.count(priority, Decision::AdmittedAfterWait);
                Ok(self.permit(epoch))
            }
            Err(shed) => {
                shared.metrics.count(priority, Decision::Shed(shed));
                Err(shed)
            }
        }
    }

    /// The limit in force now.
    pub fn limit(&self) -> usize {
        self.shared.lock().limit.current()
    }

    /// Requests admitted and not finished.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.shared.lock().queue.len()
    }

    fn permit(&self, epoch: u64) -> Permit {
        Permit {
            shared: self.shared.clone(),
            admitted_at: Instant::now(),
            epoch,
            finished: false,
        }
    }
}

/// A slot in the limit, held while the request runs; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    admitted_at: Instant,
    /// The limit's epoch at admission (see `AdaptiveLimit::epoch`).
    epoch: u64,
    finished: bool,
}

impl Permit {
    /// The request is answered: its latency (from admission) is a sample for the limit, and
    /// the slot goes to the next waiter. A permit dropped without this (the request was
    /// cancelled) frees its slot but teaches the limit nothing: a cancelled request's time
    /// says when the client gave up, not how long the work takes.
    pub fn finish(mut self) {
        self.finished = true;
        let latency = self.admitted_at.elapsed();
        self.shared.release(Some((latency, self.epoch)));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.release(None);
        }
    }
}

impl Shared {
    /// The state, even if a thread panicked while holding it: every update is a few plain
    /// assignments, so there is no half-done change to fear, and refusing all traffic for
    /// good would be worse.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frees a slot; with the request's latency and epoch, a sample for the limit.
    fn release(&self, sample: Option<(Duration, u64)>) {
        let now = Instant::now();
        let mut state = self.lock();
        let adjustment =
            sample.and_then(|(latency, epoch)| state.limit.sample(now, latency, epoch));
        if let Some(adjustment) = adjustment {
            self.metrics.window(adjustment);
        }
        state.in_flight = state.in_flight.saturating_sub(1);
        self.dispatch(&mut state);
        self.metrics.levels(&state);
    }

    /// Hands free slots to waiters, highest priority first, while the head of the queue fits.
    /// Shares grow with priority, so when the head does not fit nobody below it does either.
    fn dispatch(&self, state: &mut State) {
        while let Some(priority) = state.queue.head() {
            if !state.fits(priority) {
                break;
            }
            let Some(waiter) = state.queue.pop(priority) else {
                break;
            };
            state.in_flight += 1;
            // A waiter leaves the queue before its receiver is dropped (see `Waiting`), so
            // this cannot fail; if it ever did, the slot must not leak.
            if waiter.send(state.limit.epoch()).is_err() {
                state.in_flight -= 1;
            }
        }
    }
}

/// A place in the queue, given back if the waiting future is dropped.
struct Waiting<'a> {
    shared: &'a Shared,
    priority: Priority,
    ticket: u64,
    rx: oneshot::Receiver<u64>,
    /// The outcome is known (granted, evicted, or left): nothing to give back on drop.
    settled: bool,
}

impl Waiting<'_> {
    /// Leaves the queue. `Some(epoch)` if a slot had been handed over meanwhile: the caller
    /// holds it now and must run the request or give it back.
    fn leave(&mut self) -> Option<u64> {
        self.settled = true;
        let mut state = self.shared.lock();
        if state.queue.remove(self.priority, self.ticket).is_some() {
            self.shared.metrics.levels(&state);
            return None;
        }
        // No longer queued: either handed a slot (sent under this same lock, so it is in
        // the channel by now) or evicted (the sender dropped).
        self.rx.try_recv().ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.settled && self.leave().is_some() {
            self.shared.release(None);
        }
    }
}

/// A decision, as the `decision` label.
#[derive(Debug, Clone, Copy)]
enum Decision {
    Admitted,
    AdmittedAfterWait,
    Shed(Shed),
}

impl Decision {
    const ALL: [Decision; 6] = [
        Self::Admitted,
        Self::AdmittedAfterWait,
        Self::Shed(Shed::QueueFull),
        Self::Shed(Shed::WaitedTooLong),
        Self::Shed(Shed::Evicted),
        Self::Shed(Shed::AtOnce),
    ];

    fn index(self) -> usize {
        match self {
            Self::Admitted => 0,
            Self::AdmittedAfterWait => 1,
            Self::Shed(Shed::QueueFull) => 2,
            Self::Shed(Shed::WaitedTooLong) => 3,
            Self::Shed(Shed::Evicted) => 4,
            Self::Shed(Shed::AtOnce) => 5,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "admitted",
            Self::AdmittedAfterWait => "admitted_after_wait",
            Self::Shed(Shed::QueueFull) => "shed_queue_full",
            Self::Shed(Shed::WaitedTooLong) => "shed_wait_timeout",
            Self::Shed(Shed::Evicted) => "shed_evicted",
            Self::Shed(Shed::AtOnce) => "shed_at_once",
        }
    }
}

/// The series, registered once: the hot path touches handles, never the registry.
#[derive(Debug)]
struct Metrics {
    limit: Gauge,
    in_flight: Gauge,
    queued: Gauge,
    window_latency: Gauge,
    baseline_latency: Gauge,
    /// By priority, then decision.
    requests: Vec<Vec<Counter>>,
}

impl Metrics {
    fn register() -> Self {
        let requests = Priority::ALL
            .iter()
            .map(|priority| {
                Decision::ALL
                    .iter()
                    .map(|decision| {
                        metrics::counter!(
                            names::LOAD_SHED_REQUESTS,
                            "priority" => priority.as_str(),
                            "decision" => decision.as_str()
                        )
                    })
                    .collect()
            })
            .collect();
        Self {
            limit: metrics::gauge!(names::LOAD_SHED_LIMIT),
            in_flight: metrics::gauge!(names::LOAD_SHED_IN_FLIGHT),
            queued: metrics::gauge!(names::LOAD_SHED_QUEUED),
            window_latency: metrics::gauge!(names::LOAD_SHED_WINDOW_LATENCY),
            baseline_latency: metrics::gauge!(names::LOAD_SHED_BASELINE_LATENCY),
            requests,
        }
    }

    fn count(&self, priority: Priority, decision: Decision) {
        self.requests[priority.index()][decision.index()].increment(1);
    }

    fn levels(&self, state: &State) {
        self.in_flight.set(state.in_flight as f64);
        self.queued.set(state.queue.len() as f64);
    }

    fn window(&self, adjustment: Adjustment) {
        self.limit.set(adjustment.in_force as f64);
        self.window_latency.set(adjustment.median.as_secs_f64());
        self.baseline_latency.set(adjustment.baseline.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    /// A limiter whose limit stays at `limit`, with `queue_size` places and `max_wait`, where
    /// every priority may queue (the queue's rules are what these tests are about).
    fn fixed(limit: usize, queue_size: usize, max_wait: Duration) -> LoadShedder {
        LoadShedder::new(&SheddingConfig {
            initial_limit: limit,
            min_limit: limit,
            max_limit: limit,
            queue_size,
            max_wait,
            lowest_priority_waits: true,
            ..SheddingConfig::default()
        })
    }

    #[tokio::test]
    async fn by_default_anonymous_lists_over_their_share_are_refused_without_waiting() {
        let shedder = LoadShedder::new(&SheddingConfig {
            initial_limit: 2,
            min_limit: 2,
            max_limit: 2,
            queue_size: 8,
            max_wait: LONG,
            ..SheddingConfig::default()
        });
        let _held = shedder.acquire(Critical).await.expect("1 of 2");
        // Half the limit (1) is the lists' room, and it is taken: refused now, not in 30 s.
        let refused = tokio::time::timeout(Duration::from_secs(5), shedder.acquire(AnonymousLists))
            .await
            .expect("answered without waiting");
        assert_eq!(refused.err(), Some(Shed::AtOnce));
        assert_eq!(shedder.queued(), 0, "nothing queued for it");
        // Reads over their share still wait for a slot.
        let _second = shedder.acquire(Critical).await.expect("2 of 2");
        let waiting = tokio::spawn({
            let shedder = shedder.clone();
            async move { shedder.acquire(Reads).await.map(Permit::finish) }
        });
        until_queued(&shedder, 1).await;
        waiting.abort();
    }

    const LONG: Duration = Duration::from_secs(30);

    /// Waits (bounded) until `n` requests are queued: spawned waiters have reached the queue.
    async fn until_queued(shedder: &LoadShedder, n: usize) {
        for _ in 0..1000 {
            if shedder.queued() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{} queued, not {n}", shedder.queued());
    }

    #[tokio::test]
    async fn each_priority_is_admitted_up_to_its_share_of_the_limit() {
        let shedder = fixed(4, 0, LONG);
        let mut held = vec![
            shedder.acquire(Critical).await.expect("1 of 4"),
            shedder.acquire(Critical).await.expect("2 of 4"),
        ];
        // Anonymous lists may fill half the limit: 2 in flight is their room.
        assert_eq!(
            shedder.acquire(AnonymousLists).await.err(),
            Some(Shed::QueueFull)
        );
        // Reads three quarters.
        held.push(shedder.acquire(Reads).await.expect("3 of 4"));
        assert_eq!(shedder.acquire(Reads).await.err(), Some(Shed::QueueFull));
        assert_eq!(
            shedder.acquire(PaidReads).await.err(),
            Some(Shed::QueueFull)
        );
        // The last slot is kept for critical requests.
        held.push(shedder.acquire(Critical).await.expect("4 of 4"));
        assert_eq!(shedder.acquire(Critical).await.err(), Some(Shed::QueueFull));
        assert_eq!(shedder.in_flight(), 4);
        held.clear();
        assert_eq!(shedder.in_flight(), 0, "dropped permits free their slots");
        assert!(shedder.acquire(AnonymousLists).await.is_ok());
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_highest_priority_waiter_first() {
        let shedder = fixed(1, 8, LONG);
        let held = shedder.acquire(Critical).await.expect("the only slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let arrivals = [AnonymousLists, Reads, AnonymousLists, Critical, PaidReads];
        for (n, priority) in arrivals.into_iter().enumerate() {
            let (waiter, tx) = (shedder.clone(), tx.clone());
            tokio::spawn(async move {
                let permit = waiter.acquire(priority).await;
                let _ = tx.send(permit.map(|_| priority));
            });
            // One at a time, so that each lane's order is the arrival order.
            until_queued(&shedder, n + 1).await;
        }
        drop(tx);
        drop(held);
        let mut served = Vec::new();
        while let Some(outcome) = rx.recv().await {
            served.push(outcome.expect("every waiter is served in time"));
        }
        assert_eq!(
            served,
            [Critical, PaidReads, Reads, AnonymousLists, AnonymousLists]
        );
        assert_eq!((shedder.in_flight(), shedder.queued()), (0, 0));
    }

    #[tokio::test]
    async fn a_full_queue_gives_the_newest_lowest_waiters_place_to_a_higher_arrival() {
        let shedder = fixed(1, 2, LONG);
        let held = shedder.acquire(Critical).await.expect("the only slot");
        let first = tokio::spawn({
            let shedder = shedder.clone();
            async move { shedder.acquire(AnonymousLists).await.map(Permit::finish) }
        });
        until_queued(&shedder, 1).await;
        let second = tokio::spawn({
            let shedder = shedder.clone();
            async move { shedder.acquire(AnonymousLists).await.map(Permit::finish) }
        });
        until_queued(&shedder, 2).await;
        let critical = tokio::spawn({
            let shedder = shedder.clone();
            async move { shedder.acquire(Critical).await.map(Permit::finish) }
        });
        assert_eq!(second.await.expect("joins"), Err(Shed::Evicted));
        // Full of a critical request and an anonymous list: another list has nobody below it.
        assert_eq!(
            shedder.acquire(AnonymousLists).await.err(),
            Some(Shed::QueueFull)
        );
        drop(held);
        assert_eq!(critical.await.expect("joins"), Ok(()));
        assert_eq!(first.await.expect("joins"), Ok(()));
        assert_eq!((shedder.in_flight(), shedder.queued()), (0, 0));
    }

    #[tokio::test]
    async fn a_waiter_is_refused_after_max_wait_and_leaves_its_place() {
        let shedder = fixed(1, 4, Duration::from_millis(20));
        let held = shedder.acquire(Critical).await.expect("the only slot");
        assert_eq!(
            shedder.acquire(Critical).await.err(),
            Some(Shed::WaitedTooLong)
        );
        assert_eq!((shedder.in_flight(), shedder.queued()), (1, 0));
        drop(held);
        assert_eq!(shedder.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue_and_no_slot_leaks() {
        let shedder = fixed(1, 4, LONG);
        let held = shedder.acquire(Critical).await.expect("the only slot");
        let waiter = tokio::spawn({
            let shedder = shedder.clone();
            async move { shedder.acquire(Reads).await.map(Permit::finish) }
        });
        until_queued(&shedder, 1).await;
        waiter.abort();
        let _ = waiter.await;
        assert_eq!((shedder.in_flight(), shedder.queued()), (1, 0));
        drop(held);
        assert_eq!(shedder.in_flight(), 0);
        let again = shedder.acquire(Reads).await.expect("the slot is free");
        again.finish();
        assert_eq!(shedder.in_flight(), 0);
    }
}
