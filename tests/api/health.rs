//! Readiness: what makes an instance unready (and what must not), and who sees the details.

use reqwest::StatusCode;
use scalable_api::config::Profile;
use serde_json::Value;

use crate::helpers::{ResponseExt, TestApp};

#[tokio::test]
async fn a_directory_request_pool_full_of_logins_leaves_the_instance_ready() {
    // Arrange: every connection of the directory's request pool is taken, as a burst of
    // logins would take them.
    let app = TestApp::spawn().await;
    let pool = app.state.db.directory_pool();
    let mut held = Vec::new();
    for _ in 0..app.state.config.db.pool_max_connections {
        held.push(pool.acquire().await.expect("a directory connection"));
    }

    // Act
    let ready = app.get("/readyz").await;

    // Assert: the probe has its own connection; the directory is up and so is the instance.
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json_body().await;
    assert_eq!(body["directory"], "up", "{body}");
    drop(held);
}

#[tokio::test]
async fn outside_dev_the_apis_readyz_says_only_its_status_and_the_admin_address_has_the_rest() {
    let admin = crate::helpers::free_addr();
    let app = TestApp::spawn_with(|c| {
        c.profile = Profile::Production;
        c.auth.jwt_secret = "a-test-production-secret-of-32-bytes-at-least"
            .to_string()
            .into();
        c.telemetry.metrics_addr = Some(admin);
    })
    .await;
    // `serve` starts the admin server on `telemetry.metrics_addr`.

    let public: Value = app.get("/readyz").await.json_body().await;
    assert_eq!(public, serde_json::json!({ "status": "ready" }));
    assert_eq!(app.get("/metrics").await.status(), StatusCode::NOT_FOUND);

    let details: Value = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .expect("the admin address answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(details["directory"], "up", "{details}");
    assert!(
        details["shards"].as_array().is_some_and(|s| s.len() == 2),
        "{details}"
    );
}
