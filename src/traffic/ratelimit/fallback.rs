//! [`LocalFallback`]: the limit each instance enforces on its own while the limiter's Redis
//! cannot decide (down, slow, or its breaker open).
//!
//! Failing open would hand an outage's worth of unlimited traffic to exactly the clients the
//! limits exist for; failing closed would turn a Redis outage into a full outage. In between:
//! each instance keeps, in its own memory, its share of every limit, `rate /
//! ratelimit.fallback_instances` (at least 1), as GCRA (the `governor` crate, the one under the
//! shield). With the expected instance count right, the fleet admits about the configured
//! limit; with more instances than configured, more. The daily quota is not counted meanwhile:
//! it lives in Redis.
//!
//! Memory: one small entry per principal seen during the outage, in a concurrent map per tier
//! and class; entries older than their bucket are dropped every few thousand checks.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use governor::{
    Quota, RateLimiter as Gcra,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

use super::{Decision, Policy};
use crate::config::{LimitTier, RateLimitConfig, RouteClass};

type Keyed = Gcra<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Checks between two sweeps of idle entries.
const SWEEP_EVERY: u64 = 4096;

pub(super) struct LocalFallback {
    limits: HashMap<(LimitTier, RouteClass), Local>,
    clock: DefaultClock,
    checks: AtomicU64,
}

/// One tier and class: this instance's share, and the limiter keyed by principal.
struct Local {
    share: Policy,
    limiter: Keyed,
}

impl std::fmt::Debug for LocalFallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalFallback").finish_non_exhaustive()
    }
}

impl LocalFallback {
    pub(super) fn new(config: &RateLimitConfig) -> Self {
        let instances = config.fallback_instances.max(1);
        let mut limits = HashMap::new();
        for tier in LimitTier::ALL {
            for class in RouteClass::ALL {
                let limit = config.tiers.get(tier, class);
                // What Redis would admit at once under the configured algorithm, shared out.
                let whole = Policy::new(limit.rate, config.window).with_burst(limit.burst);
                let share = Policy::new((limit.rate / instances).max(1), config.window)
                    .with_burst((whole.capacity(config.algorithm) / instances).max(1));
                limits.insert((tier, class), Local::new(share));
            }
        }
        Self {
            limits,
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Charges `cost` to `key` under this instance's share of `tier`'s `class` limit. A
    /// decision like Redis's, for the same headers; its `limit` is the share.
    pub(super) fn check(
        &self,
        tier: LimitTier,
        class: RouteClass,
        key: &str,
        cost: u32,
    ) -> Decision {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for local in self.limits.values() {
                local.limiter.retain_recent();
                local.limiter.shrink_to_fit();
            }
        }
        let Some(local) = self.limits.get(&(tier, class)) else {
            // Every tier and class is built in `new`; refusing is the safe answer regardless.
            return refused(Policy::new(0, Duration::ZERO), None);
        };
        let share = local.share;
        let interval = share.window / share.limit;
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        match local.limiter.check_key_n(&key.to_owned(), cost) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: share.limit,
                    remaining,
                    reset_after: interval * share.burst.saturating_sub(remaining),
                    retry_after: None,
                    quota: None,
                }
            }
            Ok(Err(not_until)) => refused(share, Some(not_until.wait_time_from(self.clock.now()))),
            // More than this instance's share holds at once: it can pass only once Redis is
            // back (the caller says when to try).
            Err(_insufficient) => refused(share, None),
        }
    }
}

impl Local {
    fn new(share: Policy) -> Self {
        let interval = (share.window / share.limit.max(1)).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(share.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            share,
            limiter: Gcra::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }
}

fn refused(share: Policy, retry_after: Option<Duration>) -> Decision {
    Decision {
        allowed: false,
        limit: share.limit,
        remaining: 0,
        reset_after: retry_after.unwrap_or(share.window),
        retry_after,
        quota: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimiterAlgorithm;

    fn config(rate: u32, burst: u32, instances: u32) -> RateLimitConfig {
        let mut config = RateLimitConfig {
            algorithm: LimiterAlgorithm::Gcra,
            fallback_instances: instances,
            window: Duration::from_secs(60),
            ..RateLimitConfig::default()
        };
        config.tiers.free.reads.rate = rate;
        config.tiers.free.reads.burst = burst;
        config
    }

    #[test]
    fn each_instance_admits_its_share_of_the_burst_then_refuses_with_a_retry() {
        let fallback = LocalFallback::new(&config(600, 40, 4));
        let check = || fallback.check(LimitTier::Free, RouteClass::Reads, "user:1", 1);
        let admitted = (0..20).filter(|_| check().allowed).count();
        assert_eq!(admitted, 10, "a quarter of the burst of 40");
        let refused = check();
        assert!(!refused.allowed);
        assert_eq!(refused.limit, 150, "a quarter of 600 per minute");
        let retry = refused.retry_after.expect("one unit's interval");
        assert!(retry <= Duration::from_millis(400), "{retry:?}");
    }

    #[test]
    fn principals_and_classes_have_their_own_budgets() {
        let fallback = LocalFallback::new(&config(60, 2, 2));
        let free = |key: &str, class| fallback.check(LimitTier::Free, class, key, 1).allowed;
        assert!(free("user:1", RouteClass::Reads));
        assert!(!free("user:1", RouteClass::Reads), "a share of 1 at once");
        assert!(free("user:2", RouteClass::Reads), "another principal");
        assert!(free("user:1", RouteClass::Writes), "another class");
    }

    #[test]
    fn a_cost_above_the_share_is_refused_without_a_retry_time() {
        let fallback = LocalFallback::new(&config(600, 40, 4));
        let decision = fallback.check(LimitTier::Free, RouteClass::Reads, "user:1", 11);
        assert!(!decision.allowed);
        assert_eq!(decision.retry_after, None);
    }
}
