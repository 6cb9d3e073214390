//! REST v2: string ids, `{data, next_cursor}` lists walked by opaque keyset cursors,
//! `include=posts` batched per shard, `fields=` sparse fieldsets; writes shared with v1.

use std::collections::HashSet;

use reqwest::StatusCode;
use scalable_api::config::CacheStrategy;
use serde_json::{Value, json};

use crate::{
    graphql::statements_during,
    helpers::{TestApp, assert_problem_mentioning, statement_calls},
};

/// One page: its items and the cursor of the next (`None` on the last).
async fn page(app: &TestApp, path: &str) -> (Vec<Value>, Option<String>) {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let body: Value = response.json().await.expect("JSON");
    let data = body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("a data array in {body}"))
        .clone();
    let next = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(cursor) => Some(cursor.clone()),
        other => panic!("next_cursor is a string or null, not {other}"),
    };
    (data, next)
}

/// Walks `list` (a path with a `?`) to its end; the ids in order.
async fn walk(app: &TestApp, list: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => list.to_owned(),
            Some(cursor) => format!("{list}&cursor={cursor}"),
        };
        let (data, next) = page(app, &path).await;
        ids.extend(data.iter().map(string_id));
        match next {
            None => return ids,
            Some(next) => cursor = Some(next),
        }
    }
}

fn string_id(item: &Value) -> i64 {
    item["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a string id in {item}"))
        .parse()
        .expect("a decimal id")
}

#[tokio::test]
async fn a_cursor_walk_returns_every_user_once_while_users_are_being_created() {
    // Arrange: the demo's 100,000 users; neither the walk's thousand pages nor the
    // registrations from one address are rate limited.
    let app = TestApp::spawn_seeded(100_000, 0, |config| {
        config.ratelimit.enabled = false;
        config.auth.login_limits.address_tries = 1_000;
    })
    .await;
    let seeded: HashSet<i64> = {
        let mut ids = HashSet::new();
        for shard in 0..2 {
            let part: Vec<i64> = sqlx::query_scalar("SELECT id FROM users")
                .fetch_all(&app.primary(shard).await)
                .await
                .expect("ids of the shard");
            ids.extend(part);
        }
        ids
    };
    assert_eq!(seeded.len(), 100_000);

    // Act: walk in pages of 100 while another client registers users.
    let registering = async {
        for i in 0..20 {
            let email = format!("walker{i}@example.com");
            let created = app
                .auth()
                .register(&email, "Walker", "correct horse battery")
                .await;
            assert_eq!(created.status(), StatusCode::CREATED, "registering {email}");
        }
    };
    let (walked, ()) = tokio::join!(walk(&app, "/v2/users?limit=100"), registering);

    // Assert: in id order, no id twice, every seeded user there (users created during the
    // walk may or may not be, depending on where the walk was).
    assert!(walked.windows(2).all(|w| w[0] < w[1]), "strictly ascending");
    let walked: HashSet<i64> = walked.into_iter().collect();
    let missing = seeded.difference(&walked).count();
    assert_eq!(missing, 0, "every seeded user is walked");
}

#[tokio::test]
async fn include_posts_on_a_page_of_a_hundred_users_costs_one_statement_per_shard() {
    // Arrange: no cache, so every read is a statement.
    let app = TestApp::spawn_seeded(120, 1_200, |config| {
        config.cache.strategy = CacheStrategy::None;
    })
    .await;
    let lateral = "%LEFT JOIN LATERAL%";
    let mut before = Vec::new();
    for (_, pool) in app.servers().await {
        before.push(statement_calls(&pool, lateral).await);
    }

    // Act
    let (counts, (users, _)) =
        statements_during(&app, page(&app, "/v2/users?limit=100&include=posts")).await;

    // Assert: 100 users with their posts, from one batch statement per shard (the page spans
    // both) plus the list itself.
    assert_eq!(users.len(), 100);
    assert!(
        users.iter().all(|u| u["posts"].is_array()),
        "posts included"
    );
    assert!(
        users
            .iter()
            .any(|u| u["posts"].as_array().is_some_and(|p| !p.is_empty())),
        "some user has posts"
    );
    let mut batch = Vec::new();
    for ((name, pool), before) in app.servers().await.into_iter().zip(before) {
        batch.push((name, statement_calls(&pool, lateral).await - before));
    }
    let shards_batched: i64 = batch.iter().map(|(_, n)| n).sum();
    assert_eq!(shards_batched, 2, "one batch per shard: {batch:?}");
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    assert!(
        total <= 4,
        "the list and the batches, nothing per user: {counts:?}"
    );
}

