//! The cache layer through the HTTP API: hits, misses and invalidation per strategy, single
//! flight, negative caching, ETags. What happens when Redis or a replica fails is in
//! `chaos::cache`.

use std::time::Duration;

use reqwest::StatusCode;
use scalable_api::config::CacheStrategy;
use serde_json::{Value, json};

use crate::helpers::{Request, ResponseExt, TestApp, statement_calls};

/// A single user read, as the server records it (`tier AS "tier: Tier"` is the checked
/// macro's type override for the column, sent as part of the statement).
const USER_BY_ID: &str = "SELECT id, email, name, tier AS \"tier: Tier\", created_at, updated_at \
                          FROM users WHERE id = $1";

/// Sends `request`, returning (X-Cache, status, body; `null` for none).
pub async fn read(request: Request) -> (String, StatusCode, Value) {
    let response = request.await;
    let (cache, status) = (response.cache(), response.status());
    let body = response.json().await.unwrap_or(Value::Null);
    (cache, status, body)
}

#[tokio::test]
async fn each_strategy_misses_then_hits_and_a_write_invalidates() {
    for strategy in [CacheStrategy::CacheAside, CacheStrategy::TwoTier] {
        // Arrange
        let app = TestApp::spawn_with(|c| c.cache.strategy = strategy).await;
        let user = app.register("cached@example.com", "First").await;
        app.wait_for_replicas().await;

        // Act / Assert: miss, then hit without touching the database.
        let (cache, _, body) = read(app.users().get(user.id)).await;
        assert_eq!(
            (cache.as_str(), body["name"].as_str()),
            ("miss", Some("First")),
            "{strategy:?}"
        );
        let hit = app.users().get(user.id).await;
        assert_eq!(hit.cache(), "hit", "{strategy:?}");
        assert_eq!(hit.route(), "", "{strategy:?}: a hit sends no SQL");

        // A write invalidates: the next read misses and sees it.
        app.rename(&user, "Second").await;
        let (cache, _, body) = read(app.users().get(user.id)).await;
        assert_eq!(
            (cache.as_str(), body["name"].as_str()),
            ("miss", Some("Second")),
            "{strategy:?}"
        );
        let (cache, _, body) = read(app.users().get(user.id)).await;
        assert_eq!(
            (cache.as_str(), body["name"].as_str()),
            ("hit", Some("Second")),
            "{strategy:?}"
        );
    }

    // `none`: every read goes to the database and says nothing about a cache.
    let app = TestApp::spawn_with(|c| c.cache.strategy = CacheStrategy::None).await;
    let user = app.register("uncached@example.com", "Plain").await;
    app.wait_for_replicas().await;
    for _ in 0..2 {
        let response = app.users().get(user.id).await;
        assert_eq!(response.cache(), "");
        assert_eq!(response.route(), "shard=0;role=replica");
    }
}

#[tokio::test]
async fn posts_and_post_pages_are_cached_and_invalidated_by_their_writes() {
    let app = TestApp::spawn().await;
    let author = app.register("author@example.com", "Author").await;
    let post = app.create_post(&author, "first").await;
    let post_id = &post["id"];
    let page = || app.users().posts(author.id, "?limit=5");

    assert_eq!(read(app.posts().get(post_id)).await.0, "miss");
    assert_eq!(read(app.posts().get(post_id)).await.0, "hit");
    let (cache, _, body) = read(page()).await;
    assert_eq!(
        (cache.as_str(), body.as_array().map(Vec::len)),
        ("miss", Some(1))
    );
    assert_eq!(read(page()).await.0, "hit");

    // A new post invalidates the author's page; an edit invalidates the post and the page.
    app.create_post(&author, "second").await;
    let (cache, _, body) = read(page()).await;
    assert_eq!(
        (cache.as_str(), body.as_array().map(Vec::len)),
        ("miss", Some(2))
    );
    let edited = app
        .posts()
        .patch(post_id, &author, json!({ "title": "edited" }))
        .await;
    assert_eq!(edited.status(), StatusCode::OK);
    let (cache, _, body) = read(app.posts().get(post_id)).await;
    assert_eq!(
        (cache.as_str(), body["title"].as_str()),
        ("miss", Some("edited"))
    );
    // Pages past the cached first page bypass the cache.
    let past_first = app.users().posts(author.id, "?limit=5&offset=20");
    assert_eq!(read(past_first).await.0, "bypass");
}

