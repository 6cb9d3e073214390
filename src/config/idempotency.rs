//! `[http.idempotency]`: `Idempotency-Key` on POST, its Redis and its lifetimes (the
//! middleware is `src/http/idempotency/`).

use std::time::Duration;

use anyhow::ensure;
use serde::{Deserialize, Serialize};

use super::SecretUrl;
use super::breaker::BreakerConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// `false`: the header is ignored and every POST runs as sent, retries included.
    pub enabled: bool,
    /// How long a finished request's answer is kept and replayed to a retry with its key.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long a request's claim on its key holds while it runs: a second request with the
    /// key meanwhile gets 409. Unset, it is `http.request_timeout`, the longest a request can
    /// run; shorter, a slow request's retry may run beside it.
    #[serde(
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub lease: Option<Duration>,
    /// Where claims and answers are kept, shared by every instance. A Redis that evicts keys
    /// under memory pressure (a cache's `allkeys-lru`) may drop an answer before its `ttl`:
    /// give it one that does not, or enough memory. May carry a password; `config` masks it.
    pub redis_url: SecretUrl,
    /// Every key starts with this (tests use one per test; instances of one deployment share it).
    pub key_prefix: String,
    /// Bound on each Redis command (and on connecting, with at least 500 ms). Looser than the
    /// cache's: a failure here is a 503 for the client, not a read from the database.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// The circuit breaker in front of that Redis: while open, POSTs with a key get 503 at once.
    pub breaker: BreakerConfig,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(24 * 60 * 60),
            lease: None,
            redis_url: "redis://127.0.0.1:55400".into(),
            key_prefix: "scalable-api:idempotency".into(),
            command_timeout: Duration::from_millis(200),
            breaker: BreakerConfig::default(),
        }
    }
}

impl IdempotencyConfig {
    /// The lease in effect: `lease`, or the request timeout.
    pub fn lease_or(&self, request_timeout: Duration) -> Duration {
        self.lease.unwrap_or(request_timeout)
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.ttl >= Duration::from_millis(1),
            "http.idempotency.ttl must be at least 1ms"
        );
        ensure!(
            self.lease
                .is_none_or(|lease| lease >= Duration::from_millis(1)),
            "http.idempotency.lease must be at least 1ms"
        );
        ensure!(
            !self.command_timeout.is_zero(),
            "http.idempotency.command_timeout must be more than 0s"
        );
        Ok(())
    }

    /// This section with the Redis password masked.
    pub(super) fn redacted(&self) -> Self {
        Self {
            redis_url: self.redis_url.redacted(),
            ..self.clone()
        }
    }
}
