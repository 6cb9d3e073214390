//! The rate limits when their Redis stops: reads, writes and GraphQL fall back to this
//! instance's share of each limit, logins and registrations are refused with a 503, nothing
//! is unlimited, and the limits come back from Redis when it does.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use scalable_api::config::ClassLimit;
use serde_json::json;

use super::{Chaos, eventually, readyz};
use crate::helpers::{ResponseExt, TestApp, assert_problem};

fn policy_names(response: &reqwest::Response) -> String {
    response.header_str("ratelimit-policy")
}

#[tokio::test]
async fn with_redis_stopped_reads_writes_and_graphql_get_a_local_share_and_logins_a_503() {
    // Arrange: budgets per hour (nothing refills during the test); two instances expected,
    // so each keeps half of every limit while Redis is out.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), |config| {
        config.ratelimit.window = Duration::from_secs(3600);
        config.ratelimit.fallback_instances = 2;
        config.ratelimit.breaker.open = Duration::from_millis(500);
        config.ratelimit.tiers.anonymous.reads = ClassLimit {
            rate: 20,
            burst: 10,
            daily_quota: 1000,
        };
        config.ratelimit.tiers.free.writes = ClassLimit {
            rate: 20,
            burst: 8,
            daily_quota: 1000,
        };
        config.cache.breaker.open = Duration::from_millis(300);
    })
    .await;
    let user = app.register("limited@example.com", "Limited").await;
    app.wait_for_replicas().await;
    let read = app.users().get(user.id).await;
    assert_eq!(
        policy_names(&read).split(", ").next(),
        Some(r#""anonymous-reads";q=20;w=3600"#)
    );

    // Act: Redis dies.
    Chaos::control(&["stop", "redis", "immediate"]).await;

    // Assert: reads get this instance's share (half the burst: 5), then 429s; never a 5xx.
    let mut reads = Vec::new();
    for _ in 0..10 {
        reads.push(app.users().get(user.id).await);
    }
    let statuses: Vec<StatusCode> = reads.iter().map(|r| r.status()).collect();
    assert_eq!(
        statuses,
        [
            &[StatusCode::OK; 5][..],
            &[StatusCode::TOO_MANY_REQUESTS; 5]
        ]
        .concat(),
        "half of the anonymous burst of 10"
    );
    let refused = reads.pop().expect("ten answers");
    assert_eq!(
        policy_names(&refused),
        r#""anonymous-reads-local";q=10;w=3600"#,
        "the headers say the share is local, and that there is no daily quota meanwhile"
    );
    assert!(!refused.header_str("retry-after").is_empty());
    assert_eq!(readyz(&app).await["ratelimit"]["breaker"], "open");

    // Writes too: half of the burst of 8, as the user.
    let mut writes = Vec::new();
    for i in 0..6 {
        let response = app
            .posts()
            .create(
                &user,
                json!({ "title": format!("during {i}"), "body": "Redis is out" }),
            )
            .await;
        writes.push(response.status());
    }
    assert_eq!(
        writes,
        [
            &[StatusCode::CREATED; 4][..],
            &[StatusCode::TOO_MANY_REQUESTS; 2]
        ]
        .concat()
    );

    // GraphQL: its share of the anonymous cost budget.
    let graphql = app
        .request(Method::POST, "/graphql")
        .json(&json!({ "query": "{ users(first: 2) { edges { node { id } } } }" }))
        .await;
    assert_eq!(graphql.status(), StatusCode::OK);
    assert!(policy_names(&graphql).starts_with(r#""anonymous-graphql-local""#));

    // Logins and registrations wait for Redis: a 503 with Retry-After, at once.
    let login = app
        .auth()
        .login("limited@example.com", &user.password)
        .await;
    assert!(!login.header_str("retry-after").is_empty());
    assert_problem(
        login,
        StatusCode::SERVICE_UNAVAILABLE,
        "a login with Redis out",
    )
    .await;
    let register = app
        .auth()
        .register("another@example.com", "Another", "correct horse battery")
        .await;
    assert_problem(register, StatusCode::SERVICE_UNAVAILABLE, "a registration").await;
    let graphql_login = app
        .request(Method::POST, "/graphql")
        .json(&json!({ "query": format!(
            r#"mutation {{ login(email: "limited@example.com", password: "{}") {{ accessToken }} }}"#,
            user.password
        ) }))
        .await;
    assert_eq!(
        graphql_login.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a GraphQL login counts as a login"
    );

    let metrics = app.get("/metrics").await.text().await.expect("a body");
    for (class, decision) in [
        ("reads", "fallback_allowed"),
        ("reads", "fallback_limited"),
        ("auth", "unavailable"),
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ratelimit_decisions_total{")
                    && l.contains(&format!(r#"class="{class}""#))
                    && l.contains(&format!(r#"decision="{decision}""#))
                    && !l.ends_with(" 0")),
            "{class} {decision} not counted:\n{metrics}"
        );
    }

    // Redis returns: after the breaker's trial, Redis decides again (and logins pass).
    Chaos::control(&["start", "redis"]).await;
    eventually(
        "limits decided by Redis again",
        Duration::from_secs(10),
        || async {
            let response = app.users().get(user.id).await;
            policy_names(&response).starts_with(r#""anonymous-reads";"#)
        },
    )
    .await;
    let token = app.login("limited@example.com", &user.password).await;
    assert!(!token.is_empty());
}
