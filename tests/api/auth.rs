//! Registration, login and ownership: who may see and change what, and that credentials never
//! leave the service.

use insta::assert_snapshot;
use reqwest::{Response, StatusCode, header};
use scalable_api::domain::Tier;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{
    PASSWORD, ResponseExt, TestApp, assert_problem, assert_problem_mentioning, pretty,
    statement_calls,
};

/// The primary of the shard that owns `id` (a user or a post id), bypassing the app.
async fn owning_primary(app: &TestApp, id: i64) -> PgPool {
    let shard = app
        .state
        .db
        .cluster()
        .owner(id)
        .unwrap_or_else(|| panic!("id {id} belongs to a shard"));
    app.primary(usize::from(shard.id())).await
}

/// A user's row on its shard primary, `None` once it is gone.
async fn user_row(app: &TestApp, id: i64) -> Option<(String, String, String, String)> {
    sqlx::query_as("SELECT email, name, password_hash, updated_at::text FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&owning_primary(app, id).await)
        .await
        .expect("read the user row on its primary")
}

/// A post's row on its shard primary, `None` once it is gone.
async fn post_row(app: &TestApp, id: i64) -> Option<(i64, String, String, String)> {
    sqlx::query_as("SELECT user_id, title, body, updated_at::text FROM posts WHERE id = $1")
        .bind(id)
        .fetch_optional(&owning_primary(app, id).await)
        .await
        .expect("read the post row on its primary")
}

fn post_id(post: &Value) -> i64 {
    post["id"].as_i64().expect("a post id")
}

#[tokio::test]
async fn registering_returns_201_with_a_location_and_the_user_with_their_own_email() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let response = app
        .auth()
        .register("ada@example.com", "Ada Lovelace", PASSWORD)
        .await;

    // Assert
    let location = response.header_str("location");
    let user = response
        .expect_json(StatusCode::CREATED, "registering")
        .await;
    let id = user["id"].as_i64().expect("an integer id");
    assert_eq!(
        location,
        format!("/v1/users/{id}"),
        "Location of the new user"
    );
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(
        user["email"], "ada@example.com",
        "the user sees their email"
    );
    assert!(user["created_at"].is_string(), "created_at in {user}");
    let mut keys: Vec<&str> = user
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["created_at", "email", "id", "name"],
        "exactly the documented fields, no password or hash"
    );
    let row = user_row(&app, id).await.expect("the row is on its shard");
    assert_eq!(row.0, "ada@example.com");
}

