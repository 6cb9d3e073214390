//! Bad input on every route: the right 4xx as problem+json, never a 5xx, and nothing written.
//!
//! Each test is one kind of bad input, tried on every route it applies to (the route is named
//! in each assertion message). Each ends by checking that the databases are exactly as they
//! were before the bad requests: no user, post or directory entry created, changed or removed.
//!
//! Where the body is the contract, an insta inline snapshot pins it exactly. Inside a loop the
//! snapshot is wrapped in `allow_duplicates!`: every route must answer with that very body.

use insta::{allow_duplicates, assert_snapshot};
use reqwest::{Method, StatusCode};
use scalable_api::{
    auth::{Claims, JwtKeys},
    config::AuthConfig,
    domain::Tier,
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{
    Anonymous, PASSWORD, Request, ResponseExt, TestApp, TestUser, assert_problem,
    assert_problem_mentioning, detail_of, pretty,
};

/// An app with one user and one post of theirs, so that every route has a real target and
/// the only thing wrong with a request is what the test puts there.
struct Fixture {
    app: TestApp,
    user: TestUser,
    post_id: i64,
}

impl Fixture {
    async fn new() -> Self {
        Self::from_app(TestApp::spawn().await).await
    }

    async fn from_app(app: TestApp) -> Self {
        let user = app.register("owner@example.com", "Owner").await;
        let post = app.create_post(&user, "first").await;
        let post_id = post["id"].as_i64().expect("post id");
        app.wait_for_replicas().await;
        Self { app, user, post_id }
    }

    /// Every route that takes a JSON body, with a body it accepts and the token it needs, in
    /// this order: register, login, change user, create post, change post.
    fn body_routes(&self) -> Vec<BodyRoute> {
        let token = Some(self.user.token.clone());
        vec![
            BodyRoute {
                method: Method::POST,
                path: "/v1/auth/register".into(),
                token: None,
                valid: json!({ "email": "new@example.com", "name": "New", "password": PASSWORD }),
            },
            BodyRoute {
                method: Method::POST,
                path: "/v1/auth/login".into(),
                token: None,
                valid: json!({ "email": self.user.email, "password": self.user.password }),
            },
            BodyRoute {
                method: Method::PATCH,
                path: format!("/v1/users/{}", self.user.id),
                token: token.clone(),
                valid: json!({ "name": "Renamed" }),
            },
            BodyRoute {
                method: Method::POST,
                path: "/v1/posts".into(),
                token: token.clone(),
                valid: json!({ "title": "A title", "body": "A body" }),
            },
            BodyRoute {
                method: Method::PATCH,
                path: format!("/v1/posts/{}", self.post_id),
                token,
                valid: json!({ "title": "Retitled" }),
            },
        ]
    }

    /// Every route with an `{id}`, given `id`, named; with a valid body where the route needs
    /// one, and the token `users_as` on the user routes and `posts_as` on the post routes, so
    /// the id is the only thing left to reject.
    fn id_routes(&self, id: &str, users_as: &str, posts_as: &str) -> Vec<(String, Request)> {
        let (users, posts) = (self.app.users(), self.app.posts());
        vec![
            (
                format!("GET /v1/users/{id}"),
                users.get(id).bearer(users_as),
            ),
            (
                format!("PATCH /v1/users/{id}"),
                users.patch(id, users_as, json!({ "name": "Renamed" })),
            ),
            (format!("DELETE /v1/users/{id}"), users.delete(id, users_as)),
            (
                format!("GET /v1/users/{id}/posts"),
                users.posts(id, "").bearer(users_as),
            ),
            (
                format!("GET /v1/posts/{id}"),
                posts.get(id).bearer(posts_as),
            ),
            (
                format!("PATCH /v1/posts/{id}"),
                posts.patch(id, posts_as, json!({ "title": "Retitled" })),
            ),
            (format!("DELETE /v1/posts/{id}"), posts.delete(id, posts_as)),
        ]
    }

    /// Every route that needs an access token, named, without one, with a body it would
    /// otherwise accept.
    fn authenticated_routes(&self) -> Vec<(String, Request)> {
        let (users, posts) = (self.app.users(), self.app.posts());
        let (user, post) = (self.user.id, self.post_id);
        vec![
            (
                format!("PATCH /v1/users/{user}"),
                users.patch(user, Anonymous, json!({ "name": "Renamed" })),
            ),
            (
                format!("DELETE /v1/users/{user}"),
                users.delete(user, Anonymous),
            ),
            (
                "POST /v1/posts".into(),
                posts.create(Anonymous, json!({ "title": "A title", "body": "A body" })),
            ),
            (
                format!("PATCH /v1/posts/{post}"),
                posts.patch(post, Anonymous, json!({ "title": "Retitled" })),
            ),
            (
                format!("DELETE /v1/posts/{post}"),
                posts.delete(post, Anonymous),
            ),
        ]
    }

    /// Claims that the app would accept for `sub`, valid for an hour.
    fn claims(&self, sub: &str) -> Claims {
        let auth = &self.app.state.config.auth;
        let now = unix_now();
        Claims {
            sub: sub.to_owned(),
            tier: Tier::Free,
            iss: auth.issuer.clone(),
            aud: auth.audience.clone(),
            exp: now + 3600,
            iat: now,
            ver: 0,
        }
    }

    fn sign(&self, claims: &Claims) -> String {
        self.app.state.jwt.sign(claims).expect("signing works")
    }
}

struct BodyRoute {
    method: Method,
    path: String,
    token: Option<String>,
    valid: Value,
}

impl BodyRoute {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// A request to this route with its token and no body yet.
    fn request(&self, app: &TestApp) -> Request {
        app.request(self.method.clone(), &self.path)
            .bearer(&self.token)
    }

    /// The valid body with `field` set to `value`.
    fn with(&self, field: &str, value: Value) -> Value {
        let mut body = self.valid.clone();
        body[field] = value;
        body
    }

    /// The valid body's fields, which are all required on POST routes and all optional on
    /// PATCH routes.
    fn required_fields(&self) -> Vec<String> {
        if self.method == Method::PATCH {
            return Vec::new();
        }
        self.valid
            .as_object()
            .expect("bodies are objects")
            .keys()
            .cloned()
            .collect()
    }
}

/// What the databases hold, in enough detail to see any row created, changed or removed:
/// per shard primary the count and latest `updated_at` of users and of posts, and the
/// directory's entries.
#[derive(Debug, PartialEq, Eq)]
struct Rows {
    shards: Vec<(i64, Option<String>, i64, Option<String>)>,
    directory: (i64, i64, Option<String>),
}

impl Rows {
    async fn of(app: &TestApp) -> Self {
        let mut shards = Vec::new();
        for i in 0..app.shard_dbs.len() {
            let db = app.primary(i).await;
            let row: (i64, Option<String>, i64, Option<String>) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM users), (SELECT max(updated_at)::text FROM users), \
                        (SELECT count(*) FROM posts), (SELECT max(updated_at)::text FROM posts)",
            )
            .fetch_one(&db)
            .await
            .expect("count rows on a shard primary");
            shards.push(row);
        }
        let directory = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'pending'), max(updated_at)::text \
             FROM directory_entries",
        )
        .fetch_one(&app.directory().await)
        .await
        .expect("count directory entries");
        Self { shards, directory }
    }

    async fn assert_unchanged(&self, app: &TestApp, what: &str) {
        let now = Self::of(app).await;
        assert_eq!(
            self, &now,
            "{what}: the bad requests must leave every shard and the directory as they were \
             (left: before, right: after)"
        );
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs()
}

