//! Local leases (quota leasing): most limited requests decided without a Redis round trip.
//!
//! An exact distributed limit costs one script call per request. Measured here (release,
//! 2 cores, `loadtest/reports/ratelimit-cost-per-request/`): ~7,500 req/s with limits on
//! against ~19,600 off, although no budget was anywhere near its end: the syscalls and
//! context switches of the round trip cost about as much as the request itself.
//!
//! A lease charges Redis ahead of time: when a check finds no usable lease for its key, the
//! script call asks for `n` units instead of `cost` (`scripts.rs`: all `n` if they fit, else
//! just `cost`), and this instance keeps the `n - cost` extra units and admits later requests
//! of that key from them, in memory. Every admitted unit was charged in Redis first, so the
//! instances together never admit more than the limit. What it costs:
//!
//! - **Under-admission**: units leased but never spent are lost (still charged in Redis). A
//!   lease is spent only within `ratelimit.lease_ttl` and never past the end of a fixed window
//!   or of the daily quota's day, so at most one lease per instance per key goes unspent at
//!   a time. The lease's size adapts to keep that small: `remaining / (8 *
//!   fallback_instances)` capped at `ratelimit.max_lease`, so it is large while the budget is
//!   far away (the common case) and shrinks to 1 (exact, a call per request) near the limit.
//!   With `I` instances, a client reaching its limit is refused at most about
//!   `I * remaining / (8 * I)` units early, i.e. 1/8 of what was left when the leases were taken.
//! - **Time shift**: a unit charged at `t` may be spent until `t + lease_ttl`; for the
//!   sliding windows, the token bucket and GCRA the admissions of any span are those charged
//!   in a span at most `lease_ttl` wider.
//! - **Approximate headers**: on a lease hit, `remaining` is Redis's answer at the lease
//!   (counting the lease as unspent) minus what this instance spent since; it does not see
//!   other instances' spending meanwhile, so it may be high by up to their leases.
//! - **Memory**: one entry per key in use (bounded, idle entries expire), see [`Leases`].
//!
//! `ratelimit.max_lease = 1` turns leases off: every check is one exact call, as before.
//! The login limits (`src/traffic/login.rs`) and the `auth` route class always use exact
//! checks: their budgets are a handful of guesses, where a lease buys nothing.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use super::{Decision, LimiterUnavailable, Policy};

/// Most keys holding a lease on one instance: with a key per principal and route class, an
/// attacker minting principals could otherwise grow the map without bound. An evicted lease
/// loses its unspent units (under-admission, never over-admission).
const MAX_KEYS: u64 = 100_000;

/// The leases of one instance, one per key.
pub(super) struct Leases {
    map: moka::future::Cache<String, Arc<Slot>>,
    max: u32,
    ttl: Duration,
    divisor: u32,
}

impl Leases {
    pub(super) fn new(max: u32, ttl: Duration, fallback_instances: u32) -> Self {
        Self {
            map: moka::future::Cache::builder()
                .max_capacity(MAX_KEYS)
                // Long enough to keep the sizing hint between bursts, short enough that idle
                // keys leave soon; a lease itself is dead after `ttl` anyway.
                .time_to_idle(ttl.max(Duration::from_secs(1)))
                .build(),
            max,
            ttl,
            divisor: fallback_instances.max(1).saturating_mul(8),
        }
    }

    /// Keys holding a slot (moka's count, which lags its pending work by moments).
    pub(super) fn keys(&self) -> u64 {
        self.map.entry_count()
    }

    /// Whether leases are on (`ratelimit.max_lease > 1`).
    pub(super) fn enabled(&self) -> bool {
        self.max > 1
    }

    pub(super) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease of `key` (a fresh, empty one the first time).
    pub(super) async fn entry(&self, key: &str) -> Arc<Slot> {
        self.map
            .get_with_by_ref(key, async { Arc::new(Slot::default()) })
            .await
    }

    /// Units to ask Redis for, at least `cost`: a share of what the last answer said was
    /// left, so leases shrink as the budget runs out. Nothing known yet: just `cost`.
    pub(super) fn size(&self, lease: &Lease, cost: u32) -> u32 {
        let share = lease.budget.map_or(1, |left| left / self.divisor);
        share.clamp(1, self.max).max(cost)
    }
}

/// One key's lease and the gate its refills pass.
///
/// Two locks, because a hot key (one client, 64 connections) meets them at very different
/// rates. Spending takes `lease`, a plain mutex held for a few instructions and never across
/// an `.await`: an async mutex there parks and wakes a task per contended request (measured,
/// `user_hot`: 15.4k req/s with one async mutex, 17.0k with this split). Refilling takes `refill`, an async mutex held
/// across the Redis call: the check that finds the lease empty refills it while the others
/// wait at the gate and then spend from the new lease (a single flight), instead of each
/// calling Redis.
#[derive(Debug, Default)]
pub(super) struct Slot {
    lease: Mutex<Lease>,
    pub(super) refill: tokio::sync::Mutex<()>,
}

