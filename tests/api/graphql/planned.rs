//! The planned executor (`graphql.executor = "planned"`, the default) against the resolvers:
//! the same query on two instances over the same databases, one with each executor, must get
//! the same answer back. What the planned executor does not cover, or cannot answer without
//! an error, it leaves to the resolvers: those answers must match too.
//!
//! The same answer, not the same bytes: async-graphql 7 writes an object's keys in the order
//! its fields finished resolving (`pageInfo` before `edges`, which waited for a batch), where
//! the planned executor writes them in the query's order, as the GraphQL spec asks; the
//! comparison is of the parsed JSON, and the key order is checked on its own.

use reqwest::StatusCode;
use scalable_api::config::{CacheStrategy, Executor};
use serde_json::{Value, json};

use super::statements_during;
use crate::helpers::{Instance, TestApp};

/// POSTs `query` to `instance` and returns the status, the raw body and its Server-Timing.
async fn raw(
    instance: &Instance,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> (StatusCode, String, String) {
    let mut request = instance
        .client
        .post(format!("{}/graphql", instance.base))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the instance answers");
    let status = response.status();
    let timing = response
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, response.text().await.expect("a body"), timing)
}

/// Two instances on one seeded data set: (planned, resolvers).
async fn both(strategy: CacheStrategy) -> (TestApp, Instance, Instance) {
    let app = TestApp::spawn_seeded(40, 400, |config| {
        config.cache.strategy = strategy;
        config.graphql.executor = Executor::Planned;
    })
    .await;
    let planned = app.another_instance().await;
    let resolvers = app
        .another_instance_with(|config| config.graphql.executor = Executor::Resolvers)
        .await;
    (app, planned, resolvers)
}

/// How many of [`queries`] come before the five the planned executor leaves to the resolvers.
const COVERED: usize = 7;

/// Queries the planned executor covers, and a few it leaves to the resolvers; each is run on
/// both executors.
fn queries(user: i64, post: i64) -> Vec<(&'static str, Value)> {
    vec![
        (
            "{ users(first: 10) { edges { node { id name posts(first: 3) { id title author { id name } } } } } }",
            json!({}),
        ),
        (
            "query ($u: Int!, $p: Int!) { users(first: $u) { edges { cursor node { id createdAt posts(first: $p) { id title body createdAt updatedAt } } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }",
            json!({ "u": 7, "p": 2 }),
        ),
        (
            "{ a: users(first: 3) { __typename nodes { __typename ident: id email } edges { __typename } pageInfo { __typename } } b: users(first: 2) { nodes { id } } __typename }",
            json!({}),
        ),
        (
            "query ($id: ID!) { user(id: $id) { id name email posts(first: 4) { id author { id posts(first: 1) { id } } } } }",
            json!({ "id": user.to_string() }),
        ),
        (
            "{ user(id: 999999) { id } post(id: \"999999\") { id } }",
            json!({}),
        ),
        (
            "query ($id: ID!) { post(id: $id) { id title author { name email } } viewer { id email } }",
            json!({ "id": post.to_string() }),
        ),
        (
            "{ posts(first: 5) { edges { cursor node { id title author { id } } } pageInfo { hasNextPage endCursor } } }",
            json!({}),
        ),
        // Left to the resolvers: a fragment, a directive, a bad id, a bad cursor, a mutation.
        (
            "fragment U on User { id name } { users(first: 2) { nodes { ...U } } }",
            json!({}),
        ),
        (
            "{ users(first: 2) { nodes { id name @include(if: false) } } }",
            json!({}),
        ),
        ("{ user(id: \"abc\") { id } }", json!({})),
        (
            "{ users(first: 2, after: \"nope\") { nodes { id } } }",
            json!({}),
        ),
        ("{ users(first: 500) { nodes { id } } }", json!({})),
    ]
}

