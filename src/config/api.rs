//! `[api]`: limits shared by the REST versions and GraphQL.

use anyhow::ensure;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest page a client may ask for: `limit` in REST, `first` in GraphQL.
    pub max_page_size: u32,
    /// Largest `offset` a list endpoint accepts. Offset pagination costs O(offset) rows per
    /// shard, so it is bounded; cursors (v2) have no such cost.
    pub max_offset: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_page_size: 100,
            max_offset: 10_000,
        }
    }
}

impl ApiConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.max_page_size >= 1,
            "api.max_page_size must be at least 1"
        );
        Ok(())
    }
}
