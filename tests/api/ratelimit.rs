//! The distributed rate limiter (`src/traffic/ratelimit/`) against the stack's Redis: each
//! algorithm at its edge, two instances sharing one limit, the values a decision carries,
//! and a dead Redis. Each test uses its own key prefix; every key has a TTL of at most a few
//! windows, so nothing is left behind.
//!
//! Timing: windows are hundreds of ms and expectations are computed from Redis's clock
//! (`TIME`), the one the scripts use. Tolerances allow a loaded 2-core machine (a check can
//! take tens of ms) but each assertion fails for the wrong algorithm.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scalable_api::{
    config::{LimiterAlgorithm, RateLimitConfig},
    traffic::{Decision, LimiterUnavailable, Policy, RateLimiter, render_headers},
};

use crate::helpers::{SilentServer, Stack};

pub(crate) const ALL: [LimiterAlgorithm; 5] = [
    LimiterAlgorithm::TokenBucket,
    LimiterAlgorithm::FixedWindow,
    LimiterAlgorithm::SlidingLog,
    LimiterAlgorithm::SlidingWindow,
    LimiterAlgorithm::Gcra,
];

pub(crate) fn config(algorithm: LimiterAlgorithm, test: &str) -> RateLimitConfig {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    RateLimitConfig {
        algorithm,
        redis_url: Stack::from_env().redis.as_str().into(),
        key_prefix: format!("test-ratelimit-{test}-{}-{nanos}", algorithm.as_str()),
        // Generous: a timeout under parallel test load must not read as a decision.
        command_timeout: Duration::from_secs(2),
        ..RateLimitConfig::default()
    }
}

fn limiter(algorithm: LimiterAlgorithm, test: &str) -> RateLimiter {
    RateLimiter::new(&config(algorithm, test)).expect("the test config builds a limiter")
}

async fn check(limiter: &RateLimiter, key: &str, policy: &Policy, cost: u32) -> Decision {
    limiter
        .check(key, policy, cost)
        .await
        .expect("the stack's Redis is up")
}

