//! Mutations enforce the same rules as REST v1 with the same meanings: each refusal is tried
//! through both APIs, and the GraphQL code must be the one of the REST status.

use insta::assert_snapshot;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{code, extensions_line, id};
use crate::helpers::{ResponseExt, TestApp, TestUser};

/// The `extensions.code` that means what a REST status means.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "BAD_USER_INPUT",
        401 => "UNAUTHENTICATED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        409 => "CONFLICT",
        other => panic!("no GraphQL code expected for {other}"),
    }
}

async fn gql(app: &TestApp, who: Option<&TestUser>, query: &str) -> (StatusCode, Value) {
    app.graphql(who.map(|u| u.token.as_str()), query, Value::Null)
        .await
}

#[tokio::test]
async fn refusals_have_the_same_meaning_as_in_rest() {
    // Arrange: Alice (shard 0) wrote a post; Bob (shard 1) did not.
    let app = TestApp::spawn().await;
    let alice = app.register("alice@example.com", "Alice").await;
    let bob = app.register("bob@example.com", "Bob").await;
    let post = app.create_post(&alice, "Alice's post").await;
    let (p, a) = (post["id"].as_i64().expect("post id"), alice.id);
    let register = |email: &str, name: &str, password: &str| {
        (
            json!({ "email": email, "name": name, "password": password }),
            format!(
                r#"mutation {{ register(email: "{email}", name: "{name}", password: "{password}") {{ id }} }}"#
            ),
        )
    };
    let (taken, taken_gql) = register("ALICE@example.com", "A", "long enough");
    let (invalid, invalid_gql) = register("x", "", "short");
    // (what, who, REST method, path and body, REST status, the GraphQL mutation)
    let cases = [
        ("create a post without a token", None, Method::POST, "/v1/posts".to_owned(), json!({ "title": "t", "body": "b" }), StatusCode::UNAUTHORIZED, r#"mutation { createPost(title: "t", body: "b") { id } }"#.to_owned()),
        ("create a post with a blank title", Some(&alice), Method::POST, "/v1/posts".to_owned(), json!({ "title": " ", "body": "b" }), StatusCode::UNPROCESSABLE_ENTITY, r#"mutation { createPost(title: " ", body: "b") { id } }"#.to_owned()),
        ("change someone else's post", Some(&bob), Method::PATCH, format!("/v1/posts/{p}"), json!({ "title": "mine" }), StatusCode::FORBIDDEN, format!(r#"mutation {{ updatePost(id: "{p}", title: "mine") {{ id }} }}"#)),
        ("change a post that does not exist", Some(&alice), Method::PATCH, "/v1/posts/999".to_owned(), json!({ "title": "x" }), StatusCode::NOT_FOUND, r#"mutation { updatePost(id: "999", title: "x") { id } }"#.to_owned()),
        ("change a post by a malformed id", Some(&alice), Method::PATCH, "/v1/posts/abc".to_owned(), json!({ "title": "x" }), StatusCode::BAD_REQUEST, r#"mutation { updatePost(id: "abc", title: "x") { id } }"#.to_owned()),
        ("delete someone else's post", Some(&bob), Method::DELETE, format!("/v1/posts/{p}"), Value::Null, StatusCode::FORBIDDEN, format!(r#"mutation {{ deletePost(id: "{p}") }}"#)),
        ("change someone else's account", Some(&bob), Method::PATCH, format!("/v1/users/{a}"), json!({ "name": "Eve" }), StatusCode::FORBIDDEN, format!(r#"mutation {{ updateUser(id: "{a}", name: "Eve") {{ id }} }}"#)),
        ("change one's email to a malformed one", Some(&alice), Method::PATCH, format!("/v1/users/{a}"), json!({ "email": "nope" }), StatusCode::UNPROCESSABLE_ENTITY, format!(r#"mutation {{ updateUser(id: "{a}", email: "nope") {{ id }} }}"#)),
        ("delete someone else's account", Some(&bob), Method::DELETE, format!("/v1/users/{a}"), Value::Null, StatusCode::FORBIDDEN, format!(r#"mutation {{ deleteUser(id: "{a}") }}"#)),
        ("register a taken email, in other case", None, Method::POST, "/v1/auth/register".to_owned(), taken, StatusCode::CONFLICT, taken_gql),
        ("register with every field invalid", None, Method::POST, "/v1/auth/register".to_owned(), invalid, StatusCode::UNPROCESSABLE_ENTITY, invalid_gql),
        ("log in with a wrong password", None, Method::POST, "/v1/auth/login".to_owned(), json!({ "email": "alice@example.com", "password": "wrong password" }), StatusCode::UNAUTHORIZED, r#"mutation { login(email: "alice@example.com", password: "wrong password") { accessToken } }"#.to_owned()),
    ];

    let mut extensions = Vec::new();

    for (what, who, method, path, body, status, mutation) in cases {
        // Act
        let rest = app.request(method, &path).bearer(who).json(&body).await;
        let token = who.map(|u| u.token.as_str());
        let (http, graphql) = app.graphql(token, &mutation, Value::Null).await;

        // Assert: the REST status, and the GraphQL code that means the same.
        assert_eq!(rest.status(), status, "REST: {what}");
        assert_eq!(http, StatusCode::OK, "GraphQL: {what}: {graphql}");
        assert_eq!(
            code(&graphql),
            code_for(status),
            "GraphQL: {what}: {graphql}"
        );
        assert!(
            graphql["data"].is_null(),
            "GraphQL: {what}: no data: {graphql}"
        );
        extensions.push(extensions_line(what, &graphql));
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            let rest = rest.json_body().await;
            let fields = |errors: &Value| -> Vec<Value> {
                errors
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| e["field"].clone())
                    .collect()
            };
            assert_eq!(
                fields(&graphql["errors"][0]["extensions"]["errors"]),
                fields(&rest["errors"]),
                "{what}: the same invalid fields"
            );
        }
    }
    // The extensions exactly: each refusal's code and problem type.
    assert_snapshot!(extensions.join("\n"), @r#"
    create a post without a token: UNAUTHENTICATED https://scalable-api.dev/problems/unauthorized
    create a post with a blank title: BAD_USER_INPUT https://scalable-api.dev/problems/validation
    change someone else's post: FORBIDDEN https://scalable-api.dev/problems/forbidden
    change a post that does not exist: NOT_FOUND https://scalable-api.dev/problems/not-found
    change a post by a malformed id: BAD_USER_INPUT https://scalable-api.dev/problems/bad-request
    delete someone else's post: FORBIDDEN https://scalable-api.dev/problems/forbidden
    change someone else's account: FORBIDDEN https://scalable-api.dev/problems/forbidden
    change one's email to a malformed one: BAD_USER_INPUT https://scalable-api.dev/problems/validation
    delete someone else's account: FORBIDDEN https://scalable-api.dev/problems/forbidden
    register a taken email, in other case: CONFLICT https://scalable-api.dev/problems/conflict
    register with every field invalid: BAD_USER_INPUT https://scalable-api.dev/problems/validation
    log in with a wrong password: UNAUTHENTICATED https://scalable-api.dev/problems/unauthorized
    "#);

    // Assert: none of that changed anything.
    app.wait_for_replicas().await;
    let query = format!(r#"{{ post(id: "{p}") {{ title author {{ name }} }} }}"#);
    let (_, body) = app.graphql(None, &query, Value::Null).await;
    assert_eq!(
        body["data"]["post"],
        json!({ "title": "Alice's post", "author": { "name": "Alice" } })
    );
}

#[tokio::test]
async fn owners_change_and_delete_what_is_theirs() {
    let app = TestApp::spawn().await;

    // Register and log in through GraphQL: the registrant sees their own email, as in REST.
    let (_, body) = gql(&app, None, r#"mutation { register(email: "Ada@Example.com", name: "Ada", password: "correct horse") { id email } }"#).await;
    assert_eq!(
        body["data"]["register"]["email"], "ada@example.com",
        "{body}"
    );
    let ada_id = id(&body["data"]["register"]);
    let (_, body) = gql(&app, None, r#"mutation { login(email: "ada@example.com", password: "correct horse") { accessToken tokenType expiresIn } }"#).await;
    let token = body["data"]["login"]["accessToken"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert_eq!(body["data"]["login"]["tokenType"], "Bearer");
    let ada = TestUser {
        id: ada_id,
        email: "ada@example.com".into(),
        password: "correct horse".into(),
        token,
    };
    let other = app.register("other@example.com", "Other").await;
    // `createPost { author }` reads the author from a replica, which may not have replayed the
    // registration yet; read-your-writes routing is the replica-consistency issue's job.
    app.wait_for_replicas().await;

    // A post, created, changed and deleted by its author.
    let (_, body) = gql(
        &app,
        Some(&ada),
        r#"mutation { createPost(title: "Hello", body: "first") { id title author { id } } }"#,
    )
    .await;
    let post = &body["data"]["createPost"];
    assert_eq!(
        (post["title"].as_str(), id(&post["author"])),
        (Some("Hello"), ada_id),
        "{body}"
    );
    let post_id = id(post);
    let (_, body) = gql(
        &app,
        Some(&ada),
        &format!(r#"mutation {{ updatePost(id: "{post_id}", body: "edited") {{ title body }} }}"#),
    )
    .await;
    assert_eq!(
        body["data"]["updatePost"],
        json!({ "title": "Hello", "body": "edited" })
    );
    let (_, body) = gql(
        &app,
        Some(&ada),
        &format!(r#"mutation {{ deletePost(id: "{post_id}") }}"#),
    )
    .await;
    assert_eq!(body["data"]["deletePost"], post_id.to_string());

    // The email is for its owner only, wherever the user appears.
    app.wait_for_replicas().await;
    let query = format!(r#"{{ user(id: "{ada_id}") {{ email }} viewer {{ id email }} }}"#);
    let (_, anonymous) = gql(&app, None, &query).await;
    assert_eq!(
        anonymous["data"],
        json!({ "user": { "email": null }, "viewer": null })
    );
    let (_, stranger) = gql(&app, Some(&other), &query).await;
    assert_eq!(stranger["data"]["user"]["email"], Value::Null);
    assert_eq!(id(&stranger["data"]["viewer"]), other.id);
    let (_, own) = gql(&app, Some(&ada), &query).await;
    assert_eq!(own["data"]["user"]["email"], "ada@example.com");
    assert_eq!(own["data"]["viewer"]["email"], "ada@example.com");

    // The account, changed and deleted by its owner.
    let (_, body) = gql(
        &app,
        Some(&ada),
        &format!(r#"mutation {{ updateUser(id: "{ada_id}", name: "Ada L.") {{ name email }} }}"#),
    )
    .await;
    assert_eq!(
        body["data"]["updateUser"],
        json!({ "name": "Ada L.", "email": "ada@example.com" })
    );
    let (_, body) = gql(
        &app,
        Some(&ada),
        &format!(r#"mutation {{ deleteUser(id: "{ada_id}") }}"#),
    )
    .await;
    assert_eq!(body["data"]["deleteUser"], ada_id.to_string());
    app.wait_for_replicas().await;
    let (_, body) = gql(
        &app,
        None,
        &format!(r#"{{ user(id: "{ada_id}") {{ id }} }}"#),
    )
    .await;
    assert_eq!(body["data"]["user"], Value::Null, "{body}");
}
