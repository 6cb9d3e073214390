//! API versioning: unversioned paths served in the version `Accept` names, v1's deprecation
//! notices, and the count of requests per version and route template.

use reqwest::{Method, Response, StatusCode};
use scalable_api::Config;
use serde_json::json;

use crate::{
    helpers::{ResponseExt, TestApp, assert_problem_mentioning},
    telemetry_harness::Scrape,
};

const V1: &str = "application/vnd.scalable-api.v1+json";
const V2: &str = "application/vnd.scalable-api.v2+json";
/// `2026-01-01T00:00:00Z` as an RFC 9745 date.
const DEPRECATION: &str = "@1767225600";
/// `2026-07-01T00:00:00Z` as an HTTP-date.
const SUNSET: &str = "Wed, 01 Jul 2026 00:00:00 GMT";

fn deprecate_v1(config: &mut Config) {
    let date = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.to_utc())
            .expect("a valid RFC 3339 date")
    };
    config.http.versioning.v1_deprecated_at = Some(date("2026-01-01T00:00:00Z"));
    config.http.versioning.v1_sunset_at = Some(date("2026-07-01T00:00:00Z"));
}

/// Every value of `name`, joined as one list (`Vary: Authorization` and `Vary: Accept` ->
/// `Authorization, Accept`).
fn all_values(response: &Response, name: &str) -> String {
    response
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

fn varies_on_accept(response: &Response) -> bool {
    all_values(response, "vary")
        .split(',')
        .any(|v| v.trim().eq_ignore_ascii_case("accept"))
}

/// Asserts v1's three notices, with `successor` as the `Link` target.
fn assert_v1_notices(response: &Response, successor: &str, what: &str) {
    assert_eq!(response.header_str("deprecation"), DEPRECATION, "{what}");
    assert_eq!(response.header_str("sunset"), SUNSET, "{what}");
    assert_eq!(
        all_values(response, "link"),
        format!("<{successor}>; rel=\"successor-version\""),
        "{what}"
    );
}

fn assert_no_notices(response: &Response, what: &str) {
    for name in ["deprecation", "sunset", "link"] {
        assert_eq!(response.header_str(name), "", "{what}: no {name}");
    }
}

#[tokio::test]
async fn accept_v1_on_an_unversioned_path_gets_the_v1_representation_with_vary_and_v1s_notices() {
    // Arrange
    let app = TestApp::spawn_with(deprecate_v1).await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act
    let response = app
        .get(&format!("/users/{}", ada.id))
        .header("accept", V1)
        .await;

    // Assert: v1's answer (an integer id), varying on Accept, with v1's notices.
    assert_eq!(response.status(), StatusCode::OK);
    assert!(varies_on_accept(&response), "{:?}", response.headers());
    assert!(
        all_values(&response, "vary").contains("Authorization"),
        "the handler's own Vary stays"
    );
    assert_v1_notices(
        &response,
        &format!("/v2/users/{}", ada.id),
        "GET /users/{id}",
    );
    let body = response.json_body().await;
    assert_eq!(body["id"], json!(ada.id), "{body}");
    assert_eq!(body["name"], "Ada");
}

#[tokio::test]
async fn every_unversioned_resource_path_reaches_v1_when_accept_asks_for_it() {
    // Arrange
    let app = TestApp::spawn_with(deprecate_v1).await;
    let ada = app.register("ada@example.com", "Ada").await;
    let post = app.create_post(&ada, "hello").await;
    let post_id = post["id"].as_i64().expect("an integer id");

    // Act + Assert: each answers as its v1 route does (never the no-route 404), with v1's
    // notices and Vary.
    let cases = [
        (Method::GET, "/users".to_owned(), StatusCode::OK),
        (
            Method::GET,
            format!("/users/{}/posts", ada.id),
            StatusCode::OK,
        ),
        (Method::GET, "/posts".to_owned(), StatusCode::OK),
        (Method::GET, format!("/posts/{post_id}"), StatusCode::OK),
        // Without a token: the route's own 401, not a 404.
        (
            Method::GET,
            "/api-keys".to_owned(),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (method, path, status) in cases {
        let response = app
            .request(method.clone(), &path)
            .header("accept", V1)
            .await;
        assert_eq!(response.status(), status, "{method} {path}");
        assert!(varies_on_accept(&response), "{method} {path}");
        assert_v1_notices(&response, &format!("/v2{path}"), &path);
    }
    let login = app
        .request(Method::POST, "/auth/login")
        .header("accept", V1)
        .json(&json!({ "email": ada.email, "password": ada.password }))
        .await;
    assert_v1_notices(&login, "/v2/auth/login", "POST /auth/login");
    let body = login
        .expect_json(StatusCode::OK, "POST /auth/login as v1")
        .await;
    assert!(body["access_token"].is_string(), "{body}");
}

#[tokio::test]
async fn the_configured_default_serves_requests_that_name_no_version() {
    // Arrange: v1 as the default, as an operator would set it before v2 ships.
    let app = TestApp::spawn_with(|config| {
        deprecate_v1(config);
        config.http.versioning.default = scalable_api::config::ApiVersion::V1;
    })
    .await;
    let ada = app.register("ada@example.com", "Ada").await;
    let path = format!("/users/{}", ada.id);

    for accept in [None, Some("*/*"), Some("application/json")] {
        // Act
        let request = app.get(&path);
        let response = match accept {
            Some(accept) => request.header("accept", accept).await,
            None => request.await,
        };

        // Assert
        assert_eq!(response.status(), StatusCode::OK, "{accept:?}");
        assert!(varies_on_accept(&response), "{accept:?}");
        assert_v1_notices(&response, &format!("/v2{path}"), &format!("{accept:?}"));
    }
}

#[tokio::test]
async fn an_accept_naming_only_versions_not_on_offer_gets_a_406_problem_listing_them() {
    // Arrange
    let app = TestApp::spawn_with(deprecate_v1).await;
    let ada = app.register("ada@example.com", "Ada").await;

    for accept in [
        "application/vnd.scalable-api.v3+json",
        "application/vnd.scalable-api.v3+json, application/vnd.scalable-api.v2+json;q=0",
    ] {
        // Act
        let response = app
            .get(&format!("/users/{}", ada.id))
            .header("accept", accept)
            .await;

        // Assert: a 406 that went through every layer (it has a request id), varies on
        // Accept, names the types on offer, and is no version's answer.
        assert!(varies_on_accept(&response), "{accept}");
        assert_no_notices(&response, accept);
        assert!(!response.header_str("x-request-id").is_empty(), "{accept}");
        let problem =
            assert_problem_mentioning(response, StatusCode::NOT_ACCEPTABLE, V1, accept).await;
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.contains(V2)),
            "{problem}"
        );
        assert_eq!(
            problem["type"],
            "https://scalable-api.dev/problems/not-acceptable"
        );
    }
}

#[tokio::test]
async fn v1_paths_ignore_accept_and_every_answer_carries_the_notices_with_its_v2_successor() {
    // Arrange
    let app = TestApp::spawn_with(deprecate_v1).await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act: a read naming a version not on offer, a write, a missing resource, no route.
    let read = app
        .users()
        .posts(ada.id, "?limit=5")
        .header("accept", "application/vnd.scalable-api.v3+json")
        .await;
    let write = app
        .posts()
        .create(&ada, json!({ "title": "t", "body": "b" }))
        .await;
    let missing = app.posts().get(999_999).await;
    let unrouted = app.get("/v1/no/such/route").await;

    // Assert: Accept's version is ignored on /v1 (no 406, no Vary: Accept), and each answer,
    // errors included, points at the same path in v2 (without the query).
    assert_eq!(read.status(), StatusCode::OK);
    assert!(!varies_on_accept(&read));
    assert_v1_notices(&read, &format!("/v2/users/{}/posts", ada.id), "read");
    assert_eq!(write.status(), StatusCode::CREATED);
    assert_v1_notices(&write, "/v2/posts", "write");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_v1_notices(&missing, "/v2/posts/999999", "missing");
    assert_eq!(unrouted.status(), StatusCode::NOT_FOUND);
    assert_v1_notices(&unrouted, "/v2/no/such/route", "unrouted");
}

#[tokio::test]
async fn without_a_deprecation_date_v1_answers_carry_no_notices() {
    // Arrange: the default configuration.
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act
    let versioned = app.users().get(ada.id).await;
    let by_accept = app
        .get(&format!("/users/{}", ada.id))
        .header("accept", V1)
        .await;

    // Assert
    assert_eq!(versioned.status(), StatusCode::OK);
    assert_no_notices(&versioned, "/v1/users/{id}");
    assert_eq!(by_accept.status(), StatusCode::OK);
    assert_no_notices(&by_accept, "/users/{id} as v1");
    assert!(varies_on_accept(&by_accept));
}

#[tokio::test]
async fn graphql_answers_never_carry_v1_notices() {
    // Arrange
    let app = TestApp::spawn_with(deprecate_v1).await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act: even with a v1 vendor type in Accept.
    let response = app
        .request(Method::POST, "/graphql")
        .header("accept", V1)
        .json(&json!({
            "query": "query($id: ID!) { user(id: $id) { id name } }",
            "variables": { "id": ada.id.to_string() },
        }))
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_no_notices(&response, "/graphql");
    assert!(!varies_on_accept(&response));
    let body = response.json_body().await;
    assert_eq!(body["data"]["user"]["name"], "Ada", "{body}");
}

async fn scrape(app: &TestApp) -> Scrape {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    Scrape::parse(&response.text().await.expect("a text body"))
}

#[tokio::test]
async fn requests_are_counted_per_version_and_route_template_whichever_way_they_chose_it() {
    // Arrange
    let app = TestApp::spawn_with(deprecate_v1).await;
    let ada = app.register("ada@example.com", "Ada").await;
    let before = scrape(&app).await;

    // Act: v1 by path and by Accept on one route, v1 by path on another, v2 as the default,
    // a v1 path with no route, a refused version, and GraphQL.
    app.users().get(ada.id).await;
    app.get(&format!("/users/{}", ada.id))
        .header("accept", V1)
        .await;
    app.posts().feed("").await;
    app.get(&format!("/users/{}", ada.id)).await;
    app.get("/v1/no/such/route").await;
    app.get("/users/1")
        .header("accept", "application/vnd.scalable-api.v3+json")
        .await;
    app.graphql(
        None,
        "{ users(first: 1) { edges { node { id } } } }",
        json!({}),
    )
    .await;
    let after = scrape(&app).await;

    // Assert: per version and template, never a raw path or an unmatched one.
    const NAME: &str = "http_api_version_requests_total";
    let delta = |labels: &[(&str, &str)]| after.value(NAME, labels) - before.value(NAME, labels);
    assert_eq!(
        delta(&[("version", "v1"), ("route", "/v1/users/{id}")]),
        2.0
    );
    assert_eq!(delta(&[("version", "v1"), ("route", "/v1/posts")]), 1.0);
    assert_eq!(
        delta(&[("version", "v2"), ("route", "/v2/users/{id}")]),
        1.0
    );
    let ours: Vec<_> = after
        .series()
        .filter(|s| s.starts_with(NAME))
        .cloned()
        .collect();
    assert!(
        ours.iter()
            .all(|s| s.contains("route=/v1/") || s.contains("route=/v2/")),
        "only versioned route templates: {ours:?}"
    );
    let raw = format!("/users/{}", ada.id);
    assert!(
        ours.iter()
            .all(|s| !s.contains("/no/such") && !s.contains(&raw)),
        "no raw path: {ours:?}"
    );
}

#[tokio::test]
async fn without_a_vendor_type_an_unversioned_path_gets_the_v2_answer() {
    // Arrange
    let app = TestApp::spawn_with(deprecate_v1).await;
    let ada = app.register("ada@example.com", "Ada").await;
    let path = format!("/users/{}", ada.id);
    let v2 = app
        .get(&format!("/v2{path}"))
        .await
        .expect_json(StatusCode::OK, "GET /v2/users/{id}")
        .await;

    for accept in [None, Some("*/*"), Some("application/json"), Some(V2)] {
        // Act
        let request = app.get(&path);
        let response = match accept {
            Some(accept) => request.header("accept", accept).await,
            None => request.await,
        };

        // Assert: v2's answer, varying on Accept, without v1's notices.
        assert_eq!(response.status(), StatusCode::OK, "{accept:?}");
        assert!(varies_on_accept(&response), "{accept:?}");
        assert_no_notices(&response, &format!("{accept:?}"));
        assert_eq!(response.json_body().await, v2, "{accept:?}");
    }
}

#[tokio::test]
async fn the_highest_weighted_vendor_type_picks_the_version_and_v2_answers_carry_no_notices() {
    // Arrange
    let app = TestApp::spawn_with(deprecate_v1).await;
    let ada = app.register("ada@example.com", "Ada").await;
    let path = format!("/users/{}", ada.id);

    // Act
    let v2_preferred = app
        .get(&path)
        .header("accept", format!("{V1};q=0.5, {V2};q=0.9"))
        .await;
    let v1_preferred = app
        .get(&path)
        .header("accept", format!("{V1};q=0.9, {V2};q=0.5"))
        .await;
    let on_v2 = app.get(&format!("/v2{path}")).await;

    // Assert
    assert_eq!(v2_preferred.status(), StatusCode::OK);
    assert_no_notices(&v2_preferred, "v2 preferred");
    assert_eq!(v1_preferred.status(), StatusCode::OK);
    assert_v1_notices(&v1_preferred, &format!("/v2{path}"), "v1 preferred");
    assert_eq!(on_v2.status(), StatusCode::OK);
    assert_no_notices(&on_v2, "/v2/users/{id}");
    assert!(!varies_on_accept(&on_v2));
}
