//! Single flight: concurrent misses on one key share one load.
//!
//! Without it, a hot key that expires sends every request in flight to the database at once
//! (a cache stampede): N misses, N identical queries, at the worst moment. Here the first
//! miss *leads* the key's flight and the others *follow* it, waiting for its result.
//!
//! Leadership is per key but a caller may lead many keys at once: a batch read leads every
//! key nobody else is loading, loads them all with one statement per shard, and finishes each
//! flight; a single read of one of those keys meanwhile follows the batch's flight. If a
//! leader goes away without finishing (its request was cancelled), its followers are told
//! and load for themselves, so a result is never waited for in vain.
//!
//! Per process: instances each load once, so a fleet of k instances costs at most k loads
//! per key per expiry (a Redis lease would make it one, at a round trip per miss).
//!
//! A flight has a value as soon as its leader hands it over ([`Leader::finish`]), but ends
//! only when the leader is dropped: the cache keeps a leader until the value's fill has
//! reached Redis, so a miss in between follows the flight and takes its value at once.
//!
//! # When flights ended
//!
//! A leader may need to know whether a flight of its entry ended between its own lookup and
//! its joining (that flight's fill is then in Redis, and one more lookup finds it). The map
//! remembers when a flight of each entry last ended, in a fixed table of instants indexed by
//! a keyed hash of the entry's name: bounded memory whatever keys requests make up. Entries
//! that share a slot share the latest instant, so a collision can only make a leader look
//! again needlessly (a round trip), never skip a look it needed.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use tokio::sync::watch;

/// Slots of the table of end instants: 32 KiB.
const ENDED_SLOTS: usize = 4096;

#[derive(Debug)]
pub struct SingleFlight<T> {
    flights: Mutex<HashMap<String, watch::Receiver<Option<T>>>>,
    /// Per slot, when a flight of an entry hashed there last ended: nanoseconds since
    /// `epoch`, plus one (0: never; so `ended > since` means ended at or after `since`).
    ended: Box<[AtomicU64]>,
    epoch: Instant,
    slots: RandomState,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flights: Mutex::default(),
            ended: (0..ENDED_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            slots: RandomState::new(),
        }
    }
}

/// What joining a key's flight made of the caller.
pub enum Flight<T> {
    /// Nobody was loading the key: the caller loads it and must [`Leader::finish`].
    Lead(Leader<T>),
    /// Someone is: wait for their result.
    Follow(Follower<T>),
}

pub struct Leader<T> {
    flights: Arc<SingleFlight<T>>,
    key: String,
    /// The slot of the entry's end instant.
    slot: usize,
    result: watch::Sender<Option<T>>,
}

pub struct Follower<T>(watch::Receiver<Option<T>>);

impl<T: Clone> SingleFlight<T> {
    /// Joins the flight of `key`, leading it if there is none. `entry` names what the flight
    /// loads (flights of one entry under different versions share it): see
    /// [`Leader::ended_since`].
    pub fn join(self: &Arc<Self>, key: String, entry: &str) -> Flight<T> {
        let mut flights = self.lock();
        if let Some(result) = flights.get(&key) {
            return Flight::Follow(Follower(result.clone()));
        }
        let (result, receiver) = watch::channel(None);
        flights.insert(key.clone(), receiver);
        drop(flights);
        Flight::Lead(Leader {
            flights: self.clone(),
            key,
            slot: self.slots.hash_one(entry) as usize % ENDED_SLOTS,
            result,
        })
    }

