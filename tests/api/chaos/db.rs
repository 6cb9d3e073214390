//! Replicas that lag and die, primaries that die: routing, read-your-writes and failure
//! isolation under real failures of the chaos stack's Postgres servers.

use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::json;

use super::{Chaos, eventually, readyz};
use crate::helpers::{ResponseExt, TestApp, assert_problem_mentioning};

const CONSISTENCY_TOKEN: &str = "x-consistency-token";

async fn replica_in_rotation(app: &TestApp, shard: usize) -> bool {
    readyz(app).await["shards"][shard]["replicas"][0]["in_rotation"] == json!(true)
}

/// The consistency token a write returns.
fn token_of(response: &Response) -> String {
    let token = response.header_str(CONSISTENCY_TOKEN);
    assert!(!token.is_empty(), "a write returns a consistency token");
    token
}

/// Fast health checks so state changes show within a fraction of a second, and no cache:
/// these tests watch where the data layer routes reads (the cache's own are in
/// `chaos::cache`).
fn fast_checks(config: &mut scalable_api::Config) {
    config.cache.strategy = scalable_api::config::CacheStrategy::None;
    config.db.replicas.check_interval = Duration::from_millis(50);
    config.db.primary_breaker.open = Duration::from_secs(1);
}

#[tokio::test]
async fn a_read_carrying_the_token_of_a_write_sees_it_while_the_replica_lags() {
    // Arrange: a user on shard 0, replicated; then shard 0's replica stops replaying.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), |c| {
        fast_checks(c);
        c.db.replicas.max_lag = Duration::from_secs(60); // lagging, but within bounds: still in rotation
    })
    .await;
    let user = app.register("reader@example.com", "Before").await;
    app.wait_for_replicas().await;
    chaos.replay(0, true).await;

    // Act: a write, then reads with and without its token.
    let written = app.rename(&user, "After").await;
    let token = token_of(&written);
    assert!(token.starts_with("0="), "the token names shard 0: {token}");
    let with_token = || app.users().get(user.id).header(CONSISTENCY_TOKEN, &token);
    let without = || app.users().get(user.id);
    let (read_with, read_without) = (with_token().await, without().await);

    // Assert: the token's read sees the write (from the primary); the plain read is served
    // by the lagging replica and sees the old row.
    assert_eq!(read_with.route(), "shard=0;role=primary");
    assert_eq!(read_with.json_body().await["name"], "After");
    assert_eq!(read_without.route(), "shard=0;role=replica");
    assert_eq!(read_without.json_body().await["name"], "Before");

    // Once replay resumes and the monitor sees the replica past the token, both agree, and
    // the token's read is served by the replica again.
    chaos.replay(0, false).await;
    eventually(
        "the token's read returns to the replica",
        Duration::from_secs(10),
        || async { with_token().await.route() == "shard=0;role=replica" },
    )
    .await;
    for (what, read) in [("with the token", with_token()), ("without", without())] {
        assert_eq!(read.await.json_body().await["name"], "After", "{what}");
    }
}

#[tokio::test]
async fn tokens_compose_across_the_shards_a_client_wrote_to() {
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), fast_checks).await;
    let on0 = app.register("zero@example.com", "Zero").await;
    let on1 = app.register("one@example.com", "One").await;

    let first = token_of(&app.rename(&on0, "Zero again").await);
    let second = app
        .users()
        .patch(on1.id, &on1, json!({ "name": "One again" }))
        .header(CONSISTENCY_TOKEN, &first)
        .await;
    let composed = token_of(&second);
    // The signature (`; sig=...`) covers the whole token, so it differs; the LSNs carry over.
    let lsns = |token: &str| token.split("; sig=").next().unwrap_or_default().to_string();
    let (first, composed) = (lsns(&first), lsns(&composed));

    let shards: Vec<&str> = composed
        .split(", ")
        .map(|p| p.split('=').next().unwrap_or_default())
        .collect();
    assert_eq!(shards, ["0", "1"], "{composed}");
    assert!(
        composed.starts_with(&first),
        "shard 0's LSN is carried over: {first} -> {composed}"
    );
}

