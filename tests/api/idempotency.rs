//! `Idempotency-Key` on POST: a retry gets the first answer back and runs nothing, across
//! instances; another request under the key, a request while the first runs, a bad key, an
//! error answer and an unreachable store each get their own answer.

use std::future::IntoFuture;

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Request, ResponseExt, TestApp, TestUser, assert_problem, assert_problem_mentioning,
};

const KEY: &str = "idempotency-key";

/// Posts by `user`, on every shard.
async fn posts_by(app: &TestApp, user: &TestUser) -> i64 {
    let mut total = 0;
    for shard in 0..app.shard_dbs.len() {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM posts WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(&app.primary(shard).await)
            .await
            .expect("count posts");
        total += count;
    }
    total
}

/// `POST /v1/posts` as `user` with `key`.
fn create(app: &TestApp, user: &TestUser, key: &str, title: &str) -> Request {
    app.posts()
        .create(user, json!({ "title": title, "body": "once" }))
        .header(KEY, key)
}

/// The status, the headers a client reads and the body, byte for byte.
async fn answer(response: Response) -> (StatusCode, String, String, String, Vec<u8>) {
    let (status, location, content_type, replayed) = (
        response.status(),
        response.header_str("location"),
        response.header_str("content-type"),
        response.header_str("idempotent-replayed"),
    );
    let body = response.bytes().await.expect("a body").to_vec();
    (status, location, content_type, replayed, body)
}

#[tokio::test]
async fn a_retried_post_gets_the_first_answer_back_and_creates_one_post() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let request = create(&app, &ada, "0b6f4e1c-retry", "Hello");

    // Act
    let first = answer(request.clone().await).await;
    let retry = answer(request.await).await;

    // Assert: the same status, Location, type and bytes; only the retry says it is a replay.
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(first.3, "", "the first answer is no replay");
    assert_eq!(retry.3, "true", "Idempotent-Replayed on the retry");
    assert_eq!(
        (retry.0, &retry.1, &retry.2, &retry.4),
        (first.0, &first.1, &first.2, &first.4),
        "the retry gets the first answer byte for byte"
    );
    assert!(first.1.starts_with("/v1/posts/"), "{}", first.1);
    assert_eq!(posts_by(&app, &ada).await, 1, "one post for two requests");
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_422_and_runs_nothing() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let first = create(&app, &ada, "reused", "Hello").await;
    assert_eq!(first.status(), StatusCode::CREATED);

    // Act
    let other = create(&app, &ada, "reused", "Another title").await;

    // Assert
    let problem = assert_problem_mentioning(
        other,
        StatusCode::UNPROCESSABLE_ENTITY,
        "another method, path or body",
        "a key reused for another request",
    )
    .await;
    assert_eq!(
        problem["type"],
        "https://scalable-api.dev/problems/idempotency-key-reused"
    );
    assert_eq!(posts_by(&app, &ada).await, 1);
}

#[tokio::test]
async fn concurrent_posts_with_one_key_create_one_post_and_the_others_wait_or_replay() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let request = create(&app, &ada, "concurrent", "Hello");

    // Act: eight at once.
    let answers =
        futures_util::future::join_all((0..8).map(|_| request.clone().into_future())).await;

    // Assert: one ran; each other one was told to retry (409) or got its answer (a replay).
    let mut ran = 0;
    for response in answers {
        match (
            response.status(),
            response.header_str("idempotent-replayed"),
        ) {
            (StatusCode::CREATED, replayed) if replayed.is_empty() => ran += 1,
            (StatusCode::CREATED, _) => {}
            (StatusCode::CONFLICT, _) => {
                assert_eq!(response.header_str("retry-after"), "1");
                let problem = assert_problem(response, StatusCode::CONFLICT, "a key in use").await;
                assert_eq!(
                    problem["type"],
                    "https://scalable-api.dev/problems/idempotency-key-in-use"
                );
            }
            (status, _) => panic!("unexpected {status}"),
        }
    }
    assert_eq!(ran, 1, "exactly one request ran");
    assert_eq!(posts_by(&app, &ada).await, 1);
}

