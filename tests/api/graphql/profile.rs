//! What the profile turns on: in dev the schema describes itself (introspection, GraphiQL,
//! "Did you mean ...?") and answers say where their time and SQL went (`Server-Timing`,
//! `X-Db-Route`, `X-Cache`); in production none of it, unless a setting asks for it.

use reqwest::{Method, StatusCode};
use scalable_api::config::Profile;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const DEBUG_HEADERS: [&str; 3] = ["server-timing", "x-db-route", "x-cache"];

async fn production(tweak: impl FnOnce(&mut scalable_api::Config)) -> TestApp {
    TestApp::spawn_seeded(4, 8, |config| {
        config.profile = Profile::Production;
        // Production refuses the development secret.
        config.auth.jwt_secret = "a-test-secret-of-at-least-thirty-two-bytes".into();
        // And metrics on the API's address.
        config.telemetry.metrics_addr = Some(crate::helpers::free_addr());
        tweak(config);
    })
    .await
}

/// What the app shows of itself: (introspection answered, GraphiQL status, suggestion given,
/// debug headers present).
async fn shown(app: &TestApp) -> (bool, StatusCode, bool, Vec<&'static str>) {
    let (_, body) = app
        .graphql(None, "{ __schema { queryType { name } } }", Value::Null)
        .await;
    let introspection = body["data"]["__schema"]["queryType"]["name"] == "Query";

    let graphiql = app.get("/graphql").await.status();

    let (_, body) = app
        .graphql(
            None,
            "{ postz(first: 1) { edges { node { id } } } }",
            Value::Null,
        )
        .await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("postz"),
        "the misspelt field is an error either way: {body}"
    );
    let suggestion = message.contains("Did you mean");

    // A first read of a fresh app: a cache miss, then SQL.
    let response = app
        .request(Method::POST, "/graphql")
        .json(&json!({ "query": "{ posts(first: 2) { edges { node { id title } } } }" }))
        .await;
    let headers = DEBUG_HEADERS
        .into_iter()
        .filter(|name| response.headers().contains_key(*name))
        .collect();
    (introspection, graphiql, suggestion, headers)
}

#[tokio::test]
async fn production_hides_introspection_graphiql_suggestions_and_debug_headers() {
    let app = production(|_| {}).await;

    let (introspection, graphiql, suggestion, headers) = shown(&app).await;

    assert!(!introspection, "no introspection");
    assert_eq!(graphiql, StatusCode::NOT_FOUND, "no GraphiQL page");
    assert!(!suggestion, "no field names suggested");
    assert!(headers.is_empty(), "no debug headers: {headers:?}");
}

#[tokio::test]
async fn dev_shows_them_all() {
    let app = TestApp::spawn_seeded(4, 8, |_| {}).await;

    let (introspection, graphiql, suggestion, headers) = shown(&app).await;

    assert!(introspection);
    assert_eq!(graphiql, StatusCode::OK);
    assert!(suggestion);
    assert!(
        headers.contains(&"server-timing") && headers.contains(&"x-db-route"),
        "{headers:?}"
    );
}

#[tokio::test]
async fn explicit_settings_win_over_the_production_profile() {
    let app = production(|config| {
        config.graphql.introspection = Some(true);
        config.graphql.graphiql = Some(true);
        config.telemetry.server_timing = Some(true);
    })
    .await;

    let (introspection, graphiql, suggestion, headers) = shown(&app).await;

    assert!(introspection);
    assert_eq!(graphiql, StatusCode::OK);
    assert!(suggestion, "suggestions follow introspection");
    // The SQL routes and cache outcomes stay dev-only: they describe the deployment.
    assert_eq!(headers, ["server-timing"]);
}
