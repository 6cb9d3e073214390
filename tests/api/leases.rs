//! Local leases (`src/traffic/ratelimit/lease.rs`) against the stack's Redis: they cut the
//! script calls, never let instances admit more than the limit, charge the daily quota with
//! the lease, and are not spent past their ttl or a fixed window's end.
//!
//! `tests/api/ratelimit.rs` tests each algorithm's exact script through
//! `RateLimiter::check`; here every algorithm also goes through `check_leased`.

use std::{sync::Arc, time::Duration};

use scalable_api::{
    config::{LimiterAlgorithm, RateLimitConfig},
    traffic::{Decision, Policy, RateLimiter},
};

use crate::helpers::SilentServer;
use crate::ratelimit::{ALL, config, hammer_from_two_instances, sleep_until_offset};

fn leased(
    algorithm: LimiterAlgorithm,
    test: &str,
    tune: impl FnOnce(&mut RateLimitConfig),
) -> RateLimiter {
    let mut config = config(algorithm, test);
    tune(&mut config);
    RateLimiter::new(&config).expect("the test config builds a limiter")
}

async fn check(limiter: &RateLimiter, policy: &Policy) -> Decision {
    limiter
        .check_leased("k", policy, 1)
        .await
        .expect("the stack's Redis is up")
}

#[tokio::test]
async fn leases_answer_most_checks_of_a_distant_budget_without_a_round_trip() {
    let policy = Policy::new(100_000, Duration::from_secs(3600));
    for algorithm in ALL {
        let limiter = leased(algorithm, "fewer-calls", |_| {});
        let exact = leased(algorithm, "fewer-calls-exact", |c| c.max_lease = 1);
        for _ in 0..500 {
            assert!(check(&limiter, &policy).await.allowed, "{algorithm:?}");
            assert!(check(&exact, &policy).await.allowed, "{algorithm:?}");
        }
        assert_eq!(
            exact.redis_calls(),
            500,
            "{algorithm:?}: max_lease = 1 is one call per check"
        );
        // 1 exact call, then leases of up to 256 (a lease's 200 ms ttl may end a few early
        // on a loaded machine).
        assert!(
            limiter.redis_calls() <= 50,
            "{algorithm:?}: {} script calls for 500 checks",
            limiter.redis_calls()
        );
    }
}

#[tokio::test]
async fn two_instances_hammering_one_key_through_leases_never_admit_more_than_the_limit() {
    // As `ratelimit::two_instances_on_one_redis_share_one_limit`, through the leases.
    let (limit, window) = (500_u32, Duration::from_secs(3600));
    let policy = Policy::new(limit, window);
    for algorithm in ALL {
        // One config, so one key prefix: two instances of one deployment.
        let config = config(algorithm, "hammer");
        let (allowed, refill, [a, b]) = hammer_from_two_instances(&config, policy, true).await;
        assert!(
            (limit - limit / 100..=limit + refill).contains(&allowed),
            "{algorithm:?}: {allowed} of 1,200 admitted against a shared limit of {limit}"
        );
        let calls = a.redis_calls() + b.redis_calls();
        // Measured: 78 (leases while far from the limit, remembered refusals past it).
        assert!(
            calls < 400,
            "{algorithm:?}: {calls} script calls for 1,200 checks"
        );
    }
}

#[tokio::test]
async fn one_instance_reports_through_its_lease_what_exact_checks_would() {
    // One instance alone: what Redis said at the lease minus what it spent since is exact.
    // A fixed window of an hour, so the test does not straddle a boundary.
    let limiter = leased(LimiterAlgorithm::FixedWindow, "headers", |_| {});
    let policy = Policy::new(1000, Duration::from_secs(3600)).with_daily_quota(5000);
    for i in 1..=40 {
        let decision = check(&limiter, &policy).await;
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 1000 - i, "check {i}");
        let quota = decision.quota.expect("the policy has a quota");
        assert_eq!(quota.remaining, 5000 - i, "check {i}");
    }
    assert!(limiter.redis_calls() < 40);
    // Redis has charged the quota for the lease too: more than the 40 units admitted.
    let stored = limiter
        .check("k", &policy, 0)
        .await
        .expect("Redis is up")
        .quota
        .expect("the policy has a quota");
    assert!(
        stored.remaining < 5000 - 40,
        "the quota was charged {} units for 40 admissions",
        5000 - stored.remaining
    );
}

