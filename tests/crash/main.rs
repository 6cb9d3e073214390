//! Crash safety of the directory saga (`src/db/directory.rs`): a crash injected between the
//! directory step and the shard step of registration, email change and deletion, then the
//! checks that matter: no duplicate email, the user can log in (or cleanly does not exist),
//! and the email can be registered again.
//!
//! Runs only with `--features failpoints` (scripts/test enables it): the crash is a panic at
//! a named point, which skips every later and every compensating step, as a dying process
//! would.

// The integration tests' harness; this binary uses only part of it.
#[allow(dead_code, unused_imports)]
#[path = "../api/helpers/mod.rs"]
mod helpers;

use std::time::Duration;

use helpers::{PASSWORD, ResponseExt, TestApp, TestUser};
use reqwest::StatusCode;
use serde_json::json;

/// Repair applies at once (grace 0); the background pass stays out of the way.
async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.db.directory_repair.grace = Duration::ZERO;
        c.db.directory_repair.interval = Duration::from_secs(3600);
    })
    .await
}

async fn register(app: &TestApp, email: &str) -> StatusCode {
    app.auth().register(email, "Crash", PASSWORD).await.status()
}

async fn login(app: &TestApp, email: &str) -> StatusCode {
    app.auth().login(email, PASSWORD).await.status()
}

/// No duplicate email: at most one user row across both shards and at most one directory
/// entry hold `email`; returns how many users hold it.
async fn owners_of(app: &TestApp, email: &str) -> i64 {
    let mut users = 0;
    for shard in 0..2 {
        users += sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(&app.primary(shard).await)
            .await
            .expect("count users");
    }
    let entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM directory_entries WHERE email = $1")
            .bind(email)
            .fetch_one(&app.directory().await)
            .await
            .expect("count entries");
    assert!(
        users <= 1 && entries <= 1,
        "{email}: {users} users, {entries} entries"
    );
    users
}

async fn entry_state(app: &TestApp, email: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM directory_entries WHERE email = $1")
        .bind(email)
        .fetch_optional(&app.directory().await)
        .await
        .expect("read entry")
}