#[tokio::test]
async fn malformed_json_is_a_400_on_every_route_with_a_body() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;

    for route in f.body_routes() {
        // Syntax errors that come before any field is read, and the route's valid body broken
        // (serde reports an unknown or mistyped field before a later syntax error).
        let valid = route.valid.to_string();
        let malformed = [
            String::new(),
            "{".into(),
            "not json".into(),
            "{,}".into(),
            "{\"".into(),
            "{'name': 'single quotes'}".into(),
            valid[..valid.len() - 1].to_owned(),
            format!("{},}}", &valid[..valid.len() - 1]),
            format!("{valid} trailing"),
            format!("{valid}{valid}"),
        ];
        for body in malformed {
            // Act
            let response = route
                .request(&f.app)
                .raw_body(Some("application/json"), body.clone())
                .await;

            // Assert
            let what = format!("{} with body {body:?}", route.name());
            let problem = assert_problem(response, StatusCode::BAD_REQUEST, &what).await;
            assert!(!detail_of(&problem).is_empty(), "{what}: a detail says why");
        }
    }
    before.assert_unchanged(&f.app, "malformed JSON").await;
}

#[tokio::test]
async fn unknown_fields_are_a_422_whose_detail_names_the_field() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;

    for route in f.body_routes() {
        // Act: an otherwise valid body with one field too many.
        let body = route.with("is_admin", json!(true));
        let response = route.request(&f.app).json(&body).await;

        // Assert
        let what = format!("{} with an unknown field", route.name());
        assert_problem_mentioning(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "is_admin",
            &what,
        )
        .await;
    }
    before.assert_unchanged(&f.app, "unknown fields").await;
}

