//! Single flight: concurrent misses on one key share one load.
//!
//! Without it, a hot key that expires sends every request in flight to the database at once
//! (a cache stampede): N misses, N identical queries, at the worst moment. Here the first
//! miss loads and the others wait for its result. If the loading request is cancelled (its
//! client went away) a waiter takes over, so a result is never lost to a cancellation.
//!
//! Per process: instances each load once, so a fleet of k instances costs at most k loads
//! per key per expiry (a Redis lease would make it one, at a round trip per miss).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::sync::OnceCell;

#[derive(Debug)]
pub struct SingleFlight<T> {
    flights: Mutex<HashMap<String, Arc<OnceCell<T>>>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            flights: Mutex::default(),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    /// Runs `load` unless a load for `key` is already in flight, in which case waits for its
    /// result instead. Returns the result and whether this call did the load.
    pub async fn run<F, Fut>(&self, key: &str, load: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = self
            .lock()
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let mut loaded = false;
        let result = cell
            .get_or_init(|| {
                loaded = true;
                load()
            })
            .await
            .clone();
        if loaded {
            let mut flights = self.lock();
            if flights.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                flights.remove(key);
            }
        }
        (result, loaded)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<T>>>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_for_one_key_share_one_load() {
        let flights = Arc::new(SingleFlight::<u32>::default());
        let loads = Arc::new(AtomicU32::new(0));
        let calls = (0..50).map(|_| {
            let (flights, loads) = (flights.clone(), loads.clone());
            tokio::spawn(async move {
                flights
                    .run("k", || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        7
                    })
                    .await
                    .0
            })
        });
        for call in futures_util::future::join_all(calls).await {
            assert_eq!(call.expect("joins"), 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(flights.lock().is_empty(), "finished flights are forgotten");
    }
}
