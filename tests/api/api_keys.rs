//! API keys (`src/auth/api_key.rs`, `src/operations/api_keys.rs`): shown once and stored as a
//! hash, acting as their owner within their scope, revoked at once here and within the cache
//! bound elsewhere, audited, and never written to a log.

use std::time::Duration;

use reqwest::{Method, StatusCode, header};
use scalable_api::{Config, config::LogFormat};
use serde_json::{Value, json};

use crate::{
    helpers::{
        Anonymous, ResponseExt, TestApp, TestUser, assert_problem, assert_problem_mentioning,
        statement_calls,
    },
    telemetry_harness::LogCapture,
};

/// Every column of the directory's `api_keys` rows, as text.
async fn key_rows(app: &TestApp) -> String {
    let rows: Vec<String> = sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k")
        .fetch_all(&app.directory().await)
        .await
        .expect("the api_keys table is readable");
    rows.join("\n")
}

/// The post rows of every shard, as text: proof that a refused write changed nothing.
async fn post_rows(app: &TestApp) -> String {
    let mut all = Vec::new();
    for shard in 0..app.shard_dbs.len() {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT row_to_json(p)::text FROM posts p ORDER BY id")
                .fetch_all(&app.primary(shard).await)
                .await
                .expect("posts are readable");
        all.extend(rows);
    }
    all.join("\n")
}

fn new_post(title: &str) -> Value {
    json!({ "title": title, "body": "written with a key" })
}

#[tokio::test]
async fn a_key_is_shown_once_stored_only_as_a_hash_and_listed_without_its_secret() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act
    let response = app
        .api_keys()
        .create(&ada, json!({ "name": "export job", "scope": "read" }))
        .await;

    // Assert: 201 with the key, which no cache may keep.
    assert_eq!(response.header_str("cache-control"), "no-store");
    let created = response
        .expect_json(StatusCode::CREATED, "creating a key")
        .await;
    let id = created["id"].as_i64().expect("an id");
    let key = created["key"].as_str().expect("the key").to_owned();
    let secret = key
        .strip_prefix(&format!("sk_{id}_"))
        .unwrap_or_else(|| panic!("sk_<id>_<secret>: {key}"));
    assert_eq!(secret.len(), 43, "32 random bytes, base64url");
    assert_eq!(
        (&created["name"], &created["scope"], &created["tier"]),
        (&json!("export job"), &json!("read"), &json!("service"))
    );

    // The table holds a 32-byte hash, never the key or its secret.
    let rows = key_rows(&app).await;
    assert!(rows.contains("export job"), "the row is there: {rows}");
    for text in [key.as_str(), secret] {
        assert!(
            !rows.contains(text),
            "the table holds the key in clear: {rows}"
        );
    }
    let hash: Vec<u8> = sqlx::query_scalar("SELECT secret_hash FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_one(&app.directory().await)
        .await
        .expect("the row");
    assert_eq!(hash.len(), 32);
    assert!(
        !hash.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "a hash, not the secret"
    );

    // Listing shows the key's description and nothing secret.
    let second = app.create_api_key(&ada, "write").await;
    let listed = app
        .api_keys()
        .list(&ada)
        .await
        .expect_json(StatusCode::OK, "listing keys")
        .await;
    let ids: Vec<i64> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|k| k["id"].as_i64().expect("an id"))
        .collect();
    assert_eq!(ids, [id, second.id]);
    let text = listed.to_string();
    for leak in [
        key.as_str(),
        secret,
        &second.key,
        "secret",
        "hash",
        "\"key\"",
    ] {
        assert!(!text.contains(leak), "the list shows {leak}: {text}");
    }

    // Someone else sees only their own (none).
    let bob = app.register("bob@example.com", "Bob").await;
    let theirs = app.api_keys().list(&bob).await.json_body().await;
    assert_eq!(theirs, json!([]));
}

#[tokio::test]
async fn a_read_key_reads_as_its_owner_and_every_write_with_it_is_a_403() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let post = app.create_post(&ada, "by token").await;
    let post_id = post["id"].as_i64().expect("an id");
    let read = app.create_api_key(&ada, "read").await;
    app.wait_for_replicas().await;
    let before = post_rows(&app).await;

    // Act + Assert: reads as Ada (her own email shows, as with her token)...
    let me = app
        .users()
        .get(ada.id)
        .api_key(&read.key)
        .await
        .expect_json(StatusCode::OK, "reading with a read key")
        .await;
    assert_eq!(me["email"], "ada@example.com", "the key acts as its owner");

    // ...in both header forms...
    let same = app
        .users()
        .get(ada.id)
        .header("authorization", format!("ApiKey {}", read.key))
        .await
        .expect_json(StatusCode::OK, "Authorization: ApiKey")
        .await;
    assert_eq!(same, me);

    // ...and every write is refused.
    let writes = [
        app.posts().create(Anonymous, new_post("nope")),
        app.posts()
            .patch(post_id, Anonymous, json!({ "title": "nope" })),
        app.posts().delete(post_id, Anonymous),
        app.users()
            .patch(ada.id, Anonymous, json!({ "name": "Nope" })),
        app.users().delete(ada.id, Anonymous),
    ];
    for write in writes {
        let response = write.api_key(&read.key).await;
        assert_problem_mentioning(
            response,
            StatusCode::FORBIDDEN,
            "`read` scope",
            "a write with a read key",
        )
        .await;
    }
    assert_eq!(post_rows(&app).await, before, "nothing was written");
    let still = app.users().get(ada.id).await.json_body().await;
    assert_eq!(still["name"], "Ada");
}

