//! [`RouteLimits`]: the limits as routes apply them. A request is charged to its principal's
//! tier budget for its route class (`ratelimit.tiers.<tier>.<class>`): the rate and the daily
//! quota in one script call on Redis; when Redis cannot decide, the class's fallback.
//!
//! # When Redis cannot decide, per route class
//!
//! | class | fallback | why |
//! |---|---|---|
//! | `reads`, `writes`, `graphql` | this instance's share of the limit, in memory (`fallback.rs`) | an outage of the limiter must not become an outage of the API, nor a free-for-all |
//! | `auth` | refuse: 503 with `Retry-After` (the breaker's open time) | a per-instance limit multiplies password guesses by the instance count; logins can wait for Redis |
//!
//! The breaker in front of Redis (`limiter.rs`) makes either answer immediate once it opens:
//! no request waits for a Redis timeout meanwhile.
//!
//! Each decision counts once in `ratelimit_decisions_total{tier, class, decision}`, `decision`
//! being `allowed`, `limited` (the rate), `quota_spent` (the daily quota), `fallback_allowed`,
//! `fallback_limited` or `unavailable` (refused with 503).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use super::{
    Decision, Policy, RateLimitHeaders, RateLimiter, fallback::LocalFallback, render_headers,
};
use crate::{
    config::{LimitTier, RateLimitConfig, RouteClass},
    error::Error,
    telemetry::names::RATELIMIT_DECISIONS,
};

/// What a check decided for a request: go on or not, and the headers its answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `RateLimit-Policy`, `RateLimit` and, when refused, `Retry-After`; `None` when no
    /// decision was made (Redis out on an `auth` route).
    pub headers: Option<RateLimitHeaders>,
    refusal: Option<Refusal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Limited {
        detail: &'static str,
        retry_after: Duration,
    },
    Unavailable {
        retry_after: Duration,
    },
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        self.refusal.is_none()
    }

    /// The answer instead of the route's: a 429 (`TooManyRequests`) or a 503 (`Unavailable`).
    /// `Retry-After` is rounded up to whole seconds: a client that waits that long is never
    /// early.
    pub fn error(&self) -> Option<Error> {
        self.refusal.map(|refusal| match refusal {
            Refusal::Limited {
                detail,
                retry_after,
            } => Error::TooManyRequests {
                detail,
                retry_after: whole_seconds_up(retry_after),
            },
            Refusal::Unavailable { retry_after } => Error::Unavailable {
                detail: "logins and registrations wait while the rate limiter is unavailable: a limit kept by each instance alone would multiply password guesses",
                retry_after,
            },
        })
    }
}

/// The `decision` label values, in the order of [`RouteLimits::counters`]' last index.
const DECISIONS: [&str; 6] = [
    "allowed",
    "limited",
    "quota_spent",
    "fallback_allowed",
    "fallback_limited",
    "unavailable",
];

/// Every tier's policy per route class, the fallback, and the decision counters.
pub struct RouteLimits {
    policies: HashMap<(LimitTier, RouteClass), Policy>,
    fallback: LocalFallback,
    /// `Retry-After` of an `auth` request refused while Redis is unusable.
    unavailable_retry: Duration,
    counters: HashMap<(LimitTier, RouteClass), [metrics::Counter; DECISIONS.len()]>,
}

