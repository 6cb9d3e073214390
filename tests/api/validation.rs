//! Bad input on every route: the right 4xx as problem+json, never a 5xx, and nothing written.
//!
//! Each test is one kind of bad input, tried on every route it applies to (the route is named
//! in each assertion message). Each ends by checking that the databases are exactly as they
//! were before the bad requests: no user, post or directory entry created, changed or removed.

use reqwest::{Method, Response, StatusCode, header};
use scalable_api::{
    auth::{Claims, JwtKeys},
    config::AuthConfig,
    domain::Tier,
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, assert_problem};

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
                valid: json!({ "email": "new@example.com", "name": "New", "password": "correct horse battery" }),
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

    /// Every route with an `{id}`, given `id`; with a token and a valid body where the route
    /// needs them, so the id is the only thing left to reject.
    fn id_routes(&self, id: &str) -> Vec<(Method, String, Option<Value>)> {
        vec![
            (Method::GET, format!("/v1/users/{id}"), None),
            (
                Method::PATCH,
                format!("/v1/users/{id}"),
                Some(json!({ "name": "Renamed" })),
            ),
            (Method::DELETE, format!("/v1/users/{id}"), None),
            (Method::GET, format!("/v1/users/{id}/posts"), None),
            (Method::GET, format!("/v1/posts/{id}"), None),
            (
                Method::PATCH,
                format!("/v1/posts/{id}"),
                Some(json!({ "title": "Retitled" })),
            ),
            (Method::DELETE, format!("/v1/posts/{id}"), None),
        ]
    }

    /// Every route that needs an access token, with a body it would otherwise accept.
    fn authenticated_routes(&self) -> Vec<(Method, String, Option<Value>)> {
        vec![
            (
                Method::PATCH,
                format!("/v1/users/{}", self.user.id),
                Some(json!({ "name": "Renamed" })),
            ),
            (Method::DELETE, format!("/v1/users/{}", self.user.id), None),
            (
                Method::POST,
                "/v1/posts".into(),
                Some(json!({ "title": "A title", "body": "A body" })),
            ),
            (
                Method::PATCH,
                format!("/v1/posts/{}", self.post_id),
                Some(json!({ "title": "Retitled" })),
            ),
            (Method::DELETE, format!("/v1/posts/{}", self.post_id), None),
        ]
    }

    /// Sends `body` verbatim with `content_type` (none if `None`) and the route's token.
    async fn send_raw(
        &self,
        route: &BodyRoute,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = self
            .app
            .client
            .request(
                route.method.clone(),
                format!("{}{}", self.app.base, route.path),
            )
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &route.token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .expect("the request reaches the test server")
    }

    /// Sends `body` as JSON to `route`, with its token.
    async fn send_json(&self, route: &BodyRoute, body: &Value) -> Response {
        self.app
            .request(
                route.method.clone(),
                &route.path,
                route.token.as_deref(),
                Some(body),
            )
            .await
    }

    /// Sends a request with `authorization` as the raw `Authorization` header (none if `None`).
    async fn send_with_authorization(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut request = self
            .app
            .client
            .request(method, format!("{}{path}", self.app.base));
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .expect("the request reaches the test server")
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

fn detail_of(body: &Value) -> &str {
    body["detail"].as_str().unwrap_or_default()
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
            let response = f
                .send_raw(&route, Some("application/json"), body.clone())
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
        let response = f.send_json(&route, &body).await;

        // Assert
        let what = format!("{} with an unknown field", route.name());
        let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, &what).await;
        assert!(
            detail_of(&problem).contains("is_admin"),
            "{what}: the detail names the field: {problem}"
        );
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
            let response = f.send_json(&route, &body).await;

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
            let response = f.send_json(&route, &body).await;

            // Assert
            let what = format!("{} without `{field}`", route.name());
            let problem = assert_problem(response, StatusCode::UNPROCESSABLE_ENTITY, &what).await;
            assert!(
                detail_of(&problem).contains(&field),
                "{what}: the detail names the field: {problem}"
            );
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
            let response = f
                .send_raw(&route, content_type, route.valid.to_string())
                .await;

            // Assert
            let what = format!("{} with Content-Type {content_type:?}", route.name());
            assert_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, &what).await;
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

    for (route, body, fields) in cases {
        // Act
        let response = f.send_json(route, &body).await;

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
    }
    before.assert_unchanged(&f.app, "invalid fields").await;
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
            let response = f.send_json(route, &body).await;

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
        let response = f.send_json(&route, &body).await;

        // Assert
        let what = format!(
            "{} with a {} byte body",
            route.name(),
            body.to_string().len()
        );
        assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, &what).await;
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
        let response = f.send_json(route, &body).await;

        // Assert
        let what = format!("{} with a body past a 1 KiB limit", route.name());
        assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE, &what).await;
    }
    before.assert_unchanged(&f.app, "bodies past 1 KiB").await;

    // Act: a body under the limit is still accepted.
    let response = f.send_json(create_post, &fits).await;

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
    ];

    for id in bad_ids {
        for (method, path, body) in f.id_routes(id) {
            // Act: with a valid token, so authentication is not what fails.
            let response = f
                .app
                .request(method.clone(), &path, Some(&f.user.token), body.as_ref())
                .await;

            // Assert
            let what = format!("{method} {path}");
            let problem = assert_problem(response, StatusCode::BAD_REQUEST, &what).await;
            assert!(
                detail_of(&problem).contains("id"),
                "{what}: the detail is about the id: {problem}"
            );
        }
    }
    before.assert_unchanged(&f.app, "malformed ids").await;
}

