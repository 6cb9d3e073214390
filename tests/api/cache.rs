//! The cache layer through the HTTP API: hits, misses and invalidation per strategy, stale
//! fills under replica lag, single flight, negative caching, a dead or slow Redis, ETags.

use std::time::{Duration, Instant};

use reqwest::{Method, Response, StatusCode};
use scalable_api::{
    Config,
    cache::{
        keys::Key,
        redis_tier::{Fill, Invalidation, Lookup, RedisTier},
    },
    config::CacheStrategy,
};
use serde_json::{Value, json};

use crate::{
    chaos::{Chaos, eventually, readyz, rename},
    helpers::{TestApp, route_of, statement_calls},
};

const USER_BY_ID: &str =
    "SELECT id, email, name, tier, created_at, updated_at FROM users WHERE id = ANY($1)";

fn x_cache(response: &Response) -> String {
    response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// GETs `path`, returning (X-Cache, status, body).
async fn read(app: &TestApp, path: &str) -> (String, StatusCode, Value) {
    let response = app.get(path).await;
    let (cache, status) = (x_cache(&response), response.status());
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
        let path = format!("/v1/users/{}", user.id);

        // Act / Assert: miss, then hit without touching the database.
        let (cache, _, body) = read(&app, &path).await;
        assert_eq!(
            (cache.as_str(), body["name"].as_str()),
            ("miss", Some("First")),
            "{strategy:?}"
        );
        let hit = app.get(&path).await;
        assert_eq!(x_cache(&hit), "hit", "{strategy:?}");
        assert_eq!(route_of(&hit), "", "{strategy:?}: a hit sends no SQL");

        // A write invalidates: the next read misses and sees it.
        rename(&app, &user, "Second").await;
        let (cache, _, body) = read(&app, &path).await;
        assert_eq!(
            (cache.as_str(), body["name"].as_str()),
            ("miss", Some("Second")),
            "{strategy:?}"
        );
        let (cache, _, body) = read(&app, &path).await;
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
        let response = app.get(&format!("/v1/users/{}", user.id)).await;
        assert_eq!(x_cache(&response), "");
        assert_eq!(route_of(&response), "shard=0;role=replica");
    }
}

#[tokio::test]
async fn posts_and_post_pages_are_cached_and_invalidated_by_their_writes() {
    let app = TestApp::spawn().await;
    let author = app.register("author@example.com", "Author").await;
    let post = app.create_post(&author, "first").await;
    let (post_path, page_path) = (
        format!("/v1/posts/{}", post["id"]),
        format!("/v1/users/{}/posts?limit=5", author.id),
    );

    assert_eq!(read(&app, &post_path).await.0, "miss");
    assert_eq!(read(&app, &post_path).await.0, "hit");
    let (cache, _, page) = read(&app, &page_path).await;
    assert_eq!(
        (cache.as_str(), page.as_array().map(Vec::len)),
        ("miss", Some(1))
    );
    assert_eq!(read(&app, &page_path).await.0, "hit");

    // A new post invalidates the author's page; an edit invalidates the post and the page.
    app.create_post(&author, "second").await;
    let (cache, _, page) = read(&app, &page_path).await;
    assert_eq!(
        (cache.as_str(), page.as_array().map(Vec::len)),
        ("miss", Some(2))
    );
    let edited = app
        .request(
            Method::PATCH,
            &post_path,
            Some(&author.token),
            Some(&json!({ "title": "edited" })),
        )
        .await;
    assert_eq!(edited.status(), StatusCode::OK);
    let (cache, _, body) = read(&app, &post_path).await;
    assert_eq!(
        (cache.as_str(), body["title"].as_str()),
        ("miss", Some("edited"))
    );
    // Pages past the cached first page bypass the cache.
    assert_eq!(
        read(
            &app,
            &format!("/v1/users/{}/posts?limit=5&offset=20", author.id)
        )
        .await
        .0,
        "bypass"
    );
}

#[tokio::test]
async fn a_missing_id_is_negative_cached_and_a_later_create_is_visible_at_once() {
    // Arrange: shard 0 hands out consecutive ids, and placement alternates shards.
    let app = TestApp::spawn().await;
    let first = app.register("a@example.com", "A").await;
    app.register("b@example.com", "B").await; // shard 1
    let next = first.id + 1;
    let path = format!("/v1/users/{next}");

    // A 404 is cached.
    let (cache, status, _) = read(&app, &path).await;
    assert_eq!((cache.as_str(), status), ("miss", StatusCode::NOT_FOUND));
    let (cache, status, _) = read(&app, &path).await;
    assert_eq!((cache.as_str(), status), ("hit", StatusCode::NOT_FOUND));

    // Act: the id is created.
    let created = app.register("c@example.com", "C").await;
    assert_eq!(created.id, next, "the next id of shard 0");

    // Assert: visible at once, without waiting for anything.
    let (_, status, body) = read(&app, &path).await;
    assert_eq!((status, body["name"].as_str()), (StatusCode::OK, Some("C")));
}

