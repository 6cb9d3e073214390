//! `Server-Timing` on every answer: which entries appear for what the request did (SQL,
//! Redis round trips, DataLoader batches, serialisation), and the switch that removes it.
//! Durations are never compared with a clock here; only their presence, their counts, and
//! bounds that hold by construction (a batch waits at least its window).

use reqwest::{Response, StatusCode};
use scalable_api::config::{CacheStrategy, Executor};
use serde_json::json;

use crate::{
    graphql::NESTED,
    helpers::{ResponseExt, TestApp},
};

/// One entry of the header: its name, `dur` in milliseconds, and `desc`.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    dur: f64,
    desc: Option<String>,
}

/// The entries of the response's `Server-Timing`, in order; panics if it is malformed (the
/// service writes no commas inside a `desc`, so splitting on them is enough here).
fn server_timing(response: &Response) -> Vec<Entry> {
    let header = response.header_str("server-timing");
    assert!(!header.is_empty(), "a Server-Timing header");
    header
        .split(", ")
        .map(|entry| {
            let mut params = entry.split(';');
            let name = params.next().unwrap_or_default().to_owned();
            let (mut dur, mut desc) = (None, None);
            for param in params {
                match param.split_once('=') {
                    Some(("dur", value)) => dur = value.parse::<f64>().ok(),
                    Some(("desc", value)) => desc = Some(value.trim_matches('"').to_owned()),
                    _ => panic!("unexpected parameter `{param}` in `{header}`"),
                }
            }
            let dur = dur.unwrap_or_else(|| panic!("no dur in `{entry}` of `{header}`"));
            Entry { name, dur, desc }
        })
        .collect()
}

fn names(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

fn entry<'a>(entries: &'a [Entry], name: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("a `{name}` entry in {entries:?}"))
}

#[tokio::test]
async fn a_rest_read_without_a_cache_shows_its_one_query_and_the_total() {
    // Arrange
    let app = TestApp::spawn_with(|c| c.cache.strategy = CacheStrategy::None).await;
    let user = app.register("timed@example.com", "Timed").await;
    app.wait_for_replicas().await;

    // Act
    let response = app.users().get(user.id).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let timing = server_timing(&response);
    assert_eq!(names(&timing), ["db", "ser", "total"], "{timing:?}");
    let (db, total) = (entry(&timing, "db"), entry(&timing, "total"));
    assert_eq!(db.desc.as_deref(), Some("1 query"));
    assert!(
        total.dur >= db.dur,
        "the query is part of the total: {timing:?}"
    );
    assert_eq!(total.desc, None);
}

#[tokio::test]
async fn with_two_tiers_a_cold_read_shows_sql_and_redis_and_a_warm_one_neither() {
    // Arrange
    let app = TestApp::spawn_with(|c| c.cache.strategy = CacheStrategy::TwoTier).await;
    let user = app.register("warm@example.com", "Warm").await;
    app.wait_for_replicas().await;

    // Act
    let cold = app.users().get(user.id).await;
    let warm = app.users().get(user.id).await;

    // Assert: the miss looked up Redis and read the database (past the registration's
    // fence, which may cost a replica's replay position first); its fill runs in the
    // background, and no flight of the key ended to call for a second look. The L1 hit did
    // none of it.
    assert_eq!(cold.cache(), "miss");
    let timing = server_timing(&cold);
    assert_eq!(
        names(&timing),
        ["db", "cache", "ser", "total"],
        "{timing:?}"
    );
    assert_eq!(
        entry(&timing, "cache").desc.as_deref(),
        Some("1 round trip"),
        "the lookup alone: {timing:?}"
    );
    assert_eq!(warm.cache(), "hit");
    let timing = server_timing(&warm);
    assert_eq!(names(&timing), ["ser", "total"], "{timing:?}");
}

#[tokio::test]
async fn a_nested_graphql_query_shows_its_batch_window_and_its_sql() {
    for dataloaders in [true, false] {
        // Arrange: no cache, so every level reads the database; the resolvers, whose
        // DataLoaders have the window (the planned executor has none, see graphql::planned).
        let app = TestApp::spawn_with(|c| {
            c.cache.strategy = CacheStrategy::None;
            c.graphql.dataloaders = dataloaders;
            c.graphql.executor = Executor::Resolvers;
        })
        .await;
        for n in 0..2 {
            let user = app
                .register(&format!("nested{n}@example.com"), "Nested")
                .await;
            app.create_post(&user, "A post").await;
        }
        app.wait_for_replicas().await;
        let window = app.state.config.graphql.batch_window.as_secs_f64() * 1000.0;

        // Act
        let response = app
            .request(reqwest::Method::POST, "/graphql")
            .json(&json!({ "query": NESTED, "variables": { "users": 50, "posts": 5 } }))
            .await;

        // Assert
        assert_eq!(response.status(), StatusCode::OK);
        let timing = server_timing(&response);
        let db = entry(&timing, "db");
        let queries: u32 = db
            .desc
            .as_deref()
            .and_then(|d| d.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("a count in {db:?}"));
        assert!(queries >= 2, "the users and their posts: {timing:?}");
        entry(&timing, "ser");
        if dataloaders {
            // The posts level waited for its keys at least the window (the authors are the
            // users already read: no batch).
            let batch = entry(&timing, "batch");
            assert!(batch.dur >= window, "{timing:?}");
            assert_eq!(batch.desc.as_deref(), Some("1 batch"), "{timing:?}");
        } else {
            assert!(
                !names(&timing).contains(&"batch"),
                "without the loaders nothing waits: {timing:?}"
            );
        }
    }
}

#[tokio::test]
async fn every_answer_has_the_header_and_the_switch_removes_it() {
    // Arrange
    let on = TestApp::spawn().await;
    let off = TestApp::spawn_with(|c| c.telemetry.server_timing = Some(false)).await;

    // Act / Assert: answers that run no SQL, including refusals, still carry the total.
    for (path, expected) in [
        ("/healthz", &["ser", "total"][..]),
        ("/v1/nope", &["total"]),
    ] {
        let timing = server_timing(&on.get(path).await);
        assert_eq!(names(&timing), expected, "{path}");
    }
    let refused = on
        .get("/v1/users/1")
        .header("x-consistency-token", "garbage")
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(names(&server_timing(&refused)), ["total"]);
    for path in ["/healthz", "/v1/nope"] {
        let response = off.get(path).await;
        assert_eq!(response.header_str("server-timing"), "", "{path}");
    }
}