/// Redis's clock, the one every script uses.
pub(crate) async fn redis_now() -> Duration {
    let client = redis::Client::open(Stack::from_env().redis).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("the stack's Redis is up");
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .expect("TIME answers");
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// Sleeps until Redis time is `offset` into a window of `window` (windows aligned on
/// multiples of it, as the fixed and sliding windows align them); returns that window's start.
pub(crate) async fn sleep_until_offset(window: Duration, offset: Duration) -> Duration {
    let now = redis_now().await;
    let w = window.as_micros();
    let start = Duration::from_micros((now.as_micros() / w * w) as u64);
    let mut target = start + offset;
    if target < now {
        target += window;
    }
    tokio::time::sleep(target - now).await;
    target - offset
}

/// Sends `n` checks of cost 1 one after the other; returns how many were admitted.
async fn admitted(limiter: &RateLimiter, key: &str, policy: &Policy, n: usize) -> u32 {
    let mut count = 0;
    for _ in 0..n {
        count += u32::from(check(limiter, key, policy, 1).await.allowed);
    }
    count
}

#[tokio::test]
async fn only_the_fixed_window_admits_twice_its_limit_across_a_window_boundary() {
    // 10 per second; a batch 150 ms before a boundary, another just after it.
    let (limit, window) = (10, Duration::from_secs(1));
    let policy = Policy::new(limit, window);
    for algorithm in ALL {
        let limiter = limiter(algorithm, "boundary");
        let mut attempt = 0;
        let (total, span) = loop {
            attempt += 1;
            let start = sleep_until_offset(window, Duration::from_millis(850)).await;
            let before = redis_now().await;
            let first = admitted(&limiter, &format!("k{attempt}"), &policy, 12).await;
            if redis_now().await >= start + window && attempt < 4 {
                continue; // The machine was too slow: the first batch crossed the boundary.
            }
            tokio::time::sleep(
                (start + window + Duration::from_millis(20)).saturating_sub(redis_now().await),
            )
            .await;
            let second = admitted(&limiter, &format!("k{attempt}"), &policy, 12).await;
            break (first + second, redis_now().await - before);
        };
        // What a correct sliding limit could admit in `span`: the limit plus what the rate
        // refills meanwhile (span < window, so well under 2x).
        let sliding_bound = limit + (f64::from(limit) * span.as_secs_f64()).ceil() as u32 + 1;
        match algorithm {
            LimiterAlgorithm::FixedWindow => assert_eq!(
                total,
                2 * limit,
                "fixed window: a full limit on each side of the boundary, within {span:?}"
            ),
            _ => assert!(
                total <= sliding_bound && total < 2 * limit,
                "{algorithm:?}: {total} admitted within {span:?}, at most {sliding_bound} allowed"
            ),
        }
    }
}

#[tokio::test]
async fn the_sliding_log_admits_exactly_its_limit_in_any_window() {
    // 5 per 400 ms, attempted every few ms for about 1.5 s. Each admission happened between
    // the Redis times read before and after its check.
    let (limit, window) = (5_usize, Duration::from_millis(400));
    let policy = Policy::new(limit as u32, window);
    let limiter = limiter(LimiterAlgorithm::SlidingLog, "exact");
    let mut admissions: Vec<(Duration, Duration)> = Vec::new();
    let mut refusals: Vec<(Duration, Duration)> = Vec::new();
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        let before = redis_now().await;
        let decision = check(&limiter, "k", &policy, 1).await;
        let span = (before, redis_now().await);
        if decision.allowed {
            admissions.push(span);
        } else {
            refusals.push(span);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert!(
        admissions.len() > 2 * limit && !refusals.is_empty(),
        "{} admitted, {} refused: the window was not under pressure",
        admissions.len(),
        refusals.len()
    );
    // Never more than `limit` in any window: admission i happened a full window after
    // admission i - limit.
    for (i, later) in admissions.iter().enumerate().skip(limit) {
        let earlier = admissions[i - limit];
        assert!(
            later.1 - earlier.0 >= window,
            "admissions {} and {i} within {:?}",
            i - limit,
            later.1 - earlier.0
        );
    }
    // And no fewer: every refusal had `limit` admissions in the window before it. (Checked
    // on what happened, not on timing, so a slow machine cannot fail it: an admission counts
    // if it may have happened less than a window before the refusal.)
    for (n, &(refused_from, refused_by)) in refusals.iter().enumerate() {
        let in_window = admissions
            .iter()
            .filter(|&&(admitted_from, admitted_by)| {
                admitted_by + window > refused_from && admitted_from < refused_by
            })
            .count();
        assert!(
            in_window >= limit,
            "refusal {n} with only {in_window} admissions in the window before it: the log held back more than the window"
        );
    }
}

#[tokio::test]
async fn the_token_bucket_admits_its_burst_then_refills_at_the_steady_rate() {
    // Capacity 5, refilled at 20 per second (one token per 50 ms).
    let policy = Policy::new(20, Duration::from_secs(1)).with_burst(5);
    let limiter = limiter(LimiterAlgorithm::TokenBucket, "bucket");
    assert_eq!(admitted(&limiter, "k", &policy, 5).await, 5, "the burst");
    let refused = check(&limiter, "k", &policy, 1).await;
    assert!(!refused.allowed, "the bucket is empty");
    let retry = refused.retry_after.expect("a retry can pass");
    assert!(
        retry <= Duration::from_millis(50),
        "one token's refill: {retry:?}"
    );

    let before = redis_now().await;
    let mut count = 0;
    while redis_now().await - before < Duration::from_millis(1000) {
        count += u32::from(check(&limiter, "k", &policy, 1).await.allowed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let span = redis_now().await - before;
    let expected = 20.0 * span.as_secs_f64();
    assert!(
        (f64::from(count) - expected).abs() <= 2.0,
        "{count} admitted in {span:?}, the rate gives {expected:.1}"
    );
}

#[tokio::test]
async fn gcra_tolerates_its_burst_then_admits_one_per_emission_interval() {
    // 10 per second (emission interval 100 ms), bursts of 3.
    let policy = Policy::new(10, Duration::from_secs(1)).with_burst(3);
    let limiter = limiter(LimiterAlgorithm::Gcra, "gcra");
    let burst: Vec<Decision> =
        futures_util::future::join_all((0..3).map(|_| check(&limiter, "k", &policy, 1))).await;
    assert!(burst.iter().all(|d| d.allowed), "the burst: {burst:?}");
    let refused = check(&limiter, "k", &policy, 1).await;
    assert!(!refused.allowed, "past the burst");
    let retry = refused.retry_after.expect("a retry can pass");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_millis(100),
        "within one emission interval: {retry:?}"
    );
    tokio::time::sleep(retry + Duration::from_millis(2)).await;
    assert!(
        check(&limiter, "k", &policy, 1).await.allowed,
        "after retry_after"
    );

    let before = redis_now().await;
    let mut count = 0;
    while redis_now().await - before < Duration::from_millis(1000) {
        count += u32::from(check(&limiter, "k", &policy, 1).await.allowed);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let span = redis_now().await - before;
    let expected = span.as_secs_f64() / 0.1;
    assert!(
        (f64::from(count) - expected).abs() <= 2.0,
        "{count} admitted in {span:?}: one per 100 ms gives {expected:.1}"
    );
}

#[tokio::test]
async fn the_sliding_window_counter_weighs_the_previous_window_by_what_is_left_of_it() {
    // 10 per second. Fill one window early on, then try 10 at ~half of the next: the
    // previous window still counts about 10 * (1 - elapsed), so about 5 pass, where the
    // sliding log (whose entries have all expired by then: they are 1.4 s old) and the fixed
    // window would pass all 10. Bound: within one request of the weighted formula at the
    // Redis times before and after the batch.
    let (limit, window) = (10_u32, Duration::from_secs(1));
    let policy = Policy::new(limit, window);
    let limiter = limiter(LimiterAlgorithm::SlidingWindow, "weighting");
    let start = sleep_until_offset(window, Duration::from_millis(100)).await;
    assert_eq!(admitted(&limiter, "k", &policy, 10).await, limit);
    tokio::time::sleep(
        (start + window + Duration::from_millis(500)).saturating_sub(redis_now().await),
    )
    .await;
    let before = redis_now().await;
    let count = admitted(&limiter, "k", &policy, 10).await;
    let after = redis_now().await;
    let weighted = |at: Duration| {
        let elapsed = (at - start - window).as_secs_f64();
        (f64::from(limit) - f64::from(limit) * (1.0 - elapsed)).floor()
    };
    let (low, high) = (weighted(before) - 1.0, weighted(after) + 1.0);
    assert!(
        (low..=high).contains(&f64::from(count)),
        "{count} admitted at {:?}..{:?} into the window; the weighting gives {low}..{high}",
        before - start - window,
        after - start - window
    );
}

/// Two limiters on `config` (two service instances of one deployment, each with its own
/// pool) charging one key 1,200 times at once, 600 each, under `policy` (an hour's window,
/// away from its boundary), exactly or through leases. Returns the admitted count, the units
/// the bucket and GCRA may have refilled meanwhile (one per 7.2 s at 500 per hour), and the
/// two limiters.
pub(crate) async fn hammer_from_two_instances(
    config: &RateLimitConfig,
    policy: Policy,
    leased: bool,
) -> (u32, u32, [std::sync::Arc<RateLimiter>; 2]) {
    let window = policy.window;
    let a = std::sync::Arc::new(RateLimiter::new(config).expect("builds"));
    let b = std::sync::Arc::new(RateLimiter::new(config).expect("builds"));
    // Not within 10 s of the fixed windows' hourly boundary.
    let into = Duration::from_micros((redis_now().await.as_micros() % window.as_micros()) as u64);
    if window - into < Duration::from_secs(10) {
        tokio::time::sleep(window - into + Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let tasks: Vec<_> = (0..1200)
        .map(|i| {
            let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                if leased {
                    limiter.check_leased("shared", &policy, 1).await
                } else {
                    limiter.check("shared", &policy, 1).await
                }
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        let decision = task.await.expect("no panic").expect("Redis is up");
        allowed += u32::from(decision.allowed);
    }
    let refill = (started.elapsed().as_secs_f64() / 7.2).ceil() as u32;
    (allowed, refill, [a, b])
}

#[tokio::test]
async fn two_instances_on_one_redis_share_one_limit() {
    // 1,200 concurrent checks, 600 through each of two limiters with their own pools (two
    // service instances), against a limit of 500 per hour: the window does not roll over
    // and the rate refills nothing meaningful during the test.
    let limit = 500_u32;
    let policy = Policy::new(limit, Duration::from_secs(3600));
    for algorithm in ALL {
        let config = config(algorithm, "instances");
        let (allowed, refill, _) = hammer_from_two_instances(&config, policy, false).await;
        assert!(
            (limit..=limit + refill).contains(&allowed),
            "{algorithm:?}: {allowed} of 1,200 admitted against a shared limit of {limit}"
        );
    }
}

#[tokio::test]
async fn a_decision_reports_remaining_reset_and_retry_and_charges_its_cost() {
    // 10 per 10 s, burst 10: charge 3, then 8 (refused: 7 left), then 7, then 11 (never fits).
    let (limit, window) = (10, Duration::from_secs(10));
    let policy = Policy::new(limit, window);
    let secs = Duration::from_secs;
    for algorithm in ALL {
        let limiter = limiter(algorithm, "values");
        let into = redis_now().await.as_micros() % window.as_micros();
        let left = window - Duration::from_micros(into as u64);
        if left < secs(2) {
            tokio::time::sleep(left).await; // Keep the fixed window from rolling over.
        }

        let first = check(&limiter, "k", &policy, 3).await;
        assert!(first.allowed, "{algorithm:?}");
        assert_eq!(
            (first.limit, first.remaining, first.retry_after),
            (10, 7, None),
            "{algorithm:?}"
        );
        let reset = first.reset_after;
        let expected_reset = match algorithm {
            // Three units' refill at one per second.
            LimiterAlgorithm::TokenBucket | LimiterAlgorithm::Gcra => secs(3),
            // The newest charge leaves the window.
            LimiterAlgorithm::SlidingLog => window,
            // The window's end.
            LimiterAlgorithm::FixedWindow => left,
            // The current window, then the next, during which it still weighs.
            LimiterAlgorithm::SlidingWindow => left + window,
        };
        assert!(
            reset <= expected_reset && expected_reset - reset < Duration::from_millis(500),
            "{algorithm:?}: reset_after {reset:?}, expected about {expected_reset:?}"
        );

        let refused = check(&limiter, "k", &policy, 8).await;
        assert!(!refused.allowed, "{algorithm:?}: 8 > 7 left");
        assert_eq!(
            refused.remaining, 7,
            "{algorithm:?}: a refusal charges nothing"
        );
        let retry = refused.retry_after.expect("8 fits once enough is restored");
        let expected_retry = match algorithm {
            // One more unit: one second.
            LimiterAlgorithm::TokenBucket | LimiterAlgorithm::Gcra => secs(1),
            // The first charge (3 units) leaves the window.
            LimiterAlgorithm::SlidingLog => window,
            LimiterAlgorithm::FixedWindow => left,
            // 3 units in the window it becomes the previous one must weigh at most 2:
            // after (1 - 2/3) of the next window.
            LimiterAlgorithm::SlidingWindow => left + window / 3,
        };
        assert!(
            retry <= expected_retry && expected_retry - retry < Duration::from_millis(500),
            "{algorithm:?}: retry_after {retry:?}, expected about {expected_retry:?}"
        );

        let rest = check(&limiter, "k", &policy, 7).await;
        assert!(
            rest.allowed && rest.remaining == 0,
            "{algorithm:?}: {rest:?}"
        );
        let limited = check(&limiter, "k", &policy, 1).await;
        assert!(
            !limited.allowed && limited.retry_after.is_some(),
            "{algorithm:?}"
        );

        let never = check(&limiter, "other", &policy, 11).await;
        assert!(
            !never.allowed && never.retry_after.is_none(),
            "{algorithm:?}: a cost above the capacity can never pass: {never:?}"
        );

        let headers = render_headers("default", &policy, &limited);
        assert_eq!(headers.policy, r#""default";q=10;w=10"#);
        assert!(
            headers.ratelimit.starts_with(r#""default";r=0;t="#),
            "{}",
            headers.ratelimit
        );
        assert!(headers.retry_after.is_some());
    }
}

#[tokio::test]
async fn the_daily_quota_is_charged_in_the_same_call_as_the_rate_and_refuses_once_spent() {
    // 10 per 10 s, and 5 a day.
    let window = Duration::from_secs(10);
    let policy = Policy::new(10, window).with_daily_quota(5);
    let day = Duration::from_secs(86_400);
    for algorithm in ALL {
        let limiter = limiter(algorithm, "quota");
        let left = window
            - Duration::from_micros((redis_now().await.as_micros() % window.as_micros()) as u64);
        if left < Duration::from_secs(2) {
            tokio::time::sleep(left).await; // Keep the fixed window from rolling over.
        }

        let first = check(&limiter, "k", &policy, 3).await;
        let quota = first.quota.expect("the policy has a quota");
        assert!(first.allowed, "{algorithm:?}");
        assert_eq!((first.remaining, quota.remaining), (7, 2), "{algorithm:?}");
        let until_midnight =
            day - Duration::from_micros((redis_now().await.as_micros() % day.as_micros()) as u64);
        assert!(
            quota.reset_after >= until_midnight
                && quota.reset_after - until_midnight < Duration::from_secs(1),
            "{algorithm:?}: the quota resets at the end of the UTC day: {:?} vs {until_midnight:?}",
            quota.reset_after
        );

        let over = check(&limiter, "k", &policy, 3).await;
        let quota = over.quota.expect("a quota");
        assert!(!over.allowed && quota.exhausted, "{algorithm:?}: {over:?}");
        assert_eq!(
            (over.remaining, quota.remaining),
            (7, 2),
            "{algorithm:?}: neither the rate nor the quota was charged"
        );
        assert_eq!(over.retry_after, Some(quota.reset_after), "{algorithm:?}");

        let rest = check(&limiter, "k", &policy, 2).await;
        assert!(rest.allowed, "{algorithm:?}");
        assert_eq!(rest.quota.map(|q| q.remaining), Some(0), "{algorithm:?}");
        let never = check(&limiter, "other", &policy, 6).await;
        assert!(
            !never.allowed && never.retry_after.is_none(),
            "{algorithm:?}: a cost above the quota can never pass: {never:?}"
        );
    }
}

#[tokio::test]
async fn two_instances_charging_one_quota_at_once_admit_exactly_the_quota() {
    // 400 concurrent checks through two limiters; the rate admits them all, the quota 37.
    let policy = Policy::new(1000, Duration::from_secs(3600)).with_daily_quota(37);
    for algorithm in ALL {
        let config = config(algorithm, "quota-instances");
        let a = std::sync::Arc::new(RateLimiter::new(&config).expect("builds"));
        let b = std::sync::Arc::new(RateLimiter::new(&config).expect("builds"));
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { limiter.check("shared", &policy, 1).await })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            let decision = task.await.expect("no panic").expect("Redis is up");
            allowed += u32::from(decision.allowed);
        }
        assert_eq!(allowed, 37, "{algorithm:?}");
    }
}

#[tokio::test]
async fn a_closed_port_answers_unavailable_at_once() {
    let mut config = config(LimiterAlgorithm::Gcra, "closed");
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("bound").port()
    }; // Closed again here.
    config.redis_url = format!("redis://127.0.0.1:{port}").into();
    config.command_timeout = Duration::from_millis(200);
    let limiter = RateLimiter::new(&config).expect("builds");
    let policy = Policy::new(10, Duration::from_secs(1));
    for _ in 0..5 {
        let started = Instant::now();
        let result = limiter.check("k", &policy, 1).await;
        assert!(result.is_err(), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        limiter.check("k", &policy, 1).await,
        Err(LimiterUnavailable::BreakerOpen)
    );
}

#[tokio::test]
async fn once_the_breaker_opens_a_silent_redis_costs_no_timeout() {
    // A server that accepts connections and never answers: every command times out.
    let silent = SilentServer::start().await;
    let mut config = config(LimiterAlgorithm::FixedWindow, "silent");
    config.redis_url = silent.redis_url().into();
    config.command_timeout = Duration::from_millis(100);
    let limiter = RateLimiter::new(&config).expect("builds");
    let policy = Policy::new(10, Duration::from_secs(1));

    for _ in 0..config.breaker.failure_threshold {
        let started = Instant::now();
        assert!(limiter.check("k", &policy, 1).await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded: {:?}",
            started.elapsed()
        );
    }
    for _ in 0..100 {
        let started = Instant::now();
        assert_eq!(
            limiter.check("k", &policy, 1).await,
            Err(LimiterUnavailable::BreakerOpen)
        );
        assert!(
            started.elapsed() < Duration::from_millis(20),
            "the open breaker answers without waiting: {:?}",
            started.elapsed()
        );
    }
}