#[tokio::test]
async fn a_missing_id_is_negative_cached_and_a_later_create_is_visible_at_once() {
    // Arrange: shard 0 hands out consecutive ids, and placement alternates shards.
    let app = TestApp::spawn().await;
    let first = app.register("a@example.com", "A").await;
    app.register("b@example.com", "B").await; // shard 1
    let next = first.id + 1;

    // A 404 is cached.
    let (cache, status, _) = read(app.users().get(next)).await;
    assert_eq!((cache.as_str(), status), ("miss", StatusCode::NOT_FOUND));
    let (cache, status, _) = read(app.users().get(next)).await;
    assert_eq!((cache.as_str(), status), ("hit", StatusCode::NOT_FOUND));

    // Act: the id is created.
    let created = app.register("c@example.com", "C").await;
    assert_eq!(created.id, next, "the next id of shard 0");

    // Assert: visible at once, without waiting for anything.
    let (_, status, body) = read(app.users().get(next)).await;
    assert_eq!((status, body["name"].as_str()), (StatusCode::OK, Some("C")));
}

#[tokio::test]
async fn two_hundred_concurrent_requests_for_one_cold_key_cost_one_sql_read() {
    // Arrange. The Redis bound out of the way: 200 requests at once on a machine shared with
    // other tests can take a fill past the default 50 ms, and a fill that times out is a
    // Redis failure (the next miss reads SQL again, correctly): what is tested here is the
    // single flight, not the timeout (chaos/cache.rs tests that).
    let app = TestApp::spawn_with(|config| {
        config.cache.command_timeout = Duration::from_secs(2);
    })
    .await;
    let user = app.register("hot@example.com", "Hot").await;
    app.wait_for_replicas().await;
    let (primary, replica) = (app.primary(0).await, app.replica(0).await);
    let before =
        statement_calls(&primary, USER_BY_ID).await + statement_calls(&replica, USER_BY_ID).await;

    // Act
    let requests = (0..200).map(|_| {
        let request = app.users().get(user.id);
        tokio::spawn(async move {
            let response = request.await;
            (
                response.status(),
                response.json_body().await["name"].clone(),
            )
        })
    });
    let results = futures_util::future::join_all(requests).await;

    // Assert: all answered, one SELECT in all (counted by the servers themselves).
    for result in results {
        let (status, name) = result.expect("task");
        assert_eq!((status, name), (StatusCode::OK, json!("Hot")));
    }
    let after =
        statement_calls(&primary, USER_BY_ID).await + statement_calls(&replica, USER_BY_ID).await;
    assert_eq!(
        after - before,
        1,
        "200 concurrent misses collapsed into one SQL read"
    );
}

#[tokio::test]
async fn etags_answer_304_until_the_resource_changes_and_per_viewer_bodies_are_private() {
    let app = TestApp::spawn().await;
    let author = app.register("etag@example.com", "Etag").await;
    let post = app.create_post(&author, "tagged").await;
    let id = &post["id"];

    let first = app.posts().get(id).await;
    let etag = first.headers()["etag"].to_str().expect("ASCII").to_owned();
    assert_eq!(first.headers()["cache-control"], "public, no-cache");
    let again = app.posts().get(id).header("if-none-match", &etag).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.header_str("etag"), etag);
    assert!(
        again.bytes().await.expect("body").is_empty(),
        "a 304 has no body"
    );

    let edited = app
        .posts()
        .patch(id, &author, json!({ "body": "changed" }))
        .await;
    assert_eq!(edited.status(), StatusCode::OK);
    let changed = app.posts().get(id).header("if-none-match", &etag).await;
    assert_eq!(
        changed.status(),
        StatusCode::OK,
        "a stale ETag gets the new body"
    );
    assert_ne!(changed.header_str("etag"), etag);

    // A user's own view (with email) and the public one differ, and are private.
    let mine = app.users().get(author.id).bearer(&author).await;
    let public = app.users().get(author.id).await;
    assert_ne!(mine.headers()["etag"], public.headers()["etag"]);
    assert_eq!(mine.headers()["cache-control"], "private, no-cache");
    assert_eq!(mine.headers()["vary"], "Authorization");
}