#[tokio::test]
async fn fields_of_the_wrong_type_are_a_422_and_so_are_bodies_that_are_not_objects() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;

    for route in f.body_routes() {
        let fields: Vec<String> = route
            .valid
            .as_object()
            .expect("bodies are objects")
            .keys()
            .cloned()
            .collect();
        let mut bodies: Vec<(String, Value)> = Vec::new();
        for field in &fields {
            bodies.push((format!("`{field}` a number"), route.with(field, json!(42))));
            bodies.push((
                format!("`{field}` an array"),
                route.with(field, json!(["x"])),
            ));
            bodies.push((format!("`{field}` an object"), route.with(field, json!({}))));
        }
        bodies.push(("an array".into(), json!([route.valid.clone()])));
        bodies.push(("a string".into(), json!("a string")));
        bodies.push(("a number".into(), json!(7)));
        bodies.push(("null".into(), Value::Null));

        for (label, body) in bodies {
            // Act
            let response = route.request(&f.app).json(&body).await;

            // Assert
            let what = format!("{} with {label}", route.name());
            assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, &what).await;
        }
    }
    before.assert_unchanged(&f.app, "wrong types").await;
}

#[tokio::test]
async fn missing_fields_are_a_422_whose_detail_names_the_field() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;
    let mut tried = 0;

    for route in f.body_routes() {
        for field in route.required_fields() {
            let mut body = route.valid.clone();
            body.as_object_mut()
                .expect("bodies are objects")
                .remove(&field);

            // Act
            let response = route.request(&f.app).json(&body).await;

            // Assert
            let what = format!("{} without `{field}`", route.name());
            assert_problem_mentioning(response, StatusCode::UNPROCESSABLE_ENTITY, &field, &what)
                .await;
            tried += 1;
        }
    }
    assert_eq!(
        tried, 7,
        "register (3), login (2) and create post (2) have required fields"
    );
    before.assert_unchanged(&f.app, "missing fields").await;
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_a_415_on_every_route_with_a_body() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;
    let content_types = [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("json"),
    ];

    for route in f.body_routes() {
        for content_type in content_types {
            // Act: a body that would be accepted as JSON.
            let response = route
                .request(&f.app)
                .raw_body(content_type, route.valid.to_string())
                .await;

            // Assert
            let what = format!("{} with Content-Type {content_type:?}", route.name());
            let problem = assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, &what).await;
            allow_duplicates! {
                assert_snapshot!(pretty(&problem), @r#"
                {
                  "detail": "send the body as JSON with `Content-Type: application/json`",
                  "status": 415,
                  "title": "Unsupported media type",
                  "type": "https://scalable-api.dev/problems/unsupported-media-type"
                }
                "#);
            }
        }
    }
    before.assert_unchanged(&f.app, "wrong content types").await;
}