#[tokio::test]
async fn no_response_ever_contains_a_password_or_its_hash() {
    // Arrange
    let app = TestApp::spawn().await;
    let new_password = "a brand new passphrase";
    let mut responses: Vec<(String, String)> = Vec::new();
    let text = async |response: Response| response.text().await.expect("a readable body");

    // Act: every route that touches a user, as owner, stranger and anonymous.
    let registered = text(
        app.auth()
            .register("ada@example.com", "Ada", PASSWORD)
            .await,
    )
    .await;
    let ada_id = serde_json::from_str::<Value>(&registered).expect("a JSON user")["id"]
        .as_i64()
        .expect("an id");
    responses.push(("register".into(), registered));
    let ada_token = app.login("ada@example.com", PASSWORD).await;
    let bob = app.register("bob@example.com", "Bob").await;
    let auth = app.auth();
    let attempts = [
        ("login", auth.login("ada@example.com", PASSWORD).await),
        (
            "login with a wrong password",
            auth.login("ada@example.com", "wrong password").await,
        ),
        (
            "registering a taken email",
            auth.register("ada@example.com", "Again", PASSWORD).await,
        ),
        (
            "registering with an invalid password",
            auth.register("x@example.com", "X", "secret1").await,
        ),
    ];
    for (what, response) in attempts {
        responses.push((what.into(), text(response).await));
    }
    app.wait_for_replicas().await;
    for (who, token) in [
        ("the owner", Some(ada_token.as_str())),
        ("another user", Some(bob.token.as_str())),
        ("anonymous", None),
    ] {
        for (path, request) in [
            ("/v1/users/{id}", app.users().get(ada_id)),
            ("/v1/users", app.users().list("")),
        ] {
            let response = request.bearer(token).await;
            responses.push((format!("GET {path} as {who}"), text(response).await));
        }
    }
    let patch = app
        .users()
        .patch(ada_id, &ada_token, json!({ "name": "Countess" }))
        .await;
    responses.push(("PATCH name".into(), text(patch).await));
    let stored_before = user_row(&app, ada_id).await.expect("ada's row").2;
    let patch = app
        .users()
        .patch(ada_id, &ada_token, json!({ "password": new_password }))
        .await;
    responses.push(("PATCH password".into(), text(patch).await));
    let stored_after = user_row(&app, ada_id).await.expect("ada's row").2;

    // Assert
    assert_ne!(
        stored_before, stored_after,
        "the password change was stored"
    );
    assert_eq!(responses.len(), 13, "every response was recorded");
    for (what, text) in &responses {
        for secret in [
            PASSWORD,
            new_password,
            "secret1",
            "password_hash",
            "$argon2",
            stored_before.as_str(),
            stored_after.as_str(),
        ] {
            assert!(
                !text.contains(secret),
                "{what}: the response must not contain {secret:?}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn logging_in_returns_a_bearer_token_for_the_user_and_its_lifetime() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act
    let response = app.auth().login("ada@example.com", PASSWORD).await;

    // Assert
    let body = response.expect_json(StatusCode::OK, "logging in").await;
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["access_token", "expires_in", "token_type"], "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["expires_in"].as_u64(),
        Some(app.state.config.auth.access_token_ttl.as_secs()),
        "expires_in is the configured lifetime"
    );
    let token = body["access_token"].as_str().expect("a token string");
    let (id, _tier) = app
        .state
        .jwt
        .verify(token)
        .expect("the token verifies with the app's keys");
    assert_eq!(id, ada.id, "the token's subject is the user");
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_get_the_same_401() {
    // Arrange
    let app = TestApp::spawn().await;
    app.register("ada@example.com", "Ada").await;
    let attempts = [
        ("a wrong password", "ada@example.com", "not the password"),
        ("an unknown email", "nobody@example.com", PASSWORD),
        ("a malformed email", "not-an-email", PASSWORD),
        ("an empty password", "ada@example.com", ""),
    ];

    let mut answers = Vec::new();
    for (what, email, password) in attempts {
        // Act
        let response = app.auth().login(email, password).await;

        // Assert
        let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
        let body = assert_problem(response, StatusCode::UNAUTHORIZED, what).await;
        answers.push((what, challenge, body));
    }
    let (first, first_challenge, first_body) = &answers[0];
    for (what, challenge, body) in &answers[1..] {
        assert_eq!(
            (challenge, body),
            (first_challenge, first_body),
            "{what} and {first} must be indistinguishable"
        );
    }
}

#[tokio::test]
async fn emails_are_case_insensitive_for_registering_and_logging_in() {
    // Arrange
    let app = TestApp::spawn().await;

    // Act
    let response = app
        .auth()
        .register("Ada@Example.com", "Ada", PASSWORD)
        .await;

    // Assert
    let user = response
        .expect_json(StatusCode::CREATED, "registering")
        .await;
    assert_eq!(user["email"], "ada@example.com", "stored normalised");
    for email in ["ada@example.com", "ADA@EXAMPLE.COM", "  Ada@Example.com "] {
        let response = app.auth().login(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK, "logging in as {email:?}");
    }
    for email in ["ada@example.com", "ADA@example.COM"] {
        let response = app.auth().register(email, "Impostor", PASSWORD).await;
        let what = format!("registering {email} again");
        assert_problem_mentioning(response, StatusCode::CONFLICT, "already registered", &what)
            .await;
    }
}

#[tokio::test]
async fn a_user_s_email_is_shown_to_that_user_only() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let bob = app.register("bob@example.com", "Bob").await;
    app.wait_for_replicas().await;

    for (who, viewer, email) in [
        ("ada", Some(&ada), Some("ada@example.com")),
        ("bob", Some(&bob), None),
        ("anonymous", None, None),
    ] {
        // Act
        let response = app.users().get(ada.id).bearer(viewer).await;
        let list = app.users().list("").bearer(viewer).await;

        // Assert
        let user = response
            .expect_json(StatusCode::OK, &format!("GET ada as {who}"))
            .await;
        assert_eq!(user["id"].as_i64(), Some(ada.id));
        assert_eq!(user["name"], "Ada");
        assert_eq!(
            user.get("email").and_then(Value::as_str),
            email,
            "ada's email seen by {who}: {user}"
        );
        let list = list
            .expect_json(StatusCode::OK, &format!("GET /v1/users as {who}"))
            .await;
        let emails: Vec<(i64, Option<&str>)> = list
            .as_array()
            .expect("a list")
            .iter()
            .map(|u| {
                (
                    u["id"].as_i64().expect("an id"),
                    u.get("email").and_then(Value::as_str),
                )
            })
            .collect();
        let expected: Vec<(i64, Option<&str>)> = vec![
            (ada.id, (who == "ada").then_some("ada@example.com")),
            (bob.id, (who == "bob").then_some("bob@example.com")),
        ];
        assert_eq!(emails, expected, "emails in the user list seen by {who}");
    }
}

#[tokio::test]
async fn changing_or_deleting_another_user_is_forbidden_and_changes_nothing() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let bob = app.register("bob@example.com", "Bob").await;
    let post = app.create_post(&ada, "mine").await;
    let before = user_row(&app, ada.id).await.expect("ada's row");
    let users = app.users();
    let attempts = [
        (
            "PATCH name",
            users.patch(ada.id, &bob, json!({ "name": "Pwned" })),
        ),
        (
            "PATCH email",
            users.patch(ada.id, &bob, json!({ "email": "bob2@example.com" })),
        ),
        (
            "PATCH password",
            users.patch(ada.id, &bob, json!({ "password": "bob's choice" })),
        ),
        ("DELETE", users.delete(ada.id, &bob)),
    ];
    let mut first = None;

    for (what, request) in attempts {
        // Act
        let response = request.await;

        // Assert
        let what = format!("bob: {what} of ada");
        let problem = assert_problem(response, StatusCode::FORBIDDEN, &what).await;
        first.get_or_insert(problem);
    }
    // The exact body of the first, a PATCH.
    let first = first.expect("the attempts ran");
    assert_snapshot!(pretty(&first), @r#"
    {
      "detail": "only the user themself may change their account",
      "status": 403,
      "title": "Not allowed",
      "type": "https://scalable-api.dev/problems/forbidden"
    }
    "#);
    assert_eq!(
        user_row(&app, ada.id).await.as_ref(),
        Some(&before),
        "ada's row on her shard primary is unchanged"
    );
    assert!(
        post_row(&app, post_id(&post)).await.is_some(),
        "ada's post is still there"
    );
    let response = app.auth().login("bob2@example.com", PASSWORD).await;
    assert_problem(response, StatusCode::UNAUTHORIZED, "the email bob tried").await;
    app.login("ada@example.com", PASSWORD).await;
}

#[tokio::test]
async fn changing_or_deleting_a_post_someone_else_wrote_is_forbidden_and_changes_nothing() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let bob = app.register("bob@example.com", "Bob").await;
    let post = app.create_post(&ada, "ada's post").await;
    let id = post_id(&post);
    let before = post_row(&app, id).await.expect("the post row");
    let posts = app.posts();

    for (what, request) in [
        (
            "PATCH title",
            posts.patch(id, &bob, json!({ "title": "bob was here" })),
        ),
        (
            "PATCH body",
            posts.patch(id, &bob, json!({ "body": "bob was here" })),
        ),
        ("DELETE", posts.delete(id, &bob)),
    ] {
        // Act
        let response = request.await;

        // Assert
        let what = format!("bob: {what} of ada's post");
        assert_problem(response, StatusCode::FORBIDDEN, &what).await;
    }
    assert_eq!(
        post_row(&app, id).await.as_ref(),
        Some(&before),
        "the post on its shard primary is unchanged"
    );
    assert_eq!(before.0, ada.id, "and still ada's");
}

#[tokio::test]
async fn the_owner_can_change_their_name() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act
    let response = app
        .users()
        .patch(ada.id, &ada, json!({ "name": "  Countess of Lovelace " }))
        .await;

    // Assert
    let user = response.expect_json(StatusCode::OK, "PATCH").await;
    assert_eq!(user["name"], "Countess of Lovelace", "trimmed");
    assert_eq!(
        user["email"], "ada@example.com",
        "the owner sees their email"
    );
    app.wait_for_replicas().await;
    let shown = app.users().get(ada.id).await.json_body().await;
    assert_eq!(shown["name"], "Countess of Lovelace", "GET sees the change");
}