#[tokio::test]
async fn a_replica_paused_past_the_lag_bound_leaves_rotation_and_rejoins_after_resume() {
    // Arrange: a 300 ms lag bound.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), |c| {
        fast_checks(c);
        c.db.replicas.max_lag = Duration::from_millis(300);
    })
    .await;
    let user = app.register("lag@example.com", "Lag").await;
    app.wait_for_replicas().await;
    // With a bound this tight, WAL that the primary flushes late (asynchronous commits wait
    // up to 3 x wal_writer_delay) can take a healthy replica out for a moment on a busy
    // machine: start from a replica that is in rotation.
    eventually(
        "the replica is in rotation",
        Duration::from_secs(10),
        || async { replica_in_rotation(&app, 0).await },
    )
    .await;
    assert_eq!(
        app.users().get(user.id).await.route(),
        "shard=0;role=replica"
    );

    // Act: replay stops while the primary keeps writing.
    chaos.replay(0, true).await;
    app.rename(&user, "Lagging").await;
    let left = eventually(
        "the lagging replica leaves rotation",
        Duration::from_secs(10),
        || async { !replica_in_rotation(&app, 0).await },
    )
    .await;
    println!("time to leave rotation after the write (bound 300 ms, checks every 50 ms): {left:?}");

    // Assert: reads go to the primary and see the new row; nothing failed.
    let read = app.users().get(user.id).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.route(), "shard=0;role=primary");
    assert_eq!(read.json_body().await["name"], "Lagging");
    let ready = readyz(&app).await;
    assert_eq!(ready["degraded_shards"], json!([0]), "{ready}");

    // Resume: it rejoins, and reads return to it.
    chaos.replay(0, false).await;
    let back = eventually("the replica rejoins", Duration::from_secs(10), || async {
        replica_in_rotation(&app, 0).await
    })
    .await;
    println!("time to rejoin after resume: {back:?}");
    assert_eq!(
        app.users().get(user.id).await.route(),
        "shard=0;role=replica"
    );
}

#[tokio::test]
async fn a_stopped_replica_leaves_rotation_without_failing_a_single_read_and_rejoins() {
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), |c| {
        fast_checks(c);
        // The reader below reads every 5 ms for seconds, past an anonymous address's rate:
        // this test counts failed reads, not limited ones.
        c.ratelimit.tiers.anonymous.reads.rate = 1_000_000;
    })
    .await;
    let user = app.register("steady@example.com", "Steady").await;
    app.wait_for_replicas().await;

    // Reads keep flowing while the replica is stopped and started again.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (read, stop) = (app.users().get(user.id), stop.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = read
                    .clone()
                    .try_send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                statuses.push(status);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    Chaos::control(&["stop", "shard0-replica", "immediate"]).await;
    let left = eventually(
        "the stopped replica leaves rotation",
        Duration::from_secs(5),
        || async { !replica_in_rotation(&app, 0).await },
    )
    .await;
    println!("time to leave rotation after the replica stopped: {left:?}");
    assert_eq!(
        app.users().get(user.id).await.route(),
        "shard=0;role=primary"
    );
    Chaos::control(&["start", "shard0-replica"]).await;
    let back = eventually(
        "the restarted replica rejoins",
        Duration::from_secs(10),
        || async { replica_in_rotation(&app, 0).await },
    )
    .await;
    println!("time to rejoin after the replica started: {back:?}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = reader.await.expect("reader task");
    assert!(
        statuses.len() > 20,
        "the reader kept reading: {} reads",
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every read succeeded: {statuses:?}"
    );
    assert_eq!(
        app.users().get(user.id).await.route(),
        "shard=0;role=replica"
    );
}

