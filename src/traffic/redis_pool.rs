//! How the service talks to Redis: the bounded pool the rate limiter uses (every way a
//! request can wait on Redis has a bound; deadpool waits without one unless told), and the
//! shared multiplexed connection the cache tier uses, which needs no checkout.

use std::{
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use deadpool_redis::{Pool, Runtime};
use redis::{AsyncConnectionConfig, RedisResult, aio::MultiplexedConnection};

use crate::{config::SecretUrl, traffic::CircuitBreaker};

/// A command on a [`SharedConnection`] failed, or its connection did; logged and counted by
/// the breaker already.
#[derive(Debug, Clone, Copy)]
pub struct CommandFailed;

/// Shortest wait for a free pooled connection, and for opening one: opening a connection
/// takes longer than a command, more so on a loaded machine (a Redis that is down still fails
/// at once: refused). Waiting for a free connection means this instance is busy, not that
/// Redis is down, so callers do not count it against their breaker.
const MIN_POOL_WAIT: Duration = Duration::from_millis(500);

/// A pool of at most `max_connections` connections to `url`, which open lazily; checkout and
/// connect wait at most `MIN_POOL_WAIT` (or `command_timeout` if longer), a recycle check at
/// most `command_timeout`.
pub fn redis_pool(
    url: &SecretUrl,
    max_connections: usize,
    command_timeout: Duration,
) -> anyhow::Result<Pool> {
    let wait = MIN_POOL_WAIT.max(command_timeout);
    Ok(deadpool_redis::Config::from_url(url.expose())
        .builder()?
        .max_size(max_connections)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(command_timeout))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// One multiplexed connection to Redis, shared by every caller: redis-rs pipelines the
/// commands of concurrent callers on it, so a command costs its own round trip and nothing
/// else. A pool checkout does not: deadpool-redis checks every connection it hands out with
/// `UNWATCH` + `PING`, one more round trip per command, which on a box where CPU per request
/// is the limit costs as much as the command itself.
///
/// Trade-offs: Redis serves one connection's commands in order, so a command that blocks
/// (a write while Redis is `CLIENT PAUSE`d, a slow script) holds up the ones behind it;
/// callers whose commands must not wait for each other take a connection each. And a broken
/// connection fails every command on it: the caller that sees a connection error or a
/// timeout [discards](SharedConnection::discard) it, and the next command opens a new one
/// (one opener at a time, bounded like a pool's connect).
pub struct SharedConnection {
    client: redis::Client,
    config: AsyncConnectionConfig,
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    opening: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl std::fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedConnection")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SharedConnection {
    /// Opens nothing yet; connecting waits at most `MIN_POOL_WAIT` (or `command_timeout` if
    /// longer), as a pool's would.
    pub fn new(url: &SecretUrl, command_timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            client: redis::Client::open(url.expose())?,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(MIN_POOL_WAIT.max(command_timeout)),
            current: Mutex::default(),
            opening: tokio::sync::Mutex::default(),
            generation: AtomicU64::new(0),
        })
    }

    /// The connection and its generation (for [`SharedConnection::discard`]), opened first if
    /// there is none.
    pub async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let _opener = self.opening.lock().await;
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *self.lock() = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// Runs one command on this connection within `timeout`, and tells `breaker` how it went
    /// (the caller has been admitted by it already). A connection that errored at the I/O
    /// level or timed out is discarded, so the next command opens a new one rather than queue
    /// behind a peer that went silent. `what` names the Redis in the debug log.
    pub async fn run<'a, T, F, Fut>(
        &'a self,
        breaker: &CircuitBreaker,
        timeout: Duration,
        what: &str,
        command: F,
    ) -> Result<T, CommandFailed>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>> + 'a,
    {
        let (generation, conn) = match self.get().await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::debug!(error = %err, "cannot connect to the {what}");
                breaker.record_failure();
                return Err(CommandFailed);
            }
        };
        match tokio::time::timeout(timeout, command(conn)).await {
            Ok(Ok(value)) => {
                breaker.record_success();
                Ok(value)
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "{what} command failed");
                if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error()
                {
                    self.discard(generation);
                }
                breaker.record_failure();
                Err(CommandFailed)
            }
            Err(_) => {
                self.discard(generation);
                breaker.record_failure();
                Err(CommandFailed)
            }
        }
    }

    /// Stops handing out the connection of `generation` (if it is still the current one):
    /// a command on it failed in a way that may have broken it. Commands already sent on it
    /// finish or fail on their own.
    pub fn discard(&self, generation: u64) {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Option<(u64, MultiplexedConnection)>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}
