//! GraphQL at `/graphql`: the right data across shards, a bounded number of SQL statements
//! per request (counted on every server), and cursor pagination. The same rules as REST for
//! writes are in `mutations`; limits and malformed requests in `limits`.

mod budget;
mod limits;
mod mutations;
mod planned;
mod profile;

use std::{collections::HashSet, time::Duration};

use reqwest::{Method, StatusCode};
use scalable_api::config::CacheStrategy;
use serde_json::{Value, json};

use crate::helpers::{ResponseExt, TestApp, all_statement_calls, statement_calls};

/// The nested query of the issue, with the page sizes as variables.
pub(crate) const NESTED: &str = "query ($users: Int!, $posts: Int!) {
    users(first: $users) { edges { node { id name posts(first: $posts) { id title author { id name } } } } }
}";

/// Statements each server ran for `query`: (server, count), from pg_stat_statements readings
/// before and after.
async fn statements_of(
    app: &TestApp,
    query: &str,
    variables: Value,
) -> (Value, Vec<(String, i64)>) {
    let (counts, (status, body)) =
        statements_during(app, app.graphql(None, query, variables)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("errors").is_none(), "no errors: {body}");
    (body, counts)
}

/// Statements each server ran while `work` ran: (server, count).
pub(crate) async fn statements_during<T>(
    app: &TestApp,
    work: impl std::future::Future<Output = T>,
) -> (Vec<(String, i64)>, T) {
    let servers = app.servers().await;
    let mut before = Vec::new();
    for (_, pool) in &servers {
        before.push(all_statement_calls(pool).await);
    }
    let output = work.await;
    let mut counts = Vec::new();
    for ((name, pool), before) in servers.iter().zip(before) {
        counts.push((name.clone(), all_statement_calls(pool).await - before));
    }
    (counts, output)
}

pub(crate) fn total(counts: &[(String, i64)]) -> i64 {
    counts.iter().map(|(_, n)| n).sum()
}

pub(crate) fn edges(body: &Value, list: &str) -> Vec<Value> {
    body["data"][list]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("edges of {list} in {body}"))
        .iter()
        .map(|edge| edge["node"].clone())
        .collect()
}

pub(super) fn id(value: &Value) -> i64 {
    value["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a string ID in {value}"))
}

/// `what: CODE type` of the first error's `extensions`, a line of an inline snapshot.
pub(super) fn extensions_line(what: &str, body: &Value) -> String {
    let extensions = &body["errors"][0]["extensions"];
    let field = |name: &str| extensions[name].as_str().unwrap_or("-").to_owned();
    format!("{what}: {} {}", field("code"), field("type"))
}

pub(super) fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("an error with a code in {body}"))
}