impl std::fmt::Debug for RouteLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteLimits")
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl RouteLimits {
    /// Build it after the metrics recorder is installed: the counters bind to it here.
    pub fn new(config: &RateLimitConfig) -> Self {
        let mut policies = HashMap::new();
        let mut counters = HashMap::new();
        for tier in LimitTier::ALL {
            for class in RouteClass::ALL {
                let limit = config.tiers.get(tier, class);
                let policy = Policy::new(limit.rate, config.window)
                    .with_burst(limit.burst)
                    .with_daily_quota(limit.daily_quota);
                policies.insert((tier, class), policy);
                counters.insert(
                    (tier, class),
                    DECISIONS.map(|decision| {
                        metrics::counter!(
                            RATELIMIT_DECISIONS,
                            "tier" => tier.as_str(),
                            "class" => class.as_str(),
                            "decision" => decision
                        )
                    }),
                );
            }
        }
        Self {
            policies,
            fallback: LocalFallback::new(config),
            unavailable_retry: config.breaker.open,
            counters,
        }
    }

    /// Charges `cost` units to `subject` (`user:42`, `key:7`, `addr:203.0.113.9`) under
    /// `tier`'s budget for `class`.
    pub async fn check(
        &self,
        limiter: &RateLimiter,
        subject: &str,
        tier: LimitTier,
        class: RouteClass,
        cost: u32,
    ) -> Verdict {
        let Some(policy) = self.policies.get(&(tier, class)) else {
            // Every tier and class is built in `new`.
            return self.unavailable(tier, class);
        };
        let name = format!("{}-{}", tier.as_str(), class.as_str());
        let key = format!("{}:{subject}:{}", tier.as_str(), class.as_str());
        // Leases for all but `auth`: its budgets are a few tries, where exactness matters
        // and a lease would buy nothing.
        let decision = if class == RouteClass::Auth {
            limiter.check(&key, policy, cost).await
        } else {
            limiter.check_leased(&key, policy, cost).await
        };
        match decision {
            Ok(decision) => {
                let spent = decision.quota.is_some_and(|q| q.exhausted);
                let label = match (decision.allowed, spent) {
                    (true, _) => 0,
                    (false, false) => 1,
                    (false, true) => 2,
                };
                self.count(tier, class, label);
                verdict(&name, policy, &decision, spent)
            }
            Err(_) if class == RouteClass::Auth => self.unavailable(tier, class),
            Err(_) => {
                let mut decision = self.fallback.check(tier, class, &key, cost);
                self.count(tier, class, if decision.allowed { 3 } else { 4 });
                if !decision.allowed {
                    // More than the local share holds: try again once Redis may be back.
                    decision.retry_after.get_or_insert(self.unavailable_retry);
                }
                verdict(&format!("{name}-local"), policy, &decision, false)
            }
        }
    }

    fn unavailable(&self, tier: LimitTier, class: RouteClass) -> Verdict {
        self.count(tier, class, 5);
        Verdict {
            headers: None,
            refusal: Some(Refusal::Unavailable {
                retry_after: self.unavailable_retry,
            }),
        }
    }

    fn count(&self, tier: LimitTier, class: RouteClass, decision: usize) {
        if let Some(counter) = self
            .counters
            .get(&(tier, class))
            .and_then(|c| c.get(decision))
        {
            counter.increment(1);
        }
    }
}

/// A refusal that no wait can pass (the cost is more than the limit holds at once) still
/// says when to come back: after a window, when the limits may have been raised.
fn verdict(name: &str, policy: &Policy, decision: &Decision, quota_spent: bool) -> Verdict {
    let refusal = (!decision.allowed).then_some(Refusal::Limited {
        detail: match (quota_spent, decision.retry_after) {
            (true, _) => {
                "the daily quota of this route class is spent: RateLimit says when it resets"
            }
            (false, Some(_)) => {
                "too many requests of this route class: retry after the seconds in Retry-After"
            }
            (false, None) => "this request costs more than its limit admits at once",
        },
        retry_after: decision.retry_after.unwrap_or(policy.window),
    });
    Verdict {
        headers: Some(render_headers(name, policy, decision)),
        refusal,
    }
}

fn whole_seconds_up(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// The charge of one GraphQL request, made when its cost is known: after validation, before
/// any resolver runs (`src/graphql/charge.rs`). The HTTP layer creates it with the request's
/// principal and reads the verdict back for the answer's status and headers.
#[derive(Debug, Clone)]
pub struct GraphqlCharge(Arc<ChargeState>);

#[derive(Debug)]
struct ChargeState {
    subject: String,
    tier: LimitTier,
    class: Mutex<RouteClass>,
    verdict: Mutex<Option<Verdict>>,
}

impl GraphqlCharge {
    pub fn new(subject: String, tier: LimitTier) -> Self {
        Self(Arc::new(ChargeState {
            subject,
            tier,
            class: Mutex::new(RouteClass::Graphql),
            verdict: Mutex::new(None),
        }))
    }

    /// Charges the request under `auth`, 1 unit, instead of its cost under `graphql`: for
    /// operations that check a password.
    pub fn count_as_auth(&self) {
        *self.0.class.lock().unwrap_or_else(PoisonError::into_inner) = RouteClass::Auth;
    }

    /// Charges `cost` (at least 1) once: later calls return the first verdict.
    pub async fn settle(&self, limits: &RouteLimits, limiter: &RateLimiter, cost: u32) -> Verdict {
        if let Some(verdict) = self.verdict() {
            return verdict;
        }
        let class = *self.0.class.lock().unwrap_or_else(PoisonError::into_inner);
        let cost = match class {
            RouteClass::Graphql => cost.max(1),
            _ => 1,
        };
        let verdict = limits
            .check(limiter, &self.0.subject, self.0.tier, class, cost)
            .await;
        *self
            .0
            .verdict
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(verdict.clone());
        verdict
    }

    /// The verdict, once charged.
    pub fn verdict(&self) -> Option<Verdict> {
        self.0
            .verdict
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
