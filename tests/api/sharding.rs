//! ID-range sharding: placement, physical location of rows, range exhaustion.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_problem, assert_problem_mentioning};

#[tokio::test]
async fn users_land_on_both_shards_and_their_rows_and_posts_live_on_their_shard() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act: four registrations, round-robin over two shards.
    let mut users = Vec::new();
    for i in 0..4 {
        let user = app
            .register(&format!("user{i}@example.com"), &format!("User {i}"))
            .await;
        let post = app.create_post(&user, &format!("post by {i}")).await;
        users.push((user, post));
    }

    // Assert: placement alternates, and each row is physically in its shard's database.
    let shard_of = |id: i64| if id <= 1_000_000_000 { 0 } else { 1 };
    let placed: Vec<usize> = users.iter().map(|(u, _)| shard_of(u.id)).collect();
    assert_eq!(placed, [0, 1, 0, 1], "round-robin placement");
    for (user, post) in &users {
        let home = shard_of(user.id);
        let post_id = post["id"].as_i64().expect("post id");
        assert_eq!(
            shard_of(post_id),
            home,
            "a post's id comes from its author's shard range"
        );
        for shard in 0..2 {
            let db = app.primary(shard).await;
            let has_user: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND email = $2)",
            )
            .bind(user.id)
            .bind(&user.email)
            .fetch_one(&db)
            .await
            .expect("query shard");
            let has_post: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM posts WHERE id = $1 AND user_id = $2)",
            )
            .bind(post_id)
            .bind(user.id)
            .fetch_one(&db)
            .await
            .expect("query shard");
            assert_eq!(has_user, shard == home, "user {} on shard {shard}", user.id);
            assert_eq!(has_post, shard == home, "post {post_id} on shard {shard}");
        }
    }
}

#[tokio::test]
async fn a_shard_whose_range_is_used_up_takes_no_more_rows_and_never_wraps() {
    // Arrange: shard 0 owns ids 1..=3 only; shard 1 stops taking new users.
    let app = TestApp::spawn_with(|config| {
        config.db.shards[0].last_id = 3;
        config.db.shards[1].first_id = 4;
        config.db.shards[1].accepts_new_users = false;
    })
    .await;

    // Act: three users fill shard 0's users range.
    let mut users = Vec::new();
    for i in 0..3 {
        users.push(
            app.register(&format!("fill{i}@example.com"), "Filler")
                .await,
        );
    }
    let ids: Vec<i64> = users.iter().map(|u| u.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    let fourth = app
        .auth()
        .register("fourth@example.com", "Fourth", PASSWORD)
        .await;

    // Assert: a clear 503, nothing half-written: the email is free again in the directory.
    assert_problem_mentioning(
        fourth,
        StatusCode::SERVICE_UNAVAILABLE,
        "no ids left",
        "registering past the range",
    )
    .await;
    let directory = app.directory().await;
    let entries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM directory_entries WHERE email = 'fourth@example.com'",
    )
    .fetch_one(&directory)
    .await
    .expect("query directory");
    assert_eq!(
        entries, 0,
        "the failed registration released its reservation"
    );
    let shard0 = app.primary(0).await;
    let max_id: i64 = sqlx::query_scalar("SELECT max(id) FROM users")
        .fetch_one(&shard0)
        .await
        .expect("max id");
    assert_eq!(max_id, 3, "no id outside the range was used");

    // Posts share the range's bound: three posts fill it, the fourth is refused.
    for i in 0..3 {
        app.create_post(&users[0], &format!("p{i}")).await;
    }
    let refused = app
        .posts()
        .create(&users[0], json!({ "title": "one too many", "body": "x" }))
        .await;
    assert_problem(
        refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "a post past the range",
    )
    .await;
}
