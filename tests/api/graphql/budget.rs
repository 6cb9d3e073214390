//! What a query may spend while it runs: bytes of answer and reads of the database, and the
//! bounds that keep one small request from asking for a great deal (long texts multiplied
//! through nested lists, aliased root lists fanned out to every shard).

use reqwest::StatusCode;
use scalable_api::{Config, config::CacheStrategy, config::Executor};
use serde_json::{Value, json};

use super::{code, statements_during, total};
use crate::helpers::TestApp;

/// An app whose one user has 100 posts of `chars` characters each: (app, the user's id).
async fn app_with_long_posts(chars: i32, tweak: impl FnOnce(&mut Config)) -> (TestApp, i64) {
    let app = TestApp::spawn_with(tweak).await;
    let user = app.register("writer@example.com", "Writer").await;
    let shard = usize::try_from((user.id - 1) / 1_000_000_000).expect("a shard index");
    sqlx::query(
        "INSERT INTO posts (user_id, title, body)
         SELECT $1, 'post ' || n, repeat('x', $2) FROM generate_series(1, 100) AS n",
    )
    .bind(user.id)
    .bind(chars)
    .execute(&app.primary(shard).await)
    .await
    .expect("posts inserted");
    app.wait_for_replicas().await;
    (app, user.id)
}

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn long_texts_multiplied_through_nested_lists_are_refused_and_normal_queries_still_work() {
    // Arrange: 100 posts of 2,000 characters.
    let (app, user) = app_with_long_posts(2_000, |_| {}).await;

    // Act: 10,000 bodies (20 MB) from a few lines: each post's author is the same user, whose
    // 100 posts come again under each of them.
    let amplified = format!(
        r#"{{ user(id: "{user}") {{ posts(first: 100) {{ body author {{ posts(first: 100) {{ body }} }} }} }} }}"#
    );
    let (counts, (status, body)) =
        statements_during(&app, app.graphql(None, &amplified, Value::Null)).await;

    // Assert: priced by what a body may weigh, it costs over 200,000, and nothing ran.
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(code(&body), "QUERY_TOO_COMPLEX", "{body}");
    assert!(
        message(&body).contains("above the limit of 20000"),
        "{body}"
    );
    assert!(body["data"].is_null(), "no data: {body}");
    assert_eq!(total(&counts), 0, "refused before any SQL: {counts:?}");

    // A normal nested query, bodies included, is answered whole.
    let normal = format!(
        r#"{{ user(id: "{user}") {{ posts(first: 5) {{ title body author {{ name posts(first: 5) {{ title }} }} }} }} }}"#
    );
    let (status, body) = app.graphql(None, &normal, Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("errors").is_none(), "no errors: {body}");
    let posts = body["data"]["user"]["posts"].as_array().expect("posts");
    assert_eq!(posts.len(), 5);
    assert_eq!(posts[0]["body"].as_str().map(str::len), Some(2_000));
    assert_eq!(
        posts[4]["author"]["posts"].as_array().map(Vec::len),
        Some(5)
    );
}

#[tokio::test]
async fn an_answer_past_the_response_byte_budget_stops_with_a_clear_error_on_either_executor() {
    // Arrange: 100 posts of 20,000 characters (the longest a body may be), and the default
    // limits. Nine aliased `user { posts(first: 100) { body } }` cost 18,918, under the cost
    // limit, for 900 bodies: 18 MB of answer, past the 4 MiB budget.
    for executor in [Executor::Planned, Executor::Resolvers] {
        let (app, user) = app_with_long_posts(20_000, |config| {
            config.graphql.executor = executor;
            // Two queries of almost 20,000 each: more than an anonymous burst.
            config.ratelimit.enabled = false;
        })
        .await;
        let roots: Vec<String> = (0..9)
            .map(|i| format!(r#"u{i}: user(id: "{user}") {{ posts(first: 100) {{ body }} }}"#))
            .collect();
        let query = format!("{{ {} }}", roots.join(" "));

        // Act
        let (status, body) = app.graphql(None, &query, Value::Null).await;

        // Assert: one error that names the limit, and no partial data.
        assert_eq!(status, StatusCode::OK, "{executor:?}");
        let errors = body["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{executor:?}: one error: {errors:?}");
        assert_eq!(code(&body), "RESPONSE_TOO_LARGE", "{executor:?}");
        assert!(
            message(&body).contains("graphql.max_response_bytes"),
            "{executor:?}: {}",
            message(&body)
        );
        assert!(body["data"].is_null(), "{executor:?}: no partial data");

        // One root of the same is 2 MB, within the budget.
        let one = format!("{{ {} }}", roots[0]);
        let (_, body) = app.graphql(None, &one, Value::Null).await;
        assert!(body.get("errors").is_none(), "{executor:?}: {body:?}");
        assert_eq!(
            body["data"]["u0"]["posts"].as_array().map(Vec::len),
            Some(100)
        );
    }
}

/// `count` aliased `posts` roots, each its own cross-shard read.
fn aliased_posts(count: usize) -> String {
    let roots: Vec<String> = (0..count)
        .map(|i| format!("p{i}: posts(first: 1) {{ edges {{ node {{ id }} }} }}"))
        .collect();
    format!("{{ {} }}", roots.join(" "))
}

#[tokio::test]
async fn a_hundred_aliased_root_lists_are_refused_before_any_statement_runs() {
    let app = TestApp::spawn_seeded(10, 40, |config| {
        config.cache.strategy = CacheStrategy::None;
    })
    .await;

    let (counts, (status, body)) =
        statements_during(&app, app.graphql(None, &aliased_posts(100), Value::Null)).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(code(&body), "TOO_MANY_ROOT_FIELDS", "{body}");
    assert!(
        message(&body).contains("more than 20 root fields (graphql.max_root_fields)"),
        "{body}"
    );
    assert_eq!(total(&counts), 0, "refused before any SQL: {counts:?}");

    // Twenty are fine.
    let (_, body) = app.graphql(None, &aliased_posts(20), Value::Null).await;
    assert!(body.get("errors").is_none(), "{body}");
}

#[tokio::test]
async fn the_reads_of_one_request_are_bounded_whatever_the_shape_on_either_executor() {
    for executor in [Executor::Planned, Executor::Resolvers] {
        // Arrange: the root limit out of the way, ten reads per request, and no cache, so
        // every read is a statement on each of the two shards.
        let app = TestApp::spawn_seeded(10, 40, |config| {
            config.cache.strategy = CacheStrategy::None;
            config.graphql.executor = executor;
            config.graphql.max_root_fields = 100;
            config.graphql.max_reads = 10;
        })
        .await;

        // Act
        let (counts, (status, body)) =
            statements_during(&app, app.graphql(None, &aliased_posts(30), Value::Null)).await;

        // Assert: stopped with the limit's error after at most ten reads of both shards.
        assert_eq!(status, StatusCode::OK, "{executor:?}: {body}");
        assert_eq!(code(&body), "TOO_MANY_READS", "{executor:?}: {body}");
        assert!(
            message(&body).contains("more than 10 reads"),
            "{executor:?}: {body}"
        );
        assert!(
            total(&counts) <= 20,
            "{executor:?}: at most 10 reads x 2 shards: {counts:?}"
        );

        // Ten roots fit.
        let (_, body) = app.graphql(None, &aliased_posts(10), json!(null)).await;
        assert!(body.get("errors").is_none(), "{executor:?}: {body}");
    }
}
