//! The rate limits on the routes (`src/http/limits.rs`, `src/http/shield.rs`) against the
//! stack's Redis: one limit shared by two instances, tiers, headers, GraphQL's cost, the daily
//! quota, the shield behind proxies, the switch. Each test has its own key prefix (the
//! harness sets it), so its budgets start empty and no parallel test spends them.
//!
//! Budgets are set per test with a window of an hour, so nothing refills while a test runs
//! and each count is exact.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use scalable_api::{Config, config::ClassLimit, domain::Tier};
use serde_json::{Value, json};

use crate::helpers::{Request, ResponseExt, SilentServer, TestApp, assert_problem};

const HOUR: Duration = Duration::from_secs(3600);

fn budget(rate: u32, burst: u32, daily_quota: u32) -> ClassLimit {
    ClassLimit {
        rate,
        burst,
        daily_quota,
    }
}

/// An hour's window, and a shield out of the way (its own test turns it back on).
fn hourly(config: &mut Config) {
    config.ratelimit.window = HOUR;
    config.ratelimit.shield.per_second = 100_000;
    config.ratelimit.shield.burst = 100_000;
}

/// Sends every request, `concurrency` at a time; the statuses in no particular order.
async fn statuses(requests: Vec<Request>, concurrency: usize) -> Vec<StatusCode> {
    futures_util::stream::iter(requests)
        .map(|request| async move { request.await.status() })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// The items of a `RateLimit` header: (name, r, t).
fn ratelimit_items(response: &reqwest::Response) -> Vec<(String, u64, u64)> {
    response
        .header_str("ratelimit")
        .split(", ")
        .filter_map(|item| {
            let parts: Vec<&str> = item.split(';').collect();
            let param = |key: &str| {
                parts
                    .iter()
                    .find_map(|p| p.strip_prefix(key))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            Some((
                parts[0].trim_matches('"').to_owned(),
                param("r=")?,
                param("t=")?,
            ))
        })
        .collect()
}

fn remaining(response: &reqwest::Response, policy: &str) -> u64 {
    ratelimit_items(response)
        .into_iter()
        .find(|(name, _, _)| name == policy)
        .map(|(_, r, _)| r)
        .unwrap_or_else(|| {
            panic!(
                "no {policy} in RateLimit: {:?}",
                response.header_str("ratelimit")
            )
        })
}

#[tokio::test]
async fn two_instances_on_one_redis_admit_one_shared_limit_within_one_percent() {
    // Arrange: two instances with the same Redis and key prefix; the anonymous read budget
    // is 500 an hour, all of it available at once.
    let limit = 500;
    let shared = |config: &mut Config| {
        hourly(config);
        config.ratelimit.tiers.anonymous.reads = budget(limit, limit, 1_000_000);
    };
    let a = TestApp::spawn_with(shared).await;
    let prefix = a.state.config.ratelimit.key_prefix.clone();
    let b = TestApp::spawn_with(|config| {
        shared(config);
        config.ratelimit.key_prefix = prefix;
    })
    .await;

    // Act: 1,200 reads from one address, alternating between the instances, 32 in flight.
    let requests: Vec<Request> = (0..1200)
        .map(|i| if i % 2 == 0 { &a } else { &b }.users().get(1))
        .collect();
    let answers = statuses(requests, 32).await;

    // Assert: the limit, once, across both (GCRA refills one read per 7.2 s meanwhile).
    let admitted = count(&answers, StatusCode::NOT_FOUND);
    let refused = count(&answers, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(admitted + refused, 1200, "only 404s and 429s: {answers:?}");
    let within = limit as usize..=limit as usize + limit as usize / 100;
    assert!(
        within.contains(&admitted),
        "{admitted} of 1,200 admitted against a shared limit of {limit}"
    );
}

#[tokio::test]
async fn anonymous_free_and_pro_callers_get_their_tiers_budgets() {
    // Arrange: reads per hour, all at once: 3 anonymous, 5 free, 8 pro.
    let app = TestApp::spawn_with(|config| {
        hourly(config);
        let tiers = &mut config.ratelimit.tiers;
        tiers.anonymous.reads = budget(3, 3, 1000);
        tiers.free.reads = budget(5, 5, 1000);
        tiers.pro.reads = budget(8, 8, 1000);
    })
    .await;
    let token = |user_id: i64, tier: Tier| {
        app.state
            .jwt
            .issue(user_id, tier, 0)
            .expect("a token")
            .access_token
    };
    // Real accounts: a token of a user that does not exist is refused.
    let (free, pro) = (
        app.register("free-reader@example.com", "Free").await,
        app.register("pro-reader@example.com", "Pro").await,
    );
    let (free, pro) = (token(free.id, Tier::Free), token(pro.id, Tier::Pro));

    // Act: 12 reads each, one after the other.
    let mut admitted = Vec::new();
    for who in [None, Some(&free), Some(&pro)] {
        let mut n = 0;
        for _ in 0..12 {
            let response = app.users().get(1).bearer(who).await;
            n += usize::from(response.status() != StatusCode::TOO_MANY_REQUESTS);
        }
        admitted.push(n);
    }

    // Assert
    assert_eq!(admitted, [3, 5, 8], "anonymous, free, pro");
}

#[tokio::test]
async fn every_answer_of_a_limited_route_carries_the_policies_and_a_refusal_says_when_to_retry() {
    // Arrange: 2 anonymous reads a minute, 100 a day.
    let app = TestApp::spawn_with(|config| {
        config.ratelimit.tiers.anonymous.reads = budget(2, 2, 100);
    })
    .await;

    // Act
    let first = app.users().get(1).await;
    let second = app.users().get(1).await;
    let refused = app.users().get(1).await;

    // Assert: the rate and the day, as two policies of the draft, on 404s and on the 429.
    let policy = r#""anonymous-reads";q=2;w=60, "anonymous-reads-daily";q=100;w=86400"#;
    for response in [&first, &second, &refused] {
        assert_eq!(response.header_str("ratelimit-policy"), policy);
    }
    assert_eq!(first.status(), StatusCode::NOT_FOUND);
    assert_eq!(remaining(&first, "anonymous-reads"), 1);
    assert_eq!(remaining(&first, "anonymous-reads-daily"), 99);
    assert_eq!(remaining(&second, "anonymous-reads"), 0);
    let (_, _, reset) = ratelimit_items(&second)[0];
    assert!(
        (59..=60).contains(&reset),
        "both reads back within a window: t={reset}"
    );

    assert_eq!(
        remaining(&refused, "anonymous-reads-daily"),
        98,
        "a refusal charges nothing"
    );
    let retry: u64 = refused
        .header_str("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=30).contains(&retry), "one read's interval: {retry}");
    let problem = assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "the third read").await;
    assert_eq!(
        problem["type"],
        "https://scalable-api.dev/problems/too-many-requests"
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Retry-After")),
        "{problem}"
    );

    // The probes are never limited.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let response = app.get(probe).await;
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
        assert!(response.header_str("ratelimit").is_empty(), "{probe}");
    }
}

#[tokio::test]
async fn a_graphql_request_is_charged_its_cost_and_refused_with_a_429_before_it_runs() {
    // Arrange: 20,000 cost units an hour for anonymous GraphQL, all at once.
    let app = TestApp::spawn_with(|config| {
        hourly(config);
        config.ratelimit.tiers.anonymous.graphql = budget(20_000, 20_000, 1_000_000);
    })
    .await;
    let post = |query: &'static str| {
        app.request(Method::POST, "/graphql")
            .json(&json!({ "query": query }))
    };
    let cheap = "{ users(first: 1) { edges { node { id } } } }";
    let costly = "{ users(first: 100) { edges { node { id name posts(first: 10) { id title author { id name } } } } } }";

    // Act
    let after_cheap = post(cheap).await;
    let after_costly = post(costly).await;
    let mut answers = vec![after_costly.status()];
    let mut refused = None;
    for _ in 0..4 {
        let response = post(costly).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
        answers.push(response.status());
    }

    // Assert: the cheap query spent a few units, the costly one thousands.
    assert_eq!(after_cheap.status(), StatusCode::OK);
    let left_after_cheap = remaining(&after_cheap, "anonymous-graphql");
    let cheap_cost = 20_000 - left_after_cheap;
    let costly_cost = left_after_cheap - remaining(&after_costly, "anonymous-graphql");
    assert!((1..20).contains(&cheap_cost), "cheap: {cheap_cost}");
    assert!(costly_cost > 100 * cheap_cost, "costly: {costly_cost}");
    assert_eq!(
        answers.len(),
        (20_000 - cheap_cost as usize) / costly_cost as usize,
        "as many costly queries as the budget holds pass: {answers:?}"
    );
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");

    // The next one is an HTTP 429 with the headers and a GraphQL error, not a 200.
    let refused = refused.expect("the budget ran out");
    assert!(!refused.header_str("retry-after").is_empty());
    assert!(
        refused
            .header_str("ratelimit-policy")
            .contains("anonymous-graphql")
    );
    let body = refused.json_body().await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "TOO_MANY_REQUESTS",
        "{body}"
    );
    assert!(body["data"].is_null(), "nothing ran: {body}");
}

