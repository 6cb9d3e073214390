//! The cache when what it stands on fails: a replica that stops replaying under a fill, a
//! fill that loses the race with an invalidation, Redis stopped, Redis paused.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use scalable_api::{
    Config,
    cache::{
        keys::Key,
        redis_tier::{Fill, Invalidation, Lookup, RedisTier},
    },
    config::CacheStrategy,
    telemetry::{Phase, ServerTiming},
};
use serde_json::json;

use super::{Chaos, eventually, readyz};
use crate::{
    cache::read,
    helpers::{ResponseExt, TestApp},
};

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
    let user_read = || app.users().get(user.id);
    assert_eq!(read(user_read()).await.2["name"], "Old");
    assert_eq!(read(user_read()).await.0, "hit");
    chaos.replay(0, true).await;

    // Act: the write invalidates; the replica still has "Old".
    app.rename(&user, "New").await;
    let replica = app.replica(0).await;
    let on_replica: String = sqlx::query_scalar("SELECT name FROM users WHERE id = $1")
        .bind(user.id)
        .fetch_one(&replica)
        .await
        .expect("read the replica");
    assert_eq!(on_replica, "Old", "the replica really lags");

    // Assert: the miss (no token sent) reads past the fence, on the primary, and fills "New";
    // from then on every read is a hit on "New".
    let miss = user_read().await;
    assert_eq!(
        (miss.cache(), miss.route()),
        ("miss".to_owned(), "shard=0;role=primary".to_owned())
    );
    assert_eq!(miss.json_body().await["name"], "New");
    for _ in 0..3 {
        let (cache, _, body) = read(user_read()).await;
        assert_eq!(
            (cache.as_str(), body["name"].as_str()),
            ("hit", Some("New"))
        );
    }
    // And after the replica catches up, still "New".
    chaos.replay(0, false).await;
    app.wait_for_replicas().await;
    assert_eq!(read(user_read()).await.2["name"], "New");
}