#[tokio::test]
async fn v2_renders_ids_as_strings_and_shapes_items_with_fields() {
    // Arrange
    let app = TestApp::spawn().await;
    let user = app.register("shape@example.com", "Shape").await;
    let post = app.create_post(&user, "Shaped").await;
    let post_id = post["id"].as_i64().expect("v1 answers with an integer id");

    // Act
    let full: Value = app
        .get(&format!("/v2/posts/{post_id}"))
        .await
        .json()
        .await
        .expect("JSON");
    let shaped: Value = app
        .get(&format!("/v2/posts/{post_id}?fields=title"))
        .await
        .json()
        .await
        .expect("JSON");
    let me: Value = app
        .get(&format!("/v2/users/{}", user.id))
        .bearer(&user)
        .await
        .json()
        .await
        .expect("JSON");

    // Assert
    assert_eq!(full["id"], json!(post_id.to_string()));
    assert_eq!(full["user_id"], json!(user.id.to_string()));
    assert!(full["body"].is_string() && full["created_at"].is_string());
    assert_eq!(
        shaped,
        json!({ "id": post_id.to_string(), "title": "Shaped" }),
        "only the field asked for, and the id"
    );
    assert_eq!(me["id"], json!(user.id.to_string()));
    assert_eq!(me["email"], json!("shape@example.com"), "the owner sees it");
}

#[tokio::test]
async fn writes_through_v2_answer_in_v2_and_point_into_v2() {
    // Arrange
    let app = TestApp::spawn().await;
    let user = app.register("writer2@example.com", "Writer").await;

    // Act
    let created = app
        .request(reqwest::Method::POST, "/v2/posts")
        .bearer(&user)
        .json(&json!({ "title": "Hello", "body": "v2" }))
        .await;

    // Assert
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a Location");
    let body: Value = created.json().await.expect("JSON");
    let id = body["id"].as_str().expect("a string id");
    assert_eq!(location, format!("/v2/posts/{id}"));
    assert_eq!(app.get(&location).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_users_posts_and_the_feed_walk_to_their_end_newest_first() {
    // Arrange
    let app = TestApp::spawn_seeded(10, 300, |_| {}).await;
    let author: i64 = sqlx::query_scalar(
        "SELECT user_id FROM posts GROUP BY user_id ORDER BY count(*) DESC LIMIT 1",
    )
    .fetch_one(&app.primary(0).await)
    .await
    .expect("an author on shard 0");
    let (own, all) = {
        let own: i64 = sqlx::query_scalar("SELECT count(*) FROM posts WHERE user_id = $1")
            .bind(author)
            .fetch_one(&app.primary(0).await)
            .await
            .expect("count");
        let mut all = 0i64;
        for shard in 0..2 {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM posts")
                .fetch_one(&app.primary(shard).await)
                .await
                .expect("count");
            all += n;
        }
        (own, all)
    };

    // Act
    let posts = walk(&app, &format!("/v2/users/{author}/posts?limit=7")).await;
    let feed = walk(&app, "/v2/posts?limit=50").await;

    // Assert
    assert_eq!(posts.len() as i64, own, "every post of the user");
    assert!(
        posts.windows(2).all(|w| w[0] > w[1]),
        "newest (highest id) first"
    );
    assert_eq!(feed.len() as i64, all, "every post of every shard");
    assert_eq!(
        feed.iter().collect::<HashSet<_>>().len(),
        feed.len(),
        "no post twice"
    );
}

#[tokio::test]
async fn forged_foreign_and_malformed_cursors_and_unknown_shapes_are_a_400() {
    // Arrange
    let app = TestApp::spawn_seeded(30, 60, |_| {}).await;
    let (_, users_next) = page(&app, "/v2/users?limit=5").await;
    let users_next = users_next.expect("more than one page of users");
    let mut forged = users_next.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ASCII");

    // Act + Assert
    for (path, what) in [
        (format!("/v2/users?cursor={forged}"), "cursor"),
        (format!("/v2/posts?cursor={users_next}"), "cursor"),
        ("/v2/users?cursor=%F0%9F%92%A9".to_owned(), "cursor"),
        ("/v2/users?fields=password_hash".to_owned(), "fields"),
        ("/v2/users?include=comments".to_owned(), "include"),
        ("/v2/users?limit=0".to_owned(), "limit"),
        ("/v2/users?offset=10".to_owned(), "offset"),
    ] {
        let response = app.get(&path).await;
        assert_problem_mentioning(response, StatusCode::BAD_REQUEST, what, &path).await;
    }
}

#[tokio::test]
async fn user_lists_in_both_versions_are_private_since_they_carry_the_viewers_email() {
    // Arrange: the viewer is on the first page of users.
    let app = TestApp::spawn().await;
    let user = app.register("listed@example.com", "Listed").await;

    for path in ["/v1/users?limit=100", "/v2/users?limit=100"] {
        // Act
        let response = app.get(path).bearer(&user).await;

        // Assert
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let header = |name: &str| {
            response
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ")
        };
        assert!(header("cache-control").contains("private"), "{path}");
        assert!(header("vary").contains("Authorization"), "{path}");
        let body = response.text().await.expect("a body");
        assert!(
            body.contains("listed@example.com"),
            "{path}: the viewer's own email"
        );
    }
}
