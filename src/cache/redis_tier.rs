//! The Redis tier: lookups, fenced fills, invalidations, behind a circuit breaker.
//!
//! # Stale fills: versions and LSN fences
//!
//! A fill is a read from the database followed by a write to Redis, and an invalidation can
//! land in between: the Facebook memcache paper's stale-set race. Worse here, the read may
//! come from a replica that has not replayed the write yet. Two guards, both checked in Redis:
//!
//! - **Version (a lease).** Every invalidation bumps `key:ver`. A miss remembers the version
//!   it saw; the fill's Lua script writes only if the version is still the same. A fill that
//!   raced an invalidation is dropped.
//! - **LSN fence.** Every invalidation records the commit LSN of its write in
//!   `key:lsn:{shard}`. A miss reads the fences and loads with those LSNs as a
//!   read-your-writes requirement (a replica that has replayed them, else the primary), so
//!   the value it fills is never older than the last invalidated write, even when the
//!   write's own client sends no token. A list page depends on every shard and reads every
//!   shard's fence of its family (see `keys.rs`).
//!
//! A stored value carries the version it was filled under (`{version}\n{json}`), and a
//! lookup counts it as a hit only while that is still the entry's version: a page of a list
//! family is retired by one version bump, without deleting every page that may exist.
//!
//! Many keys travel together: one `MGET` looks up a whole batch (values, versions, fences),
//! one script fills every miss queued for the background filler (`filler.rs`), from one
//! request or many. A fill may wait there a while after its load; the version check is what
//! makes that harmless: a fill that waited across an invalidation is refused. (On Redis
//! Cluster the keys of one batch live in several slots; there a batch must be split by
//! slot, one round trip each.)
//!
//! Guarantee: once a write's response has been sent, no cache tier holds or fills a value
//! older than that write (two-tier: except an L1 entry on another instance, for at most
//! `l1_ttl`), provided Redis was reachable for the invalidation. If it was not, the
//! invalidation is queued in-process, and this instance reads nothing from Redis until the
//! queue has been replayed; another instance that could reach Redis all along, a process
//! that dies with a queue, or a queue past its bound leave entries to expire by TTL.
//!
//! # Resilience
//!
//! Each command's round trip is bounded by `command_timeout` (opening a connection, by the
//! longer of it and 500 ms), and a circuit breaker opens after consecutive failures: while
//! open, reads go straight to the database (`X-Cache: bypass`) without paying the timeout.
//!
//! Commands share two multiplexed connections (see [`SharedConnection`]), lookups on one,
//! fills and invalidations on the other: no pool checkout, whose connection check would cost
//! a round trip of its own on every command.
//!
//! # Timing
//!
//! Every command a request waits for (its lookups and invalidations, and the replay of
//! queued invalidations it runs first) adds its time, opening a connection included, to the request's
//! [`ServerTiming`]: the `cache` entry of `Server-Timing`. A call the open breaker refuses
//! costs nothing and is not counted. Fills run in the background filler, which no request
//! waits for, and are in no request's timing.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{Script, aio::MultiplexedConnection};

use super::keys::Key;
use tracing::Instrument;

use crate::{
    config::CacheConfig,
    telemetry::{self, Phase, ServerTiming},
    traffic::{CircuitBreaker, SharedConnection},
};

/// Invalidations kept for replay while Redis is unreachable.
const PENDING_BOUND: usize = 10_000;

const FILL: &str = r"
-- KEYS: (value, version) per entry.
-- ARGV: (expected version ('' = none yet), value to store, ttl ms) per entry.
local stored = {}
for i = 1, #KEYS / 2 do
  local current = redis.call('GET', KEYS[2 * i]) or ''
  if current == ARGV[3 * i - 2] then
    redis.call('SET', KEYS[2 * i - 1], ARGV[3 * i - 1], 'PX', ARGV[3 * i])
    stored[i] = 1
  else
    stored[i] = 0
  end
end
return stored
";

const INVALIDATE: &str = r"
-- KEYS: (value, version, fence of the written shard) per invalidated entry.
-- ARGV: commit LSN, fence ttl ms, channel, message for the other instances' L1s.
for i = 1, #KEYS, 3 do
  redis.call('DEL', KEYS[i])
  redis.call('INCR', KEYS[i + 1])
  redis.call('PEXPIRE', KEYS[i + 1], ARGV[2])
  local fence = tonumber(redis.call('GET', KEYS[i + 2]) or '0')
  if tonumber(ARGV[1]) > fence then
    redis.call('SET', KEYS[i + 2], ARGV[1], 'PX', ARGV[2])
  else
    redis.call('PEXPIRE', KEYS[i + 2], ARGV[2])
  end
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// The value's JSON.
    Hit(Vec<u8>),
    /// A miss, with the version to fill under and the fences to read past, per shard.
    Miss {
        version: String,
        fences: Vec<(u16, u64)>,
    },
}