#[tokio::test]
async fn after_a_password_change_only_the_new_password_logs_in() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let new_password = "a brand new passphrase";

    // Act
    let response = app
        .users()
        .patch(ada.id, &ada, json!({ "password": new_password }))
        .await;

    // Assert: at once, without waiting for the replicas to catch up: a login that read a
    // lagging replica would still take the old password.
    assert_eq!(response.status(), StatusCode::OK, "changing the password");
    let old = app.auth().login("ada@example.com", PASSWORD).await;
    assert_problem(old, StatusCode::UNAUTHORIZED, "the old password").await;
    app.login("ada@example.com", new_password).await;
}

#[tokio::test]
async fn logging_in_reads_the_credentials_on_the_primary_never_a_replica() {
    // Arrange: a replica may lag behind a password change; only the primary's hash is current.
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let shard = usize::from(
        app.state
            .db
            .cluster()
            .owner(ada.id)
            .expect("ada's shard")
            .id(),
    );
    let (primary, replica) = (app.primary(shard).await, app.replica(shard).await);
    let select_user = "SELECT id, email, password_hash%FROM users WHERE id = $1";
    app.wait_for_replicas().await;
    let before = (
        statement_calls(&primary, select_user).await,
        statement_calls(&replica, select_user).await,
    );

    // Act
    let response = app.auth().login("ada@example.com", PASSWORD).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK, "logging in");
    assert_eq!(
        response.route(),
        format!("shard={shard};role=primary"),
        "X-Db-Route of the login"
    );
    let after = (
        statement_calls(&primary, select_user).await,
        statement_calls(&replica, select_user).await,
    );
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 0),
        "login's user read: (on the primary, on the replica)"
    );
}

