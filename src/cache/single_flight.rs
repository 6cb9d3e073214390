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

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use tokio::sync::watch;

#[derive(Debug)]
pub struct SingleFlight<T> {
    flights: Mutex<HashMap<String, watch::Receiver<Option<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flights: Mutex::default(),
        }
    }
}

/// What joining a key's flight made of the caller.
pub enum Flight<'a, T> {
    /// Nobody was loading the key: the caller loads it and must [`Leader::finish`].
    Lead(Leader<'a, T>),
    /// Someone is: wait for their result.
    Follow(Follower<T>),
}

pub struct Leader<'a, T> {
    flights: &'a SingleFlight<T>,
    key: String,
    result: watch::Sender<Option<T>>,
}

pub struct Follower<T>(watch::Receiver<Option<T>>);

impl<T: Clone> SingleFlight<T> {
    /// Joins the flight of `key`, leading it if there is none.
    pub fn join(&self, key: String) -> Flight<'_, T> {
        let mut flights = self.lock();
        if let Some(result) = flights.get(&key) {
            return Flight::Follow(Follower(result.clone()));
        }
        let (result, receiver) = watch::channel(None);
        flights.insert(key.clone(), receiver);
        Flight::Lead(Leader {
            flights: self,
            key,
            result,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<Option<T>>>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> Leader<'_, T> {
    /// Hands `value` to every follower, present and still arriving, and ends the flight.
    pub fn finish(self, value: T) {
        // Sent before the flight leaves the map (in `drop`): a follower that joins in
        // between finds the value already there.
        self.result.send_replace(Some(value));
    }
}

impl<T> Drop for Leader<'_, T> {
    /// Ends the flight, finished or not: followers of an unfinished one see the channel
    /// close and load for themselves.
    fn drop(&mut self) {
        let mut flights = self
            .flights
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if flights
            .get(&self.key)
            .is_some_and(|ours| ours.same_channel(&self.result.subscribe()))
        {
            flights.remove(&self.key);
        }
    }
}

impl<T: Clone> Follower<T> {
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
    async fn load_once(flights: &SingleFlight<u32>, loads: &AtomicU32) -> Option<u32> {
        match flights.join("k".into()) {
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
        assert!(flights.lock().is_empty(), "finished flights are forgotten");
    }

    #[tokio::test]
    async fn followers_of_a_leader_that_went_away_are_told_and_the_key_is_free_again() {
        let flights = SingleFlight::<u32>::default();
        let Flight::Lead(leader) = flights.join("k".into()) else {
            panic!("the first caller leads");
        };
        let Flight::Follow(follower) = flights.join("k".into()) else {
            panic!("the second caller follows");
        };
        drop(leader);
        assert_eq!(follower.wait().await, None, "no value, no endless wait");
        assert!(
            matches!(flights.join("k".into()), Flight::Lead(_)),
            "the next caller leads a new flight"
        );
    }
}