#[tokio::test]
async fn the_daily_quota_refuses_once_spent_until_the_day_ends() {
    // Arrange: 100 reads a minute, but 5 a day.
    let app = TestApp::spawn_with(|config| {
        config.ratelimit.tiers.anonymous.reads = budget(100, 100, 5);
    })
    .await;

    // Act
    let mut answers = Vec::new();
    for _ in 0..7 {
        answers.push(app.users().get(1).await);
    }

    // Assert
    let statuses: Vec<StatusCode> = answers.iter().map(|r| r.status()).collect();
    assert_eq!(
        statuses,
        [
            &[StatusCode::NOT_FOUND; 5][..],
            &[StatusCode::TOO_MANY_REQUESTS; 2]
        ]
        .concat()
    );
    let refused = answers.pop().expect("seven answers");
    assert_eq!(remaining(&refused, "anonymous-reads-daily"), 0);
    assert_eq!(
        remaining(&refused, "anonymous-reads"),
        95,
        "the rate is not charged for what the quota refused"
    );
    let retry: u64 = refused.header_str("retry-after").parse().expect("seconds");
    let (_, _, day_reset) = ratelimit_items(&refused)[1];
    assert_eq!(
        retry, day_reset,
        "retry when the day's quota is whole again"
    );
    assert!((1..=86_400).contains(&retry), "{retry}");
    let problem = assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "past the quota").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("daily quota")),
        "{problem}"
    );
}

