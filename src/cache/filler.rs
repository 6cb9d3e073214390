//! The background filler: fills leave the request's path and travel together.
//!
//! A miss used to answer only after its fill's round trip to Redis. The fill is an
//! optimisation (the next miss reads the database again without it), so the request hands it
//! here and answers at once; one task per [`Cache`](super::Cache) sends every fill queued
//! meanwhile in one script call. Under load that is one round trip for many misses instead
//! of one each; idle, a fill lands a moment after its response.
//!
//! What keeps this as safe as a fill on the request's path:
//! - **Versions.** A queued fill carries the version its lookup saw, and the script stores it
//!   only if that is still the entry's version: a write invalidated while the fill waited
//!   makes the fill a no-op, however late it runs.
//! - **The flight stays open** (its leader travels with the fill and is dropped once the
//!   script has answered): a miss on the entry meanwhile follows the flight and takes its
//!   value without a database read, and a flight's end still means its fill has been tried,
//!   which is what the leaders' second look relies on (see `read.rs`).
//! - **L1** (two-tier): the request inserts the value at once (so the next read here needs
//!   no round trip), guarded against an invalidation that raced it (see `l1.rs`); a fill
//!   the script refuses takes it out again.
//!
//! The queue is bounded: when it is full the fill is dropped (its flight ends), never waited
//! for. A dropped fill costs the next miss a database read, nothing else.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{
    Loaded,
    keys::Key,
    l1::L1,
    redis_tier::{Fill, RedisTier},
    single_flight::Leader,
};
use crate::telemetry::{ServerTiming, names};

/// Fills waiting for the filler; past this, fills are dropped. An entry can be a whole page
/// of posts: this bounds the memory the queue holds as much as the rate it absorbs (the
/// filler clears tens of thousands of fills a second).
const QUEUE_BOUND: usize = 1024;
/// Fills sent in one script call at most (a bound on the script's run time in Redis, which
/// blocks every other client meanwhile, and on the size of one call).
const BATCH: usize = 64;

/// One entry to fill, and the flight that loaded it (ended when the fill has been tried).
pub(super) struct FillJob {
    pub key: Key,
    /// The version the lookup saw.
    pub version: String,
    pub json: Arc<[u8]>,
    pub ttl: Duration,
    pub leader: Leader<Loaded>,
}

/// What the task needs: the queue's receiving end, Redis, and the L1 (two-tier).
type Task = (mpsc::Receiver<FillJob>, Arc<RedisTier>, Option<L1>);

/// The sending side, owned by the cache; the task starts with the first fill and stops when
/// the cache is dropped (the queue closes).
pub(super) struct Filler {
    queue: mpsc::Sender<FillJob>,
    /// The task's half until it is started, with what it needs.
    start: Mutex<Option<Task>>,
}

impl std::fmt::Debug for Filler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filler")
            .field("queued", &(QUEUE_BOUND - self.queue.capacity()))
            .finish()
    }
}

impl Filler {
    pub fn new(redis: Arc<RedisTier>, l1: Option<L1>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_BOUND);
        Self {
            queue,
            start: Mutex::new(Some((receiver, redis, l1))),
        }
    }

    /// Queues `jobs` without waiting; those that do not fit are dropped. Must run inside the
    /// Tokio runtime (the first call starts the task there).
    pub fn submit(&self, jobs: impl IntoIterator<Item = FillJob>) {
        let start = self.start.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((receiver, redis, l1)) = start {
            tokio::spawn(run(receiver, redis, l1));
        }
        for job in jobs {
            if self.queue.try_send(job).is_err() {
                // Full (or, impossibly while the cache lives, closed): the job is dropped
                // with the error, and its flight ends.
                count("fill_dropped");
            }
        }
    }
}

async fn run(queue: mpsc::Receiver<FillJob>, redis: Arc<RedisTier>, l1: Option<L1>) {
    // Counted in no request: nobody waits for it.
    fill_batches(queue, &redis, l1.as_ref(), &ServerTiming::default()).await;
}

/// Until the queue closes: takes every fill queued (up to [`BATCH`]), sends them in one
/// script call, then ends their flights.
async fn fill_batches(
    mut queue: mpsc::Receiver<FillJob>,
    redis: &RedisTier,
    l1: Option<&L1>,
    timing: &ServerTiming,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let stored = {
            let fills: Vec<Fill<'_>> = batch
                .iter()
                .map(|job| Fill {
                    key: &job.key,
                    version: &job.version,
                    json: &job.json,
                    ttl: job.ttl,
                })
                .collect();
            redis.fill(timing, &fills).await
        };
        for (job, stored) in batch.drain(..).zip(stored) {
            if stored {
                count("fill");
            } else if let Some(l1) = l1 {
                // Refused: the version moved (or Redis failed). The request put the value in
                // the L1 already; an invalidation applied here took it out, but one from
                // another instance reaches this L1 only by a message that may be lost.
                l1.remove(job.key.as_str()).await;
            }
            // The fill has been tried: the flight ends.
            drop(job.leader);
        }
    }
}

