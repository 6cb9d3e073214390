//! `[consistency]`: the staleness auditor (`src/cache/audit.rs`), which measures how stale
//! what the caches and the replicas serve really is.

use anyhow::ensure;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsistencyConfig {
    /// Re-reading a sample of served reads on the primary.
    pub audit: AuditConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The share of reads served from the L1, Redis or a replica that are read again on the
    /// shard's primary and compared (0.0 = off, 1.0 = every one). Off by default: each audit
    /// is a primary read. `scripts/dev` runs with 0.01.
    pub sample_rate: f64,
    /// Audits running at once at most; a sampled read that finds them all busy is skipped
    /// (counted), never queued: the auditor never adds more than this to the primaries.
    pub max_in_flight: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sample_rate: 0.0,
            max_in_flight: 4,
        }
    }
}

impl ConsistencyConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        let rate = self.audit.sample_rate;
        ensure!(
            rate.is_finite() && (0.0..=1.0).contains(&rate),
            "consistency.audit.sample_rate must be within 0..=1, got {rate}"
        );
        ensure!(
            self.audit.max_in_flight >= 1,
            "consistency.audit.max_in_flight must be at least 1"
        );
        Ok(())
    }
}