#[tokio::test]
async fn a_client_rotating_the_left_most_forwarded_address_keeps_its_limit() {
    // Arrange: behind a trusted proxy (the test client, on loopback), either the shield
    // allows 3 requests per address (and the distributed budget is large), or the shield is
    // off and the distributed budget is 3 reads.
    let behind_proxy = |shield: bool| {
        move |config: &mut Config| {
            hourly(config);
            config.http.trusted_proxies = vec!["127.0.0.0/8".parse().expect("a network")];
            config.ratelimit.shield.enabled = shield;
            config.ratelimit.shield.per_second = 1;
            config.ratelimit.shield.burst = 3;
            let reads = if shield { 1000 } else { 3 };
            config.ratelimit.tiers.anonymous.reads = budget(reads, reads, 1000);
        }
    };
    let read_as =
        |app: &TestApp, forwarded: String| app.users().get(1).header("x-forwarded-for", forwarded);
    // The shield refills one request a second: a slow machine may see a fourth pass, never
    // the ten that a rotating key would let through.
    let admitted_range = |shield: bool| if shield { 3..=4 } else { 3..=3 };

    for (what, shield) in [("the shield", true), ("the distributed limit", false)] {
        let app = TestApp::spawn_with(behind_proxy(shield)).await;

        // Act: ten requests whose left-most entry (written by the client) changes every time;
        // the right-most, written by our proxy, is the client's real address.
        let mut rotating = Vec::new();
        for i in 0..10 {
            rotating.push(read_as(&app, format!("10.9.{i}.1, 198.51.100.7")).await);
        }
        let other_client = read_as(&app, "198.51.100.8".to_owned()).await;

        // Assert
        let refused = rotating.pop().expect("ten answers");
        let statuses: Vec<StatusCode> = rotating.iter().map(|r| r.status()).collect();
        let admitted = count(&statuses, StatusCode::NOT_FOUND);
        assert!(
            admitted_range(shield).contains(&admitted),
            "{what}: {admitted} admitted: {statuses:?}"
        );
        assert_eq!(
            admitted + count(&statuses, StatusCode::TOO_MANY_REQUESTS),
            9,
            "{what}: {statuses:?}"
        );
        assert_eq!(
            refused.header_str("ratelimit").is_empty(),
            shield,
            "{what}: the shield answers before the distributed limits (and without their headers)"
        );
        assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, what).await;
        assert_eq!(
            other_client.status(),
            StatusCode::NOT_FOUND,
            "{what}: another address has its own budget"
        );
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK, "{what}");
        if shield {
            let metrics = app.get("/metrics").await.text().await.expect("a body");
            let refusals = metrics
                .lines()
                .find_map(|line| line.strip_prefix("ratelimit_shield_refusals_total "))
                .and_then(|n| n.parse::<u64>().ok());
            assert!(
                refusals.is_some_and(|n| n >= 6),
                "the shield's refusals are counted: {refusals:?}"
            );
        }
    }

    // Without trusted proxies the header is not read at all: rotating it changes nothing,
    // the client is its socket address.
    let app = TestApp::spawn_with(|config| {
        behind_proxy(true)(config);
        config.http.trusted_proxies = Vec::new();
    })
    .await;
    let mut direct = Vec::new();
    for i in 0..6 {
        direct.push(read_as(&app, format!("198.51.100.{i}")).await.status());
    }
    let admitted = count(&direct, StatusCode::NOT_FOUND);
    assert!((3..=4).contains(&admitted), "{direct:?}");
    let refused = read_as(&app, "198.51.100.9".to_owned()).await;
    let problem = assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "shielded").await;
    assert_eq!(problem["detail"], "too many requests from this address");
}