#[tokio::test]
async fn domain_validation_failures_are_a_422_naming_every_bad_field() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;
    let routes = f.body_routes();
    let (register, patch_user, create_post, patch_post) =
        (&routes[0], &routes[2], &routes[3], &routes[4]);
    let cases: Vec<(&BodyRoute, Value, Vec<&str>)> = vec![
        (
            register,
            json!({ "email": "not-an-email", "name": "", "password": "short" }),
            vec!["email", "name", "password"],
        ),
        (
            register,
            register.with("email", json!("ada@example")),
            vec!["email"],
        ),
        (
            register,
            register.with("email", json!("a b@example.com")),
            vec!["email"],
        ),
        (register, register.with("name", json!("   ")), vec!["name"]),
        (
            register,
            register.with("name", json!("x".repeat(101))),
            vec!["name"],
        ),
        (
            register,
            register.with("name", json!("bell\u{7}")),
            vec!["name"],
        ),
        (
            register,
            register.with("password", json!("1234567")),
            vec!["password"],
        ),
        (
            register,
            register.with("password", json!("p".repeat(257))),
            vec!["password"],
        ),
        (
            patch_user,
            json!({ "email": "nope", "name": " ", "password": "short" }),
            vec!["email", "name", "password"],
        ),
        (
            patch_user,
            json!({ "email": "@example.com" }),
            vec!["email"],
        ),
        (
            create_post,
            json!({ "title": "", "body": "" }),
            vec!["title", "body"],
        ),
        (
            create_post,
            create_post.with("title", json!("t".repeat(201))),
            vec!["title"],
        ),
        (
            create_post,
            create_post.with("title", json!("two\nlines")),
            vec!["title"],
        ),
        (
            create_post,
            create_post.with("body", json!("nul\u{0}byte")),
            vec!["body"],
        ),
        (patch_post, json!({ "title": "  " }), vec!["title"]),
        (
            patch_post,
            json!({ "title": "ok", "body": "" }),
            vec!["body"],
        ),
    ];
    let mut first = None;

    for (route, body, fields) in cases {
        // Act
        let response = route.request(&f.app).json(&body).await;

        // Assert
        let what = format!("{} with {body}", route.name());
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, &what).await;
        let errors = problem["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: per-field `errors` in {problem}"));
        let named: Vec<&str> = errors
            .iter()
            .map(|e| e["field"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(named, fields, "{what}: the fields named in {problem}");
        assert!(
            errors
                .iter()
                .all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty())),
            "{what}: every field error says what is wrong: {problem}"
        );
        first.get_or_insert(problem);
    }
    before.assert_unchanged(&f.app, "invalid fields").await;
    // The exact body of the first case, where every field of a registration is invalid.
    let first = first.expect("the cases ran");
    assert_snapshot!(pretty(&first), @r#"
    {
      "detail": "see `errors` for each invalid field",
      "errors": [
        {
          "field": "email",
          "message": "must be an address like name@example.com"
        },
        {
          "field": "name",
          "message": "must be at least 1 characters"
        },
        {
          "field": "password",
          "message": "must be at least 8 characters"
        }
      ],
      "status": 422,
      "title": "Some fields are invalid",
      "type": "https://scalable-api.dev/problems/validation"
    }
    "#);
}

#[tokio::test]
async fn an_empty_patch_is_a_422() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;
    let routes = f.body_routes();

    for route in routes.iter().filter(|r| r.method == Method::PATCH) {
        // `{}`, and the route's field given as `null`, which means "no change" too.
        let field = route.valid.as_object().expect("an object").keys().next();
        let null_field = json!({ field.expect("a field"): null });
        for body in [json!({}), null_field] {
            // Act
            let response = route.request(&f.app).json(&body).await;

            // Assert
            let what = format!("{} with {body}", route.name());
            let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, &what).await;
            assert!(
                problem["errors"].as_array().is_some_and(|e| !e.is_empty()),
                "{what}: the errors say a field is needed: {problem}"
            );
        }
    }
    before.assert_unchanged(&f.app, "empty patches").await;
}

#[tokio::test]
async fn a_body_over_the_default_64_kib_limit_is_a_413_on_every_route_with_a_body() {
    // Arrange
    let f = Fixture::new().await;
    let limit = f.app.state.config.http.body_limit_bytes;
    assert_eq!(limit, 64 * 1024, "the default limit");
    let before = Rows::of(&f.app).await;

    for route in f.body_routes() {
        // A body that is valid JSON apart from its size.
        let field = route.valid.as_object().expect("an object").keys().next();
        let field = field.expect("a field").clone();
        let body = route.with(&field, json!("x".repeat(limit)));

        // Act
        let response = route.request(&f.app).json(&body).await;

        // Assert
        let what = format!(
            "{} with a {} byte body",
            route.name(),
            body.to_string().len()
        );
        let problem = assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, &what).await;
        allow_duplicates! {
            assert_snapshot!(pretty(&problem), @r#"
            {
              "detail": "the body exceeds the configured limit",
              "status": 413,
              "title": "The request body is too large",
              "type": "https://scalable-api.dev/problems/payload-too-large"
            }
            "#);
        }
    }
    before.assert_unchanged(&f.app, "oversize bodies").await;
}

