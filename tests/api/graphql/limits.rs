//! Abusive queries are refused with a clear error before any SQL runs; malformed requests get
//! GraphQL errors, never a 5xx.

use insta::assert_snapshot;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{code, extensions_line, statements_during, total};
use crate::helpers::{ResponseExt, TestApp};

#[tokio::test]
async fn abusive_queries_are_refused_before_any_statement_runs() {
    let app = TestApp::spawn().await;
    let mut deep = "id".to_owned();
    for _ in 0..6 {
        deep = format!("posts(first: 1) {{ author {{ {deep} }} }}");
    }
    let mut bomb =
        String::from("{ users { edges { node { ...f20 } } } } fragment f0 on User { id }");
    for i in 1..=20 {
        bomb.push_str(&format!(
            " fragment f{i} on User {{ ...f{j} a{i}: name ...f{j} }}",
            j = i - 1
        ));
    }
    let cases = [
        (
            "nesting past graphql.max_depth",
            format!("{{ users(first: 1) {{ edges {{ node {{ {deep} }} }} }} }}"),
            "QUERY_TOO_DEEP",
            "above the limit of 10",
        ),
        (
            "100 users with 100 posts each",
            "{ users(first: 100) { edges { node { posts(first: 100) { id title author { id name } } } } } }".to_owned(),
            "QUERY_TOO_COMPLEX",
            "above the limit of 20000",
        ),
        (
            "a page past api.max_page_size",
            "{ posts(first: 1000) { edges { node { id } } } }".to_owned(),
            "BAD_USER_INPUT",
            "between 1 and 100",
        ),
        (
            "a fragment bomb (2^20 fields)",
            bomb,
            "QUERY_TOO_COMPLEX",
            "once its fragments are expanded",
        ),
    ];

    for (what, query, expected_code, says) in cases {
        let (counts, (status, body)) =
            statements_during(&app, app.graphql(None, &query, Value::Null)).await;

        assert_eq!(status, StatusCode::OK, "{what}: {body}");
        assert_eq!(code(&body), expected_code, "{what}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: a clear message: {message}");
        assert!(body["data"].is_null(), "{what}: no data");
        assert_eq!(
            total(&counts),
            0,
            "{what}: refused before any SQL: {counts:?}"
        );
    }
}

#[tokio::test]
async fn malformed_graphql_gets_graphql_errors_never_a_5xx() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "a syntax error",
            json!({ "query": "{ users(first: 5) { edges { node { id } }" }),
            "GRAPHQL_PARSE_FAILED",
        ),
        ("no query at all", json!({}), "GRAPHQL_PARSE_FAILED"),
        (
            "an unknown field",
            json!({ "query": "{ users { edges { node { id password } } } }" }),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "an unknown argument",
            json!({ "query": "{ users(last: 5) { edges { node { id } } } }" }),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "a variable of the wrong type",
            json!({
                "query": "query ($n: Int!) { users(first: $n) { edges { node { id } } } }",
                "variables": { "n": "ten" }
            }),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "a bad cursor",
            json!({ "query": "{ users(after: \"not-a-cursor\") { edges { node { id } } } }" }),
            "BAD_USER_INPUT",
        ),
        (
            "a malformed id",
            json!({ "query": "{ user(id: \"-1\") { id } }" }),
            "BAD_USER_INPUT",
        ),
    ];

    for (what, body, expected_code) in cases {
        let response = app.request(Method::POST, "/graphql").json(&body).await;

        let body = response.expect_json(StatusCode::OK, what).await;
        let errors = body["errors"].as_array().map_or(0, Vec::len);
        assert!(errors > 0, "{what}: an errors array in {body}");
        assert_eq!(code(&body), expected_code, "{what}: {body}");
    }
}

#[tokio::test]
async fn requests_that_are_not_graphql_get_an_errors_array_with_their_status() {
    let app = TestApp::spawn_with(|config| config.http.body_limit_bytes = 1024).await;
    let post = |content_type: &str, body: String| {
        app.request(Method::POST, "/graphql")
            .raw_body(Some(content_type), body)
    };
    let huge = format!(
        "{{\"query\": \"{{ users {{ edges {{ node {{ id }} }} }} }}\", \"x\": \"{}\"}}",
        "x".repeat(4096)
    );
    let cases = [
        (
            "broken JSON",
            post("application/json", "{\"query\": ".into()).await,
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
        ),
        (
            "a batch",
            post(
                "application/json",
                "[{\"query\": \"{ viewer { id } }\"}]".into(),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "BAD_USER_INPUT",
        ),
        (
            "not JSON",
            post("application/graphql", "{ viewer { id } }".into()).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_REQUEST",
        ),
        (
            "a body past http.body_limit_bytes",
            post("application/json", huge).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "BAD_REQUEST",
        ),
        (
            "a forged token",
            app.request(Method::POST, "/graphql")
                .bearer("not.a.token")
                .json(&json!({ "query": "{ viewer { id } }" }))
                .await,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
        ),
    ];

    let mut extensions = Vec::new();
    for (what, response, status, expected_code) in cases {
        assert_eq!(response.status(), status, "{what}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(response.headers()["www-authenticate"], "Bearer", "{what}");
        }
        let body = response.json_body().await;
        assert_eq!(code(&body), expected_code, "{what}: {body}");
        extensions.push(extensions_line(what, &body));
    }
    // The extensions exactly: each error's code and problem type.
    assert_snapshot!(extensions.join("\n"), @r#"
    broken JSON: BAD_USER_INPUT https://scalable-api.dev/problems/bad-request
    a batch: BAD_USER_INPUT https://scalable-api.dev/problems/invalid-body
    not JSON: BAD_REQUEST https://scalable-api.dev/problems/unsupported-media-type
    a body past http.body_limit_bytes: BAD_REQUEST https://scalable-api.dev/problems/payload-too-large
    a forged token: UNAUTHENTICATED https://scalable-api.dev/problems/unauthorized
    "#);
}

#[tokio::test]
async fn get_serves_the_graphiql_page() {
    let app = TestApp::spawn().await;

    let response = app.get("/graphql").await;

    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.expect("a page");
    assert!(
        page.contains("graphiql") && page.contains("/graphql"),
        "{page}"
    );
}
