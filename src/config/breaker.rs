//! A circuit breaker's settings (the breaker itself is `src/traffic/breaker.rs`): used by
//! each shard primary's breaker (`db.primary_breaker`) and Redis's (`cache.breaker`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting one trial call through.
    #[serde(with = "humantime_serde")]
    pub open: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            open: Duration::from_secs(2),
        }
    }
}
