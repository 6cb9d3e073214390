//! Offset pagination across shards: every row exactly once, in order, across the boundary.

use std::collections::HashSet;

use reqwest::StatusCode;
use scalable_api::admin::seed::{SeedOptions, seed};
use serde_json::Value;

use crate::helpers::{Request, TestApp};

/// Walks a list, `page(query)` for `query` = `?limit=L&offset=...`, until an empty page;
/// returns the ids in order.
async fn walk(page: impl Fn(&str) -> Request, limit: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    loop {
        let query = format!("?limit={limit}&offset={}", ids.len());
        let response = page(&query).await;
        assert_eq!(response.status(), StatusCode::OK, "page {query}");
        let page: Vec<Value> = response.json().await.expect("a JSON array");
        assert!(page.len() <= limit, "a page never exceeds its limit");
        if page.is_empty() {
            return ids;
        }
        ids.extend(
            page.iter()
                .map(|row| row["id"].as_i64().expect("an integer id")),
        );
    }
}

/// Rows of `sql` from both shard primaries, concatenated.
async fn from_both_shards(app: &TestApp, sql: &str) -> Vec<(i64, chrono::DateTime<chrono::Utc>)> {
    let mut rows = Vec::new();
    for shard in 0..2 {
        let part: Vec<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(sql)
            .fetch_all(&app.primary(shard).await)
            .await
            .expect("query shard");
        rows.extend(part);
    }
    rows
}

#[tokio::test]
async fn the_id_ordered_user_list_walks_both_shards_without_gaps_or_duplicates() {
    // Arrange: 25 users, alternating shards (13 on shard 0, 12 on shard 1).
    let app = TestApp::spawn_seeded(25, 40, |_| {}).await;
    let mut expected: Vec<i64> = from_both_shards(&app, "SELECT id, created_at FROM users")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    expected.sort_unstable();

    // Act: pages of 7 (a page straddles the shard boundary).
    let walked = walk(|query| app.users().list(query), 7).await;

    // Assert
    assert_eq!(walked, expected);
    assert!(
        walked.iter().any(|id| *id <= 1_000_000_000) && walked.iter().any(|id| *id > 1_000_000_000)
    );
}

#[tokio::test]
async fn the_newest_first_feed_merges_shards_without_gaps_or_duplicates() {
    // Arrange: posts of both shards interleave in time.
    let app = TestApp::spawn_seeded(10, 95, |_| {}).await;
    let mut expected = from_both_shards(&app, "SELECT id, created_at FROM posts").await;
    expected.sort_unstable_by_key(|&(id, at)| std::cmp::Reverse((at, id)));
    let expected: Vec<i64> = expected.into_iter().map(|(id, _)| id).collect();

    // Act
    let walked = walk(|query| app.posts().feed(query), 9).await;

    // Assert: the same sequence as a global sort, each post once.
    assert_eq!(walked.len(), 95);
    assert_eq!(
        walked.iter().collect::<HashSet<_>>().len(),
        95,
        "no duplicates"
    );
    assert_eq!(walked, expected);
    let shards: HashSet<bool> = walked
        .iter()
        .take(10)
        .map(|id| *id > 1_000_000_000)
        .collect();
    assert_eq!(shards.len(), 2, "the first page already mixes both shards");
}

#[tokio::test]
async fn a_users_posts_come_newest_first_and_page_cleanly() {
    let app = TestApp::spawn_seeded(4, 60, |_| {}).await;
    let (user_id, mut expected): (i64, Vec<i64>) = {
        let posts: Vec<(i64, i64)> =
            sqlx::query_as("SELECT user_id, id FROM posts WHERE user_id = 1 ORDER BY id DESC")
                .fetch_all(&app.primary(0).await)
                .await
                .expect("query shard 0");
        (1, posts.into_iter().map(|(_, id)| id).collect())
    };
    assert!(expected.len() > 5, "the seed gives user 1 several posts");

    let walked = walk(|query| app.users().posts(user_id, query), 4).await;

    expected.dedup();
    assert_eq!(walked, expected);
}

/// The full demo data set: 100,000 users and 1,000,000 posts. Its time is printed for the
/// record (`--no-capture` shows it); performance is not asserted in tests.
#[tokio::test]
async fn seed_loads_the_full_demo_data_set_into_the_right_shards() {
    let app = TestApp::spawn().await;

    let report = seed(
        &app.state.db,
        SeedOptions {
            users: 100_000,
            posts: 1_000_000,
            reset: false,
            if_empty: false,
        },
    )
    .await
    .expect("seeding works");
    println!(
        "seed: 100,000 users and 1,000,000 posts in {:.1}s",
        report.elapsed.as_secs_f64()
    );

    let mut posts = 0;
    for shard in 0..2 {
        let db = app.primary(shard).await;
        let (users, lo, hi): (i64, i64, i64) =
            sqlx::query_as("SELECT count(*), min(id), max(id) FROM users")
                .fetch_one(&db)
                .await
                .expect("count users");
        let first = shard as i64 * 1_000_000_000 + 1;
        assert_eq!(
            (users, lo, hi),
            (50_000, first, first + 49_999),
            "users of shard {shard}"
        );
        let misplaced: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM posts p LEFT JOIN users u ON u.id = p.user_id WHERE u.id IS NULL",
        )
        .fetch_one(&db)
        .await
        .expect("count orphans");
        assert_eq!(
            misplaced, 0,
            "every post of shard {shard} has its author beside it"
        );
        posts += sqlx::query_scalar::<_, i64>("SELECT count(*) FROM posts")
            .fetch_one(&db)
            .await
            .expect("count posts");
    }
    assert_eq!(posts, 1_000_000);
    let entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM directory_entries WHERE state = 'active'")
            .fetch_one(&app.directory().await)
            .await
            .expect("count directory");
    assert_eq!(entries, 100_000);
}