#[tokio::test]
async fn a_fixed_window_lease_is_not_spent_past_the_window_end() {
    // A ttl far longer than the window: only the window's end can end the lease.
    let window = Duration::from_secs(1);
    let limiter = leased(LimiterAlgorithm::FixedWindow, "boundary", |c| {
        c.lease_ttl = Duration::from_secs(30);
    });
    let policy = Policy::new(100_000, window);
    sleep_until_offset(window, Duration::from_millis(100)).await;
    check(&limiter, &policy).await; // exact: nothing known yet
    let leasing = check(&limiter, &policy).await; // takes a lease
    let calls = limiter.redis_calls();
    assert_eq!(calls, 2);
    check(&limiter, &policy).await;
    assert_eq!(limiter.redis_calls(), calls, "spent from the lease");
    tokio::time::sleep(leasing.reset_after + Duration::from_millis(20)).await;
    let next = check(&limiter, &policy).await;
    assert_eq!(
        limiter.redis_calls(),
        calls + 1,
        "the new window needs a new lease"
    );
    assert!(
        next.remaining > leasing.remaining,
        "a fresh window: {} left, {} at the lease",
        next.remaining,
        leasing.remaining
    );
}

#[tokio::test]
async fn a_lease_is_not_spent_past_its_ttl() {
    let limiter = leased(LimiterAlgorithm::Gcra, "ttl", |c| {
        c.lease_ttl = Duration::from_millis(100);
    });
    let policy = Policy::new(100_000, Duration::from_secs(3600));
    check(&limiter, &policy).await;
    check(&limiter, &policy).await;
    let calls = limiter.redis_calls();
    tokio::time::sleep(Duration::from_millis(150)).await;
    check(&limiter, &policy).await;
    assert_eq!(limiter.redis_calls(), calls + 1, "the lease expired");
}

#[tokio::test]
async fn a_key_over_its_limit_is_refused_from_memory_until_its_retry() {
    // A ttl far longer than the test: only the retry time bounds the remembered refusal.
    let limiter = leased(LimiterAlgorithm::FixedWindow, "refused", |c| {
        c.lease_ttl = Duration::from_secs(30);
    });
    let policy = Policy::new(10, Duration::from_secs(3600));
    for _ in 0..10 {
        assert!(check(&limiter, &policy).await.allowed);
    }
    let first = check(&limiter, &policy).await;
    assert!(!first.allowed);
    let calls = limiter.redis_calls();
    for _ in 0..100 {
        let again = check(&limiter, &policy).await;
        assert!(!again.allowed);
        assert!(again.retry_after.is_some_and(|retry| !retry.is_zero()));
    }
    assert_eq!(
        limiter.redis_calls(),
        calls,
        "no round trip for a known refusal"
    );
    let exact = limiter.check("k", &policy, 1).await.expect("Redis is up");
    assert!(!exact.allowed, "Redis agrees");
}

#[tokio::test]
async fn checks_waiting_for_a_failing_refill_share_its_failure() {
    // A server that accepts connections and never answers: every call times out.
    let silent = SilentServer::start().await;
    let limiter = Arc::new(leased(LimiterAlgorithm::Gcra, "silent", |c| {
        c.redis_url = silent.redis_url().into();
        c.command_timeout = Duration::from_millis(300);
        // The breaker stays closed: only the single flight can spare the waiters.
        c.breaker.failure_threshold = 1000;
    }));
    let policy = Policy::new(100_000, Duration::from_secs(3600));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check_leased("k", &policy, 1).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.expect("no panic").is_err());
    }
    // One call expected; a check that only arrives after the failure tries again.
    assert!(
        limiter.redis_calls() < 10,
        "{} calls for 20 checks waiting on one key",
        limiter.redis_calls()
    );
}