    /// Flights in progress (for the `single_flight` gauge): each ends when its leader drops,
    /// so a count that only grows is a leaked leader.
    pub fn in_flight(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<Option<T>>>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> Leader<T> {
    /// Hands `value` to every follower, present and still arriving until the flight ends
    /// (when this leader is dropped).
    pub fn finish(&self, value: T) {
        self.result.send_replace(Some(value));
    }

    /// Whether a flight of this leader's entry (or of one sharing its slot) ended at or after
    /// `instant`. Known once the caller leads: a flight that ended before the join recorded
    /// its end before leaving the map, under the lock the join then took.
    pub fn ended_since(&self, instant: Instant) -> bool {
        let ended = self
            .flights
            .ended
            .get(self.slot)
            .map_or(u64::MAX, |ended| ended.load(Ordering::Acquire));
        ended > self.flights.nanos_since_epoch(instant)
    }
}

impl<T> SingleFlight<T> {
    fn nanos_since_epoch(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl<T> Drop for Leader<T> {
    /// Ends the flight, finished or not: followers of an unfinished one see the channel
    /// close and load for themselves. The end instant is recorded first, under the lock.
    fn drop(&mut self) {
        let ended = self
            .flights
            .nanos_since_epoch(Instant::now())
            .saturating_add(1);
        let mut flights = self
            .flights
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = self.flights.ended.get(self.slot) {
            slot.fetch_max(ended, Ordering::AcqRel);
        }
        if flights
            .get(&self.key)
            .is_some_and(|ours| ours.same_channel(&self.result.subscribe()))
        {
            flights.remove(&self.key);
        }
    }
}

impl<T: Clone> Follower<T> {
    /// Whether the leader has handed its value over already: waiting costs nothing.
    pub fn has_value(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// The leader's value; `None` if the leader went away without one.
    pub async fn wait(mut self) -> Option<T> {
        self.0
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|value| value.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    /// The single-key use: lead and load, or follow.
    async fn load_once(flights: &Arc<SingleFlight<u32>>, loads: &AtomicU32) -> Option<u32> {
        match flights.join("k".into(), "k") {
            Flight::Lead(leader) => {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                leader.finish(7);
                Some(7)
            }
            Flight::Follow(follower) => follower.wait().await,
        }
    }

    #[tokio::test]
    async fn concurrent_calls_for_one_key_share_one_load() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let loads = Arc::new(AtomicU32::new(0));
        let calls = (0..50).map(|_| {
            let (flights, loads) = (flights.clone(), loads.clone());
            tokio::spawn(async move { load_once(&flights, &loads).await })
        });
        for call in futures_util::future::join_all(calls).await {
            assert_eq!(call.expect("joins"), Some(7));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0, "finished flights are forgotten");
    }

    #[tokio::test]
    async fn followers_of_a_leader_that_went_away_are_told_and_the_key_is_free_again() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let Flight::Lead(leader) = flights.join("k".into(), "k") else {
            panic!("the first caller leads");
        };
        let Flight::Follow(follower) = flights.join("k".into(), "k") else {
            panic!("the second caller follows");
        };
        drop(leader);
        assert_eq!(follower.wait().await, None, "no value, no endless wait");
        assert!(
            matches!(flights.join("k".into(), "k"), Flight::Lead(_)),
            "the next caller leads a new flight"
        );
    }

    fn lead(flights: &Arc<SingleFlight<u32>>, key: &str, entry: &str) -> Leader<u32> {
        match flights.join(key.into(), entry) {
            Flight::Lead(leader) => leader,
            Flight::Follow(_) => panic!("nobody else flies {key}"),
        }
    }

    #[test]
    fn a_finished_flight_serves_latecomers_at_once_until_its_leader_is_dropped() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let leader = lead(&flights, "k@1", "k");
        leader.finish(7);
        let Flight::Follow(follower) = flights.join("k@1".into(), "k") else {
            panic!("the flight goes on after its value");
        };
        assert!(follower.has_value(), "a latecomer need not wait");
        drop(leader);
        assert!(matches!(flights.join("k@1".into(), "k"), Flight::Lead(_)));
    }

    #[test]
    fn a_leader_knows_whether_a_flight_of_its_entry_ended_since_an_instant() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let before_all = Instant::now();
        let first = lead(&flights, "k@1", "k");
        let looked_up = Instant::now();
        let second = lead(&flights, "k@2", "k");
        assert!(
            !second.ended_since(before_all),
            "no flight of the entry has ended yet"
        );

        drop(first);
        assert!(
            second.ended_since(looked_up),
            "one ended after the instant: worth a second look"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
        let after = Instant::now();
        assert!(
            !second.ended_since(after),
            "none ended after this later instant"
        );
        assert!(
            !lead(&flights, "other@1", "other").ended_since(before_all)
                || flights.slots.hash_one("other") as usize % ENDED_SLOTS
                    == flights.slots.hash_one("k") as usize % ENDED_SLOTS,
            "another entry's flights do not count (unless it shares the slot)"
        );
    }
}