#[tokio::test]
async fn a_tier_is_decoded_from_its_text_and_an_unknown_one_is_an_error_not_a_default() {
    // Arrange: the checked queries decode `users.tier` (text) straight into a `Tier`.
    let app = TestApp::spawn().await;
    let primary = app.primary(0).await;

    // Act
    let pro = sqlx::query_scalar::<_, Tier>("SELECT 'pro'::text")
        .fetch_one(&primary)
        .await;
    let unknown = sqlx::query_scalar::<_, Tier>("SELECT 'gold'::text")
        .fetch_one(&primary)
        .await;

    // Assert
    assert_eq!(pro.expect("'pro' decodes"), Tier::Pro);
    assert!(
        matches!(&unknown, Err(sqlx::Error::ColumnDecode { source, .. })
            if source.to_string() == r#"unknown tier "gold""#),
        "an unknown tier is a decode error: {unknown:?}"
    );
}

#[tokio::test]
async fn after_an_email_change_only_the_new_email_logs_in_and_the_old_one_is_free() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act
    let response = app
        .users()
        .patch(ada.id, &ada, json!({ "email": "Countess@Example.com" }))
        .await;

    // Assert
    let user = response
        .expect_json(StatusCode::OK, "changing the email")
        .await;
    assert_eq!(user["email"], "countess@example.com", "normalised");
    let old = app.auth().login("ada@example.com", PASSWORD).await;
    assert_problem(
        old,
        StatusCode::UNAUTHORIZED,
        "logging in with the old email",
    )
    .await;
    app.login("countess@example.com", PASSWORD).await;
    let someone = app.register("ada@example.com", "Another Ada").await;
    assert_ne!(someone.id, ada.id, "the old email went to a new user");
    let directory = app.directory().await;
    let entries: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT email, user_id, state FROM directory_entries ORDER BY email")
            .fetch_all(&directory)
            .await
            .expect("read the directory");
    assert_eq!(
        entries,
        [
            (
                "ada@example.com".to_owned(),
                someone.id,
                "active".to_owned()
            ),
            (
                "countess@example.com".to_owned(),
                ada.id,
                "active".to_owned()
            ),
        ],
        "one active entry per email"
    );
}

