//! The email directory: one lookup finds a user's shard; emails are unique across shards.

use reqwest::StatusCode;

use crate::helpers::{PASSWORD, ResponseExt, TestApp, assert_problem};

async fn users_with_email(app: &TestApp, email: &str) -> i64 {
    let mut total = 0;
    for shard in 0..2 {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(&app.primary(shard).await)
            .await
            .expect("query shard");
        total += count;
    }
    total
}

#[tokio::test]
async fn an_email_registered_on_one_shard_is_refused_when_placement_picks_the_other() {
    // Arrange: the first registration lands on shard 0; placement sends the next to shard 1.
    let app = TestApp::spawn().await;
    let first = app.register("ada@example.com", "Ada").await;
    assert!(first.id <= 1_000_000_000, "first user on shard 0");

    // Act: the same address, differently cased, through shard 1.
    let again = app
        .auth()
        .register("ADA@example.COM", "Imposter", "another password")
        .await;

    // Assert: 409, and still exactly one such user across both shards.
    assert_problem(again, StatusCode::CONFLICT, "duplicate email").await;
    assert_eq!(users_with_email(&app, "ada@example.com").await, 1);
    let directory = app.directory().await;
    let entries: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT email, user_id, state FROM directory_entries ORDER BY email")
            .fetch_all(&directory)
            .await
            .expect("query directory");
    assert_eq!(
        entries,
        [("ada@example.com".to_owned(), first.id, "active".to_owned())]
    );
}

#[tokio::test]
async fn concurrent_registrations_of_one_email_create_exactly_one_user() {
    let app = TestApp::spawn().await;

    let attempts = (0..8).map(|i| {
        app.auth()
            .register("race@example.com", &format!("Racer {i}"), PASSWORD)
            .send()
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .iter()
        .map(reqwest::Response::status)
        .collect();

    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(users_with_email(&app, "race@example.com").await, 1);
}

#[tokio::test]
async fn login_finds_users_on_either_shard() {
    // Arrange: one user per shard.
    let app = TestApp::spawn().await;
    let on_shard0 = app.register("zero@example.com", "Zero").await;
    let on_shard1 = app.register("one@example.com", "One").await;
    assert!(on_shard0.id <= 1_000_000_000 && on_shard1.id > 1_000_000_000);

    app.wait_for_replicas().await;
    for user in [&on_shard0, &on_shard1] {
        // Act: log in by email, then use the token on an owner-only route.
        let token = app.login(&user.email, &user.password).await;
        let me = app.users().get(user.id).bearer(&token).await;

        // Assert: the token is this user's (their own email is shown only to them).
        let body = me.expect_json(StatusCode::OK, "GET themselves").await;
        assert_eq!(body["email"], user.email.as_str());
    }
}
