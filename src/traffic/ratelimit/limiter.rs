//! [`RateLimiter`]: one script per decision, bounded by a timeout and a circuit breaker;
//! with local leases (`lease.rs`), most decisions need no script at all.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use deadpool_redis::{Pool, PoolError, TimeoutType};
use redis::Script;

use super::{
    Decision, LimiterUnavailable, Policy, QuotaUsage,
    lease::{Answer, Leases},
    scripts,
};
use crate::{
    config::{LimiterAlgorithm, RateLimitConfig},
    telemetry::names::RATELIMIT_REDIS_CALLS,
    traffic::{CircuitBreaker, redis_pool},
};

/// The distributed limiter of one instance. Instances sharing `ratelimit.redis_url` and
/// `ratelimit.key_prefix` share every limit.
///
/// It counts nothing itself: `ratelimit_decisions_total` is labelled by what the caller knows
/// (the tier and the route class, see `src/traffic/ratelimit/routes.rs`).
pub struct RateLimiter {
    pool: Pool,
    breaker: CircuitBreaker,
    timeout: Duration,
    algorithm: LimiterAlgorithm,
    script: Script,
    prefix: String,
    leases: Leases,
    calls: AtomicU64,
    calls_metric: metrics::Counter,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("algorithm", &self.algorithm)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// Builds the pool (connections open lazily) and the breaker. Build it after the
    /// metrics recorder is installed: its breaker gauge binds to it here.
    pub fn new(config: &RateLimitConfig) -> anyhow::Result<Self> {
        let timeout = config.command_timeout;
        let pool = redis_pool(&config.redis_url, config.pool_max_connections, timeout)?;
        let algorithm = config.algorithm;
        Ok(Self {
            pool,
            breaker: CircuitBreaker::new(config.breaker.clone()).named("ratelimit"),
            timeout,
            algorithm,
            script: Script::new(&scripts::source(algorithm)),
            prefix: config.key_prefix.clone(),
            leases: Leases::new(
                config.max_lease,
                config.lease_ttl,
                config.fallback_instances,
            ),
            calls: AtomicU64::new(0),
            calls_metric: metrics::counter!(RATELIMIT_REDIS_CALLS),
        })
    }

    pub fn algorithm(&self) -> LimiterAlgorithm {
        self.algorithm
    }

    pub fn breaker_state(&self) -> crate::traffic::BreakerState {
        self.breaker.state()
    }

    /// Script calls this limiter has sent or tried to send to Redis, past the breaker (also
    /// `ratelimit_redis_calls_total`): what leases save is the gap between this and the
    /// checks made.
    pub fn redis_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Sets `in_process_entries{map="ratelimit_leases"}`: keys holding a local lease slot
    /// (sampled at scrape).
    pub fn report_gauges(&self) {
        crate::telemetry::metrics::report_entries("ratelimit_leases", self.leases.keys());
    }

    /// [`Self::check`], spending from this instance's lease for `key` when it holds enough
    /// (no round trip), else taking a new lease in the same single call (`lease.rs`).
    ///
    /// Never admits more than the limit across instances; may refuse a little early (by the
    /// other instances' unspent leases), and on a lease hit `remaining` is approximate. With
    /// `ratelimit.max_lease = 1`, or `cost = 0`, it is exactly [`Self::check`].
    pub async fn check_leased(
        &self,
        key: &str,
        policy: &Policy,
        cost: u32,
    ) -> Result<Decision, LimiterUnavailable> {
        if !self.leases.enabled() || cost == 0 {
            return self.check(key, policy, cost).await;
        }
        let slot = self.leases.entry(key).await;
        if let Some(decision) = slot.lease().spend(policy, cost, Instant::now()) {
            return Ok(decision);
        }
        let arrived = Instant::now();
        // One refill at a time per key: the checks that found the lease empty meanwhile
        // wait here, then spend from the new lease rather than each calling Redis.
        let _refilling = slot.refill.lock().await;
        let want = {
            let mut lease = slot.lease();
            if let Some(decision) = lease.spend(policy, cost, Instant::now()) {
                return Ok(decision);
            }
            // A refill that failed while this check waited for it: its failure is this
            // check's too. Otherwise the waiters of a hot key would each pay the timeout.
            if let Some(failure) = lease.failed_since(arrived) {
                return Err(failure);
            }
            self.leases.size(&lease, cost)
        };
        let sent = Instant::now();
        let result = self.decide(key, policy, cost, want).await;
        let mut lease = slot.lease();
        let (decision, granted) = match result {
            Ok(answer) => answer,
            Err(failure) => {
                lease.fail(failure);
                return Err(failure);
            }
        };
        let answer = Answer {
            decision,
            cost,
            granted,
            sent,
        };
        let window_bound = self.algorithm == LimiterAlgorithm::FixedWindow;
        Ok(lease.take(policy, answer, self.leases.ttl(), window_bound))
    }