#[tokio::test]
async fn changing_to_an_email_someone_else_has_is_a_409_and_changes_nothing() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    app.register("bob@example.com", "Bob").await;
    let before = user_row(&app, ada.id).await.expect("ada's row");

    // Act
    let response = app
        .users()
        .patch(
            ada.id,
            &ada,
            json!({ "email": "BOB@example.com", "name": "Not Ada" }),
        )
        .await;

    // Assert
    let problem = assert_problem(response, StatusCode::CONFLICT, "taking bob's email").await;
    assert_snapshot!(pretty(&problem), @r#"
    {
      "detail": "the email address is already registered",
      "status": 409,
      "title": "Conflict",
      "type": "https://scalable-api.dev/problems/conflict"
    }
    "#);
    assert_eq!(
        user_row(&app, ada.id).await.as_ref(),
        Some(&before),
        "ada's row is unchanged"
    );
    app.login("ada@example.com", PASSWORD).await;
    app.login("bob@example.com", PASSWORD).await;
}

#[tokio::test]
async fn deleting_a_user_removes_them_and_their_posts_and_frees_their_email() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;
    let bob = app.register("bob@example.com", "Bob").await;
    let ada_posts = [
        app.create_post(&ada, "one").await,
        app.create_post(&ada, "two").await,
    ];
    let bob_post = app.create_post(&bob, "bob's").await;

    // Act
    let response = app.users().delete(ada.id, &ada).await;

    // Assert
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "DELETE ada");
    assert!(
        response.bytes().await.expect("a body").is_empty(),
        "a 204 has no body"
    );
    assert_eq!(user_row(&app, ada.id).await, None, "ada's row is gone");
    let primary = owning_primary(&app, ada.id).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM posts WHERE user_id = $1")
        .bind(ada.id)
        .fetch_one(&primary)
        .await
        .expect("count ada's posts");
    assert_eq!(left, 0, "ada's posts are gone from her shard primary");
    for post in &ada_posts {
        assert_eq!(post_row(&app, post_id(post)).await, None, "post {post}");
    }
    assert!(
        post_row(&app, post_id(&bob_post)).await.is_some(),
        "bob's post stays"
    );

    app.wait_for_replicas().await;
    let gone = app.users().get(ada.id).await;
    assert_problem(gone, StatusCode::NOT_FOUND, "GET the user").await;
    let gone = app.users().posts(ada.id, "").await;
    assert_problem(gone, StatusCode::NOT_FOUND, "GET the user's posts").await;
    for post in &ada_posts {
        let gone = app.posts().get(post_id(post)).await;
        assert_problem(gone, StatusCode::NOT_FOUND, &format!("GET post {post}")).await;
    }

    let create = app
        .posts()
        .create(&ada, json!({ "title": "from beyond", "body": "x" }))
        .await;
    assert_problem(
        create,
        StatusCode::UNAUTHORIZED,
        "a deleted user's token posting",
    )
    .await;
    let again = app.users().delete(ada.id, &ada).await;
    // The token went with the account: a second delete is refused before it looks for the user.
    assert_problem(again, StatusCode::UNAUTHORIZED, "deleting the user twice").await;
    let login = app.auth().login("ada@example.com", PASSWORD).await;
    assert_problem(login, StatusCode::UNAUTHORIZED, "a deleted user's login").await;

    let newcomer = app.register("ada@example.com", "New Ada").await;
    assert_ne!(newcomer.id, ada.id, "the freed email went to a new user");
}