async fn the_executors_agree(strategy: CacheStrategy) {
    let (app, planned, resolvers) = both(strategy).await;
    let me = app.register("planned@example.com", "Planned").await;
    let post = app.create_post(&me, "a post of mine").await;
    let post_id: i64 = post["id"].as_i64().expect("a post id");
    app.wait_for_replicas().await;
    // After the first page, and the second page through its cursor.
    let (_, first_page, _) = raw(
        &planned,
        None,
        "{ users(first: 5) { pageInfo { endCursor } } }",
        json!({}),
    )
    .await;
    let end: Value = serde_json::from_str(&first_page).expect("JSON");
    let after = end["data"]["users"]["pageInfo"]["endCursor"].clone();
    let mut cases = queries(me.id, post_id);
    cases.push((
        "query ($after: String) { users(first: 5, after: $after) { edges { cursor node { id } } pageInfo { hasPreviousPage startCursor } } }",
        json!({ "after": after }),
    ));
    for token in [None, Some(me.token.as_str())] {
        for (i, (query, variables)) in cases.iter().enumerate() {
            // The covered ones (all but the five left to the resolvers) wait for no batch
            // window: they ran planned, not on the resolvers after a fallback.
            let covered = !(COVERED..COVERED + 5).contains(&i);
            // Twice: cold, then (with a cache) warm.
            for round in 0..2 {
                let (status_p, body_p, timing) =
                    raw(&planned, token, query, variables.clone()).await;
                if covered {
                    assert!(
                        !timing.contains("batch"),
                        "planned, not resolved: {query}: {timing}"
                    );
                }
                let (status_r, body_r, _) = raw(&resolvers, token, query, variables.clone()).await;
                let parse = |body: &str| -> Value {
                    serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON: {body}"))
                };
                assert_eq!(
                    (status_p, parse(&body_p)),
                    (status_r, parse(&body_r)),
                    "{strategy:?}, round {round}, token {}: {query}",
                    token.is_some()
                );
            }
        }
    }
    // The viewer's own email shows, others' not: the comparison above holds for both.
    let (_, body, _) = raw(&planned, Some(&me.token), "{ viewer { email } }", json!({})).await;
    assert!(body.contains("planned@example.com"), "{body}");
    // Keys in the query's order, whatever finishes first.
    let (_, body, _) = raw(
        &planned,
        None,
        "{ users(first: 2) { pageInfo { endCursor hasNextPage } edges { node { posts(first: 1) { title id } name } } } }",
        json!({}),
    )
    .await;
    let order = [
        "pageInfo",
        "endCursor",
        "hasNextPage",
        "edges",
        "posts",
        "title",
        "id",
        "name",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|key| {
            body.find(&format!("\"{key}\""))
                .unwrap_or_else(|| panic!("{key} in {body}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "keys in query order: {body}"
    );
}

#[tokio::test]
async fn the_planned_executor_answers_exactly_what_the_resolvers_answer_without_a_cache() {
    the_executors_agree(CacheStrategy::None).await;
}

#[tokio::test]
async fn the_planned_executor_answers_exactly_what_the_resolvers_answer_through_the_two_tier_cache()
{
    the_executors_agree(CacheStrategy::TwoTier).await;
}

/// The planned executor runs what it covers (no DataLoader window: no `batch` timing entry)
/// and leaves the rest to the resolvers (which wait for their window), and costs at most one
/// statement per shard per level, like the DataLoaders.
#[tokio::test]
async fn covered_queries_skip_the_batch_window_and_cost_one_statement_per_shard_per_level() {
    let (app, planned, _resolvers) = both(CacheStrategy::None).await;
    let nested =
        "{ users(first: 40) { edges { node { id posts(first: 5) { id title author { id } } } } } }";
    let (status, _, timing) = raw(&planned, None, nested, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !timing.contains("batch"),
        "planned: no batch window: {timing}"
    );
    let fragment =
        "fragment P on Post { id } { users(first: 4) { nodes { posts(first: 2) { ...P } } } }";
    let (status, _, timing) = raw(&planned, None, fragment, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        timing.contains("batch"),
        "a fragment runs on the resolvers: {timing}"
    );

    // The users page (one statement per shard it reaches) and the posts of the page's users
    // (one per shard); the authors are the page's users, already loaded.
    let (counts, (status, body, _)) =
        statements_during(&app, raw(&planned, None, nested, json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let shards = app.state.db.cluster().len() as i64;
    assert!(
        total <= 2 * shards,
        "at most one statement per shard per level, got {counts:?}"
    );
    assert!(total >= 2, "the page and its posts were read: {counts:?}");
}