#[tokio::test]
async fn the_body_limit_is_the_configured_one() {
    // Arrange: a 1 KiB limit.
    let f = Fixture::from_app(TestApp::spawn_with(|c| c.http.body_limit_bytes = 1024).await).await;
    let routes = f.body_routes();
    let create_post = &routes[3];
    let fits = create_post.with("body", json!("x".repeat(900)));
    let too_big = create_post.with("body", json!("x".repeat(1024)));
    assert!(fits.to_string().len() <= 1024 && too_big.to_string().len() > 1024);
    let before = Rows::of(&f.app).await;

    for route in &routes {
        // Act
        let field = route.valid.as_object().expect("an object").keys().next();
        let body = route.with(field.expect("a field"), json!("x".repeat(1024)));
        let response = route.request(&f.app).json(&body).await;

        // Assert
        let what = format!("{} with a body past a 1 KiB limit", route.name());
        assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, &what).await;
    }
    before.assert_unchanged(&f.app, "bodies past 1 KiB").await;

    // Act: a body under the limit is still accepted.
    let response = create_post.request(&f.app).json(&fits).await;

    // Assert
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "a {} byte post under a 1 KiB limit",
        fits.to_string().len()
    );
}

#[tokio::test]
async fn malformed_ids_are_a_400_on_every_id_route() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;
    let bad_ids = [
        "abc",
        "0",
        "-1",
        "1.5",
        "99999999999999999999",
        "1e3",
        "0x10",
        "%20",
        "%FF",
        "1%00",
        "+5",
        "05",
        "%2B5",
    ];

    let mut first = None;

    for id in bad_ids {
        // Act: with a valid token, so authentication is not what fails.
        for (what, request) in f.id_routes(id, &f.user.token, &f.user.token) {
            let response = request.await;

            // Assert
            let problem =
                assert_problem_mentioning(response, StatusCode::BAD_REQUEST, "id", &what).await;
            first.get_or_insert(problem);
        }
    }
    before.assert_unchanged(&f.app, "malformed ids").await;
    // The exact body of the first: `GET /v1/users/abc`.
    let first = first.expect("the routes ran");
    assert_snapshot!(pretty(&first), @r#"
    {
      "detail": "`abc` is not an id: ids are positive integers, written without sign or leading zeros",
      "status": 400,
      "title": "Bad request",
      "type": "https://scalable-api.dev/problems/bad-request"
    }
    "#);
}

#[tokio::test]
async fn ids_that_no_shard_owns_are_a_404_on_every_id_route() {
    // Arrange: the shards own 1..=2_000_000_000. No account can live at such an id, so a
    // well-signed token whose subject is one is refused as a token of no account; with the
    // fixture user's own token, reads are a 404 and changes to another user a 403.
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;
    let unowned = ["5000000000", "9007199254740992", &i64::MAX.to_string()];

    for id in unowned {
        let subject_token = f.sign(&f.claims(id));
        let refused = f.app.users().get(id).bearer(subject_token.as_str()).await;
        assert_problem(refused, StatusCode::UNAUTHORIZED, "a token of no account").await;
        for (what, request) in f.id_routes(id, &f.user.token, &f.user.token) {
            // Act
            let response = request.await;

            // Assert
            let expected =
                if what.starts_with("PATCH /v1/users/") || what.starts_with("DELETE /v1/users/") {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::NOT_FOUND
                };
            assert_problem(response, expected, &what).await;
        }
    }
    before.assert_unchanged(&f.app, "ids in no shard").await;
}