#[tokio::test]
async fn an_author_can_create_read_change_and_delete_their_post() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act + Assert: create.
    let response = app
        .posts()
        .create(
            &ada,
            json!({ "title": " Notes ", "body": "On the Analytical Engine\n" }),
        )
        .await;
    let location = response.header_str("location");
    let created = response
        .expect_json(StatusCode::CREATED, "POST /v1/posts")
        .await;
    let id = post_id(&created);
    assert_eq!(location, format!("/v1/posts/{id}"), "Location");
    assert_eq!(created["user_id"].as_i64(), Some(ada.id));
    assert_eq!(created["title"], "Notes", "trimmed");
    assert_eq!(created["body"], "On the Analytical Engine");
    assert!(created["created_at"].is_string() && created["updated_at"].is_string());

    // Read.
    app.wait_for_replicas().await;
    let response = app.posts().get(id).await;
    assert_eq!(
        response.expect_json(StatusCode::OK, "GET").await,
        created,
        "GET returns the post"
    );

    // Change.
    let response = app
        .posts()
        .patch(id, &ada, json!({ "title": "Note G" }))
        .await;
    let changed = response.expect_json(StatusCode::OK, "PATCH").await;
    assert_eq!(changed["title"], "Note G");
    assert_eq!(changed["body"], created["body"], "the body is untouched");
    assert_eq!(changed["created_at"], created["created_at"]);
    assert_ne!(
        changed["updated_at"], created["updated_at"],
        "updated_at moves"
    );
    app.wait_for_replicas().await;
    let shown = app.posts().get(id).await.json_body().await;
    assert_eq!(shown, changed, "GET sees the change");

    // Delete.
    let response = app.posts().delete(id, &ada).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT, "DELETE");
    assert_eq!(
        post_row(&app, id).await,
        None,
        "gone from the shard primary"
    );
    app.wait_for_replicas().await;
    let gone = app.posts().get(id).await;
    assert_problem(gone, StatusCode::NOT_FOUND, "GET after DELETE").await;
    let again = app.posts().delete(id, &ada).await;
    assert_problem(again, StatusCode::NOT_FOUND, "DELETE twice").await;
}