#[tokio::test]
async fn the_nested_query_returns_each_users_newest_posts_and_their_author_across_both_shards() {
    // Arrange: 60 users (30 per shard), about 20 posts each; the truth from the primaries.
    let app = TestApp::spawn_seeded(60, 1200, |_| {}).await;
    let mut expected = Vec::new();
    for shard in 0..2 {
        let db = app.primary(shard).await;
        let users: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM users ORDER BY id")
            .fetch_all(&db)
            .await
            .expect("users");
        for (user_id, name) in users {
            let posts: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, title FROM posts WHERE user_id = $1 ORDER BY id DESC LIMIT 5",
            )
            .bind(user_id)
            .fetch_all(&db)
            .await
            .expect("posts");
            expected.push((user_id, name, posts));
        }
    }
    expected.truncate(50);

    // Act
    let (status, body) = app
        .graphql(None, NESTED, json!({ "users": 50, "posts": 5 }))
        .await;

    // Assert: the first 50 users by id, from both shards, each with their 5 newest posts.
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("errors").is_none(), "{body}");
    let users = edges(&body, "users");
    assert_eq!(users.len(), 50);
    for (user, (user_id, name, posts)) in users.iter().zip(&expected) {
        assert_eq!(
            (id(user), user["name"].as_str()),
            (*user_id, Some(name.as_str()))
        );
        let got: Vec<(i64, String)> = user["posts"]
            .as_array()
            .expect("a list of posts")
            .iter()
            .map(|post| {
                (
                    id(post),
                    post["title"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(&got, posts, "posts of user {user_id}");
        for post in user["posts"].as_array().into_iter().flatten() {
            assert_eq!(id(&post["author"]), *user_id);
            assert_eq!(post["author"]["name"], user["name"]);
        }
    }
    let shards: HashSet<bool> = users.iter().map(|u| id(u) > 1_000_000_000).collect();
    assert_eq!(shards.len(), 2, "the page spans both shards");
}

#[tokio::test]
async fn the_nested_query_costs_one_statement_per_shard_per_level_whatever_the_page_size() {
    // No cache: this counts what the DataLoaders batch (the warm cache's 0 is in cache.rs).
    // A batch window wider than the default 20 ms: on a machine shared with other tests, a
    // level's resolvers can take longer than 20 ms to all enqueue, and the level is then two
    // batches (correct, one more statement). The window's trade-off is measured in loadtest.
    let app = TestApp::spawn_seeded(60, 1200, |config| {
        config.cache.strategy = CacheStrategy::None;
        config.graphql.batch_window = Duration::from_millis(200);
    })
    .await;

    // Act: 50 users with 5 posts each, then with 50 posts each.
    let (body, five) = statements_of(&app, NESTED, json!({ "users": 50, "posts": 5 })).await;
    let (_, fifty) = statements_of(&app, NESTED, json!({ "users": 50, "posts": 50 })).await;
    println!("nested query, DataLoaders on: posts(first: 5) {five:?}; posts(first: 50) {fifty:?}");

    // Assert: the levels (users, their posts, the posts' authors) on two shards, all on the
    // replicas, at most one statement per shard per level; the page size of the inner list
    // changes nothing. The authors are the page's own users, which the user loader already
    // holds: that level costs nothing.
    let posts: usize = edges(&body, "users")
        .iter()
        .map(|u| u["posts"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(posts > 200, "the query really loads {posts} posts");
    let expected = [
        ("shard0-primary".to_owned(), 0),
        ("shard0-replica".to_owned(), 2),
        ("shard1-primary".to_owned(), 0),
        ("shard1-replica".to_owned(), 2),
    ];
    assert_eq!(five, expected);
    assert_eq!(fifty, expected);

    // ... and each level is one statement on each replica.
    for shard in 0..2 {
        let replica = app.replica(shard).await;
        for (level, pattern) in [
            ("users page", "%FROM users WHERE id > $1 ORDER BY id%"),
            ("posts of the users", "%JOIN LATERAL%"),
        ] {
            assert_eq!(
                statement_calls(&replica, pattern).await,
                2,
                "{level} on shard {shard}: once per request, two requests"
            );
        }
        assert_eq!(
            statement_calls(&replica, "%FROM users WHERE id = ANY($1)%").await,
            0,
            "authors on shard {shard}: already loaded with the page"
        );
    }
}

#[tokio::test]
async fn without_dataloaders_the_nested_query_costs_a_statement_per_parent() {
    // Arrange: the N+1 switch off, and no cache to hide it.
    // (A read per parent: the read budget made room for them.)
    let app = TestApp::spawn_seeded(60, 1200, |config| {
        config.graphql.dataloaders = false;
        config.graphql.max_reads = 1_000;
        config.cache.strategy = CacheStrategy::None;
    })
    .await;

    let mut totals = Vec::new();
    // Shard 0 holds the first 30 users: a page of 10 reads one shard, a page of 50 both.
    for (users, shards) in [(10, 1), (50, 2)] {
        // Act
        let (body, counts) =
            statements_of(&app, NESTED, json!({ "users": users, "posts": 5 })).await;

        // Assert: one statement per shard for the page of users, then one per user for their
        // posts, then one per post for its author.
        let posts: i64 = edges(&body, "users")
            .iter()
            .map(|u| u["posts"].as_array().map_or(0, Vec::len) as i64)
            .sum();
        println!("nested query, DataLoaders off, users(first: {users}): {posts} posts, {counts:?}");
        assert_eq!(total(&counts), shards + users + posts);
        totals.push(total(&counts));
    }
    assert!(
        totals[1] > totals[0],
        "the cost grows with the page: {totals:?}"
    );
}

#[tokio::test]
async fn users_pagination_with_after_walks_every_user_exactly_once() {
    let app = TestApp::spawn_seeded(25, 40, |_| {}).await;
    let mut expected = Vec::new();
    for shard in 0..2 {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM users ORDER BY id")
            .fetch_all(&app.primary(shard).await)
            .await
            .expect("ids");
        expected.extend(ids);
    }

    let query = "query ($after: String) {
        users(first: 7, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } }
    }";
    let (walked, pages) = walk(&app, query, "users").await;

    assert_eq!(
        walked, expected,
        "every user once, in id order, across the boundary"
    );
    assert_eq!(pages, 4, "25 users in pages of 7");
}

#[tokio::test]
async fn posts_pagination_with_after_walks_the_newest_first_feed_exactly_once() {
    let app = TestApp::spawn_seeded(10, 95, |_| {}).await;
    let mut expected: Vec<(chrono::DateTime<chrono::Utc>, i64)> = Vec::new();
    for shard in 0..2 {
        let rows: Vec<(chrono::DateTime<chrono::Utc>, i64)> =
            sqlx::query_as("SELECT created_at, id FROM posts")
                .fetch_all(&app.primary(shard).await)
                .await
                .expect("posts");
        expected.extend(rows);
    }
    expected.sort_unstable_by(|a, b| b.cmp(a));
    let expected: Vec<i64> = expected.into_iter().map(|(_, id)| id).collect();

    let query = "query ($after: String) {
        posts(first: 9, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } }
    }";
    let (walked, _) = walk(&app, query, "posts").await;

    assert_eq!(walked.len(), 95);
    assert_eq!(
        walked, expected,
        "a global newest-first order, each post once"
    );
}

/// Follows `endCursor` until `hasNextPage` is false; returns the ids in order and the pages.
async fn walk(app: &TestApp, query: &str, list: &str) -> (Vec<i64>, usize) {
    let (mut ids, mut after, mut pages) = (Vec::new(), Value::Null, 0);
    loop {
        let (status, body) = app.graphql(None, query, json!({ "after": after })).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.get("errors").is_none(), "{body}");
        pages += 1;
        ids.extend(edges(&body, list).iter().map(id));
        let info = &body["data"][list]["pageInfo"];
        if info["hasNextPage"] != json!(true) {
            return (ids, pages);
        }
        after = info["endCursor"].clone();
        assert!(pages < 100, "the walk ends");
    }
}

#[tokio::test]
async fn reads_go_to_the_replicas_of_the_shards_involved() {
    let app = TestApp::spawn_seeded(60, 120, |_| {}).await;

    let query = "{ users(first: 50) { edges { node { posts(first: 1) { author { id } } } } } }";
    let response = app
        .request(Method::POST, "/graphql")
        .json(&json!({ "query": query }))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.route(),
        "shard=0;role=replica, shard=1;role=replica"
    );
}