impl Slot {
    /// The lease, for a few instructions (never held across an `.await`).
    pub(super) fn lease(&self) -> MutexGuard<'_, Lease> {
        // Nothing panics while holding it; a poisoned lease is still a consistent one.
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One key's lease: units already charged in Redis and not yet admitted here.
/// Redis's answer to a check that asked for a lease.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    /// The request's decision, as the script gave it.
    pub decision: Decision,
    /// The request's cost.
    pub cost: u32,
    /// Units charged: the lease (`cost` of them for this request), 0 when refused.
    pub granted: u32,
    /// When the call left, before Redis read its clock: `sent + reset_after` (or
    /// `retry_after`) is never past the moment Redis meant.
    pub sent: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Lease {
    held: Option<Held>,
    refused: Option<Refused>,
    /// The last refill that failed, and when it ended.
    failed: Option<(Instant, LimiterUnavailable)>,
    /// What the last Redis answer (minus local spending) said was left of the rate and the
    /// quota, whichever is smaller: the next lease's size is cut from it.
    budget: Option<u32>,
}

/// A refusal remembered: until its `retry_after`, Redis would refuse this cost (or more) again,
/// since other instances can only charge more meanwhile. Answering it here spares a key
/// that is over its limit (a client hammering past its budget) a round trip per request.
#[derive(Debug)]
struct Refused {
    policy: Policy,
    cost: u32,
    sent: Instant,
    until: Instant,
    decision: Decision,
}

#[derive(Debug)]
struct Held {
    policy: Policy,
    units: u32,
    spent: u32,
    taken: Instant,
    expires: Instant,
    /// Redis's answer at the take, with the lease's units counted as remaining.
    decision: Decision,
}

impl Lease {
    /// Admits `cost` from the lease if it is alive, for this policy, and holds enough; or
    /// refuses it if Redis refused as much or less a moment ago and said to wait.
    pub(super) fn spend(&mut self, policy: &Policy, cost: u32, now: Instant) -> Option<Decision> {
        if let Some(refused) = &self.refused
            && refused.policy == *policy
            && cost >= refused.cost
            && now < refused.until
        {
            let elapsed = now.saturating_duration_since(refused.sent);
            let mut decision = refused.decision;
            decision.reset_after = decision.reset_after.saturating_sub(elapsed);
            decision.retry_after = decision
                .retry_after
                .map(|retry| retry.saturating_sub(elapsed).max(Duration::from_millis(1)));
            if let Some(quota) = decision.quota.as_mut() {
                quota.reset_after = quota.reset_after.saturating_sub(elapsed);
            }
            return Some(decision);
        }
        let held = self.held.as_mut()?;
        if held.policy != *policy || now >= held.expires || held.units < cost {
            return None;
        }
        held.units -= cost;
        held.spent = held.spent.saturating_add(cost);
        let elapsed = now.saturating_duration_since(held.taken);
        let mut decision = held.decision;
        decision.remaining = decision.remaining.saturating_sub(held.spent);
        decision.reset_after = decision.reset_after.saturating_sub(elapsed);
        if let Some(quota) = decision.quota.as_mut() {
            quota.remaining = quota.remaining.saturating_sub(held.spent);
            quota.reset_after = quota.reset_after.saturating_sub(elapsed);
        }
        self.budget = Some(budget(&decision));
        Some(decision)
    }

    /// The failure of a refill that ended after `since` (while the caller waited for it).
    pub(super) fn failed_since(&self, since: Instant) -> Option<LimiterUnavailable> {
        self.failed
            .filter(|(at, _)| *at >= since)
            .map(|(_, failure)| failure)
    }

    pub(super) fn fail(&mut self, failure: LimiterUnavailable) {
        self.failed = Some((Instant::now(), failure));
    }