#[tokio::test]
async fn a_dead_primary_fails_its_shards_writes_fast_while_its_reads_and_the_other_shard_go_on() {
    // Arrange: a user with a post on each shard.
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), fast_checks).await;
    let on0 = app.register("zero@example.com", "Zero").await;
    let on1 = app.register("one@example.com", "One").await;
    let post1 = app.create_post(&on1, "on shard 1").await;
    app.wait_for_replicas().await;

    // Act: shard 1's primary dies. (Shard 1: the stack's directory shares shard 0's server,
    // and registration and login need the directory.)
    Chaos::control(&["stop", "shard1-primary", "immediate"]).await;
    let opened = eventually(
        "shard 1's breaker opens",
        Duration::from_secs(5),
        || async { readyz(&app).await["shards"][1]["breaker"] == json!("open") },
    )
    .await;
    println!("time for the breaker to open after the primary died: {opened:?}");

    // Assert: its writes fail fast with 503 + Retry-After, without touching the network.
    let mut timings = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        let write = app
            .posts()
            .create(&on1, json!({ "title": format!("t{i}"), "body": "b" }))
            .await;
        timings.push(started.elapsed());
        assert!(
            write.headers().contains_key("retry-after"),
            "Retry-After on a failed-fast write"
        );
        assert_problem_mentioning(
            write,
            StatusCode::SERVICE_UNAVAILABLE,
            "fail fast",
            "a write to a dead primary",
        )
        .await;
    }
    timings.sort();
    println!(
        "failed-fast write latency with the breaker open: median {:?}, max {:?}",
        timings[5], timings[9]
    );
    // Its reads go on from the replica.
    let read = app.posts().get(&post1["id"]).await;
    assert_eq!(
        read.status(),
        StatusCode::OK,
        "a read of the dead primary's shard"
    );
    assert_eq!(read.route(), "shard=1;role=replica");
    // The other shard serves everything, and new users are placed there.
    app.create_post(&on0, "on shard 0").await;
    for i in 0..2 {
        let newcomer = app
            .register(&format!("newcomer{i}@example.com"), "New")
            .await;
        assert!(
            newcomer.id <= 1_000_000_000,
            "placement skipped the dead shard: {}",
            newcomer.id
        );
    }
    let ready = readyz(&app).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["degraded_shards"], json!([1]), "{ready}");

    // Recovery: the primary comes back and writes succeed again.
    Chaos::control(&["start", "shard1-primary"]).await;
    let recovered = eventually(
        "writes to shard 1 succeed again",
        Duration::from_secs(10),
        || async {
            let write = app
                .posts()
                .create(&on1, json!({ "title": "back", "body": "b" }))
                .await;
            write.status() == StatusCode::CREATED
        },
    )
    .await;
    println!("time for writes to recover after the primary started: {recovered:?}");
    assert_eq!(readyz(&app).await["status"], "ready");
}

#[tokio::test]
async fn connections_a_restart_broke_in_the_pools_fail_no_request_and_evict_no_replica() {
    // Arrange: a user with a post on shard 1, and both of its request pools holding idle
    // connections (concurrent reads and writes open several).
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), fast_checks).await;
    app.register("zero@example.com", "Zero").await;
    let on1 = app.register("one@example.com", "One").await;
    let post = app.create_post(&on1, "on shard 1").await;
    app.wait_for_replicas().await;
    let burst = |round: usize| {
        let reads = (0..6).map(|_| app.posts().get(&post["id"]).into_future());
        let writes = (0..4).map(|i| {
            app.posts()
                .create(
                    &on1,
                    json!({ "title": format!("r{round}w{i}"), "body": "b" }),
                )
                .into_future()
        });
        futures_util::future::join_all(reads.chain(writes))
    };
    for response in burst(0).await {
        assert!(response.status().is_success(), "{}", response.status());
    }

    // Act: shard 1's servers restart, which breaks every idle pooled connection to them; the
    // monitor sees them back.
    Chaos::control(&["stop", "shard1-replica", "fast"]).await;
    Chaos::control(&["stop", "shard1-primary", "fast"]).await;
    Chaos::control(&["start", "shard1-primary"]).await;
    Chaos::control(&["start", "shard1-replica"]).await;
    eventually(
        "shard 1 is whole again",
        Duration::from_secs(10),
        || async {
            let ready = readyz(&app).await;
            ready["shards"][1]["breaker"] == json!("closed") && replica_in_rotation(&app, 1).await
        },
    )
    .await;

    // Assert: reads meet the broken connections on the replica and writes on the primary;
    // every one succeeds, the reads on the replica (retried there on a checked connection,
    // not sent to the primary), and the replica stays in rotation.
    let responses = burst(1).await;
    let routes: Vec<String> = responses.iter().take(6).map(|r| r.route()).collect();
    for response in responses {
        assert!(
            response.status().is_success(),
            "no request fails for a connection the restart broke: {}",
            response.status()
        );
    }
    assert!(
        routes.iter().all(|route| route == "shard=1;role=replica"),
        "reads stay on the replica: {routes:?}"
    );
    assert!(
        replica_in_rotation(&app, 1).await,
        "a broken pooled connection does not evict a replica that is back"
    );
}