#[tokio::test]
async fn a_write_key_writes_as_its_owner() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let write = app.create_api_key(&ada, "write").await;

    // Act: create, change and delete a post, rename the account, all with the key.
    let created = app
        .posts()
        .create(Anonymous, new_post("by key"))
        .api_key(&write.key)
        .await
        .expect_json(StatusCode::CREATED, "creating a post with a write key")
        .await;
    let id = created["id"].as_i64().expect("an id");
    let patched = app
        .posts()
        .patch(id, Anonymous, json!({ "title": "changed by key" }))
        .header("authorization", format!("ApiKey {}", write.key))
        .await
        .expect_json(StatusCode::OK, "changing it")
        .await;
    let renamed = app
        .users()
        .patch(ada.id, Anonymous, json!({ "name": "Countess" }))
        .api_key(&write.key)
        .await
        .expect_json(StatusCode::OK, "renaming the owner")
        .await;
    let deleted = app.posts().delete(id, Anonymous).api_key(&write.key).await;

    // Assert
    assert_eq!(created["user_id"], json!(ada.id), "written as the owner");
    assert_eq!(patched["title"], "changed by key");
    assert_eq!(renamed["name"], "Countess");
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    // Only as the owner: someone else's post is still the author's alone.
    let bob = app.register("bob@example.com", "Bob").await;
    let theirs = app.create_post(&bob, "Bob's").await;
    let stranger = app
        .posts()
        .patch(
            theirs["id"].as_i64().expect("id"),
            Anonymous,
            json!({ "title": "x" }),
        )
        .api_key(&write.key)
        .await;
    assert_problem(stranger, StatusCode::FORBIDDEN, "another author's post").await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_and_only_its_owner_may_revoke_it() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let bob = app.register("bob@example.com", "Bob").await;
    let key = app.create_api_key(&ada, "read").await;
    let read = || app.users().get(ada.id).api_key(&key.key);
    assert_eq!(read().await.status(), StatusCode::OK, "cached as valid");

    // Act + Assert: Bob cannot revoke it, and learns nothing (the same 404 as no key).
    let by_bob = app.api_keys().revoke(key.id, &bob).await;
    assert_problem(by_bob, StatusCode::NOT_FOUND, "someone else's key").await;
    let none = app.api_keys().revoke(key.id + 1000, &bob).await;
    assert_problem(none, StatusCode::NOT_FOUND, "no such key").await;
    assert_eq!(read().await.status(), StatusCode::OK, "still valid");

    // Ada revokes it: refused at once on this instance, though it was cached.
    let revoked = app.api_keys().revoke(key.id, &ada).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_problem_mentioning(
        read().await,
        StatusCode::UNAUTHORIZED,
        "revoked",
        "after revocation",
    )
    .await;
    let again = app.api_keys().revoke(key.id, &ada).await;
    assert_problem(again, StatusCode::NOT_FOUND, "revoking twice").await;
    let listed = app.api_keys().list(&ada).await.json_body().await;
    assert_eq!(listed, json!([]), "a revoked key is not listed");
}

#[tokio::test]
async fn a_key_revoked_on_one_instance_is_refused_on_another_once_its_cache_ttl_passes() {
    // Arrange: two instances, keys cached for a second.
    let ttl = Duration::from_secs(1);
    let app = TestApp::spawn_with(|config| config.auth.api_keys.cache_ttl = ttl).await;
    let other = app.another_instance().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let key = app.create_api_key(&ada, "read").await;
    let read_on_other = || {
        other
            .request(Method::GET, &format!("/v1/users/{}", ada.id))
            .api_key(&key.key)
    };
    assert_eq!(
        read_on_other().await.status(),
        StatusCode::OK,
        "cached there"
    );

    // Act: revoked on the first instance.
    let revoked = app.api_keys().revoke(key.id, &ada).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);

    // Assert: once the other instance's cached row has expired, it refuses the key too.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_problem_mentioning(
        read_on_other().await,
        StatusCode::UNAUTHORIZED,
        "revoked",
        "the other instance after the cache TTL",
    )
    .await;
}

