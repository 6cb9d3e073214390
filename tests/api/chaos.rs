//! Replicas that lag and die, primaries that die: routing, read-your-writes and failure
//! isolation under real failures of the second ("chaos") stack's servers.
//!
//! These tests pause replay (`pg_wal_replay_pause()`), stop servers (`pg_ctl stop`) and start
//! them again, so they take turns on that stack (a nextest test group, and a file lock for
//! runners without one) and always leave it running (the guard's `Drop`).

use std::{
    fs::File,
    future::Future,
    process::Command,
    time::{Duration, Instant},
};

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Stack, TestApp, TestUser, assert_problem, route_of};

/// Exclusive use of the chaos stack for one test; restores it on drop.
pub struct Chaos {
    _lock: File,
    pub stack: Stack,
}

impl Chaos {
    pub async fn acquire() -> Self {
        let lock = tokio::task::spawn_blocking(|| {
            let path = std::env::temp_dir().join("scalable-api-chaos-tests.lock");
            let file = File::create(path).expect("create the lock file");
            file.lock().expect("lock the chaos stack");
            file
        })
        .await
        .expect("join");
        Self {
            _lock: lock,
            stack: Stack::chaos(),
        }
    }

    /// Runs `scripts/stack ARGS` against the chaos stack.
    pub fn ctl(args: &[&str]) {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: use scripts/test"))
        };
        let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/stack"))
            .args(args)
            .env(
                "SCALABLE_API_STACK_PORT_BASE",
                var("SCALABLE_API_CHAOS_PORT_BASE"),
            )
            .env("SCALABLE_API_STACK_DIR", var("SCALABLE_API_CHAOS_DIR"))
            .status()
            .expect("run scripts/stack");
        assert!(status.success(), "scripts/stack {args:?} failed");
    }

    /// [`Chaos::ctl`] off the test's runtime thread: the app under test runs on that
    /// thread too, and must keep serving while the script stops and starts servers.
    pub async fn control(args: &'static [&'static str]) {
        tokio::task::spawn_blocking(move || Chaos::ctl(args))
            .await
            .expect("scripts/stack ran");
    }

    pub async fn replay(&self, shard: usize, paused: bool) {
        let pool =
            crate::helpers::connect(&format!("{}/postgres", self.stack.replicas[shard])).await;
        let sql = if paused {
            "SELECT pg_wal_replay_pause()"
        } else {
            "SELECT pg_wal_replay_resume()"
        };
        sqlx::query(sql)
            .execute(&pool)
            .await
            .expect("pause/resume replay");
    }
}

