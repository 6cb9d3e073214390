//! Where a statement went, and the request-scoped record of it.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

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

/// The request's view of the data layer: the routes its statements took (recorded only when
/// someone asked, e.g. the dev-profile `X-Db-Route` header), so production pays nothing.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    log: Option<Arc<Mutex<Vec<Route>>>>,
}

impl Scope {
    /// A scope that records routes, for the debug header.
    pub fn recording() -> Self {
        Self {
            log: Some(Arc::default()),
        }
    }

    pub(crate) fn record(&self, shard: u16, role: Role) {
        if let Some(log) = &self.log {
            let mut routes = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let route = Route { shard, role };
            if !routes.contains(&route) {
                routes.push(route);
            }
        }
    }

    /// Distinct routes taken so far, in first-use order.
    pub fn routes(&self) -> Vec<Route> {
        self.log
            .as_ref()
            .map(|log| {
                log.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone()
            })
            .unwrap_or_default()
    }
}