/// One entry a batch loaded, to store unless it was invalidated since its lookup.
pub struct Fill<'a> {
    pub key: &'a Key,
    /// The version the lookup saw.
    pub version: &'a str,
    pub json: &'a [u8],
    pub ttl: Duration,
}

/// An invalidation: the entries a write changed, and the write's shard and commit position.
#[derive(Debug, Clone)]
pub struct Invalidation {
    pub keys: Vec<Key>,
    pub shard: u16,
    pub lsn: u64,
    /// What the other instances' L1s drop, one name a line.
    pub message: String,
}

/// Redis could not be used for this call (breaker open, timeout, error): go to the database.
#[derive(Debug)]
pub struct Bypass;

pub struct RedisTier {
    /// Lookups: a connection of their own, so that a write held up in Redis (a paused
    /// Redis holds writes and serves reads) does not hold up the reads queued behind it.
    reads: SharedConnection,
    /// Fills and invalidations.
    writes: SharedConnection,
    breaker: CircuitBreaker,
    timeout: Duration,
    /// How long versions and fences live: longer than any value, so a fill can never find a
    /// fence gone while a value it guards could still be there.
    fence_ttl_ms: u64,
    fill: Script,
    invalidate: Script,
    pending: Mutex<Vec<Invalidation>>,
    /// Invalidations not yet applied (queued, or being replayed), readable without the lock
    /// on every lookup.
    pending_count: AtomicUsize,
    pub(crate) channel: String,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl RedisTier {
    pub fn new(config: &CacheConfig) -> anyhow::Result<Self> {
        let timeout = config.command_timeout;
        Ok(Self {
            reads: SharedConnection::new(&config.redis_url, timeout)?,
            writes: SharedConnection::new(&config.redis_url, timeout)?,
            breaker: CircuitBreaker::new(config.breaker.clone()).named("redis"),
            timeout,
            fence_ttl_ms: (config.ttl.max(config.negative_ttl) * 2).as_millis() as u64,
            fill: Script::new(FILL),
            invalidate: Script::new(INVALIDATE),
            pending: Mutex::default(),
            pending_count: AtomicUsize::new(0),
            channel: format!("{}:invalidations", config.key_prefix),
        })
    }

    pub fn breaker_state(&self) -> crate::traffic::BreakerState {
        self.breaker.state()
    }

    /// Values, versions and fences of `keys` in one round trip (`MGET`).
    ///
    /// While invalidations wait for replay, nothing is read from Redis: the entries they name
    /// may still be there, stale. The replay comes first; if it cannot run, the read bypasses.
    pub async fn lookup(
        &self,
        timing: &ServerTiming,
        keys: &[&Key],
    ) -> Result<Vec<Lookup>, Bypass> {
        if self.pending_invalidations() > 0 {
            self.replay_pending(timing).await;
            if self.pending_invalidations() > 0 {
                return Err(Bypass);
            }
        }
        let replies: Vec<Option<Vec<u8>>> = self
            .call(&self.reads, timing, |mut conn| async move {
                let mut mget = redis::cmd("MGET");
                for key in keys {
                    mget.arg(key.as_str()).arg(key.version());
                    for &shard in key.shards() {
                        mget.arg(key.fence(shard));
                    }
                }
                mget.query_async(&mut conn).await
            })
            .instrument(telemetry::cache_span("redis", "lookup"))
            .await?;
        let mut replies = replies.into_iter();
        let mut lookups = Vec::with_capacity(keys.len());
        for key in keys {
            let (value, version) = (
                replies.next().flatten(),
                replies.next().flatten().unwrap_or_default(),
            );
            let version = String::from_utf8(version).unwrap_or_default();
            let fences = key
                .shards()
                .iter()
                .filter_map(|&shard| {
                    let fence = replies.next().flatten()?;
                    Some((shard, std::str::from_utf8(&fence).ok()?.parse().ok()?))
                })
                .collect();
            lookups.push(match value.and_then(|stored| current(stored, &version)) {
                Some(json) => Lookup::Hit(json),
                None => Lookup::Miss { version, fences },
            });
        }
        Ok(lookups)
    }

    /// Stores each entry unless its key was invalidated since the lookup that saw its
    /// version, in one round trip. Returns, per entry, whether it was stored.
    pub async fn fill(&self, timing: &ServerTiming, fills: &[Fill<'_>]) -> Vec<bool> {
        let stored: Result<Vec<i32>, Bypass> = self
            .call(&self.writes, timing, |mut conn| async move {
                let mut invocation = self.fill.prepare_invoke();
                for fill in fills {
                    let mut stored = Vec::with_capacity(fill.version.len() + 1 + fill.json.len());
                    stored.extend_from_slice(fill.version.as_bytes());
                    stored.push(b'\n');
                    stored.extend_from_slice(fill.json);
                    invocation
                        .key(fill.key.as_str())
                        .key(fill.key.version())
                        .arg(fill.version)
                        .arg(stored)
                        .arg(fill.ttl.as_millis().max(1) as u64);
                }
                invocation.invoke_async(&mut conn).await
            })
            .instrument(telemetry::cache_span("redis", "fill"))
            .await;
        let stored = stored.unwrap_or_default();
        (0..fills.len())
            .map(|i| stored.get(i) == Some(&1))
            .collect()
    }

    /// Deletes the entries, bumps their versions and raises their fences on the written shard
    /// to its commit position, then tells the other instances' L1s. Queued for replay if
    /// Redis cannot be reached.
    pub async fn invalidate(&self, timing: &ServerTiming, invalidation: Invalidation) {
        if self.invalidate_now(timing, &invalidation).await.is_err() {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= PENDING_BOUND {
                tracing::error!(
                    "cache invalidation queue full: dropped entries may be served stale until their TTL"
                );
                // One out, one in: the count stays.
                pending.remove(0);
            } else {
                self.pending_count.fetch_add(1, Ordering::AcqRel);
            }
            pending.push(invalidation);
            return;
        }
        self.replay_pending(timing).await;
    }

    /// One round trip for all of a write's keys. (On Redis Cluster, keys of different rows
    /// live in different slots: send one script per key there.)
    async fn invalidate_now(
        &self,
        timing: &ServerTiming,
        invalidation: &Invalidation,
    ) -> Result<(), Bypass> {
        let fence_ttl = self.fence_ttl_ms;
        self.call(&self.writes, timing, |mut conn| async move {
            let mut invocation = self.invalidate.prepare_invoke();
            for key in &invalidation.keys {
                invocation
                    .key(key.as_str())
                    .key(key.version())
                    .key(key.fence(invalidation.shard));
            }
            invocation
                .arg(invalidation.lsn)
                .arg(fence_ttl)
                .arg(&self.channel)
                .arg(&invalidation.message);
            let _: i32 = invocation.invoke_async(&mut conn).await?;
            Ok(())
        })
        .instrument(telemetry::cache_span("redis", "invalidate"))
        .await
    }

    /// Replays invalidations that failed while Redis was unreachable.
    ///
    /// The count drops one invalidation at a time, as each is applied, never when the queue
    /// is taken: a lookup running meanwhile still sees the ones being replayed and bypasses,
    /// instead of reading entries they have not deleted yet.
    async fn replay_pending(&self, timing: &ServerTiming) {
        let queued = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *pending)
        };
        if queued.is_empty() {
            return;
        }
        tracing::info!(
            count = queued.len(),
            "replaying cache invalidations queued while Redis was down"
        );
        for (i, invalidation) in queued.iter().enumerate() {
            if self.invalidate_now(timing, invalidation).await.is_err() {
                // Back in the queue, still counted.
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.extend(queued.into_iter().skip(i));
                return;
            }
            self.pending_count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Runs one command on `lane` with the timeout and the breaker; any failure is a
    /// [`Bypass`]. Once the breaker admits it, its time goes into `timing`, whatever the
    /// outcome.
    async fn call<'a, T, F, Fut>(
        &'a self,
        lane: &SharedConnection,
        timing: &ServerTiming,
        command: F,
    ) -> Result<T, Bypass>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>> + 'a,
    {
        if self.breaker.admit().is_err() {
            return Err(Bypass);
        }
        let start = Instant::now();
        let result = self.call_admitted(lane, command).await;
        timing.record(Phase::Cache, start.elapsed());
        result
    }

    async fn call_admitted<'a, T, F, Fut>(
        &'a self,
        lane: &SharedConnection,
        command: F,
    ) -> Result<T, Bypass>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>> + 'a,
    {
        lane.run(&self.breaker, self.timeout, "cache Redis", command)
            .await
            .map_err(|_| Bypass)
    }

    /// Whether queued invalidations wait for Redis (tests and `/readyz`).
    pub fn pending_invalidations(&self) -> usize {
        self.pending_count.load(Ordering::Acquire)
    }
}

/// The JSON of a stored value, if it was filled under the entry's current `version`.
fn current(mut stored: Vec<u8>, version: &str) -> Option<Vec<u8>> {
    let newline = stored.iter().position(|&b| b == b'\n')?;
    if stored.get(..newline)? != version.as_bytes() {
        return None;
    }
    stored.drain(..=newline);
    Some(stored)
}

#[cfg(test)]
mod tests {
    use super::current;

    #[test]
    fn a_value_counts_only_under_the_version_it_was_filled_under() {
        assert_eq!(current(b"3\n{}".to_vec(), "3"), Some(b"{}".to_vec()));
        assert_eq!(current(b"\nnull".to_vec(), ""), Some(b"null".to_vec()));
        assert_eq!(current(b"3\n{}".to_vec(), "4"), None, "retired by a bump");
        assert_eq!(current(b"{}".to_vec(), ""), None, "not our format");
    }
}
