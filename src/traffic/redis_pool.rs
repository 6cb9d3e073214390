//! The bounded Redis pool the cache tier and the rate limiter both use: every way a request
//! can wait on Redis has a bound (deadpool waits without one unless told).

use std::time::Duration;

use deadpool_redis::{Pool, Runtime};

use crate::config::SecretUrl;

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
