//! The OpenAPI description against the code: every route the code mounts is described (or
//! is on the short list of what is not REST, with why), every described operation is routed,
//! and the docs page needs nothing from the internet.

use std::collections::{BTreeSet, HashMap};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, detail_of};

/// Mounted, but not REST operations, so not in the description.
const NOT_DESCRIBED: &[(&str, &str)] = &[
    ("/graphql", "GraphQL describes itself (introspection)"),
    ("/metrics", "Prometheus' text format, for the scraper"),
    ("/openapi.json", "the description itself"),
    ("/docs", "the docs page"),
];

/// `.route("<path>", ...)` first arguments in a source file.
fn routes_in(source: &str) -> Vec<String> {
    let mut routes = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let trimmed = rest.trim_start();
        if let Some(literal) = trimmed.strip_prefix('"')
            && let Some(end) = literal.find('"')
        {
            routes.push(literal[..end].to_owned());
        }
    }
    routes
}

/// Every route path the code mounts: the REST route table once per version prefix it is
/// nested under, and every other `.route(...)` under `src/http/` as written.
fn mounted_routes() -> BTreeSet<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http");
    let http = std::fs::read_to_string(format!("{root}/mod.rs")).expect("src/http/mod.rs");
    let prefixes: Vec<String> = http
        .match_indices(".nest(\"")
        .filter_map(|(at, _)| {
            let tail = &http[at + ".nest(\"".len()..];
            tail.find('"').map(|end| tail[..end].to_owned())
        })
        .collect();
    assert!(
        prefixes.contains(&"/v1".to_owned()) && prefixes.contains(&"/v2".to_owned()),
        "both versions are nested: {prefixes:?}"
    );
    let mut routes = BTreeSet::new();
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("a source file");
            let table = path.ends_with("rest/mod.rs");
            // The vendored assets (`assets.rs`) are mounted from a table, not `.route("...")`.
            for route in routes_in(&source) {
                if table {
                    routes.extend(prefixes.iter().map(|p| format!("{p}{route}")));
                } else {
                    routes.insert(route);
                }
            }
        }
    }
    routes
}

async fn description(app: &TestApp) -> Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn every_mounted_route_is_described_and_every_described_route_is_mounted() {
    // Arrange
    let app = TestApp::spawn().await;
    let spec = description(&app).await;
    assert_eq!(spec["openapi"], "3.1.0");
    let described: BTreeSet<String> = spec["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();

    // Act
    let mounted: BTreeSet<String> = mounted_routes()
        .into_iter()
        .filter(|route| !NOT_DESCRIBED.iter().any(|(path, _)| path == route))
        .collect();

    // Assert
    let undescribed: Vec<_> = mounted.difference(&described).collect();
    let unmounted: Vec<_> = described.difference(&mounted).collect();
    assert!(
        undescribed.is_empty(),
        "routes with no description: {undescribed:?}"
    );
    assert!(
        unmounted.is_empty(),
        "described but not mounted: {unmounted:?}"
    );
}

#[tokio::test]
async fn every_described_method_is_routed_and_every_other_method_is_a_405() {
    // Arrange: 160 requests from one address, not rate limited.
    let app = TestApp::spawn_with(|config| config.ratelimit.enabled = false).await;
    let spec = description(&app).await;
    let paths = spec["paths"].as_object().expect("paths");
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];

    // Act
    let mut wrong = HashMap::new();
    for (path, item) in paths {
        let concrete = path.replace("{id}", "1");
        for method in &methods {
            let described = item.get(method.as_str().to_lowercase()).is_some();
            let response = app.request(method.clone(), &concrete).await;
            let status = response.status();
            let routed = match status {
                StatusCode::METHOD_NOT_ALLOWED => false,
                StatusCode::NOT_FOUND => {
                    let problem: Value = response.json().await.expect("a problem");
                    detail_of(&problem) != "no route matches this path"
                }
                _ => true,
            };
            if routed != described {
                wrong.insert(format!("{method} {path}"), status);
            }
        }
    }

    // Assert
    assert!(
        wrong.is_empty(),
        "routed but not described, or described but not routed: {wrong:?}"
    );
}

#[tokio::test]
async fn the_docs_page_and_graphiql_load_everything_from_the_service_itself() {
    // Arrange
    let app = TestApp::spawn().await;

    for page in ["/docs", "/graphql"] {
        // Act
        let response = app.get(page).await;
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        let html = response.text().await.expect("HTML");

        // Assert: every script and stylesheet is a path on this service, and answers.
        let mut assets = Vec::new();
        for attribute in ["src=\"", "href=\""] {
            for (at, _) in html.match_indices(attribute) {
                let tail = &html[at + attribute.len()..];
                let end = tail.find('"').expect("a closing quote");
                assets.push(tail[..end].to_owned());
            }
        }
        assert!(
            assets.len() >= 2,
            "{page}: a script and a stylesheet: {assets:?}"
        );
        for asset in &assets {
            assert!(
                asset.starts_with('/'),
                "{page}: {asset} is loaded from elsewhere"
            );
            let response = app.get(asset).await;
            assert_eq!(response.status(), StatusCode::OK, "{asset}");
            assert!(
                response.bytes().await.expect("a body").len() > 10_000,
                "{asset} is the real asset"
            );
        }
    }
}