#[tokio::test]
async fn bad_pagination_parameters_are_a_400_on_every_list_route() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;
    let lists = [
        "/v1/users".to_owned(),
        "/v1/posts".to_owned(),
        format!("/v1/users/{}/posts", f.user.id),
    ];
    let bad = [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "limit=99999999999999999999",
        "offset=-1",
        "offset=10001",
        "offset=x",
        "page=2",
        "limit=10&sort=desc",
    ];
    let good = ["limit=1", "limit=100", "offset=0", "offset=10000", ""];

    for list in &lists {
        for query in bad {
            // Act
            let response = f.app.get(&format!("{list}?{query}")).await;

            // Assert
            let what = format!("GET {list}?{query}");
            assert_problem(response, StatusCode::BAD_REQUEST, &what).await;
        }
        // The bounds themselves are accepted: the 400s above are about the values.
        for query in good {
            let response = f.app.get(&format!("{list}?{query}")).await;
            assert_eq!(response.status(), StatusCode::OK, "GET {list}?{query}");
        }
    }
    before.assert_unchanged(&f.app, "bad pagination").await;
}

#[tokio::test]
async fn a_missing_token_is_a_401_with_a_bearer_challenge_on_every_route_that_needs_one() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;

    for (route, request) in f.authenticated_routes() {
        // Act
        let response = request.await;

        // Assert
        let what = format!("{route} without a token");
        let challenge = response.header_str("www-authenticate");
        let problem = assert_problem(response, StatusCode::UNAUTHORIZED, &what).await;
        assert_eq!(challenge, "Bearer", "{what}: WWW-Authenticate");
        allow_duplicates! {
            assert_snapshot!(pretty(&problem), @r#"
            {
              "detail": "this route needs an access token (Authorization: Bearer <token>) or a `write` API key (X-Api-Key: <key>)",
              "status": 401,
              "title": "Authentication required",
              "type": "https://scalable-api.dev/problems/unauthorized"
            }
            "#);
        }
    }
    before.assert_unchanged(&f.app, "missing tokens").await;
}

#[tokio::test]
async fn bad_credentials_are_a_401_on_every_route_that_needs_a_token() {
    // Arrange: 60 writes with bad credentials in about a second, all limited as the anonymous
    // address they come from: past its burst of writes, and this test is about the 401s.
    let f = Fixture::from_app(
        TestApp::spawn_with(|c| c.ratelimit.tiers.anonymous.writes.burst = 100).await,
    )
    .await;
    let me = f.user.id.to_string();
    let valid = f.sign(&f.claims(&me));
    let payload = valid.split('.').nth(1).expect("a JWT has a payload");
    let expired = {
        let mut claims = f.claims(&me);
        claims.iat = unix_now() - 7200;
        claims.exp = unix_now() - 3600;
        f.sign(&claims)
    };
    let other_keys = JwtKeys::new(&AuthConfig {
        jwt_secret: "another-secret-that-is-at-least-32-bytes".into(),
        ..Default::default()
    });
    let wrongly_signed = other_keys.sign(&f.claims(&me)).expect("signing works");
    let wrong_issuer = f.sign(&Claims {
        iss: "someone-else".into(),
        ..f.claims(&me)
    });
    let wrong_audience = f.sign(&Claims {
        aud: "another-api".into(),
        ..f.claims(&me)
    });
    // {"alg":"none","typ":"JWT"}, a valid payload, no signature.
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    // The right secret, but HS512: the algorithm is pinned, not taken from the token.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &f.claims(&me),
        &jsonwebtoken::EncodingKey::from_secret(
            f.app
                .state
                .config
                .auth
                .jwt_secret
                .expose_secret()
                .as_bytes(),
        ),
    )
    .expect("signing works");
    let tampered = {
        let mut parts: Vec<&str> = valid.split('.').collect();
        let other_payload = f.sign(&f.claims(&(f.user.id + 1).to_string()));
        parts[1] = other_payload.split('.').nth(1).expect("a payload");
        parts.join(".")
    };
    let non_numeric_sub = f.sign(&f.claims("ada"));
    let credentials: Vec<(&str, String)> = vec![
        ("garbage", "Bearer garbage".into()),
        ("an empty bearer token", "Bearer ".into()),
        ("the Basic scheme", "Basic xyz".into()),
        ("a token without a scheme", valid.clone()),
        ("an expired token", format!("Bearer {expired}")),
        (
            "a token signed with another secret",
            format!("Bearer {wrongly_signed}"),
        ),
        (
            "a token from another issuer",
            format!("Bearer {wrong_issuer}"),
        ),
        (
            "a token for another audience",
            format!("Bearer {wrong_audience}"),
        ),
        ("an alg:none token", format!("Bearer {alg_none}")),
        ("an HS512 token", format!("Bearer {hs512}")),
        (
            "a payload swapped under a signature",
            format!("Bearer {tampered}"),
        ),
        ("a non-numeric subject", format!("Bearer {non_numeric_sub}")),
    ];
    let before = Rows::of(&f.app).await;

    for (label, authorization) in &credentials {
        for (route, request) in f.authenticated_routes() {
            // Act
            let response = request.header("authorization", authorization).await;

            // Assert
            let what = format!("{route} with {label}");
            let challenge = response.header_str("www-authenticate");
            let problem = assert_problem(response, StatusCode::UNAUTHORIZED, &what).await;
            assert_eq!(challenge, "Bearer", "{what}: WWW-Authenticate");
            if *label == "an expired token" {
                assert!(
                    detail_of(&problem).contains("expired"),
                    "{what}: the detail says why: {problem}"
                );
                allow_duplicates! {
                    assert_snapshot!(pretty(&problem), @r#"
                    {
                      "detail": "the access token has expired",
                      "status": 401,
                      "title": "Authentication required",
                      "type": "https://scalable-api.dev/problems/unauthorized"
                    }
                    "#);
                }
            }
        }
    }
    before.assert_unchanged(&f.app, "bad credentials").await;

    // The valid token, sent the same way, is accepted: the 401s were about the credentials.
    let response = f
        .app
        .posts()
        .create(Anonymous, json!({ "title": "A title", "body": "A body" }))
        .header("authorization", format!("Bearer {valid}"))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED, "the valid token");
}

