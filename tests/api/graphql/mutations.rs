//! Mutations enforce the same rules as REST v1 with the same meanings: each refusal is tried
//! through both APIs, and the GraphQL code must be the one of the REST status.

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{code, id};
use crate::helpers::{TestApp, TestUser};

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

/// Asserts that REST answered `status` and GraphQL the matching code, without data.
async fn same_refusal(
    what: &str,
    rest: Response,
    status: StatusCode,
    graphql: (StatusCode, Value),
) {
    assert_eq!(rest.status(), status, "REST: {what}");
    let (http, body) = graphql;
    assert_eq!(http, StatusCode::OK, "GraphQL: {what}: {body}");
    assert_eq!(code(&body), code_for(status), "GraphQL: {what}: {body}");
    assert!(body["data"].is_null(), "GraphQL: {what}: no data: {body}");
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
    let post_id = post["id"].as_i64().expect("post id");
    let rest = |method: Method, path: String, who: Option<&TestUser>, body: Value| {
        let app = &app;
        let token = who.map(|u| u.token.clone());
        async move {
            app.request(method, &path, token.as_deref(), Some(&body))
                .await
        }
    };

    // Act and assert, case by case.
    same_refusal(
        "create a post without a token",
        rest(
            Method::POST,
            "/v1/posts".into(),
            None,
            json!({ "title": "t", "body": "b" }),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        gql(
            &app,
            None,
            r#"mutation { createPost(title: "t", body: "b") { id } }"#,
        )
        .await,
    )
    .await;
    let (_, invalid) = gql(
        &app,
        Some(&alice),
        r#"mutation { createPost(title: " ", body: "b") { id } }"#,
    )
    .await;
    same_refusal(
        "create a post with a blank title",
        rest(
            Method::POST,
            "/v1/posts".into(),
            Some(&alice),
            json!({ "title": " ", "body": "b" }),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        (StatusCode::OK, invalid.clone()),
    )
    .await;
    assert_eq!(
        invalid["errors"][0]["extensions"]["errors"][0]["field"], "title",
        "the invalid field is named: {invalid}"
    );
    same_refusal(
        "change someone else's post",
        rest(
            Method::PATCH,
            format!("/v1/posts/{post_id}"),
            Some(&bob),
            json!({ "title": "mine" }),
        )
        .await,
        StatusCode::FORBIDDEN,
        gql(
            &app,
            Some(&bob),
            &format!(r#"mutation {{ updatePost(id: "{post_id}", title: "mine") {{ id }} }}"#),
        )
        .await,
    )
    .await;
    same_refusal(
        "change a post that does not exist",
        rest(
            Method::PATCH,
            "/v1/posts/999".into(),
            Some(&alice),
            json!({ "title": "x" }),
        )
        .await,
        StatusCode::NOT_FOUND,
        gql(
            &app,
            Some(&alice),
            r#"mutation { updatePost(id: "999", title: "x") { id } }"#,
        )
        .await,
    )
    .await;
    same_refusal(
        "change a post with a malformed id",
        rest(
            Method::PATCH,
            "/v1/posts/abc".into(),
            Some(&alice),
            json!({ "title": "x" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        gql(
            &app,
            Some(&alice),
            r#"mutation { updatePost(id: "abc", title: "x") { id } }"#,
        )
        .await,
    )
    .await;
    same_refusal(
        "delete someone else's post",
        rest(
            Method::DELETE,
            format!("/v1/posts/{post_id}"),
            Some(&bob),
            Value::Null,
        )
        .await,
        StatusCode::FORBIDDEN,
        gql(
            &app,
            Some(&bob),
            &format!(r#"mutation {{ deletePost(id: "{post_id}") }}"#),
        )
        .await,
    )
    .await;
    same_refusal(
        "change someone else's account",
        rest(
            Method::PATCH,
            format!("/v1/users/{}", alice.id),
            Some(&bob),
            json!({ "name": "Eve" }),
        )
        .await,
        StatusCode::FORBIDDEN,
        gql(
            &app,
            Some(&bob),
            &format!(
                r#"mutation {{ updateUser(id: "{}", name: "Eve") {{ id }} }}"#,
                alice.id
            ),
        )
        .await,
    )
    .await;
    same_refusal(
        "change one's email to a malformed one",
        rest(
            Method::PATCH,
            format!("/v1/users/{}", alice.id),
            Some(&alice),
            json!({ "email": "nope" }),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        gql(
            &app,
            Some(&alice),
            &format!(
                r#"mutation {{ updateUser(id: "{}", email: "nope") {{ id }} }}"#,
                alice.id
            ),
        )
        .await,
    )
    .await;
    same_refusal(
        "delete someone else's account",
        rest(
            Method::DELETE,
            format!("/v1/users/{}", alice.id),
            Some(&bob),
            Value::Null,
        )
        .await,
        StatusCode::FORBIDDEN,
        gql(
            &app,
            Some(&bob),
            &format!(r#"mutation {{ deleteUser(id: "{}") }}"#, alice.id),
        )
        .await,
    )
    .await;
    same_refusal(
        "register a taken email, in other case",
        rest(Method::POST, "/v1/auth/register".into(), None, json!({ "email": "ALICE@example.com", "name": "A", "password": "long enough" })).await,
        StatusCode::CONFLICT,
        gql(&app, None, r#"mutation { register(email: "Alice@Example.com", name: "A", password: "long enough") { id } }"#).await,
    )
    .await;
    same_refusal(
        "register with every field invalid",
        rest(
            Method::POST,
            "/v1/auth/register".into(),
            None,
            json!({ "email": "x", "name": "", "password": "short" }),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        gql(
            &app,
            None,
            r#"mutation { register(email: "x", name: "", password: "short") { id } }"#,
        )
        .await,
    )
    .await;
    same_refusal(
        "log in with a wrong password",
        rest(Method::POST, "/v1/auth/login".into(), None, json!({ "email": "alice@example.com", "password": "wrong password" })).await,
        StatusCode::UNAUTHORIZED,
        gql(&app, None, r#"mutation { login(email: "alice@example.com", password: "wrong password") { accessToken } }"#).await,
    )
    .await;

    // Assert: none of that changed anything.
    app.wait_for_replicas().await;
    let (_, body) = gql(
        &app,
        None,
        &format!(r#"{{ post(id: "{post_id}") {{ title author {{ name }} }} }}"#),
    )
    .await;
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