#[tokio::test]
async fn a_burst_of_logins_past_the_hashing_bound_gets_fast_503s_never_a_queue() {
    // Arrange: one argon2 run at a time, and no queue; login limits out of the way (16 tries
    // on one account would pass the per-account budget).
    let app = TestApp::spawn_with(|config| {
        config.auth.max_concurrent_hashes = 1;
        config.auth.max_queued_hashes = 0;
        config.auth.login_limits.account_tries = 100;
    })
    .await;
    app.register("ada@example.com", "Ada").await;

    // Act: 16 logins at once.
    let logins = (0..16).map(|_| async { app.auth().login("ada@example.com", PASSWORD).await });
    let responses = futures_util::future::join_all(logins).await;

    // Assert: some log in, the rest are refused at once with a 503 that says when to retry;
    // nothing else (no 500, no 401 for a right password).
    let mut ok = 0;
    let mut busy = 0;
    for response in responses {
        match response.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(response.headers().contains_key(header::RETRY_AFTER));
                assert_problem_mentioning(
                    response,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "password checks",
                    "a login over the bound",
                )
                .await;
                busy += 1;
            }
            other => panic!("a login answered {other}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "{ok} logged in, {busy} refused");
}

/// A write only a signed-in user may make with `token`: renaming themself.
async fn rename_with(app: &TestApp, id: i64, token: &str) -> StatusCode {
    app.users()
        .patch(id, token, json!({ "name": "Still Me" }))
        .await
        .status()
}

#[tokio::test]
async fn a_password_change_revokes_every_token_issued_before_it_on_every_instance() {
    // Arrange: two tokens for one user; another instance that checks on every request (its
    // TTL is the bound for instances that did not see the change).
    let app = TestApp::spawn().await;
    let user = app.register("revoked@example.com", "Revoked").await;
    let other = app
        .another_instance_with(|c| c.auth.revocation_check_ttl = std::time::Duration::ZERO)
        .await;
    let second = app.login(&user.email, PASSWORD).await;
    assert_eq!(rename_with(&app, user.id, &second).await, StatusCode::OK);
    let read_on_other = |token: String| {
        other
            .request(reqwest::Method::GET, &format!("/v1/users/{}", user.id))
            .bearer(token)
    };
    assert_eq!(read_on_other(second.clone()).await.status(), StatusCode::OK);

    // Act
    let changed = app
        .users()
        .patch(
            user.id,
            &user,
            json!({ "password": "a brand new password 42" }),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);

    // Assert: the old tokens are refused here and there, a new login works.
    for token in [&user.token, &second] {
        let refused = app
            .users()
            .patch(user.id, token.as_str(), json!({ "name": "Thief" }))
            .await;
        assert_problem_mentioning(refused, StatusCode::UNAUTHORIZED, "revoked", "old token").await;
        assert_eq!(
            read_on_other(token.clone()).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let fresh = app.login(&user.email, "a brand new password 42").await;
    assert_eq!(rename_with(&app, user.id, &fresh).await, StatusCode::OK);
    assert_eq!(read_on_other(fresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_deleted_accounts_token_is_refused() {
    let app = TestApp::spawn().await;
    let user = app.register("deleted-token@example.com", "Leaving").await;
    let second = app.login(&user.email, PASSWORD).await;
    assert_eq!(rename_with(&app, user.id, &second).await, StatusCode::OK);

    let deleted = app.users().delete(user.id, &user).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let refused = app.get("/v1/users?limit=1").bearer(second.as_str()).await;
    assert_problem_mentioning(
        refused,
        StatusCode::UNAUTHORIZED,
        "no longer exists",
        "a deleted account's token",
    )
    .await;
}

#[tokio::test]
async fn look_alike_emails_are_the_same_account_or_refused_and_names_refuse_direction_tricks() {
    let app = TestApp::spawn().await;
    app.register("lookalike@example.com", "Original").await;

    // Full-width letters are the same address: taken.
    let fullwidth = app
        .auth()
        .register("ｌｏｏｋａｌｉｋｅ@example.com", "Copy", PASSWORD)
        .await;
    assert_problem(fullwidth, StatusCode::CONFLICT, "a full-width copy").await;
    // An invisible character is refused, naming the field.
    let hidden = app
        .auth()
        .register("look\u{200B}alike@example.com", "Copy", PASSWORD)
        .await;
    let problem = assert_problem(
        hidden,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a zero-width space",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("invisible"),
        "{problem}"
    );
    // And the full-width form logs in as the one account.
    let login = app
        .auth()
        .login("ＬＯＯＫＡＬＩＫＥ@example.com", PASSWORD)
        .await;
    assert_eq!(login.status(), StatusCode::OK);

    let reversed = app
        .auth()
        .register("reversed@example.com", "Ada \u{202E}nimda", PASSWORD)
        .await;
    let problem = assert_problem(
        reversed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a right-to-left override",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "name", "{problem}");
}
