//! `[http.versioning]`: which REST version an unversioned path serves, and when v1 retires.

use anyhow::ensure;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A REST version this service serves, each under its path prefix (`/v1`, `/v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiVersion {
    V1,
    V2,
}

impl ApiVersion {
    /// Every version served, oldest first.
    pub const ALL: [ApiVersion; 2] = [ApiVersion::V1, ApiVersion::V2];

    /// `v1`: the metric label, the config value, and the token in the vendor media type.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1",
            ApiVersion::V2 => "v2",
        }
    }

    /// `/v1`: where its routes are mounted.
    pub fn prefix(self) -> &'static str {
        match self {
            ApiVersion::V1 => "/v1",
            ApiVersion::V2 => "/v2",
        }
    }
}

/// Header versioning of unversioned paths and v1's deprecation notices
/// (`src/http/versioning.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersioningConfig {
    /// The version an unversioned path (`/users/4`) serves when `Accept` names no version
    /// (no `Accept`, `*/*`, `application/json`). Clients that never chose a version get the
    /// newest; a client that needs v1 asks for it (`application/vnd.scalable-api.v1+json`)
    /// or calls `/v1/...`.
    pub default: ApiVersion,
    /// When v1 is (or will be) deprecated, an RFC 3339 date-time string
    /// (`"2026-01-01T00:00:00Z"`). Set, every v1 answer carries `Deprecation`, `Link` to its
    /// v2 successor and, with `v1_sunset_at`, `Sunset`; unset (the default), none of them.
    pub v1_deprecated_at: Option<DateTime<Utc>>,
    /// When v1 is expected to stop answering (RFC 8594 `Sunset`), RFC 3339 like
    /// `v1_deprecated_at`, not before it. Only announced: removing v1 is a deploy, not a date.
    pub v1_sunset_at: Option<DateTime<Utc>>,
}

impl Default for VersioningConfig {
    fn default() -> Self {
        Self {
            default: ApiVersion::V2,
            v1_deprecated_at: None,
            v1_sunset_at: None,
        }
    }
}

impl VersioningConfig {
    /// A sunset needs a deprecation before it: a client told "gone on that date" without
    /// "deprecated" has no notice to migrate on, and a sunset before the deprecation is a typo.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if let Some(sunset) = self.v1_sunset_at {
            let Some(deprecated) = self.v1_deprecated_at else {
                anyhow::bail!(
                    "http.versioning.v1_sunset_at is set without http.versioning.v1_deprecated_at: a sunset is announced with a deprecation"
                );
            };
            ensure!(
                sunset >= deprecated,
                "http.versioning.v1_sunset_at ({sunset}) is before v1_deprecated_at ({deprecated})"
            );
        }
        Ok(())
    }
}