    /// Charges `cost` units to `key` under `policy` if they fit, in one atomic script.
    ///
    /// `key` names the principal and the route class (`free:user:42:writes`); the same key
    /// must always be checked with the same policy. `cost = 0` reads the state without
    /// charging. With a daily quota, the same call charges it too (or refuses, charging
    /// neither). A policy that admits nothing (`limit`, `window`, a quota or, for the token
    /// bucket and GCRA, `burst` zero) refuses without a round trip.
    ///
    /// Exact: no lease is taken or spent (the login limits use this; see [`Self::check_leased`]).
    pub async fn check(
        &self,
        key: &str,
        policy: &Policy,
        cost: u32,
    ) -> Result<Decision, LimiterUnavailable> {
        self.decide(key, policy, cost, cost)
            .await
            .map(|(decision, _)| decision)
    }

    /// One script call charging `want` units (at least `cost`) if they fit, else `cost`:
    /// the decision for the request and the units granted (0 when refused).
    async fn decide(
        &self,
        key: &str,
        policy: &Policy,
        cost: u32,
        want: u32,
    ) -> Result<(Decision, u32), LimiterUnavailable> {
        let capacity = policy.capacity(self.algorithm);
        if policy.limit == 0
            || policy.window.is_zero()
            || capacity == 0
            || policy.daily_quota == Some(0)
        {
            let refused = Decision {
                allowed: false,
                limit: policy.limit,
                remaining: 0,
                reset_after: Duration::ZERO,
                retry_after: None,
                quota: None,
            };
            return Ok((refused, 0));
        }
        let [
            allowed,
            remaining,
            reset_us,
            retry_us,
            quota_remaining,
            quota_reset_us,
            refused_by,
            granted,
        ] = self.eval(key, policy, cost, want).await?;
        let allowed = allowed == 1;
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        let units = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        let fits = cost <= capacity && policy.daily_quota.is_none_or(|quota| cost <= quota);
        let decision = Decision {
            allowed,
            limit: policy.limit,
            remaining: units(remaining),
            reset_after: micros(reset_us),
            retry_after: (!allowed && fits).then(|| micros(retry_us)),
            quota: policy.daily_quota.map(|limit| QuotaUsage {
                limit,
                remaining: units(quota_remaining),
                reset_after: micros(quota_reset_us),
                exhausted: refused_by == 2,
            }),
        };
        Ok((decision, units(granted)))
    }

    /// The script's eight numbers, behind the breaker and the timeout.
    ///
    /// Waiting for a free pooled connection does not count against the breaker: under a
    /// burst it is this instance that is busy, not Redis.
    async fn eval(
        &self,
        key: &str,
        policy: &Policy,
        cost: u32,
        want: u32,
    ) -> Result<[i64; 8], LimiterUnavailable> {
        if self.breaker.admit().is_err() {
            return Err(LimiterUnavailable::BreakerOpen);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.calls_metric.increment(1);
        let mut conn = match self.pool.get().await {
            Ok(conn) => conn,
            Err(PoolError::Timeout(TimeoutType::Wait)) => {
                tracing::debug!("no free Redis connection for the rate limiter in time");
                return Err(LimiterUnavailable::Busy);
            }
            Err(err) => {
                tracing::debug!(error = %err, "cannot get a rate limiter Redis connection");
                self.breaker.record_failure();
                return Err(LimiterUnavailable::Failed);
            }
        };
        // `{key}` is a hash tag: the key's three Redis keys share a Redis Cluster slot.
        let state = format!("{}:{{{key}}}", self.prefix);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(&state)
            .key(format!("{state}:n"))
            .key(format!("{state}:q"))
            .arg(policy.limit)
            .arg(policy.window_us())
            .arg(policy.burst)
            .arg(cost)
            .arg(policy.daily_quota.unwrap_or(0))
            .arg(want);
        let reply: Result<redis::RedisResult<Vec<i64>>, _> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await;
        match reply {
            Ok(Ok(values)) => {
                self.breaker.record_success();
                <[i64; 8]>::try_from(values).map_err(|values| {
                    tracing::error!(?values, "rate limiter script answered in an unknown shape");
                    LimiterUnavailable::Failed
                })
            }
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "rate limiter script failed");
                self.breaker.record_failure();
                Err(LimiterUnavailable::Failed)
            }
            Err(_) => {
                tracing::debug!("rate limiter script timed out");
                self.breaker.record_failure();
                Err(LimiterUnavailable::Failed)
            }
        }
    }
}