#[tokio::test]
async fn a_retry_sent_to_another_instance_gets_the_same_answer() {
    // Arrange: the answer is kept in Redis, not in the instance that ran the request.
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let first = answer(create(&app, &ada, "across", "Hello").await).await;
    assert_eq!(first.0, StatusCode::CREATED);
    let other = app.another_instance().await;

    // Act
    let retry = other
        .request(Method::POST, "/v1/posts")
        .bearer(&ada)
        .json(&json!({ "title": "Hello", "body": "once" }))
        .header(KEY, "across")
        .await;

    // Assert
    let retry = answer(retry).await;
    assert_eq!(retry.3, "true");
    assert_eq!((retry.0, &retry.1, &retry.4), (first.0, &first.1, &first.4));
    assert_eq!(posts_by(&app, &ada).await, 1);
}

#[tokio::test]
async fn a_5xx_is_not_kept_and_the_retry_runs() {
    // Arrange: an instance whose shards are unreachable answers the POST with a 5xx.
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let broken = app
        .another_instance_with(|config| {
            for shard in &mut config.db.shards {
                shard.primary = "postgres://postgres@127.0.0.1:1/nowhere".into();
                shard.replicas = vec!["postgres://postgres@127.0.0.1:1/nowhere".into()];
            }
        })
        .await;
    let failed = broken
        .request(Method::POST, "/v1/posts")
        .bearer(&ada)
        .json(&json!({ "title": "Hello", "body": "once" }))
        .header(KEY, "after-a-5xx")
        .await;
    assert!(failed.status().is_server_error(), "{}", failed.status());
    assert_eq!(posts_by(&app, &ada).await, 0);

    // Act: the retry, on a healthy instance.
    let retry = create(&app, &ada, "after-a-5xx", "Hello").await;

    // Assert: it ran (no replay of the 5xx), once.
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.header_str("idempotent-replayed"), "");
    assert_eq!(posts_by(&app, &ada).await, 1);
}

#[tokio::test]
async fn an_invalid_key_is_a_400_and_runs_nothing() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let too_long = "k".repeat(256);

    for key in ["", "has space", too_long.as_str(), "tab\tinside"] {
        // Act
        let response = create(&app, &ada, key, "Hello").await;

        // Assert
        assert_problem_mentioning(
            response,
            StatusCode::BAD_REQUEST,
            "Idempotency-Key",
            &format!("key {key:?}"),
        )
        .await;
    }
    assert_eq!(posts_by(&app, &ada).await, 0);
}

#[tokio::test]
async fn an_anonymous_registration_is_replayed_too() {
    // Arrange
    let app = TestApp::spawn().await;
    let request = app
        .auth()
        .register("grace@example.com", "Grace", "a long enough password")
        .header(KEY, "register-grace");

    // Act
    let first = answer(request.clone().await).await;
    let retry = answer(request.await).await;

    // Assert: one account, and the retry has the first answer (not a 409 "email taken").
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(retry.3, "true");
    assert_eq!((retry.0, &retry.1, &retry.4), (first.0, &first.1, &first.4));
    let user: Value = serde_json::from_slice(&first.4).expect("a JSON user");
    assert_eq!(user["email"], "grace@example.com");
    let accounts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM directory_entries WHERE email = $1")
            .bind("grace@example.com")
            .fetch_one(&app.directory().await)
            .await
            .expect("count directory entries");
    assert_eq!(accounts, 1);
}

#[tokio::test]
async fn with_its_redis_unreachable_a_post_with_a_key_is_a_503_and_one_without_runs() {
    // Arrange: nothing listens on port 1.
    let app = TestApp::spawn_with(|config| {
        config.http.idempotency.redis_url = "redis://127.0.0.1:1".into();
    })
    .await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act
    let keyed = create(&app, &ada, "unreachable", "Hello").await;
    let plain = app
        .posts()
        .create(&ada, json!({ "title": "Hello", "body": "once" }))
        .await;

    // Assert
    assert!(!keyed.header_str("retry-after").is_empty(), "Retry-After");
    assert_problem_mentioning(
        keyed,
        StatusCode::SERVICE_UNAVAILABLE,
        "Idempotency-Key",
        "a keyed POST without its store",
    )
    .await;
    assert_eq!(plain.status(), StatusCode::CREATED);
    assert_eq!(
        posts_by(&app, &ada).await,
        1,
        "only the POST without a key ran"
    );
}
