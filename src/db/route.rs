//! Where a statement went, and the request-scoped state of routing.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use super::consistency::{ConsistencyToken, Lsn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// One routing decision: which shard, which role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub shard: u16,
    pub role: Role,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard={};role={}", self.shard, self.role.as_str())
    }
}

/// The request's view of the data layer: the consistency it demands (the token it sent),
/// the shards it wrote (whose LSNs go into the token it gets back), and, when asked for
/// (the dev-profile `X-Db-Route` header), the routes its statements took.
#[derive(Debug, Clone, Default)]
pub struct Scope(Arc<ScopeState>);

#[derive(Debug, Default)]
struct ScopeState {
    required: ConsistencyToken,
    written: Arc<Mutex<BTreeSet<u16>>>,
    /// Commit positions already read for written shards, so the cache's fences and the
    /// response's token share one query per shard (a new write on the shard forgets it).
    commit_lsns: Arc<Mutex<BTreeMap<u16, Lsn>>>,
    routes: Option<Arc<Mutex<Vec<Route>>>>,
    /// Cache outcomes (`hit`, `miss`, `bypass`) for the `X-Cache` header.
    cache: Option<Arc<Mutex<Vec<&'static str>>>>,
}

impl Scope {
    /// A scope that must read at least what `required` names; `record_routes` keeps the
    /// routes for the debug header (production leaves it off and pays nothing).
    pub fn new(required: ConsistencyToken, record_routes: bool) -> Self {
        Self(Arc::new(ScopeState {
            required,
            written: Arc::default(),
            commit_lsns: Arc::default(),
            routes: record_routes.then(Arc::default),
            cache: record_routes.then(Arc::default),
        }))
    }

    /// The same request, reading at least `lsn` on `shard` (a cache fill fenced by the last
    /// invalidation): routes, writes and cache outcomes still land in this request's record.
    pub(crate) fn at_least(&self, shard: u16, lsn: Lsn) -> Self {
        let mut required = self.0.required.clone();
        required.require(shard, lsn);
        Self(Arc::new(ScopeState {
            required,
            written: self.0.written.clone(),
            commit_lsns: self.0.commit_lsns.clone(),
            routes: self.0.routes.clone(),
            cache: self.0.cache.clone(),
        }))
    }

    /// Records a cache outcome for the debug header (when recording).
    pub fn record_cache(&self, outcome: &'static str) {
        if let Some(cache) = &self.0.cache {
            let mut outcomes = lock(cache);
            if !outcomes.contains(&outcome) {
                outcomes.push(outcome);
            }
        }
    }

    /// Cache outcomes so far (empty unless recording).
    pub fn cache_outcomes(&self) -> Vec<&'static str> {
        self.0
            .cache
            .as_ref()
            .map(|c| lock(c).clone())
            .unwrap_or_default()
    }

    pub(crate) fn record(&self, shard: u16, role: Role) {
        if let Some(routes) = &self.0.routes {
            let mut routes = lock(routes);
            let route = Route { shard, role };
            if !routes.contains(&route) {
                routes.push(route);
            }
        }
    }

    /// Distinct routes taken so far, in first-use order (empty unless recording).
    pub fn routes(&self) -> Vec<Route> {
        self.0
            .routes
            .as_ref()
            .map(|r| lock(r).clone())
            .unwrap_or_default()
    }

    /// The LSN a read of `shard` must see, from the client's token.
    pub(crate) fn required(&self, shard: u16) -> Option<Lsn> {
        self.0.required.get(shard)
    }

    /// The token the client sent.
    pub fn required_token(&self) -> &ConsistencyToken {
        &self.0.required
    }

    pub(crate) fn mark_written(&self, shard: u16) {
        lock(&self.0.written).insert(shard);
        lock(&self.0.commit_lsns).remove(&shard);
    }

    /// The commit position read for `shard` since this request's last write there.
    pub(crate) fn known_commit_lsn(&self, shard: u16) -> Option<Lsn> {
        lock(&self.0.commit_lsns).get(&shard).copied()
    }

    pub(crate) fn remember_commit_lsn(&self, shard: u16, lsn: Lsn) {
        lock(&self.0.commit_lsns).insert(shard, lsn);
    }

    /// Whether this request wrote to `shard`: its later reads of that shard go to the primary.
    pub(crate) fn wrote(&self, shard: u16) -> bool {
        lock(&self.0.written).contains(&shard)
    }

    pub fn written_shards(&self) -> Vec<u16> {
        lock(&self.0.written).iter().copied().collect()
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain list; the data
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
        let scope = Scope::new(ConsistencyToken::default(), false);
        scope.mark_written(0);
        scope.remember_commit_lsn(0, Lsn(10));
        let fenced = scope.at_least(1, Lsn(5));
        assert_eq!(
            fenced.known_commit_lsn(0),
            Some(Lsn(10)),
            "shared with derived scopes"
        );
        scope.mark_written(1);
        assert_eq!(
            scope.known_commit_lsn(0),
            Some(Lsn(10)),
            "another shard's write keeps it"
        );
        scope.mark_written(0);
        assert_eq!(
            scope.known_commit_lsn(0),
            None,
            "a new write needs a new position"
        );
    }
}
