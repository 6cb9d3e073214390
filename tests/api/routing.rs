//! Reads go to a shard's replica, writes to its primary: proven by each server's own
//! statement statistics, not by trusting the service's header.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ResponseExt, TestApp, statement_calls};

const POST_BY_ID: &str =
    "SELECT id, user_id, title, body, created_at, updated_at FROM posts WHERE id = $1";

#[tokio::test]
async fn reads_are_served_by_the_replica_and_writes_by_the_primary() {
    // Arrange: a user on shard 0 (the first placement) and one on shard 1.
    let app = TestApp::spawn().await;
    let users = [
        app.register("first@example.com", "First").await,
        app.register("second@example.com", "Second").await,
    ];

    for (shard, user) in users.iter().enumerate() {
        let (primary, replica) = (app.primary(shard).await, app.replica(shard).await);

        // Act: a write.
        let inserts_before = statement_calls(&primary, "INSERT INTO posts%").await;
        let created = app
            .posts()
            .create(
                user,
                json!({ "title": "routed", "body": "where does this go?" }),
            )
            .await;

        // Assert: the primary ran it, and the header says so.
        assert_eq!(created.status(), StatusCode::CREATED);
        assert_eq!(created.route(), format!("shard={shard};role=primary"));
        let post = created.json_body().await;
        assert_eq!(
            statement_calls(&primary, "INSERT INTO posts%").await,
            inserts_before + 1
        );

        // Act: a read of what was written, once the replica has replayed it.
        app.wait_for_replicas().await;
        let on_replica = statement_calls(&replica, POST_BY_ID).await;
        let on_primary = statement_calls(&primary, POST_BY_ID).await;
        let read = app.posts().get(&post["id"]).await;

        // Assert: the replica ran the SELECT, the primary did not.
        assert_eq!(read.status(), StatusCode::OK);
        assert_eq!(read.route(), format!("shard={shard};role=replica"));
        assert_eq!(
            statement_calls(&replica, POST_BY_ID).await,
            on_replica + 1,
            "replica of shard {shard}"
        );
        assert_eq!(
            statement_calls(&primary, POST_BY_ID).await,
            on_primary,
            "primary of shard {shard}"
        );
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&replica)
            .await
            .expect("query replica");
        assert!(
            in_recovery,
            "the replica of shard {shard} is a real standby, not the primary again"
        );
    }
}