    /// Records Redis's answer and returns the request's decision (the lease's extra units
    /// counted as remaining). `window_bound`: the algorithm's windows are fixed, and a lease
    /// must not outlive the one it was charged in.
    pub(super) fn take(
        &mut self,
        policy: &Policy,
        answer: Answer,
        ttl: Duration,
        window_bound: bool,
    ) -> Decision {
        let Answer {
            mut decision,
            cost,
            granted,
            sent,
        } = answer;
        self.failed = None;
        self.budget = Some(budget(&decision));
        if !decision.allowed {
            // Keep any units left: a cheaper request may still spend them. A refusal that
            // no wait passes (`retry_after` none) is remembered for the ttl.
            let wait = decision.retry_after.map_or(ttl, |retry| retry.min(ttl));
            self.refused = Some(Refused {
                policy: *policy,
                cost,
                sent,
                until: sent + wait,
                decision,
            });
            return decision;
        }
        self.refused = None;
        let extra = granted.saturating_sub(cost);
        decision.remaining = decision.remaining.saturating_add(extra);
        let mut expires = sent + ttl;
        if window_bound {
            expires = expires.min(sent + decision.reset_after);
        }
        if let Some(quota) = decision.quota.as_mut() {
            quota.remaining = quota.remaining.saturating_add(extra);
            expires = expires.min(sent + quota.reset_after);
        }
        self.budget = Some(budget(&decision));
        self.held = (extra > 0).then_some(Held {
            policy: *policy,
            units: extra,
            spent: 0,
            taken: sent,
            expires,
            decision,
        });
        decision
    }
}

fn budget(decision: &Decision) -> u32 {
    decision
        .quota
        .map_or(decision.remaining, |q| q.remaining.min(decision.remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(remaining: u32, reset_after: Duration) -> Decision {
        Decision {
            allowed: true,
            limit: 1000,
            remaining,
            reset_after,
            retry_after: None,
            quota: None,
        }
    }

    #[test]
    fn a_lease_is_spent_down_to_nothing_and_reports_what_is_left() {
        let policy = Policy::new(1000, Duration::from_secs(60));
        let mut lease = Lease::default();
        let now = Instant::now();
        let answer = Answer {
            decision: allowed(900, Duration::from_secs(60)),
            cost: 1,
            granted: 10,
            sent: now,
        };
        let first = lease.take(&policy, answer, Duration::from_secs(1), false);
        assert_eq!(
            first.remaining, 909,
            "the 9 leased units still count as left"
        );
        let spent: Vec<u32> = (0..9)
            .map_while(|_| lease.spend(&policy, 1, now).map(|d| d.remaining))
            .collect();
        assert_eq!(spent, (900..909).rev().collect::<Vec<_>>());
        assert!(lease.spend(&policy, 1, now).is_none(), "the lease is empty");
    }

    #[test]
    fn a_lease_dies_at_its_ttl_at_the_window_end_and_for_another_policy() {
        let policy = Policy::new(1000, Duration::from_secs(60));
        let now = Instant::now();
        let take = |window_bound, reset_ms| {
            let mut lease = Lease::default();
            let answer = Answer {
                decision: allowed(900, Duration::from_millis(reset_ms)),
                cost: 1,
                granted: 10,
                sent: now,
            };
            lease.take(&policy, answer, Duration::from_millis(200), window_bound);
            lease
        };
        let mut lease = take(false, 50);
        assert!(
            lease
                .spend(&policy, 1, now + Duration::from_millis(100))
                .is_some()
        );
        assert!(
            lease
                .spend(&policy, 1, now + Duration::from_millis(200))
                .is_none()
        );
        let mut fixed = take(true, 50);
        assert!(
            fixed
                .spend(&policy, 1, now + Duration::from_millis(49))
                .is_some()
        );
        assert!(
            fixed
                .spend(&policy, 1, now + Duration::from_millis(50))
                .is_none()
        );
        let mut lease = take(false, 50);
        let other = Policy::new(10, Duration::from_secs(60));
        assert!(lease.spend(&other, 1, now).is_none());
    }

    #[test]
    fn a_refusal_is_repeated_for_as_much_or_more_until_its_retry() {
        let policy = Policy::new(1000, Duration::from_secs(60));
        let now = Instant::now();
        let mut lease = Lease::default();
        let refused = Decision {
            allowed: false,
            remaining: 2,
            retry_after: Some(Duration::from_millis(50)),
            ..allowed(2, Duration::from_secs(60))
        };
        let answer = Answer {
            decision: refused,
            cost: 5,
            granted: 0,
            sent: now,
        };
        lease.take(&policy, answer, Duration::from_millis(200), false);
        let again = lease.spend(&policy, 6, now + Duration::from_millis(20));
        assert_eq!(
            again.map(|d| (d.allowed, d.retry_after)),
            Some((false, Some(Duration::from_millis(30))))
        );
        assert!(
            lease.spend(&policy, 1, now).is_none(),
            "less may fit: ask Redis"
        );
        assert!(
            lease
                .spend(&policy, 5, now + Duration::from_millis(50))
                .is_none(),
            "past the retry: ask Redis"
        );
    }

    #[test]
    fn the_lease_shrinks_with_the_budget_down_to_exact_checks() {
        let leases = Leases::new(256, Duration::from_millis(200), 2);
        let with_budget = |left| Lease {
            budget: left,
            ..Lease::default()
        };
        assert_eq!(
            leases.size(&with_budget(None), 1),
            1,
            "nothing known: exact"
        );
        assert_eq!(leases.size(&with_budget(Some(1_000_000)), 1), 256, "capped");
        assert_eq!(leases.size(&with_budget(Some(160)), 1), 10);
        assert_eq!(
            leases.size(&with_budget(Some(15)), 1),
            1,
            "near the end: exact"
        );
        assert_eq!(
            leases.size(&with_budget(Some(15)), 5),
            5,
            "at least the cost"
        );
    }
}