impl Drop for Chaos {
    /// Whatever the test did or wherever it failed: replay resumed, every server running.
    fn drop(&mut self) {
        let replicas = self.stack.replicas.clone();
        let _ = std::thread::spawn(move || {
            Chaos::ctl(&["up"]);
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                for replica in replicas {
                    if let Ok(pool) = sqlx::PgPool::connect(&format!("{replica}/postgres")).await {
                        let _ = sqlx::query("SELECT pg_wal_replay_resume()")
                            .execute(&pool)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// Polls `check` every 20 ms until it returns true, or panics after `limit` naming `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

pub async fn readyz(app: &TestApp) -> Value {
    app.get("/readyz").await.json().await.expect("readyz JSON")
}

async fn replica_in_rotation(app: &TestApp, shard: usize) -> bool {
    readyz(app).await["shards"][shard]["replicas"][0]["in_rotation"] == json!(true)
}

fn token_of(response: &Response) -> String {
    response
        .headers()
        .get("x-consistency-token")
        .and_then(|v| v.to_str().ok())
        .expect("a write returns a consistency token")
        .to_owned()
}

async fn get_with_token(app: &TestApp, path: &str, token: Option<&str>) -> Response {
    let mut request = app.client.get(format!("{}{path}", app.base));
    if let Some(token) = token {
        request = request.header("x-consistency-token", token);
    }
    request.send().await.expect("request")
}

/// Renames `user` (a write on their shard), asserting it succeeded.
pub async fn rename(app: &TestApp, user: &TestUser, name: &str) -> Response {
    let response = app
        .request(
            Method::PATCH,
            &format!("/v1/users/{}", user.id),
            Some(&user.token),
            Some(&json!({ "name": name })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK, "rename to {name}");
    response
}

/// Fast health checks so state changes show within a fraction of a second, and no cache:
/// these tests watch where the data layer routes reads (the cache's own tests are in
/// `cache.rs`).
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
    let written = rename(&app, &user, "After").await;
    let token = token_of(&written);
    assert!(token.starts_with("0="), "the token names shard 0: {token}");
    let path = format!("/v1/users/{}", user.id);
    let with_token = get_with_token(&app, &path, Some(&token)).await;
    let without = get_with_token(&app, &path, None).await;

    // Assert: the token's read sees the write (from the primary); the plain read is served
    // by the lagging replica and sees the old row.
    assert_eq!(route_of(&with_token), "shard=0;role=primary");
    assert_eq!(
        with_token.json::<Value>().await.expect("JSON")["name"],
        "After"
    );
    assert_eq!(route_of(&without), "shard=0;role=replica");
    assert_eq!(
        without.json::<Value>().await.expect("JSON")["name"],
        "Before"
    );

    // Once replay resumes and the monitor sees the replica past the token, both agree, and
    // the token's read is served by the replica again.
    chaos.replay(0, false).await;
    eventually(
        "the token's read returns to the replica",
        Duration::from_secs(10),
        || async {
            route_of(&get_with_token(&app, &path, Some(&token)).await) == "shard=0;role=replica"
        },
    )
    .await;
    for token in [Some(token.as_str()), None] {
        let read = get_with_token(&app, &path, token).await;
        assert_eq!(
            read.json::<Value>().await.expect("JSON")["name"],
            "After",
            "token: {token:?}"
        );
    }
}

#[tokio::test]
async fn tokens_compose_across_the_shards_a_client_wrote_to() {
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), fast_checks).await;
    let on0 = app.register("zero@example.com", "Zero").await;
    let on1 = app.register("one@example.com", "One").await;

    let first = token_of(&rename(&app, &on0, "Zero again").await);
    let second = app
        .client
        .patch(format!("{}/v1/users/{}", app.base, on1.id))
        .bearer_auth(&on1.token)
        .header("x-consistency-token", &first)
        .json(&json!({ "name": "One again" }))
        .send()
        .await
        .expect("request");
    let composed = token_of(&second);

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
    let path = format!("/v1/users/{}", user.id);
    assert_eq!(route_of(&app.get(&path).await), "shard=0;role=replica");

    // Act: replay stops while the primary keeps writing.
    chaos.replay(0, true).await;
    rename(&app, &user, "Lagging").await;
    let left = eventually(
        "the lagging replica leaves rotation",
        Duration::from_secs(10),
        || async { !replica_in_rotation(&app, 0).await },
    )
    .await;
    println!("time to leave rotation after the write (bound 300 ms, checks every 50 ms): {left:?}");

    // Assert: reads go to the primary and see the new row; nothing failed.
    let read = app.get(&path).await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(route_of(&read), "shard=0;role=primary");
    assert_eq!(read.json::<Value>().await.expect("JSON")["name"], "Lagging");
    let ready = readyz(&app).await;
    assert_eq!(ready["degraded_shards"], json!([0]), "{ready}");

    // Resume: it rejoins, and reads return to it.
    chaos.replay(0, false).await;
    let back = eventually("the replica rejoins", Duration::from_secs(10), || async {
        replica_in_rotation(&app, 0).await
    })
    .await;
    println!("time to rejoin after resume: {back:?}");
    assert_eq!(route_of(&app.get(&path).await), "shard=0;role=replica");
}

#[tokio::test]
async fn a_stopped_replica_leaves_rotation_without_failing_a_single_read_and_rejoins() {
    let chaos = Chaos::acquire().await;
    let app = TestApp::spawn_on(chaos.stack.clone(), fast_checks).await;
    let user = app.register("steady@example.com", "Steady").await;
    app.wait_for_replicas().await;
    let path = format!("/v1/users/{}", user.id);

    // Reads keep flowing while the replica is stopped and started again.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (client, url, stop) = (
            app.client.clone(),
            format!("{}{path}", app.base),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = client
                    .get(&url)
                    .send()
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
    assert_eq!(route_of(&app.get(&path).await), "shard=0;role=primary");
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
    assert_eq!(route_of(&app.get(&path).await), "shard=0;role=replica");
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
            .request(
                Method::POST,
                "/v1/posts",
                Some(&on1.token),
                Some(&json!({ "title": format!("t{i}"), "body": "b" })),
            )
            .await;
        timings.push(started.elapsed());
        assert!(
            write.headers().contains_key("retry-after"),
            "Retry-After on a failed-fast write"
        );
        let problem = assert_problem(
            write,
            StatusCode::SERVICE_UNAVAILABLE,
            "a write to a dead primary",
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("fail fast")),
            "{problem}"
        );
    }
    timings.sort();
    println!(
        "failed-fast write latency with the breaker open: median {:?}, max {:?}",
        timings[5], timings[9]
    );
    // Its reads go on from the replica.
    let read = app.get(&format!("/v1/posts/{}", post1["id"])).await;
    assert_eq!(
        read.status(),
        StatusCode::OK,
        "a read of the dead primary's shard"
    );
    assert_eq!(route_of(&read), "shard=1;role=replica");
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
            app.request(
                Method::POST,
                "/v1/posts",
                Some(&on1.token),
                Some(&json!({ "title": "back", "body": "b" })),
            )
            .await
            .status()
                == StatusCode::CREATED
        },
    )
    .await;
    println!("time for writes to recover after the primary started: {recovered:?}");
    assert_eq!(readyz(&app).await["status"], "ready");
}