#[tokio::test]
async fn a_crash_after_reserving_leaves_no_user_and_the_email_can_be_registered() {
    // Arrange / Act: the process "dies" with the email reserved and no row written.
    let app = app().await;
    app.state.db.failpoints.arm("register:reserved");
    assert_eq!(
        register(&app, "ghost@example.com").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        entry_state(&app, "ghost@example.com").await.as_deref(),
        Some("pending")
    );

    // Assert: the user cleanly does not exist, and the address is free again.
    assert_eq!(
        login(&app, "ghost@example.com").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(owners_of(&app, "ghost@example.com").await, 0);
    assert_eq!(
        register(&app, "ghost@example.com").await,
        StatusCode::CREATED
    );
    assert_eq!(login(&app, "ghost@example.com").await, StatusCode::OK);
    assert_eq!(owners_of(&app, "ghost@example.com").await, 1);
}

#[tokio::test]
async fn the_background_pass_releases_an_abandoned_reservation() {
    let app = app().await;
    app.state.db.failpoints.arm("register:reserved");
    assert_eq!(
        register(&app, "abandoned@example.com").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    let repaired = app
        .state
        .db
        .directory()
        .repair_pass()
        .await
        .expect("repair pass");

    assert_eq!(repaired, 1);
    assert_eq!(entry_state(&app, "abandoned@example.com").await, None);
}

#[tokio::test]
async fn a_crash_after_inserting_the_row_leaves_a_user_who_can_log_in() {
    let app = app().await;
    app.state.db.failpoints.arm("register:inserted");
    assert_eq!(
        register(&app, "half@example.com").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        entry_state(&app, "half@example.com").await.as_deref(),
        Some("pending")
    );

    // The row exists: login confirms the entry, and the address stays taken.
    assert_eq!(login(&app, "half@example.com").await, StatusCode::OK);
    assert_eq!(
        entry_state(&app, "half@example.com").await.as_deref(),
        Some("active")
    );
    assert_eq!(
        register(&app, "half@example.com").await,
        StatusCode::CONFLICT
    );
    assert_eq!(owners_of(&app, "half@example.com").await, 1);
}

async fn change_email(app: &TestApp, user: &TestUser, email: &str) -> StatusCode {
    app.users()
        .patch(user.id, user, json!({ "email": email }))
        .await
        .status()
}

#[tokio::test]
async fn a_crash_after_reserving_a_new_email_keeps_the_old_one_and_frees_the_new() {
    let app = app().await;
    let user = app.register("before@example.com", "Mover").await;
    app.state.db.failpoints.arm("email:reserved");

    assert_eq!(
        change_email(&app, &user, "after@example.com").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    assert_eq!(login(&app, "before@example.com").await, StatusCode::OK);
    assert_eq!(
        login(&app, "after@example.com").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        register(&app, "after@example.com").await,
        StatusCode::CREATED,
        "the new address is free"
    );
    assert_eq!(owners_of(&app, "before@example.com").await, 1);
    assert_eq!(owners_of(&app, "after@example.com").await, 1);
}

#[tokio::test]
async fn a_crash_after_updating_the_row_moves_the_user_to_the_new_email() {
    let app = app().await;
    let user = app.register("old@example.com", "Mover").await;
    app.state.db.failpoints.arm("email:updated");

    assert_eq!(
        change_email(&app, &user, "new@example.com").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    // The row says new: the new address logs in, the old one no longer does and is free.
    assert_eq!(login(&app, "new@example.com").await, StatusCode::OK);
    assert_eq!(
        login(&app, "old@example.com").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(register(&app, "old@example.com").await, StatusCode::CREATED);
    assert_eq!(owners_of(&app, "old@example.com").await, 1);
    assert_eq!(owners_of(&app, "new@example.com").await, 1);
}

#[tokio::test]
async fn a_crash_after_deleting_the_row_leaves_no_user_and_frees_the_email() {
    let app = app().await;
    let user = app.register("gone@example.com", "Leaver").await;
    app.state.db.failpoints.arm("delete:shard_deleted");

    let deleted = app.users().delete(user.id, &user).await;
    assert_eq!(deleted.status(), StatusCode::INTERNAL_SERVER_ERROR);

    assert_eq!(
        login(&app, "gone@example.com").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(owners_of(&app, "gone@example.com").await, 0);
    assert_eq!(
        register(&app, "gone@example.com").await,
        StatusCode::CREATED
    );
    assert_eq!(login(&app, "gone@example.com").await, StatusCode::OK);
}

/// Starts re-emailing `user` to `email` in a task of its own, stops the saga after it
/// reserved the new address, and runs the repair pass, which judges that reservation by the
/// row (still holding the old address) and removes it. Returns the paused change.
async fn change_email_with_its_reservation_repaired_away(
    app: &TestApp,
    user: &TestUser,
    email: &'static str,
) -> (
    std::sync::Arc<scalable_api::db::failpoints::Pause>,
    tokio::task::JoinHandle<StatusCode>,
) {
    let pause = app.state.db.failpoints.pause("email:reserved");
    let request = app.users().patch(user.id, user, json!({ "email": email }));
    let change = tokio::spawn(async move { request.await.status() });
    pause.reached().await;
    app.state
        .db
        .directory()
        .repair_pass()
        .await
        .expect("repair pass");
    (pause, change)
}

#[tokio::test]
async fn an_email_change_whose_reservation_was_repaired_away_claims_the_address_again() {
    // Arrange: the saga stops after reserving, and the repair pass removes the reservation.
    let app = app().await;
    let user = app.register("slow-old@example.com", "Slow").await;
    let (pause, change) =
        change_email_with_its_reservation_repaired_away(&app, &user, "slow-new@example.com").await;
    assert_eq!(entry_state(&app, "slow-new@example.com").await, None);

    // Act
    pause.release();

    // Assert: the change completed and the user holds the new address, once.
    assert_eq!(change.await.expect("join"), StatusCode::OK);
    assert_eq!(
        entry_state(&app, "slow-new@example.com").await.as_deref(),
        Some("active")
    );
    assert_eq!(login(&app, "slow-new@example.com").await, StatusCode::OK);
    assert_eq!(
        login(&app, "slow-old@example.com").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(entry_state(&app, "slow-old@example.com").await, None);
    assert_eq!(owners_of(&app, "slow-new@example.com").await, 1);
}

#[tokio::test]
async fn an_email_change_that_lost_its_address_to_another_user_puts_the_row_back() {
    // Arrange: as above, and while the saga waits another user registers the freed address.
    let app = app().await;
    let user = app.register("keep-old@example.com", "Keeper").await;
    let (pause, change) =
        change_email_with_its_reservation_repaired_away(&app, &user, "contested@example.com").await;
    assert_eq!(
        register(&app, "contested@example.com").await,
        StatusCode::CREATED
    );

    // Act
    pause.release();

    // Assert: the change fails as a taken email, and nothing of it is left.
    assert_eq!(change.await.expect("join"), StatusCode::CONFLICT);
    assert_eq!(owners_of(&app, "contested@example.com").await, 1);
    assert_eq!(owners_of(&app, "keep-old@example.com").await, 1);
    assert_eq!(login(&app, "keep-old@example.com").await, StatusCode::OK);
    let me = app.users().get(user.id).bearer(&user).await;
    let me = me.json::<serde_json::Value>().await.expect("a user");
    assert_eq!(me["email"], "keep-old@example.com");
}

#[tokio::test]
async fn an_account_deleted_by_a_request_that_timed_out_still_leaves_the_cache() {
    // Arrange: the user's profile is cached; the deletion's invalidation will wait until the
    // request has timed out (its future dropped).
    let app = TestApp::spawn_with(|c| {
        c.cache.strategy = scalable_api::config::CacheStrategy::CacheAside;
        c.http.request_timeout = Duration::from_secs(2);
    })
    .await;
    let user = app.register("cached-leaver@example.com", "Leaver").await;
    app.wait_for_replicas().await;
    let mut cached = false;
    for _ in 0..100 {
        if app.users().get(user.id).await.cache() == "hit" {
            cached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cached, "the profile never reached the cache");
    let pause = app.state.db.failpoints.pause("cache:invalidate");

    // Act: the deletion commits, then times out before its invalidation ran.
    let request = app.users().delete(user.id, &user);
    let deleted = tokio::spawn(async move { request.await.status() });
    pause.reached().await;
    assert_eq!(
        deleted.await.expect("join"),
        StatusCode::SERVICE_UNAVAILABLE
    );
    pause.release();

    // Assert: the invalidation still happens; the profile is not served from the cache.
    let mut status = StatusCode::OK;
    for _ in 0..100 {
        status = app.users().get(user.id).await.status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a deleted account served from the cache"
    );
}
