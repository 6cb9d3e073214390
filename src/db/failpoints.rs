//! Crash and pause injection for tests (the `failpoints` feature; compiled out without it).
//!
//! A test arms a named point; when a saga reaches it, the request panics there, which skips
//! every later step and every compensating step exactly as a process dying at that point
//! would (open transactions roll back when their connections are dropped). The panic is
//! caught by the HTTP layer like any other; the point disarms after firing once.
//!
//! A test can instead [pause](FailPoints::pause) a point: the next task to reach it waits
//! there until the test releases it, so the test can act (run a repair pass, time the
//! request out, write behind its back) at exactly that step. A pause also fires once.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct FailPoints {
    armed: Mutex<HashSet<&'static str>>,
    paused: Mutex<HashMap<&'static str, Arc<Pause>>>,
}

/// A paused point: [`Pause::reached`] once a task waits there, [`Pause::release`] lets it go.
#[derive(Debug, Default)]
pub struct Pause {
    reached: Notify,
    released: Notify,
}

impl Pause {
    /// Waits until a task has reached the point (at once if one already has).
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the waiting task go on (or the next one to arrive pass at once).
    pub fn release(&self) {
        self.released.notify_one();
    }
}

impl FailPoints {
    /// Arms `name` (e.g. `"register:reserved"`) to fire once.
    pub fn arm(&self, name: &'static str) {
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
    }

    /// Pauses the next task that reaches `name` until the returned handle releases it.
    pub fn pause(&self, name: &'static str) -> Arc<Pause> {
        let pause = Arc::new(Pause::default());
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, pause.clone());
        pause
    }

    pub(crate) async fn hit(&self, name: &'static str) {
        let fire = self
            .armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if fire {
            panic!("fail point {name}: simulated crash");
        }
        let pause = self
            .paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(pause) = pause {
            // notify_one keeps a permit when nobody waits yet: neither side can miss the other.
            pause.reached.notify_one();
            pause.released.notified().await;
        }
    }
}