#[tokio::test]
async fn a_verified_key_costs_one_directory_query_per_cache_ttl_not_one_per_request() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let key = app.create_api_key(&ada, "read").await;
    let directory = app.directory().await;
    let lookups = "SELECT id, user_id, scope%FROM api_keys WHERE id%";
    let before = statement_calls(&directory, lookups).await;

    // Act
    for _ in 0..5 {
        let response = app.users().get(ada.id).api_key(&key.key).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    // Assert
    let after = statement_calls(&directory, lookups).await;
    assert_eq!(after - before, 1, "five requests, one lookup");
}

#[tokio::test]
async fn malformed_unknown_and_forged_keys_are_401_problems() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let key = app.create_api_key(&ada, "write").await;
    let forged = format!("sk_{}_{}", key.id, "A".repeat(43));
    let unknown = key
        .key
        .replacen(&format!("sk_{}_", key.id), "sk_999999_", 1);

    for (what, request) in [
        ("malformed", app.users().get(ada.id).api_key("sk_nonsense")),
        ("an unknown id", app.users().get(ada.id).api_key(&unknown)),
        ("a wrong secret", app.users().get(ada.id).api_key(&forged)),
        (
            "two keys at once",
            app.users()
                .get(ada.id)
                .api_key(&key.key)
                .header("authorization", format!("ApiKey {}", key.key)),
        ),
    ] {
        // Act
        let response = request.await;

        // Assert
        let problem = assert_problem(response, StatusCode::UNAUTHORIZED, what).await;
        assert!(
            !problem.to_string().contains(&key.key),
            "{what}: the answer echoes the key"
        );
    }
}

#[tokio::test]
async fn keys_are_managed_with_an_access_token_only_and_bad_bodies_are_422() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let write = app.create_api_key(&ada, "write").await;
    let valid = json!({ "name": "another", "scope": "write" });

    // Act + Assert: no key manages keys, whatever its scope; nobody without credentials.
    for (what, request) in [
        ("create", app.api_keys().create(Anonymous, valid.clone())),
        ("list", app.api_keys().list(Anonymous)),
        ("revoke", app.api_keys().revoke(write.id, Anonymous)),
    ] {
        let with_key = request.clone().api_key(&write.key).await;
        assert_problem_mentioning(
            with_key,
            StatusCode::FORBIDDEN,
            "access token",
            &format!("{what} with a key"),
        )
        .await;
        let anonymous = request.await;
        assert_eq!(
            anonymous
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
        assert_problem(
            anonymous,
            StatusCode::UNAUTHORIZED,
            &format!("{what} anonymously"),
        )
        .await;
    }
    assert_eq!(
        app.api_keys()
            .list(&ada)
            .await
            .json_body()
            .await
            .as_array()
            .map(Vec::len),
        Some(1),
        "no key was made or revoked"
    );

    // Bad bodies: each bad field named; unknown fields refused; a bad id is a 400.
    let invalid = app
        .api_keys()
        .create(&ada, json!({ "name": " ", "scope": "admin" }))
        .await;
    let problem = assert_problem(invalid, StatusCode::UNPROCESSABLE_ENTITY, "bad fields").await;
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("per-field errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["name", "scope"]);
    let unknown = app
        .api_keys()
        .create(&ada, json!({ "name": "x", "scope": "read", "tier": "pro" }))
        .await;
    assert_problem(
        unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "choosing one's tier",
    )
    .await;
    let bad_id = app.api_keys().revoke("abc", &ada).await;
    assert_problem(bad_id, StatusCode::BAD_REQUEST, "a bad id").await;
}

#[tokio::test]
async fn an_owner_holds_at_most_max_per_user_live_keys() {
    // Arrange
    let app = TestApp::spawn_with(|config| config.auth.api_keys.max_per_user = 2).await;
    let ada = app.register("ada@example.com", "Ada").await;
    let first = app.create_api_key(&ada, "read").await;
    app.create_api_key(&ada, "read").await;

    // Act
    let third = app
        .api_keys()
        .create(&ada, json!({ "name": "third", "scope": "read" }))
        .await;

    // Assert: refused until one is revoked.
    assert_problem(third, StatusCode::CONFLICT, "past the bound").await;
    app.api_keys().revoke(first.id, &ada).await;
    app.create_api_key(&ada, "read").await;
}

#[tokio::test]
async fn deleting_an_account_revokes_its_keys() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let key = app.create_api_key(&ada, "write").await;

    // Act
    let deleted = app.users().delete(ada.id, &ada).await;

    // Assert
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let after = app
        .posts()
        .create(Anonymous, new_post("ghost"))
        .api_key(&key.key)
        .await;
    assert_problem_mentioning(
        after,
        StatusCode::UNAUTHORIZED,
        "revoked",
        "a dead account's key",
    )
    .await;
}