fn count(result: &'static str) {
    metrics::counter!(names::CACHE_REQUESTS, "tier" => "redis", "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::{
        cache::{
            redis_tier::{Invalidation, Lookup},
            single_flight::{Flight, SingleFlight},
        },
        config::{CacheConfig, CacheStrategy},
        telemetry::Phase,
    };

    /// The shared test stack's Redis (`scripts/stack env`), under a prefix of this run's own.
    fn config() -> CacheConfig {
        let defaults = CacheConfig::default();
        CacheConfig {
            strategy: CacheStrategy::TwoTier,
            redis_url: std::env::var("SCALABLE_API_STACK_REDIS")
                .map_or(defaults.redis_url.clone(), Into::into),
            key_prefix: format!(
                "filler-test-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |t| t.as_nanos())
            ),
            command_timeout: Duration::from_secs(2),
            ..defaults
        }
    }

    async fn missing_version(redis: &RedisTier, key: &Key) -> String {
        match redis
            .lookup(&ServerTiming::default(), &[key])
            .await
            .as_deref()
        {
            Ok([Lookup::Miss { version, .. }]) => version.clone(),
            other => panic!("expected a miss on {key}, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn queued_fills_go_in_one_call_and_one_whose_version_moved_meanwhile_is_dropped() {
        // Arrange: two entries missed and loaded, both values handed to their flights and put
        // in the L1 (as a request does), both fills queued with the versions looked up.
        let config = config();
        let redis = RedisTier::new(&config).expect("redis tier");
        let l1 = L1::new(&config);
        let flights = Arc::new(SingleFlight::<Loaded>::default());
        let (queue, receiver) = mpsc::channel(8);
        let kept = Key::user(&config.key_prefix, 1, 0);
        let raced = Key::user(&config.key_prefix, 2, 0);
        let mut flown = Vec::new();
        for key in [&kept, &raced] {
            let looked_up = Instant::now();
            let version = missing_version(&redis, key).await;
            let Flight::Lead(leader) = flights.join(format!("{key}@{version}"), key.as_str())
            else {
                panic!("nobody else flies {key}");
            };
            flown.push(format!("{key}@{version}"));
            let json: Arc<[u8]> = Arc::from(&b"\"loaded\""[..]);
            leader.finish(Ok(json.clone()));
            l1.insert(
                key.as_str(),
                Some("loaded".to_owned()),
                json.len(),
                looked_up,
            )
            .await;
            let job = FillJob {
                key: key.clone(),
                version,
                json,
                ttl: Duration::from_secs(60),
                leader,
            };
            assert!(queue.try_send(job).is_ok(), "room in the queue");
        }

        // Act: one entry is invalidated (on another instance: this L1 hears nothing) while
        // its fill waits in the queue; then the filler runs.
        redis
            .invalidate(
                &ServerTiming::default(),
                Invalidation {
                    keys: vec![raced.clone()],
                    shard: 0,
                    lsn: 1,
                    message: String::new(),
                },
            )
            .await;
        drop(queue);
        let timing = ServerTiming::default();
        fill_batches(receiver, &redis, Some(&l1), &timing).await;

        // Assert
        assert_eq!(
            timing.get(Phase::Cache).0,
            1,
            "both fills in one round trip"
        );
        let found = redis
            .lookup(&ServerTiming::default(), &[&kept, &raced])
            .await
            .expect("lookup");
        assert!(
            matches!(&found[..], [Lookup::Hit(json), Lookup::Miss { .. }] if json == b"\"loaded\""),
            "the current version filled, the moved one refused: {found:?}"
        );
        assert!(
            l1.get::<String>(kept.as_str()).await.is_some(),
            "kept in the L1"
        );
        assert!(
            l1.get::<String>(raced.as_str()).await.is_none(),
            "a refused fill leaves the L1 too"
        );
        for flight in flown {
            assert!(
                matches!(flights.join(flight.clone(), ""), Flight::Lead(_)),
                "{flight} ended once its fill was tried"
            );
        }
    }
}
