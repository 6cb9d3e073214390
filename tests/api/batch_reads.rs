//! Batch reads through the cache: REST lists and the GraphQL DataLoaders read many keys in
//! one Redis round trip and load only the misses, one statement per shard. With a warm
//! cache a page of users and the nested GraphQL query cost no SQL at all, and a write still
//! changes what every transport shows.

use reqwest::StatusCode;
use scalable_api::config::CacheStrategy;
use serde_json::{Value, json};

use crate::{
    graphql::{NESTED, edges, statements_during, total},
    helpers::TestApp,
};

/// A seeded app with the two-tier cache: 60 users (30 per shard), about 10 posts each.
async fn two_tier() -> TestApp {
    TestApp::spawn_seeded(60, 600, |config| {
        config.cache.strategy = CacheStrategy::TwoTier;
    })
    .await
}

async fn users_page(app: &TestApp) -> (StatusCode, String, Value) {
    let response = app.get("/v1/users?limit=100").await;
    let cache = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        response.status(),
        cache,
        response.json().await.expect("JSON"),
    )
}

async fn nested(app: &TestApp) -> Value {
    let (status, body) = app
        .graphql(None, NESTED, json!({ "users": 50, "posts": 5 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    body
}

#[tokio::test]
async fn with_two_tier_and_a_warm_cache_a_page_of_a_hundred_users_costs_no_sql() {
    // Arrange: the first read fills the cache (the page's ids and every user's entry).
    let app = two_tier().await;
    let (cold_counts, cold) = statements_during(&app, users_page(&app)).await;
    assert_eq!(cold.0, StatusCode::OK);
    assert_eq!(cold.2.as_array().map(Vec::len), Some(60), "every user");
    assert!(
        total(&cold_counts) > 0 && total(&cold_counts) <= 4,
        "a cold page: the ids and the rows, one statement per shard each: {cold_counts:?}"
    );

    // Act
    let (warm_counts, warm) = statements_during(&app, users_page(&app)).await;

    // Assert
    assert_eq!(
        total(&warm_counts),
        0,
        "no SQL on any server: {warm_counts:?}"
    );
    assert_eq!(warm.1, "hit");
    assert_eq!(warm.2, cold.2, "the same answer");
}

#[tokio::test]
async fn with_two_tier_and_a_warm_cache_the_nested_graphql_query_costs_no_sql() {
    // Arrange
    let app = two_tier().await;
    let (cold_counts, cold) = statements_during(&app, nested(&app)).await;
    assert!(
        total(&cold_counts) > 0,
        "the first query loads: {cold_counts:?}"
    );

    // Act
    let (warm_counts, warm) = statements_during(&app, nested(&app)).await;

    // Assert
    assert_eq!(
        total(&warm_counts),
        0,
        "no SQL on any server: {warm_counts:?}"
    );
    assert_eq!(warm, cold, "the same answer");
    let posts: usize = edges(&warm, "users")
        .iter()
        .map(|u| u["posts"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(posts > 200, "the query really returns {posts} posts");
}

#[tokio::test]
async fn with_cache_aside_a_cold_batch_loads_only_its_misses_one_statement_per_shard() {
    // Arrange: three users' entries already cached by single reads; 60 root fields allowed.
    let app = TestApp::spawn_seeded(60, 0, |c| c.graphql.max_root_fields = 60).await;
    let mut ids: Vec<i64> = Vec::new();
    for shard in 0..2 {
        let found: Vec<i64> = sqlx::query_scalar("SELECT id FROM users ORDER BY id")
            .fetch_all(&app.primary(shard).await)
            .await
            .expect("ids");
        ids.extend(found);
    }
    for id in [ids[0], ids[1], ids[40]] {
        assert_eq!(
            app.get(&format!("/v1/users/{id}")).await.status(),
            StatusCode::OK
        );
    }

    // Act: every user by id, through GraphQL's user loader.
    let aliases: Vec<String> = ids
        .iter()
        .map(|id| format!("u{id}: user(id: \"{id}\") {{ id name }}"))
        .collect();
    let query = format!("{{ {} }}", aliases.join(" "));
    let (counts, (status, body)) =
        statements_during(&app, app.graphql(None, &query, json!({}))).await;

    // Assert: all 60, for one statement on each shard (57 misses across both).
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_object().map(|o| o.len()), Some(60));
    let on = |server: &str| {
        counts
            .iter()
            .find(|(name, _)| name == server)
            .map(|(_, n)| *n)
    };
    assert_eq!(
        (on("shard0-replica"), on("shard1-replica"), total(&counts)),
        (Some(1), Some(1), 2),
        "{counts:?}"
    );
}

#[tokio::test]
async fn a_write_changes_what_every_transport_shows_through_a_warm_cache() {
    // Arrange: both transports warm.
    let app = two_tier().await;
    let (_, _, before) = users_page(&app).await;
    nested(&app).await;
    let first = before[0]["id"].as_i64().expect("an id");
    let ada = app.register("ada@example.com", "Ada").await;
    let renamed = app
        .users()
        .patch(ada.id, &ada, json!({ "name": "Ada L." }))
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let post = app.create_post(&ada, "Fresh").await;

    // Act
    let (_, _, after) = users_page(&app).await;
    let body = nested(&app).await;

    // Assert: the new user (a registration retires every cached page of the list), their
    // new name (their own entry) and their new post (their posts page), at once, in REST
    // and in GraphQL alike.
    let rest: Vec<(i64, String)> = after
        .as_array()
        .expect("a list")
        .iter()
        .map(|u| {
            (
                u["id"].as_i64().unwrap_or(0),
                u["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(rest.len(), 61, "the new user is listed");
    assert!(rest.contains(&(ada.id, "Ada L.".to_owned())), "{rest:?}");
    let users = edges(&body, "users");
    let node = users
        .iter()
        .find(|u| u["id"] == json!(ada.id.to_string()))
        .unwrap_or_else(|| panic!("Ada among the first 50 users: {body}"));
    assert_eq!(node["name"], "Ada L.");
    assert_eq!(
        node["posts"][0]["id"],
        json!(post["id"].as_i64().unwrap_or(0).to_string())
    );
    assert_eq!(node["posts"][0]["author"]["name"], "Ada L.");

    // And a deletion takes the user out of both.
    let deleted = app.users().delete(ada.id, &ada).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (_, _, after) = users_page(&app).await;
    assert_eq!(after, before, "back to the original page");
    let body = nested(&app).await;
    assert!(
        edges(&body, "users")
            .iter()
            .all(|u| u["id"] != json!(ada.id.to_string()))
    );
    assert_eq!(edges(&body, "users")[0]["id"], json!(first.to_string()));
}
