//! The staleness auditor (`src/cache/audit.rs`) with every read sampled: a value made stale
//! behind the cache's back is counted stale with its age, fresh reads are audited and not
//! counted, and a full auditor skips rather than holds an answer.
//!
//! The counts are read from `/metrics`, whose recorder is one per process: nextest runs each
//! test in its own. Audits run after the answer, so the counts are awaited (polled), never
//! assumed at once.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use scalable_api::config::CacheStrategy;

use crate::{
    helpers::{ResponseExt, TestApp, TestUser},
    telemetry_harness::Scrape,
};

const AUDITED: &str = "stale_reads_audited_total";
const STALE: &str = "stale_reads_total";
const SKIPPED: &str = "stale_reads_skipped_total";
const AGE_COUNT: &str = "stale_read_age_seconds_count";
const AGE_SUM: &str = "stale_read_age_seconds_sum";

async fn audited_app(strategy: CacheStrategy) -> TestApp {
    TestApp::spawn_with(|c| {
        c.cache.strategy = strategy;
        c.consistency.audit.sample_rate = 1.0;
    })
    .await
}

async fn scrape(app: &TestApp) -> Scrape {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    Scrape::parse(&response.text().await.expect("a text body"))
}

/// Scrapes until `done` holds (audits finish after their answers), for at most 10 s.
async fn scrape_until(app: &TestApp, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = scrape(app).await;
        if done(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never seen; audit series: {:?}",
            scrape
                .series()
                .filter(|s| s.starts_with("stale_read"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn labels<'a>(strategy: &'a str, source: &'a str, token: &'a str) -> [(&'a str, &'a str); 3] {
    [("strategy", strategy), ("source", source), ("token", token)]
}

/// The shard index of `user` (where their row and its replica live).
fn shard_of(app: &TestApp, user: &TestUser) -> usize {
    let shard = app.state.db.cluster().owner(user.id).expect("an owned id");
    usize::from(shard.id())
}

/// Reads `user` until the cache answers a hit (the fill lands just after the miss's answer).
async fn read_until_hit(app: &TestApp, user: &TestUser) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.users().get(user.id).await.cache() != "hit" {
        assert!(Instant::now() < deadline, "the entry was never filled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_cached_value_made_stale_behind_the_caches_back_is_counted_stale_with_its_age() {
    for (strategy, name, source) in [
        (CacheStrategy::CacheAside, "cache-aside", "redis"),
        (CacheStrategy::TwoTier, "two-tier", "l1"),
    ] {
        // Arrange: a cached user, then their row changed straight on the primary, so no
        // invalidation runs and the cache keeps the old name.
        let app = audited_app(strategy).await;
        let user = app
            .register(&format!("behind-{name}@example.com"), "Before")
            .await;
        app.wait_for_replicas().await;
        read_until_hit(&app, &user).await;
        let primary = app.primary(shard_of(&app, &user)).await;
        sqlx::query("UPDATE users SET name = 'After', updated_at = now() WHERE id = $1")
            .bind(user.id)
            .execute(&primary)
            .await
            .expect("a direct update on the primary");

        // Act: served from the cache, the old name.
        let response = app.users().get(user.id).await;
        assert_eq!(response.cache(), "hit", "{name}");
        let body = response
            .expect_json(StatusCode::OK, "the cached user")
            .await;
        assert_eq!(
            body["name"], "Before",
            "{name}: the cache served the old row"
        );

        // Assert: counted stale, with an age above zero.
        let at = labels(name, source, "no");
        let scrape = scrape_until(&app, &format!("{name}: a stale {source} read"), |s| {
            s.value(STALE, &at) >= 1.0 && s.value(AGE_COUNT, &at) >= 1.0
        })
        .await;
        assert!(scrape.value(AUDITED, &at) >= scrape.value(STALE, &at));
        assert!(
            scrape.value(AGE_SUM, &at) > 0.0,
            "{name}: the served value was behind by a positive age"
        );
    }
}

#[tokio::test]
async fn fresh_reads_from_a_replica_and_the_cache_are_audited_and_not_counted_stale() {
    // Arrange: no cache, so every read is a replica's; a user the replica has.
    let app = audited_app(CacheStrategy::None).await;
    let user = app.register("fresh@example.com", "Fresh").await;
    let renamed = app.rename(&user, "Fresher").await;
    let token = renamed.header_str("x-consistency-token");
    assert!(!token.is_empty(), "a write answers with its token");
    app.wait_for_replicas().await;
    let replica = format!("shard{}-replica", shard_of(&app, &user));

    // Act: reads without a token, then reads carrying the rename's token.
    for _ in 0..3 {
        let response = app.users().get(user.id).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    for _ in 0..2 {
        let response = app
            .users()
            .get(user.id)
            .header("x-consistency-token", &token)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    // Assert: audited under the replica's name, each token apart, none stale.
    let (without, with) = (
        labels("none", &replica, "no"),
        labels("none", &replica, "yes"),
    );
    let scrape = scrape_until(&app, "five audited replica reads", |s| {
        s.value(AUDITED, &without) >= 3.0 && s.value(AUDITED, &with) >= 2.0
    })
    .await;
    assert_eq!(scrape.value(STALE, &without), 0.0, "a caught-up replica");
    assert_eq!(scrape.value(STALE, &with), 0.0, "read-your-writes");

    // And through a cache: a Redis hit of a current entry.
    let app = audited_app(CacheStrategy::CacheAside).await;
    let user = app.register("fresh-cached@example.com", "Cached").await;
    app.wait_for_replicas().await;
    read_until_hit(&app, &user).await;
    let redis = labels("cache-aside", "redis", "no");
    let scrape = scrape_until(&app, "an audited Redis hit", |s| {
        s.value(AUDITED, &redis) >= 1.0
    })
    .await;
    assert_eq!(scrape.value(STALE, &redis), 0.0, "a current entry");
}

#[tokio::test]
async fn a_full_auditor_skips_sampled_reads_and_still_answers_them() {
    // Arrange: every audit slot taken.
    let app = audited_app(CacheStrategy::None).await;
    let user = app.register("busy@example.com", "Busy").await;
    app.wait_for_replicas().await;
    let replica = format!("shard{}-replica", shard_of(&app, &user));
    let auditor = app.state.cache.auditor().expect("the auditor is on");
    let slots = auditor.occupy().await.expect("the slots");
    let before = scrape(&app).await;
    let audited = |s: &Scrape| s.value(AUDITED, &labels("none", &replica, "no"));

    // Act: reads, each sampled.
    for _ in 0..3 {
        let response = app.users().get(user.id).await;
        assert_eq!(response.status(), StatusCode::OK, "answered, not held");
    }

    // Assert: skipped as busy, none audited; audits resume once a slot is free.
    let busy = [("strategy", "none"), ("reason", "busy")];
    let after = scrape(&app).await;
    assert_eq!(
        after.value(SKIPPED, &busy) - before.value(SKIPPED, &busy),
        3.0,
        "each sampled read skipped"
    );
    assert_eq!(audited(&after), audited(&before), "none audited meanwhile");
    drop(slots);
    app.users().get(user.id).await;
    scrape_until(&app, "an audit once a slot was free", |s| {
        audited(s) > audited(&before)
    })
    .await;
}