#[tokio::test]
async fn two_hundred_concurrent_requests_for_one_cold_key_cost_one_sql_read() {
    // Arrange
    let app = TestApp::spawn().await;
    let user = app.register("hot@example.com", "Hot").await;
    app.wait_for_replicas().await;
    let (primary, replica) = (app.primary(0).await, app.replica(0).await);
    let before =
        statement_calls(&primary, USER_BY_ID).await + statement_calls(&replica, USER_BY_ID).await;

    // Act
    let url = format!("{}/v1/users/{}", app.base, user.id);
    let requests = (0..200).map(|_| {
        let (client, url) = (app.client.clone(), url.clone());
        tokio::spawn(async move {
            let response = client.get(&url).send().await.expect("request");
            (
                response.status(),
                response.json::<Value>().await.expect("JSON")["name"].clone(),
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
    let path = format!("/v1/posts/{}", post["id"]);

    let first = app.get(&path).await;
    let etag = first.headers()["etag"].to_str().expect("ASCII").to_owned();
    assert_eq!(first.headers()["cache-control"], "public, no-cache");
    let again = app
        .client
        .get(format!("{}{path}", app.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"].to_str().expect("ASCII"), etag);
    assert!(
        again.bytes().await.expect("body").is_empty(),
        "a 304 has no body"
    );

    let edited = app
        .request(
            Method::PATCH,
            &path,
            Some(&author.token),
            Some(&json!({ "body": "changed" })),
        )
        .await;
    assert_eq!(edited.status(), StatusCode::OK);
    let changed = app
        .client
        .get(format!("{}{path}", app.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(
        changed.status(),
        StatusCode::OK,
        "a stale ETag gets the new body"
    );
    assert_ne!(changed.headers()["etag"].to_str().expect("ASCII"), etag);

    // A user's own view (with email) and the public one differ, and are private.
    let user_path = format!("/v1/users/{}", author.id);
    let mine = app
        .request(Method::GET, &user_path, Some(&author.token), None)
        .await;
    let public = app.get(&user_path).await;
    assert_ne!(mine.headers()["etag"], public.headers()["etag"]);
    assert_eq!(mine.headers()["cache-control"], "private, no-cache");
    assert_eq!(mine.headers()["vary"], "Authorization");
}

fn on_chaos(config: &mut Config) {
    config.db.replicas.check_interval = Duration::from_millis(50);
    config.db.replicas.max_lag = Duration::from_secs(60); // a paused replica stays in rotation
    config.cache.breaker.open = Duration::from_millis(300);
}

#[tokio::test]
async fn a_fill_from_a_lagging_replica_never_puts_the_old_value_back() {
    // Arrange: "Old" cached; then shard 0's replica stops replaying.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), on_chaos).await;
    let user = app.register("stale@example.com", "Old").await;
    app.wait_for_replicas().await;
    let path = format!("/v1/users/{}", user.id);
    assert_eq!(read(&app, &path).await.2["name"], "Old");
    assert_eq!(read(&app, &path).await.0, "hit");
    chaos.replay(0, true).await;

    // Act: the write invalidates; the replica still has "Old".
    rename(&app, &user, "New").await;
    let replica = app.replica(0).await;
    let on_replica: String = sqlx::query_scalar("SELECT name FROM users WHERE id = $1")
        .bind(user.id)
        .fetch_one(&replica)
        .await
        .expect("read the replica");
    assert_eq!(on_replica, "Old", "the replica really lags");

    // Assert: the miss (no token sent) reads past the fence, on the primary, and fills "New";
    // from then on every read is a hit on "New".
    let miss = app.get(&path).await;
    assert_eq!(
        (x_cache(&miss), route_of(&miss)),
        ("miss".to_owned(), "shard=0;role=primary".to_owned())
    );
    assert_eq!(miss.json::<Value>().await.expect("JSON")["name"], "New");
    for _ in 0..3 {
        let (cache, _, body) = read(&app, &path).await;
        assert_eq!(
            (cache.as_str(), body["name"].as_str()),
            ("hit", Some("New"))
        );
    }
    // And after the replica catches up, still "New".
    chaos.replay(0, false).await;
    app.wait_for_replicas().await;
    assert_eq!(read(&app, &path).await.2["name"], "New");
}

#[tokio::test]
async fn a_fill_that_raced_an_invalidation_is_dropped() {
    // The version check on its own, on Redis: lookup, invalidate, then the late fill.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), on_chaos).await;
    let tier = RedisTier::new(&app.state.config.cache).expect("redis tier");
    let key = Key::user(&app.state.config.cache.key_prefix, 42, 0);
    let miss = |lookups: Result<Vec<Lookup>, _>| match lookups.map(|mut l| l.pop()) {
        Ok(Some(Lookup::Miss { version, fences })) => (version, fences),
        other => panic!("expected a miss, got {other:?}"),
    };

    let (version, _) = miss(tier.lookup(&[&key]).await);
    tier.invalidate(Invalidation {
        keys: vec![key.clone()],
        shard: 0,
        lsn: 1,
        message: key.to_string(),
    })
    .await;
    let stored = tier
        .fill(&[Fill {
            key: &key,
            version: &version,
            json: b"\"stale\"",
            ttl: Duration::from_secs(60),
        }])
        .await;

    assert_eq!(
        stored,
        [false],
        "a fill under an outdated version is refused"
    );
    let (version, fences) = miss(tier.lookup(&[&key]).await);
    assert_eq!(fences, [(0, 1)], "the invalidation raised the fence");
    let stored = tier
        .fill(&[Fill {
            key: &key,
            version: &version,
            json: b"\"fresh\"",
            ttl: Duration::from_secs(60),
        }])
        .await;
    assert_eq!(stored, [true], "the current version fills");
    assert!(
        matches!(tier.lookup(&[&key]).await.as_deref(), Ok([Lookup::Hit(json)]) if json == b"\"fresh\""),
        "and is found"
    );
}

#[tokio::test]
async fn with_redis_stopped_reads_go_to_the_database_without_waiting_and_hits_resume_after() {
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), on_chaos).await;
    let user = app.register("outage@example.com", "Outage").await;
    app.wait_for_replicas().await;
    let path = format!("/v1/users/{}", user.id);
    read(&app, &path).await;
    assert_eq!(read(&app, &path).await.0, "hit");

    // Act: Redis dies.
    Chaos::control(&["stop", "redis", "immediate"]).await;

    // Assert: every read still succeeds, from the database; the breaker opens, and then no
    // read waits for Redis's timeout.
    for _ in 0..5 {
        let (cache, status, body) = read(&app, &path).await;
        assert_eq!(
            (cache.as_str(), status, body["name"].as_str()),
            ("bypass", StatusCode::OK, Some("Outage"))
        );
    }
    assert_eq!(readyz(&app).await["cache"]["breaker"], "open");
    let mut timings = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(app.get(&path).await.status(), StatusCode::OK);
        timings.push(started.elapsed());
    }
    timings.sort();
    println!(
        "reads with Redis down and the breaker open: median {:?}, max {:?}",
        timings[10], timings[19]
    );

    // Redis returns (empty): after the breaker's trial, reads fill and hit again.
    Chaos::control(&["start", "redis"]).await;
    let back = eventually(
        "reads hit the cache again",
        Duration::from_secs(10),
        || async { read(&app, &path).await.0 == "hit" },
    )
    .await;
    println!("time for cache hits to resume after Redis started: {back:?}");
}

#[tokio::test]
async fn an_invalidation_that_missed_a_paused_redis_is_replayed_before_stale_data_is_served() {
    // Arrange: "Before" cached in Redis.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), on_chaos).await;
    let user = app.register("paused@example.com", "Before").await;
    app.wait_for_replicas().await;
    let path = format!("/v1/users/{}", user.id);
    read(&app, &path).await;
    assert_eq!(read(&app, &path).await.0, "hit");

    // Act: Redis stops answering (but keeps its data) while the user is renamed.
    let redis = redis::Client::open(chaos.stack.redis.as_str()).expect("redis url");
    let mut admin = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // Writes (the invalidation script) wait; reads and this connection's UNPAUSE do not, so
    // the test ends the pause itself instead of racing a fixed one on a loaded machine.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .expect("pause");
    let renamed = app
        .request(
            Method::PATCH,
            &path,
            Some(&user.token),
            Some(&json!({ "name": "After" })),
        )
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let token = renamed.headers()["x-consistency-token"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(readyz(&app).await["cache"]["pending_invalidations"], 1);

    // Assert: while Redis is paused reads bypass it (to the database, read-your-writes via
    // the token); once it answers, the queued invalidation is replayed before anything is
    // read from it, so the old value still sitting in Redis ("Before") is never served.
    let read_with_token = || async {
        let response = app
            .client
            .get(format!("{}{path}", app.base))
            .header("x-consistency-token", &token)
            .send()
            .await
            .expect("request");
        let cache = x_cache(&response);
        (
            cache,
            response.json::<Value>().await.expect("JSON")["name"].clone(),
        )
    };
    let (cache, name) = read_with_token().await;
    assert_eq!((cache.as_str(), &name), ("bypass", &json!("After")));
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .expect("unpause");
    eventually(
        "the queued invalidation is replayed",
        Duration::from_secs(10),
        || async {
            let (_, name) = read_with_token().await;
            assert_eq!(name, "After", "never the stale value");
            readyz(&app).await["cache"]["pending_invalidations"] == 0
        },
    )
    .await;
    let (cache, name) = read_with_token().await;
    assert_eq!(name, "After");
    assert_ne!(cache, "bypass", "Redis serves again");
}
