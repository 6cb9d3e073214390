//! The error contract: problem+json (RFC 9457) bodies, checked in shape by
//! [`assert_problem`] and pinned exactly by insta inline snapshots of [`pretty`] text.

use reqwest::{Response, StatusCode};
use serde_json::Value;

use super::client::ResponseExt;

/// Asserts a problem+json response with `status` and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode, what: &str) -> Value {
    assert_eq!(response.status(), status, "{what}");
    assert_eq!(
        response.header_str("content-type"),
        "application/problem+json",
        "{what}: content type"
    );
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(
        body["status"].as_u64(),
        Some(u64::from(status.as_u16())),
        "{what}: status field"
    );
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("https://scalable-api.dev/problems/")),
        "{what}: type field in {body}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{what}: title and detail in {body}"
    );
    body
}

/// [`assert_problem`], and its `detail` contains `needle`.
pub async fn assert_problem_mentioning(
    response: Response,
    status: StatusCode,
    needle: &str,
    what: &str,
) -> Value {
    let problem = assert_problem(response, status, what).await;
    assert!(
        detail_of(&problem).contains(needle),
        "{what}: the detail mentions {needle:?}: {problem}"
    );
    problem
}

pub fn detail_of(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap_or_default()
}

/// `value` as indented JSON (keys sorted: serde_json's default map), for an inline snapshot.
///
/// What varies per run (ids, timestamps, tokens) must not reach a snapshot: replace it first,
/// e.g. `pretty(&body).replace(&id.to_string(), "[id]")`.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("a serde_json::Value always serialises")
}
