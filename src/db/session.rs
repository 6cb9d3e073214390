//! A request's session with the data layer: the consistency it demands, the shards it wrote,
//! and the commit positions already read for them.
//!
//! Built once per request by the transport (from `X-Consistency-Token`) and passed down
//! through the operations and the cache to every routing decision. It is the data layer's
//! own state: what the request may read (a replica only once it has replayed what the token
//! names), and what the response's token must cover (every shard it wrote). The learner's
//! debug trace (`X-Db-Route`, `X-Cache`) is not part of it: it is the transport's, attached
//! with [`Session::traced`] and reported into through [`DebugTrace`]. The request's
//! [`ServerTiming`] is carried here too, always: the data layer and the cache add their time
//! to it where they already measure it, and the transport renders it as `Server-Timing`.
//!
//! There is no `Default`: a request that reaches the data layer without the session its
//! transport built would silently lose read-your-writes, so building one is always explicit
//! ([`Session::new`] for requests, [`Session::background`] for the service's own work).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use super::consistency::{ConsistencyToken, Lsn};
use crate::telemetry::{DebugTrace, ServerTiming};

#[derive(Debug, Clone)]
pub struct Session {
    /// What reads must see. A derived session (a fenced cache fill) raises it.
    required: Arc<ConsistencyToken>,
    /// Shared by every session derived from the same request.
    shared: Arc<Shared>,
    /// Where this session's reads were answered, per shard, when asked for with
    /// [`Session::recording`] (the staleness auditor needs to know which replica served a
    /// value); `None` otherwise, which costs nothing.
    routes: Option<Arc<Mutex<BTreeMap<u16, Served>>>>,
}

/// Which server answered a read of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Primary,
    /// The replica at this index in the shard's list.
    Replica(usize),
}

#[derive(Default)]
struct Shared {
    written: Mutex<BTreeSet<u16>>,
    /// Commit positions already read for written shards, so the cache's fences and the
    /// response's token share one query per shard (a new write on the shard forgets it).
    commit_lsns: Mutex<BTreeMap<u16, Lsn>>,
    trace: Option<Arc<dyn DebugTrace>>,
    /// Atomics in this same allocation: no second one per request.
    timing: ServerTiming,
    /// The staleness auditor's own reads: always on the primary, counted as `op="audit"`.
    audit: bool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("written", &*lock(&self.written))
            .field("traced", &self.trace.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A request's session: it must read at least what `required` names.
    pub fn new(required: ConsistencyToken) -> Self {
        Self::build(required, None)
    }

    /// The service's own work (the directory repair pass): no client token, nothing to show.
    pub fn background() -> Self {
        Self::new(ConsistencyToken::default())
    }

    /// The staleness auditor's reads: every shard read on its primary (what a served value
    /// is compared with), counted apart from the requests' reads (`op="audit"`).
    pub fn audit() -> Self {
        let mut session = Self::background();
        if let Some(shared) = Arc::get_mut(&mut session.shared) {
            shared.audit = true;
        }
        session
    }

    /// Whether this is the auditor's session (see [`Session::audit`]).
    pub(crate) fn is_audit(&self) -> bool {
        self.shared.audit
    }

    /// The same request, also recording which server answered its reads of each shard
    /// (read back with [`Session::served_by`]). Sessions derived from it record too.
    pub fn recording(&self) -> Self {
        Self {
            routes: Some(Arc::default()),
            ..self.clone()
        }
    }

    /// The server that last answered a read of `shard` in this recording session.
    pub fn served_by(&self, shard: u16) -> Option<Served> {
        let routes = self.routes.as_ref()?;
        lock(routes).get(&shard).copied()
    }

    pub(crate) fn record_served(&self, shard: u16, served: Served) {
        if let Some(routes) = &self.routes {
            lock(routes).insert(shard, served);
        }
    }

    /// This session, reporting where its statements go and what the cache did into `trace`.
    pub fn traced(required: ConsistencyToken, trace: Arc<dyn DebugTrace>) -> Self {
        Self::build(required, Some(trace))
    }

    fn build(required: ConsistencyToken, trace: Option<Arc<dyn DebugTrace>>) -> Self {
        Self {
            required: Arc::new(required),
            shared: Arc::new(Shared {
                trace,
                ..Shared::default()
            }),
            routes: None,
        }
    }

    /// The same request, reading at least `lsn` on `shard` (a cache fill fenced by the last
    /// invalidation): writes and the trace still land in this request's record.
    pub fn at_least(&self, shard: u16, lsn: Lsn) -> Self {
        if self.required.get(shard).is_some_and(|have| have >= lsn) {
            return self.clone();
        }
        let mut required = (*self.required).clone();
        required.require(shard, lsn);
        Self {
            required: Arc::new(required),
            shared: self.shared.clone(),
            routes: self.routes.clone(),
        }
    }

    /// Where the request's debug trace is, when it has one.
    pub fn trace(&self) -> Option<&dyn DebugTrace> {
        self.shared.trace.as_deref()
    }

    /// Where this request's time goes (`Server-Timing`), shared with derived sessions.
    pub fn timing(&self) -> &ServerTiming {
        &self.shared.timing
    }

    /// The LSN a read of `shard` must see, from the client's token (and any fence).
    pub fn required(&self, shard: u16) -> Option<Lsn> {
        self.required.get(shard)
    }

    /// The token the client sent.
    pub fn required_token(&self) -> &ConsistencyToken {
        &self.required
    }

    pub(crate) fn mark_written(&self, shard: u16) {
        lock(&self.shared.written).insert(shard);
        lock(&self.shared.commit_lsns).remove(&shard);
    }

    /// The commit position read for `shard` since this request's last write there.
    pub(crate) fn known_commit_lsn(&self, shard: u16) -> Option<Lsn> {
        lock(&self.shared.commit_lsns).get(&shard).copied()
    }

    pub(crate) fn remember_commit_lsn(&self, shard: u16, lsn: Lsn) {
        lock(&self.shared.commit_lsns).insert(shard, lsn);
    }

    /// Whether this request wrote to `shard`: its later reads of that shard go to the primary.
    pub(crate) fn wrote(&self, shard: u16) -> bool {
        lock(&self.shared.written).contains(&shard)
    }

    pub fn written_shards(&self) -> Vec<u16> {
        lock(&self.shared.written).iter().copied().collect()
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain set; the data
/// is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_commit_position_lasts_until_the_next_write_on_its_shard() {
        let session = Session::background();
        session.mark_written(0);
        session.remember_commit_lsn(0, Lsn(10));
        let fenced = session.at_least(1, Lsn(5));
        assert_eq!(
            fenced.known_commit_lsn(0),
            Some(Lsn(10)),
            "shared with derived sessions"
        );
        assert_eq!(fenced.required(1), Some(Lsn(5)));
        assert_eq!(session.required(1), None, "the original is not raised");
        session.mark_written(1);
        assert_eq!(
            session.known_commit_lsn(0),
            Some(Lsn(10)),
            "another shard's write keeps it"
        );
        session.mark_written(0);
        assert_eq!(
            session.known_commit_lsn(0),
            None,
            "a new write needs a new position"
        );
    }
}
