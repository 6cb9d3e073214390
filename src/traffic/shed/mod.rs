//! Load shedding: a per-instance limit on requests in flight that adapts to latency, with
//! priorities, so that under overload the service refuses its least important work quickly
//! instead of serving everything slowly.
//!
//! **Why a limit on concurrency.** Past its capacity a server does not get faster by taking
//! more work at once: the extra requests queue inside it (for cores, pool connections,
//! locks), every request's latency grows with the queue, clients time out and retry, and the
//! service ends up busy with work nobody waits for any more. Bounding requests in flight
//! keeps that queue outside, where it is short and where the service chooses who waits.
//!
//! **Why not a fixed limit.** The right number is capacity times latency (Little's law), and
//! both move: a cache that warms up, a shard that fails over to a slow primary, a deploy that
//! makes the feed twice as costly, a noisy neighbour on the host. A limit tuned for one day
//! is too high (latency collapses) or too low (cores idle while requests are refused) on the
//! next. [`limit::AdaptiveLimit`] measures instead: the limit moves by how far the recent
//! median latency drifts from its measured minimum, as Netflix's concurrency-limits and
//! Envoy's adaptive-concurrency filter do. What the adaptation trades: it reacts within a
//! sample window (100 ms by default) rather than at once, it treats *any* latency rise as
//! overload (a slow dependency shrinks the limit too, which is then often what one wants),
//! and a request mix that turns costly for good holds the limit low until the baseline
//! window forgets the cheaper past.
//!
//! **Priorities.** Each request comes with a [`Priority`] (chosen by the HTTP layer). A
//! priority may fill only its share of the limit (anonymous lists half, critical requests
//! all), and the waiting line is one FIFO per priority, served highest first ([`queue`]).
//! So as load grows, anonymous lists are refused first, then plain reads, then paid reads,
//! while logins and writes keep their slots.
//!
//! **Bounded waiting.** A request with no free slot waits, but in a queue of
//! `shedding.queue_size` places and for at most `shedding.max_wait`: a short burst is
//! absorbed, a lasting overload is refused in microseconds (a 503 with `Retry-After`) rather
//! than after a timeout. A full queue refuses its newest lowest-priority waiter to make room
//! for a higher arrival.
//!
//! **Written here, not taken from a crate.** `tower::limit::ConcurrencyLimit` and
//! `tower::load_shed` are fixed limits; tower-acc (AIMD, Gradient2, Vegas) and
//! congestion-limiter adapt the limit but have one class of request and no bounded queue;
//! little-loadshedder targets an average latency with one FIFO queue. None orders requests
//! by priority or reserves room for the important ones, which is the point here; the limit
//! and the queue are ~300 lines with their tests, on a mutex and tokio's oneshot channel.
//!
//! Cost per request: one uncontended mutex lock on admission and one on release (tens of
//! nanoseconds), a latency push into the window, and a median (a selection over at most
//! 1,024 values) once per window.

mod limit;
mod priority;
mod queue;
mod shedder;

pub use priority::Priority;
pub use shedder::{LoadShedder, Permit, Shed};
