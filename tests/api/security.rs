//! What every answer tells a browser: the security headers, HSTS only when asked for, and
//! CORS only for the configured origins.

use reqwest::{Method, Response, StatusCode};

use crate::helpers::{ResponseExt, TestApp};

/// A browser's CORS preflight for `PATCH /v1/users/1` from `origin`.
async fn preflight(app: &TestApp, origin: &str) -> Response {
    app.request(Method::OPTIONS, "/v1/users/1")
        .header("origin", origin)
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .await
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_no_cors_by_default() {
    let app = TestApp::spawn().await;

    for response in [app.get("/healthz").await, app.get("/no/such/route").await] {
        let status = response.status();
        assert_eq!(
            response.header_str("x-content-type-options"),
            "nosniff",
            "{status}"
        );
        assert_eq!(response.header_str("x-frame-options"), "DENY", "{status}");
        assert_eq!(
            response.header_str("referrer-policy"),
            "no-referrer",
            "{status}"
        );
        assert_eq!(
            response.header_str("strict-transport-security"),
            "",
            "{status}: no HSTS over plain HTTP"
        );
    }
    let foreign = preflight(&app, "https://app.example.com").await;
    assert_eq!(
        foreign.header_str("access-control-allow-origin"),
        "",
        "no origin is allowed by default"
    );
}

#[tokio::test]
async fn only_the_configured_origins_may_call_from_a_browser() {
    let app = TestApp::spawn_with(|config| {
        config.http.cors_origins = vec!["https://app.example.com".into()];
        config.http.hsts = true;
    })
    .await;

    let allowed = preflight(&app, "https://app.example.com").await;
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(
        allowed.header_str("access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(
        allowed
            .header_str("access-control-allow-methods")
            .contains("PATCH")
    );
    assert!(
        allowed
            .header_str("access-control-allow-headers")
            .contains("authorization")
    );

    let foreign = preflight(&app, "https://evil.example.com").await;
    assert_eq!(foreign.header_str("access-control-allow-origin"), "");

    let read = app
        .get("/healthz")
        .header("origin", "https://app.example.com")
        .await;
    assert_eq!(
        read.header_str("access-control-allow-origin"),
        "https://app.example.com"
    );
    let exposed = read.header_str("access-control-expose-headers");
    assert!(exposed.contains("x-consistency-token"), "{exposed}");
    assert!(
        exposed.contains("ratelimit-policy") && exposed.contains("retry-after"),
        "a page can read its budget: {exposed}"
    );
    assert!(
        read.header_str("strict-transport-security")
            .starts_with("max-age=")
    );
}