#[tokio::test]
async fn once_the_breaker_opens_no_request_waits_for_a_silent_redis() {
    // Arrange: the limiter's Redis accepts connections and never answers (a hung server, the
    // worst case: a stopped one at least refuses at once). Each decision would wait for the
    // 2 s timeout; the breaker opens after the first failure.
    let silent = SilentServer::start().await;
    let timeout = Duration::from_secs(2);
    let app = TestApp::spawn_with(|config| {
        config.ratelimit.redis_url = silent.redis_url().into();
        config.ratelimit.command_timeout = timeout;
        config.ratelimit.breaker.failure_threshold = 1;
        config.ratelimit.breaker.open = Duration::from_secs(60);
    })
    .await;
    let first = app.users().get(1).await;
    assert_eq!(
        first.status(),
        StatusCode::NOT_FOUND,
        "the fallback admits it"
    );

    // Act + Assert: every later request is decided by the fallback without touching Redis.
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let response = app.users().get(1).await;
        let elapsed = started.elapsed();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(
            response.header_str("ratelimit-policy").contains("-local"),
            "decided locally"
        );
        assert!(
            elapsed < timeout,
            "a request waited {elapsed:?}: as long as Redis's timeout"
        );
    }
    let readyz: Value = app.get("/readyz").await.json_body().await;
    assert_eq!(readyz["ratelimit"]["breaker"], "open");
}

#[tokio::test]
async fn each_decision_is_counted_by_tier_class_and_decision() {
    let app = TestApp::spawn_with(|config| {
        hourly(config);
        config.ratelimit.tiers.anonymous.writes = budget(2, 2, 1000);
    })
    .await;
    for _ in 0..3 {
        app.posts().create(None::<&str>, json!({})).await;
    }
    let metrics = app.get("/metrics").await.text().await.expect("a body");
    for (decision, n) in [("allowed", 2), ("limited", 1)] {
        let found = metrics.lines().any(|line| {
            line.starts_with("ratelimit_decisions_total{")
                && line.contains(r#"tier="anonymous""#)
                && line.contains(r#"class="writes""#)
                && line.contains(&format!(r#"decision="{decision}""#))
                && line.ends_with(&format!(" {n}"))
        });
        assert!(found, "{decision} {n} not in\n{metrics}");
    }
}

#[tokio::test]
async fn switched_off_nothing_is_limited_and_no_header_is_sent() {
    let app = TestApp::spawn_with(|config| {
        config.ratelimit.enabled = false;
        config.ratelimit.tiers.anonymous.reads = budget(1, 1, 1);
        config.ratelimit.shield.burst = 1;
    })
    .await;
    let answers =
        futures_util::future::join_all((0..5).map(|_| async { app.users().get(1).await })).await;
    for response in answers {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.header_str("ratelimit-policy"), "");
    }
    let readyz: Value = app.get("/readyz").await.json_body().await;
    assert_eq!(readyz["ratelimit"]["enabled"], false);
}