#[tokio::test]
async fn graphql_honours_a_key_as_rest_does() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let read = app.create_api_key(&ada, "read").await;
    let write = app.create_api_key(&ada, "write").await;
    let graphql = |key: &str, query: &str| {
        app.request(Method::POST, "/graphql")
            .api_key(key)
            .json(&json!({ "query": query }))
    };
    let create = r#"mutation { createPost(title: "t", body: "b") { id author { id } } }"#;

    // Act
    let viewer = graphql(&read.key, "{ viewer { id email } }")
        .await
        .expect_json(StatusCode::OK, "viewer")
        .await;
    let refused = graphql(&read.key, create).await.json_body().await;
    let written = graphql(&write.key, create).await.json_body().await;
    let bad = graphql("sk_1_nope", "{ viewer { id } }").await;

    // Assert
    assert_eq!(
        viewer["data"]["viewer"],
        json!({ "id": ada.id.to_string(), "email": "ada@example.com" })
    );
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    assert_eq!(
        written["data"]["createPost"]["author"]["id"],
        json!(ada.id.to_string()),
        "{written}"
    );
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let bad = bad.json_body().await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
}

#[tokio::test]
async fn key_events_are_audited_and_no_log_line_holds_a_key() {
    // Arrange: JSON logs of everything the service says, at its most verbose.
    let mut config = Config::default();
    config.telemetry.log_format = LogFormat::Json;
    config.telemetry.log_filter = "debug,scalable_api=trace".into();
    let logs = LogCapture::install(&config);
    let telemetry = config.telemetry.clone();
    let app = TestApp::spawn_with(move |c| c.telemetry = telemetry).await;
    let ada: TestUser = app.register("ada@example.com", "Ada").await;

    // Act: create two keys, write with one, be refused with the other, use a wrong secret,
    // revoke, use the revoked key.
    let write = app.create_api_key(&ada, "write").await;
    let read = app.create_api_key(&ada, "read").await;
    let post = app
        .posts()
        .create(Anonymous, new_post("audited"))
        .api_key(&write.key)
        .await
        .expect_json(StatusCode::CREATED, "a write with the key")
        .await;
    let refused = app
        .posts()
        .create(Anonymous, new_post("no"))
        .api_key(&read.key)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let forged = format!("sk_{}_{}", read.id, "B".repeat(43));
    let forged = app.users().get(ada.id).api_key(&forged).await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    app.api_keys().revoke(write.id, &ada).await;
    let gone = app.users().get(ada.id).api_key(&write.key).await;
    assert_eq!(gone.status(), StatusCode::UNAUTHORIZED);

    // Assert: the audit lines.
    let audit: Vec<Value> = logs
        .json_lines()
        .into_iter()
        .filter(|line| line["target"] == "scalable_api::audit")
        .collect();
    let event = |action: &str, outcome: &str, subject: i64| {
        audit
            .iter()
            .find(|l| {
                l["action"] == action && l["outcome"] == outcome && l["subject"] == json!(subject)
            })
            .unwrap_or_else(|| panic!("no {action} {outcome} on {subject} in {audit:#?}"))
            .clone()
    };
    let created = event("api_key.create", "ok", write.id);
    assert_eq!(created["actor"], json!(ada.id));
    let post_id = post["id"].as_i64().expect("an id");
    let written = event("post.create", "ok", post_id);
    assert_eq!(
        (&written["actor"], &written["key"]),
        (&json!(ada.id), &json!(write.id)),
        "a write through a key names the key"
    );
    let scope = event("api_key.refused", "forbidden", read.id);
    assert_eq!(
        (&scope["actor"], &scope["key"]),
        (&json!(ada.id), &json!(read.id))
    );
    let wrong = event("api_key.refused", "unauthorized", read.id);
    assert!(
        wrong.get("actor").is_none(),
        "a wrong secret proves no owner: {wrong}"
    );
    event("api_key.revoke", "ok", write.id);
    event("api_key.refused", "unauthorized", write.id);
    // Each refused request checked its key once, however many layers (rate limits, shedding,
    // the handler) asked who it came from: one audit line each.
    for key in [read.id, write.id] {
        let lines = audit
            .iter()
            .filter(|l| {
                l["action"] == "api_key.refused"
                    && l["outcome"] == "unauthorized"
                    && l["subject"] == json!(key)
            })
            .count();
        assert_eq!(
            lines, 1,
            "key {key}: {lines} refusals audited for one request"
        );
    }

    // Nothing anywhere in the logs holds a key or a secret.
    let text = logs.text();
    for key in [&write.key, &read.key] {
        let secret = &key[key.len() - 43..];
        assert!(!text.contains(secret), "the logs hold a key's secret");
    }
}
