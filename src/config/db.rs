//! `[db]`: the email directory, the shard map, the pools, replica health and the repair of
//! half-done registrations.

use std::time::Duration;

use anyhow::ensure;
use serde::{Deserialize, Serialize};

use super::SecretUrl;
use super::breaker::BreakerConfig;

/// Largest id a shard range may reach: ids are JSON numbers in v1, and JavaScript clients
/// lose precision past 2^53 - 1.
pub const MAX_ID: i64 = (1 << 53) - 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    /// The email directory (`email -> user id`): one database, not sharded.
    pub directory_url: SecretUrl,
    /// The shard map, ordered by id range. Each shard owns a closed range of ids.
    pub shards: Vec<ShardConfig>,
    /// Connections per pool (one pool per primary and per replica).
    pub pool_max_connections: u32,
    /// How long a request waits for a pooled connection, including opening a new one, before
    /// failing with 503. Without it a dead server would hold every request for the OS's TCP
    /// connect timeout.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// `statement_timeout` set on every connection: no query runs away with a connection.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Replica health checks, and the lag bounds past which a replica leaves rotation.
    pub replicas: ReplicaHealthConfig,
    /// The circuit breaker in front of each shard's primary.
    pub primary_breaker: BreakerConfig,
    /// Repair of directory entries a crash left half-done (see `src/db/repo/directory.rs`).
    pub directory_repair: DirectoryRepairConfig,
}

/// The local stack's layout (see `scripts/stack`): two shards, a primary and a replica each,
/// and the directory on shard 0's primary server (its own database).
impl Default for DbConfig {
    fn default() -> Self {
        let shard = |id: u16, port: u16| ShardConfig {
            id,
            first_id: i64::from(id) * 1_000_000_000 + 1,
            last_id: (i64::from(id) + 1) * 1_000_000_000,
            primary: format!("postgres://postgres@127.0.0.1:{port}/scalable_api").into(),
            replicas: vec![
                format!("postgres://postgres@127.0.0.1:{}/scalable_api", port + 1).into(),
            ],
            accepts_new_users: true,
        };
        Self {
            directory_url: "postgres://postgres@127.0.0.1:55410/scalable_api_directory".into(),
            shards: vec![shard(0, 55410), shard(1, 55420)],
            pool_max_connections: 16,
            acquire_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            replicas: ReplicaHealthConfig::default(),
            primary_breaker: BreakerConfig::default(),
            directory_repair: DirectoryRepairConfig::default(),
        }
    }
}

impl DbConfig {
    /// The shard map is a partition of disjoint ascending ranges that some shard still
    /// fills, and the directory has a database of its own.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        let shards = &self.shards;
        ensure!(
            !shards.is_empty(),
            "db.shards: at least one shard is required"
        );
        for (i, s) in shards.iter().enumerate() {
            ensure!(
                1 <= s.first_id && s.first_id <= s.last_id && s.last_id <= MAX_ID,
                "db.shards[{i}]: need 1 <= first_id <= last_id <= {MAX_ID}"
            );
            if let Some(next) = shards.get(i + 1) {
                ensure!(
                    s.last_id < next.first_id,
                    "db.shards: shard {} and shard {} overlap or are out of order (ranges must ascend)",
                    s.id,
                    next.id
                );
            }
            ensure!(
                shards.iter().filter(|o| o.id == s.id).count() == 1,
                "db.shards: shard id {} appears twice",
                s.id
            );
        }
        ensure!(
            shards
                .iter()
                .all(|s| s.primary.expose() != self.directory_url.expose()),
            "db.directory_url must be its own database, not a shard's: the two schemas keep separate migration histories"
        );
        ensure!(
            shards.iter().any(|s| s.accepts_new_users),
            "db.shards: no shard accepts new users"
        );
        Ok(())
    }

    /// This section with the password of every URL masked.
    pub(super) fn redacted(&self) -> Self {
        Self {
            directory_url: self.directory_url.redacted(),
            shards: self
                .shards
                .iter()
                .map(|s| ShardConfig {
                    primary: s.primary.redacted(),
                    replicas: s.replicas.iter().map(SecretUrl::redacted).collect(),
                    ..s.clone()
                })
                .collect(),
            ..self.clone()
        }
    }
}

/// One shard: the closed id range it owns and where its primary and replicas are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// The shard's id, unique in the map; a range is bound to it by `migrate`.
    pub id: u16,
    /// First id of this shard's range (inclusive).
    pub first_id: i64,
    /// Last id of this shard's range (inclusive). Once the range is used up the shard takes
    /// no new rows: ids never wrap into another shard's range.
    pub last_id: i64,
    /// The primary's URL: every write, and reads that must see them.
    pub primary: SecretUrl,
    /// The streaming replicas' URLs, for reads; none is fine (reads go to the primary).
    #[serde(default)]
    pub replicas: Vec<SecretUrl>,
    /// Whether the placement policy may put new users here (turn off to drain a full shard).
    #[serde(default = "yes")]
    pub accepts_new_users: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaHealthConfig {
    /// How often each shard's primary and replicas are checked (at least every 10ms).
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// A replica further behind its primary than this many bytes of WAL leaves rotation.
    pub max_lag_bytes: u64,
    /// A replica whose replay is older than this leaves rotation.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// Healthy checks in a row before a replica that left rotation rejoins it.
    pub rejoin_after: u32,
    /// How long a read waits for a replica connection before falling back to the primary.
    /// Shorter than `db.acquire_timeout`: a read always has the primary to go to, so a
    /// replica that just died should cost it milliseconds, not the full pool timeout.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for ReplicaHealthConfig {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_millis(250),
            max_lag_bytes: 16 * 1024 * 1024,
            max_lag: Duration::from_secs(5),
            rejoin_after: 2,
            acquire_timeout: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryRepairConfig {
    /// A `pending` entry older than this is presumed abandoned by a crashed saga and repaired
    /// (a live saga finishes well within it).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// How often the background pass looks for such entries (at least every 100ms).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for DirectoryRepairConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
            interval: Duration::from_secs(60),
        }
    }
}