#[tokio::test]
async fn ids_that_no_shard_owns_are_a_404_on_every_id_route() {
    // Arrange: the shards own 1..=2_000_000_000. Users may change only themselves, so the
    // user routes get a well-signed token whose subject is that very id.
    let f = Fixture::new().await;
    let before = Rows::of(&f.app).await;
    let unowned = ["5000000000", "9007199254740992", &i64::MAX.to_string()];

    for id in unowned {
        let subject_token = f.sign(&f.claims(id));
        for (method, path, body) in f.id_routes(id) {
            let token = if path.starts_with("/v1/users") {
                &subject_token
            } else {
                &f.user.token
            };

            // Act
            let response = f
                .app
                .request(method.clone(), &path, Some(token), body.as_ref())
                .await;

            // Assert
            let what = format!("{method} {path}");
            assert_problem(response, StatusCode::NOT_FOUND, &what).await;
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

    for (method, path, body) in f.authenticated_routes() {
        // Act
        let response = f
            .app
            .request(method.clone(), &path, None, body.as_ref())
            .await;

        // Assert
        let what = format!("{method} {path} without a token");
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_problem(response, StatusCode::UNAUTHORIZED, &what).await;
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer"),
            "{what}: WWW-Authenticate"
        );
    }
    before.assert_unchanged(&f.app, "missing tokens").await;
}

#[tokio::test]
async fn bad_credentials_are_a_401_on_every_route_that_needs_a_token() {
    // Arrange
    let f = Fixture::new().await;
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
        for (method, path, body) in f.authenticated_routes() {
            // Act
            let response = f
                .send_with_authorization(method.clone(), &path, Some(authorization), body.as_ref())
                .await;

            // Assert
            let what = format!("{method} {path} with {label}");
            let challenge = response.headers().get(header::WWW_AUTHENTICATE).cloned();
            let problem = assert_problem(response, StatusCode::UNAUTHORIZED, &what).await;
            assert_eq!(
                challenge.as_ref().and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{what}: WWW-Authenticate"
            );
            if *label == "an expired token" {
                assert!(
                    detail_of(&problem).contains("expired"),
                    "{what}: the detail says why: {problem}"
                );
            }
        }
    }
    before.assert_unchanged(&f.app, "bad credentials").await;

    // The valid token, sent the same way, is accepted: the 401s were about the credentials.
    let response = f
        .send_with_authorization(
            Method::POST,
            "/v1/posts",
            Some(&format!("Bearer {valid}")),
            Some(&json!({ "title": "A title", "body": "A body" })),
        )
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
        (Method::GET, "/v2/users".into(), StatusCode::NOT_FOUND),
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
            .request(method.clone(), &path, Some(&f.user.token), Some(&json!({})))
            .await;

        // Assert
        let what = format!("{method} {path}");
        let allow = response.headers().get(header::ALLOW).cloned();
        assert_problem(response, status, &what).await;
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                allow.is_some(),
                "{what}: a 405 lists the allowed methods in `Allow`"
            );
        }
    }
    before
        .assert_unchanged(&f.app, "unknown routes and methods")
        .await;
}
