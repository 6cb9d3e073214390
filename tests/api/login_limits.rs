//! Login protection (`src/traffic/login.rs`): tries per account and per client address,
//! counted in Redis for every instance and every API together, a 429 with `Retry-After` past
//! them, and a 503 when they cannot be counted.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, ResponseExt, TestApp, assert_problem, assert_problem_mentioning};

const LOGIN: &str = "mutation ($email: String!, $password: String!) { login(email: $email, password: $password) { accessToken } }";

/// Registers `email` without logging in, so that its login budget is untouched.
async fn register_only(app: &TestApp, email: &str) {
    app.auth()
        .register(email, "Someone", PASSWORD)
        .await
        .expect_json(StatusCode::CREATED, &format!("registering {email}"))
        .await;
}

/// `Retry-After` of a 429, in seconds; asserts the problem's shape and that it is set.
async fn assert_limited(response: reqwest::Response, mentioning: &str, what: &str) -> u64 {
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{what}: a Retry-After in seconds"));
    assert_problem_mentioning(response, StatusCode::TOO_MANY_REQUESTS, mentioning, what).await;
    retry_after
}

/// The GraphQL `login` mutation's error code, or `"ok"`.
async fn graphql_login(app: &TestApp, email: &str, password: &str) -> (String, Value) {
    let (status, body) = app
        .graphql(None, LOGIN, json!({ "email": email, "password": password }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("ok")
        .to_owned();
    (code, body)
}

#[tokio::test]
async fn guessing_one_accounts_password_gets_a_429_after_its_tries_while_others_log_in() {
    // Arrange: three tries per account.
    let app = TestApp::spawn_with(|config| config.auth.login_limits.account_tries = 3).await;
    register_only(&app, "ada@example.com").await;
    register_only(&app, "bob@example.com").await;

    // Act: three wrong guesses on Ada's account, then a fourth.
    for n in 1..=3 {
        let guess = app
            .auth()
            .login("ada@example.com", &format!("guess {n}"))
            .await;
        assert_problem(
            guess,
            StatusCode::UNAUTHORIZED,
            "a wrong guess within the budget",
        )
        .await;
    }
    let fourth = app.auth().login("ada@example.com", "guess 4").await;

    // Assert: refused, with when to retry (within the window); even her right password is
    // refused now; Bob, from the same address, logs in.
    let window = app.state.config.auth.login_limits.window.as_secs();
    let retry = assert_limited(fourth, "this account", "the fourth guess").await;
    assert!(
        (1..=window).contains(&retry),
        "Retry-After {retry}s within {window}s"
    );
    let right = app.auth().login("ada@example.com", PASSWORD).await;
    assert_limited(right, "this account", "the right password, past the budget").await;
    app.login("bob@example.com", PASSWORD).await;

    // Unknown emails are limited the same way, so the 429 does not tell who is registered.
    for _ in 1..=3 {
        let guess = app.auth().login("nobody@example.com", "guess").await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    }
    let unknown = app.auth().login("NOBODY@example.com ", "guess").await;
    assert_limited(unknown, "this account", "an unknown email, normalised").await;

    // And an operator sees the refusals: three for Ada, one for the unknown email.
    let metrics = app.get("/metrics").await.text().await.expect("a body");
    let line = r#"login_limit_decisions_total{attempt="login",decision="limited_account"} 3"#;
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
}

#[tokio::test]
async fn one_address_gets_its_tries_across_accounts_and_other_addresses_are_untouched() {
    // Arrange: three tries per address; a trusted proxy in front (the test client on
    // loopback), so that X-Forwarded-For names the client.
    let app = TestApp::spawn_with(|config| {
        config.auth.login_limits.address_tries = 3;
        config.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("a network")];
    })
    .await;
    register_only(&app, "bob@example.com").await;
    let from = |addr: &str, email: &str, password: &str| {
        app.auth()
            .login(email, password)
            .header("x-forwarded-for", addr)
    };

    // Act: one address sprays a password over three accounts, then a fourth.
    for n in 1..=3 {
        let spray = from(
            "198.51.100.7",
            &format!("user{n}@example.com"),
            "Summer2026!",
        )
        .await;
        assert_eq!(spray.status(), StatusCode::UNAUTHORIZED);
    }
    let fourth = from("198.51.100.7", "user4@example.com", "Summer2026!").await;

    // Assert
    assert_limited(
        fourth,
        "this address",
        "the fourth account from one address",
    )
    .await;
    let elsewhere = from("198.51.100.8", "bob@example.com", PASSWORD).await;
    assert_eq!(
        elsewhere.status(),
        StatusCode::OK,
        "another address logs in"
    );
    // The left-most X-Forwarded-For entry is the client's own claim: it does not reset.
    let spoofed = from("203.0.113.1, 198.51.100.7", "bob@example.com", PASSWORD).await;
    assert_limited(spoofed, "this address", "a spoofed left-most hop").await;
}

#[tokio::test]
async fn graphql_logins_count_against_the_same_limits_as_rest() {
    // Arrange
    let app = TestApp::spawn_with(|config| config.auth.login_limits.account_tries = 3).await;
    register_only(&app, "ada@example.com").await;

    // Act: two tries through REST, one through GraphQL, then one more through each.
    for _ in 0..2 {
        let guess = app.auth().login("ada@example.com", "guess").await;
        assert_eq!(guess.status(), StatusCode::UNAUTHORIZED);
    }
    let (third, _) = graphql_login(&app, "ada@example.com", "guess").await;
    let (fourth, body) = graphql_login(&app, "ada@example.com", PASSWORD).await;
    let rest = app.auth().login("ada@example.com", PASSWORD).await;

    // Assert
    assert_eq!(third, "UNAUTHENTICATED");
    assert_eq!(fourth, "TOO_MANY_REQUESTS", "{body}");
    let retry = &body["errors"][0]["extensions"]["retryAfter"];
    assert!(retry.as_u64().is_some_and(|s| s >= 1), "retryAfter: {body}");
    assert_limited(rest, "this account", "REST after GraphQL spent the budget").await;
}

#[tokio::test]
async fn registrations_are_limited_per_address() {
    // Arrange
    let app = TestApp::spawn_with(|config| config.auth.login_limits.address_tries = 2).await;
    register_only(&app, "one@example.com").await;
    register_only(&app, "two@example.com").await;

    // Act
    let third = app
        .auth()
        .register("three@example.com", "Three", PASSWORD)
        .await;

    // Assert: refused before anything was written; logging in is counted apart.
    assert_limited(
        third,
        "registration attempts from this address",
        "a third registration",
    )
    .await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM directory_entries")
        .fetch_one(&app.directory().await)
        .await
        .expect("the directory is readable");
    assert_eq!(rows, 2);
    app.login("one@example.com", PASSWORD).await;
}

#[tokio::test]
async fn two_instances_share_one_accounts_budget() {
    // Arrange
    let app = TestApp::spawn_with(|config| config.auth.login_limits.account_tries = 2).await;
    let other = app.another_instance().await;
    register_only(&app, "ada@example.com").await;

    // Act: one guess on each instance, then a third on the first.
    let here = app.auth().login("ada@example.com", "guess").await;
    let there = other.login("ada@example.com", "guess").await;
    let third = app.auth().login("ada@example.com", PASSWORD).await;

    // Assert
    assert_eq!(
        (here.status(), there.status()),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_limited(
        third,
        "this account",
        "the budget is the fleet's, not an instance's",
    )
    .await;
}

#[tokio::test]
async fn with_the_limiter_unreachable_login_and_registration_answer_503_and_reads_go_on() {
    // Arrange: the limiter points at a port nothing listens on.
    let app = TestApp::spawn_with(|config| {
        config.ratelimit.redis_url = "redis://127.0.0.1:1".into();
    })
    .await;

    // Act
    let register = app
        .auth()
        .register("ada@example.com", "Ada", PASSWORD)
        .await;
    let login = app.auth().login("ada@example.com", PASSWORD).await;
    let (status, body) = app
        .graphql(
            None,
            LOGIN,
            json!({ "email": "ada@example.com", "password": PASSWORD }),
        )
        .await;
    let read = app.users().list("").await;

    // Assert
    for (what, response) in [("register", register), ("login", login)] {
        assert!(
            response.headers().contains_key(header::RETRY_AFTER),
            "{what}: Retry-After"
        );
        assert_problem_mentioning(response, StatusCode::SERVICE_UNAVAILABLE, "limiter", what).await;
    }
    // A GraphQL login is charged to the `auth` route class, which waits for Redis too: the
    // route limits answer first, with the HTTP status of a REST login.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAVAILABLE",
        "{body}"
    );
    assert_eq!(
        read.status(),
        StatusCode::OK,
        "reads do not need the limiter"
    );
}