#[tokio::test]
async fn the_cross_shard_feed_reads_every_shard_from_its_replica() {
    // The replica checkout bound and the lag bounds out of the way: under other tests' load a
    // replica connection can take longer than the default 250 ms to open, or a replica fall
    // behind the lag bound for a check, and the read then goes to the primary, correctly (the
    // fallbacks are tested in chaos/db.rs). This test is about where a healthy feed read goes.
    let app = TestApp::spawn_with(|config| {
        config.db.replicas.acquire_timeout = Duration::from_secs(2);
        config.db.replicas.max_lag = Duration::from_secs(600);
        config.db.replicas.max_lag_bytes = u64::MAX;
    })
    .await;
    // A health check that times out under the suite's load takes a replica out of rotation
    // until it passes again; wait for every replica to be in rotation, so what is tested is
    // the routing of a read while they are.
    let in_rotation = || {
        app.state
            .db
            .cluster()
            .iter()
            .flat_map(|shard| shard.replicas().iter())
            .all(|replica| replica.health.in_rotation())
    };
    for _ in 0..100 {
        if in_rotation() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(in_rotation(), "every replica back in rotation within 10 s");

    let feed = app.posts().feed("").await;

    assert_eq!(feed.status(), StatusCode::OK);
    assert_eq!(feed.route(), "shard=0;role=replica, shard=1;role=replica");
}

#[tokio::test]
async fn a_primary_whose_request_pool_is_exhausted_keeps_its_breaker_closed() {
    // Arrange: one request connection per pool, checked every 50 ms.
    let app = TestApp::spawn_with(|config| {
        config.db.pool_max_connections = 1;
        config.db.replicas.check_interval = Duration::from_millis(50);
    })
    .await;
    let shard = app.state.db.cluster().iter().next().expect("shard 0");

    // Act: every request connection of shard 0's primary is taken, for well past several
    // health checks and their timeout (2 x 50 ms, at least 100 ms).
    let held = shard.checkout_primary().await.expect("a connection");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;

    // Assert: busy is not down. The monitor checks on a connection of its own, so it does
    // not wait for the request pool, time out and trip the breaker of a healthy primary.
    assert_eq!(
        shard.breaker_state(),
        scalable_api::traffic::BreakerState::Closed
    );
    drop(held);
}

#[tokio::test]
async fn a_transaction_dropped_midway_releases_its_locks_without_waiting_for_the_next_checkout() {
    // Arrange: a request connection of shard 0's primary, in a transaction holding a lock.
    let app = TestApp::spawn().await;
    let shard = app.state.db.cluster().iter().next().expect("shard 0");
    {
        let mut conn = shard.checkout_primary().await.expect("a connection");
        let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
        sqlx::query("SELECT pg_advisory_xact_lock(4242)")
            .execute(&mut *tx)
            .await
            .expect("take the lock");
        // Act: the transaction and its connection are dropped with neither a commit nor a
        // rollback, as when the request that ran them is cancelled. sqlx only queues the
        // ROLLBACK; the pool must send it, though nothing checks that connection out again.
    }

    // Assert: the lock is free within moments, seen from another connection.
    let mut free = false;
    for _ in 0..50 {
        free = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(4242)")
            .fetch_one(shard.primary_pool())
            .await
            .expect("try the lock");
        if free {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        free,
        "the dropped transaction was rolled back and its lock released"
    );
}

#[tokio::test]
async fn a_full_request_pool_is_busy_not_down_and_never_opens_the_primarys_breaker() {
    // Arrange: one request connection per pool, waited for 200 ms; a user and their shard.
    let app = TestApp::spawn_with(|config| {
        config.db.pool_max_connections = 1;
        config.db.acquire_timeout = Duration::from_millis(200);
    })
    .await;
    let user = app.register("busy@example.com", "Busy").await;
    let shard = app
        .state
        .db
        .cluster()
        .owner(user.id)
        .expect("the user's shard");
    let held = shard.checkout_primary().await.expect("a connection");

    // Act: twice the breaker's threshold of writes, each waiting for the held connection.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = app
            .posts()
            .create(
                &user,
                json!({ "title": format!("busy {i}"), "body": "waits" }),
            )
            .await;
        statuses.push(response.status());
    }
    let state = shard.breaker_state();
    drop(held);
    let after = app
        .posts()
        .create(&user, json!({ "title": "free", "body": "again" }))
        .await;

    // Assert: 503s while the pool was full, the breaker closed throughout (a busy primary is
    // not a dead one), and the next write goes through at once.
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert_eq!(state, scalable_api::traffic::BreakerState::Closed);
    assert_eq!(after.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_made_up_consistency_token_is_refused_and_an_issued_one_is_honoured() {
    // Arrange: a write's token, and the made-up one that would pin reads on the primary.
    let app = TestApp::spawn().await;
    let user = app.register("token-holder@example.com", "Holder").await;
    let renamed = app.rename(&user, "Renamed").await;
    let issued = renamed.header_str("x-consistency-token");
    assert!(issued.contains("; sig="), "{issued}");
    let lsns = issued.split("; sig=").next().unwrap_or_default();

    // Act / Assert: the issued token is honoured; anything else is a 400 naming the header.
    let read = app
        .users()
        .get(user.id)
        .header("x-consistency-token", &issued)
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    for forged in ["0=FFFFFFFF/FFFFFFFF".to_string(), lsns.to_string()] {
        let read = app
            .users()
            .get(user.id)
            .header("x-consistency-token", &forged)
            .await;
        crate::helpers::assert_problem_mentioning(
            read,
            StatusCode::BAD_REQUEST,
            "X-Consistency-Token",
            &forged,
        )
        .await;
    }
}
