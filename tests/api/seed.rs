//! `scalable-api seed`, the real binary: demo accounts never in production, `--reset` only
//! when confirmed, and no cached entry of the replaced data left behind.

use reqwest::StatusCode;
use scalable_api::config::CacheStrategy;

use crate::helpers::{ResponseExt, TestApp};

async fn users_in(app: &TestApp) -> i64 {
    let mut total = 0;
    for shard in 0..2 {
        total += sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
            .fetch_one(&app.primary(shard).await)
            .await
            .expect("count users");
    }
    total
}

#[tokio::test]
async fn seed_refuses_production_and_an_unconfirmed_reset_and_a_reset_leaves_nothing_cached() {
    // Arrange: 20 demo users, the 15th (id 8 on shard 0 of two) in the cache.
    let app = TestApp::spawn_seeded(20, 20, |c| c.cache.strategy = CacheStrategy::CacheAside).await;
    let dir = std::env::temp_dir().join(format!(
        "scalable-api-seed-test-{}",
        app.state.config.cache.key_prefix
    ));
    let launch = app.launch(&dir);
    let fifteenth = 8;
    let mut cached = false;
    for _ in 0..100 {
        let read = app.users().get(fifteenth).await;
        assert_eq!(read.status(), StatusCode::OK);
        if read.cache() == "hit" {
            cached = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(cached, "the user never reached the cache");

    // Act / Assert: production refuses to seed at all; a reset with no terminal and no
    // --yes refuses; neither touched a row.
    let production = launch
        .clone()
        .env("SCALABLE_API_PROFILE", "production")
        .env(
            "SCALABLE_API_AUTH__JWT_SECRET",
            "a-production-secret-of-32-bytes-or-more",
        )
        .env("SCALABLE_API_TELEMETRY__METRICS_ADDR", "127.0.0.1:0");
    let (status, output) = production
        .run(&["seed", "--users", "10", "--posts", "0", "--reset", "--yes"])
        .await;
    assert!(
        !status.success() && output.contains("production"),
        "{output}"
    );
    let (status, output) = launch
        .run(&["seed", "--users", "10", "--posts", "0", "--reset"])
        .await;
    assert!(!status.success() && output.contains("--yes"), "{output}");
    assert_eq!(users_in(&app).await, 20);

    // Act: a confirmed reset to 10 users.
    let (status, output) = launch
        .run(&["seed", "--users", "10", "--posts", "0", "--reset", "--yes"])
        .await;
    assert!(status.success(), "{output}");
    assert_eq!(users_in(&app).await, 10);
    // The replicas replay the reset too (a read that misses the cache may go to one).
    app.wait_for_replicas().await;

    // Assert: the 15th user is gone, and the cache does not say otherwise.
    assert_eq!(
        app.users().get(fifteenth).await.status(),
        StatusCode::NOT_FOUND
    );
    let _ = std::fs::remove_dir_all(&dir);
}