#[tokio::test]
async fn unknown_routes_are_a_404_and_wrong_methods_a_405() {
    // Arrange
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;
    let user = format!("/v1/users/{}", f.user.id);
    let post = format!("/v1/posts/{}", f.post_id);
    let cases: Vec<(Method, String, StatusCode)> = vec![
        (Method::GET, "/nope".into(), StatusCode::NOT_FOUND),
        (Method::GET, "/v1".into(), StatusCode::NOT_FOUND),
        (Method::GET, "/v1/nope".into(), StatusCode::NOT_FOUND),
        (Method::POST, "/v1/comments".into(), StatusCode::NOT_FOUND),
        (
            Method::GET,
            format!("{user}/comments"),
            StatusCode::NOT_FOUND,
        ),
        (Method::GET, format!("{post}/author"), StatusCode::NOT_FOUND),
        (Method::GET, "/v3/users".into(), StatusCode::NOT_FOUND),
        (
            Method::PUT,
            "/v1/posts".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::DELETE,
            "/v1/posts".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::POST,
            "/v1/users".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::PUT, user.clone(), StatusCode::METHOD_NOT_ALLOWED),
        (Method::POST, user.clone(), StatusCode::METHOD_NOT_ALLOWED),
        (Method::PUT, post.clone(), StatusCode::METHOD_NOT_ALLOWED),
        (
            Method::POST,
            format!("{user}/posts"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/v1/auth/login".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::PUT,
            "/v1/auth/register".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];

    for (method, path, status) in cases {
        // Act
        let response = f
            .app
            .request(method.clone(), &path)
            .bearer(&f.user)
            .json(&json!({}))
            .await;

        // Assert
        let what = format!("{method} {path}");
        let allow = response.headers().contains_key("allow");
        let problem = assert_problem(response, status, &what).await;
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(allow, "{what}: a 405 lists the allowed methods in `Allow`");
            allow_duplicates! {
                assert_snapshot!(pretty(&problem), @r#"
                {
                  "detail": "this route does not accept that method",
                  "status": 405,
                  "title": "Method not allowed",
                  "type": "https://scalable-api.dev/problems/method-not-allowed"
                }
                "#);
            }
        } else {
            allow_duplicates! {
                assert_snapshot!(pretty(&problem), @r#"
                {
                  "detail": "no route matches this path",
                  "status": 404,
                  "title": "Not found",
                  "type": "https://scalable-api.dev/problems/not-found"
                }
                "#);
            }
        }
    }
    before
        .assert_unchanged(&f.app, "unknown routes and methods")
        .await;
}