#[tokio::test]
async fn batch_fills_from_a_lagging_replica_never_put_an_old_row_or_an_old_page_back() {
    // Arrange: a page of the user list cached (its ids and each user's entry, in both tiers);
    // then shard 0's replica stops replaying.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), |config| {
        on_chaos(config);
        config.cache.strategy = CacheStrategy::TwoTier;
    })
    .await;
    let ada = app.register("ada@example.com", "Old").await;
    app.wait_for_replicas().await;
    let names = |body: serde_json::Value| -> Vec<(i64, String)> {
        body.as_array()
            .into_iter()
            .flatten()
            .map(|u| {
                (
                    u["id"].as_i64().unwrap_or(0),
                    u["name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let page = || app.users().list("?limit=100");
    assert_eq!(
        names(page().await.json_body().await),
        [(ada.id, "Old".to_owned())]
    );
    assert_eq!(page().await.cache(), "hit");
    chaos.replay(0, true).await;

    // Act: a rename (Ada's entry) and two registrations, one per shard (the list's family),
    // none of which the paused replica has.
    app.rename(&ada, "New").await;
    let bea = app.register("bea@example.com", "Bea").await;
    let cid = app.register("cid@example.com", "Cid").await;
    let shard0 = |id: i64| id <= 1_000_000_000;
    assert!(
        shard0(cid.id) != shard0(bea.id),
        "one registration on each shard"
    );

    // Assert: the page's ids and Ada's row are reloaded past the writes' fences, on shard 0's
    // primary (its replica cannot serve them), and the page is right at once.
    let reloaded = page().await;
    assert!(
        reloaded.route().contains("shard=0;role=primary"),
        "{}",
        reloaded.route()
    );
    let mut expected = vec![
        (ada.id, "New".to_owned()),
        (bea.id, "Bea".to_owned()),
        (cid.id, "Cid".to_owned()),
    ];
    expected.sort();
    assert_eq!(names(reloaded.json_body().await), expected);
    let again = page().await;
    assert_eq!(again.cache(), "hit");
    assert_eq!(names(again.json_body().await), expected);
    chaos.replay(0, false).await;
}

#[tokio::test]
async fn a_fill_that_raced_an_invalidation_is_dropped() {
    // The version check on its own, on Redis: lookup, invalidate, then the late fill.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), on_chaos).await;
    let tier = RedisTier::new(&app.state.config.cache).expect("redis tier");
    let timing = ServerTiming::default();
    let key = Key::user(&app.state.config.cache.key_prefix, 42, 0);
    let miss = |lookups: Result<Vec<Lookup>, _>| match lookups.map(|mut l| l.pop()) {
        Ok(Some(Lookup::Miss { version, fences })) => (version, fences),
        other => panic!("expected a miss, got {other:?}"),
    };
    let fill = |version, json| Fill {
        key: &key,
        version,
        json,
        ttl: Duration::from_secs(60),
    };

    let (version, _) = miss(tier.lookup(&timing, &[&key]).await);
    tier.invalidate(
        &timing,
        Invalidation {
            keys: vec![key.clone()],
            shard: 0,
            lsn: 1,
            message: key.to_string(),
        },
    )
    .await;
    let stored = tier.fill(&timing, &[fill(&version, b"\"stale\"")]).await;

    assert_eq!(
        stored,
        [false],
        "a fill under an outdated version is refused"
    );
    let (version, fences) = miss(tier.lookup(&timing, &[&key]).await);
    assert_eq!(fences, [(0, 1)], "the invalidation raised the fence");
    let stored = tier.fill(&timing, &[fill(&version, b"\"fresh\"")]).await;
    assert_eq!(stored, [true], "the current version fills");
    assert!(
        matches!(tier.lookup(&timing, &[&key]).await.as_deref(), Ok([Lookup::Hit(json)]) if json == b"\"fresh\""),
        "and is found"
    );
    assert_eq!(
        timing.get(Phase::Cache).0,
        6,
        "every round trip is in the request's Server-Timing"
    );
}

#[tokio::test]
async fn with_redis_stopped_reads_go_to_the_database_without_waiting_and_hits_resume_after() {
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), on_chaos).await;
    let user = app.register("outage@example.com", "Outage").await;
    app.wait_for_replicas().await;
    let user_read = || app.users().get(user.id);
    read(user_read()).await;
    assert_eq!(read(user_read()).await.0, "hit");

    // Act: Redis dies.
    Chaos::control(&["stop", "redis", "immediate"]).await;

    // Assert: every read still succeeds, from the database; the breaker opens, and then no
    // read waits for Redis's timeout.
    for _ in 0..5 {
        let (cache, status, body) = read(user_read()).await;
        assert_eq!(
            (cache.as_str(), status, body["name"].as_str()),
            ("bypass", StatusCode::OK, Some("Outage"))
        );
    }
    assert_eq!(readyz(&app).await["cache"]["breaker"], "open");
    let mut timings = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(user_read().await.status(), StatusCode::OK);
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
        || async { read(user_read()).await.0 == "hit" },
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
    read(app.users().get(user.id)).await;
    assert_eq!(read(app.users().get(user.id)).await.0, "hit");

    // Act: Redis stops answering (but keeps its data) while the user is renamed.
    // Writes (the invalidation script) wait; reads and this connection's UNPAUSE do not, so
    // the test ends the pause itself instead of racing a fixed one on a loaded machine.
    let mut admin = pause_writes(&chaos, 10_000).await;
    let renamed = app.rename(&user, "After").await;
    let token = renamed.headers()["x-consistency-token"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(readyz(&app).await["cache"]["pending_invalidations"], 1);

    // Assert: while Redis is paused reads bypass it (to the database, read-your-writes via
    // the token); once it answers, the queued invalidation is replayed before anything is
    // read from it, so the old value still sitting in Redis ("Before") is never served.
    let read_with_token = || async {
        let request = app
            .users()
            .get(user.id)
            .header("x-consistency-token", &token);
        let (cache, _, body) = read(request).await;
        (cache, body["name"].clone())
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

#[tokio::test]
async fn a_miss_answers_before_its_fill_lands_and_the_next_read_takes_its_value_without_sql() {
    // Arrange: Redis takes reads but holds every write (the fill script) until unpaused.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), |config| {
        on_chaos(config);
        config.cache.command_timeout = Duration::from_secs(10);
    })
    .await;
    let user = app.register("early@example.com", "Early").await;
    app.wait_for_replicas().await;
    let mut admin = pause_writes(&chaos, 20_000).await;

    // Act: a miss, then a second read while its fill still waits in Redis.
    let miss = app.users().get(user.id).await;
    let next = app.users().get(user.id).await;
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .expect("unpause");

    // Assert: the miss answered without waiting for its fill; the next read took the
    // loaded value from the flight, with no SQL; and the fill lands once Redis takes writes.
    assert_eq!(miss.cache(), "miss");
    assert_eq!(miss.json_body().await["name"], "Early");
    assert_eq!(
        (next.cache(), next.route()),
        ("hit".to_owned(), String::new()),
        "the loaded value, waiting for its fill, served the next read"
    );
    assert_eq!(next.json_body().await["name"], "Early");
    let tier = RedisTier::new(&app.state.config.cache).expect("redis tier");
    let key = Key::user(&app.state.config.cache.key_prefix, user.id, 0);
    eventually("the fill lands", Duration::from_secs(10), || async {
        matches!(
            tier.lookup(&ServerTiming::default(), &[&key])
                .await
                .as_deref(),
            Ok([Lookup::Hit(_)])
        )
    })
    .await;
}

/// `CLIENT PAUSE ms WRITE` on the chaos stack's Redis: writes wait, reads go on. Returns the
/// connection that sent it, whose own `CLIENT UNPAUSE` is never held up.
async fn pause_writes(chaos: &Chaos, ms: u64) -> redis::aio::MultiplexedConnection {
    let redis = redis::Client::open(chaos.stack.redis.as_str()).expect("redis url");
    let mut admin = redis
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .expect("pause");
    admin
}
