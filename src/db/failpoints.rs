//! Crash injection for tests (the `failpoints` feature; compiled out without it).
//!
//! A test arms a named point; when a saga reaches it, the request panics there, which skips
//! every later step and every compensating step exactly as a process dying at that point
//! would (open transactions roll back when their connections are dropped). The panic is
//! caught by the HTTP layer like any other; the point disarms after firing once.

use std::{collections::HashSet, sync::Mutex};

#[derive(Debug, Default)]
pub struct FailPoints {
    armed: Mutex<HashSet<&'static str>>,
}

impl FailPoints {
    /// Arms `name` (e.g. `"register:reserved"`) to fire once.
    pub fn arm(&self, name: &'static str) {
        self.armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name);
    }

    pub(crate) fn hit(&self, name: &'static str) {
        let fire = self
            .armed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if fire {
            panic!("fail point {name}: simulated crash");
        }
    }
}
