//! The typed test client: one handle per resource, each method one route, each returning a
//! [`Request`] that is sent by awaiting it.
//!
//! ```ignore
//! let user = app.users().get(ada.id).await;                                  // anonymous
//! let mine = app.users().get(ada.id).bearer(&ada).await;                     // as Ada
//! let read = app.users().get(ada.id).header("x-consistency-token", &t).await; // any header
//! let renamed = app.users().patch(ada.id, &ada, json!({ "name": "Countess" })).await;
//! let raw = app.request(Method::POST, "/v1/posts").raw_body(Some("text/plain"), "x").await;
//! ```
//!
//! Routes the handles do not name (unknown ones, `/readyz`, `/metrics`) go through
//! [`TestApp::get`] and [`TestApp::request`]. Responses stay `reqwest::Response`;
//! [`ResponseExt`] adds the headers the tests read and a JSON body that must be there.

use std::{fmt::Display, future::IntoFuture, pin::Pin};

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::{Instance, TestApp, TestUser};

/// Who a request is sent as: a [`TestUser`], a raw access token, or nobody ([`Anonymous`],
/// `None`).
pub trait Bearer {
    fn token(&self) -> Option<&str>;
}

/// No `Authorization` header.
pub struct Anonymous;

impl Bearer for Anonymous {
    fn token(&self) -> Option<&str> {
        None
    }
}

impl Bearer for TestUser {
    fn token(&self) -> Option<&str> {
        Some(&self.token)
    }
}

impl Bearer for str {
    fn token(&self) -> Option<&str> {
        Some(self)
    }
}

impl Bearer for String {
    fn token(&self) -> Option<&str> {
        Some(self)
    }
}

impl<T: Bearer + ?Sized> Bearer for &T {
    fn token(&self) -> Option<&str> {
        (**self).token()
    }
}

impl<T: Bearer> Bearer for Option<T> {
    fn token(&self) -> Option<&str> {
        self.as_ref().and_then(Bearer::token)
    }
}

/// A request to the app under test, sent when awaited; panics if it never reaches the server
/// (use [`Request::try_send`] where that is a possible outcome).
#[must_use = "a request is sent only when awaited"]
pub struct Request(reqwest::RequestBuilder);

impl Request {
    /// `Authorization: Bearer <token>` for `who`; nothing for `None`.
    pub fn bearer(self, who: impl Bearer) -> Self {
        match who.token() {
            Some(token) => Self(self.0.bearer_auth(token)),
            None => self,
        }
    }

    /// `X-Api-Key: <key>`.
    pub fn api_key(self, key: &str) -> Self {
        self.header("x-api-key", key)
    }

    /// Adds a header (a second one if the name is already set, as by `.bearer(..)`).
    pub fn header(self, name: &str, value: impl AsRef<str>) -> Self {
        Self(self.0.header(name, value.as_ref()))
    }

    /// `body` as JSON (`Content-Type: application/json`).
    pub fn json(self, body: &Value) -> Self {
        Self(self.0.json(body))
    }

    /// `body` sent verbatim, with `content_type` (no `Content-Type` header for `None`); for
    /// requests without a JSON body, as [`TestApp::request`] makes them.
    pub fn raw_body(self, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> Self {
        let request = self.0.body(body);
        Self(match content_type {
            Some(content_type) => request.header("content-type", content_type),
            None => request,
        })
    }

    pub async fn send(self) -> Response {
        self.try_send()
            .await
            .expect("the request reaches the test server")
    }

    pub async fn try_send(self) -> reqwest::Result<Response> {
        self.0.send().await
    }
}

impl Clone for Request {
    fn clone(&self) -> Self {
        Self(
            self.0
                .try_clone()
                .expect("test requests have buffered bodies, which clone"),
        )
    }
}

impl IntoFuture for Request {
    type Output = Response;
    type IntoFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

impl TestApp {
    /// Any method on any path (`/v1/...`, `/graphql`, `/nope`): for what the handles don't name.
    pub fn request(&self, method: Method, path: &str) -> Request {
        Request(self.client.request(method, format!("{}{path}", self.base)))
    }

    pub fn get(&self, path: &str) -> Request {
        self.request(Method::GET, path)
    }

    pub fn users(&self) -> Users<'_> {
        Users(self)
    }

    pub fn posts(&self) -> Posts<'_> {
        Posts(self)
    }

    pub fn auth(&self) -> Auth<'_> {
        Auth(self)
    }

    pub fn api_keys(&self) -> ApiKeys<'_> {
        ApiKeys(self)
    }

    /// POSTs a GraphQL request to `/graphql`; returns the status and the JSON body.
    pub async fn graphql(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (StatusCode, Value) {
        let response = self
            .request(Method::POST, "/graphql")
            .bearer(token)
            .json(&json!({ "query": query, "variables": variables }))
            .await;
        let status = response.status();
        (status, response.json_body().await)
    }
}

/// `/v1/users`. Ids are anything printable, so a test can send `"abc"` or `"%20"` too.
pub struct Users<'a>(&'a TestApp);

impl Users<'_> {
    /// `GET /v1/users/{id}`
    pub fn get(&self, id: impl Display) -> Request {
        self.0.get(&format!("/v1/users/{id}"))
    }

    /// `GET /v1/users{query}`, e.g. `list("?limit=5")` or `list("")`.
    pub fn list(&self, query: &str) -> Request {
        self.0.get(&format!("/v1/users{query}"))
    }

    /// `PATCH /v1/users/{id}` as `who`.
    pub fn patch(&self, id: impl Display, who: impl Bearer, body: Value) -> Request {
        self.0
            .request(Method::PATCH, &format!("/v1/users/{id}"))
            .bearer(who)
            .json(&body)
    }

    /// `DELETE /v1/users/{id}` as `who`.
    pub fn delete(&self, id: impl Display, who: impl Bearer) -> Request {
        self.0
            .request(Method::DELETE, &format!("/v1/users/{id}"))
            .bearer(who)
    }

    /// `GET /v1/users/{id}/posts{query}`
    pub fn posts(&self, id: impl Display, query: &str) -> Request {
        self.0.get(&format!("/v1/users/{id}/posts{query}"))
    }
}

/// `/v1/posts`.
pub struct Posts<'a>(&'a TestApp);

impl Posts<'_> {
    /// `POST /v1/posts` as `who`; [`TestApp::create_post`] is the arrange step.
    pub fn create(&self, who: impl Bearer, body: Value) -> Request {
        self.0
            .request(Method::POST, "/v1/posts")
            .bearer(who)
            .json(&body)
    }

    /// `GET /v1/posts/{id}`
    pub fn get(&self, id: impl Display) -> Request {
        self.0.get(&format!("/v1/posts/{id}"))
    }

    /// `PATCH /v1/posts/{id}` as `who`.
    pub fn patch(&self, id: impl Display, who: impl Bearer, body: Value) -> Request {
        self.0
            .request(Method::PATCH, &format!("/v1/posts/{id}"))
            .bearer(who)
            .json(&body)
    }

    /// `DELETE /v1/posts/{id}` as `who`.
    pub fn delete(&self, id: impl Display, who: impl Bearer) -> Request {
        self.0
            .request(Method::DELETE, &format!("/v1/posts/{id}"))
            .bearer(who)
    }

    /// `GET /v1/posts{query}`: the newest-first feed across shards.
    pub fn feed(&self, query: &str) -> Request {
        self.0.get(&format!("/v1/posts{query}"))
    }
}

/// `/v1/auth`. [`TestApp::register`] and [`TestApp::login`] are the arrange steps.
pub struct Auth<'a>(&'a TestApp);

impl Auth<'_> {
    /// `POST /v1/auth/register`
    pub fn register(&self, email: &str, name: &str, password: &str) -> Request {
        self.0
            .request(Method::POST, "/v1/auth/register")
            .json(&json!({ "email": email, "name": name, "password": password }))
    }

    /// `POST /v1/auth/login`
    pub fn login(&self, email: &str, password: &str) -> Request {
        self.0
            .request(Method::POST, "/v1/auth/login")
            .json(&json!({ "email": email, "password": password }))
    }
}

/// `/v1/api-keys`. [`TestApp::create_api_key`] is the arrange step.
pub struct ApiKeys<'a>(&'a TestApp);

impl ApiKeys<'_> {
    /// `POST /v1/api-keys` as `who`.
    pub fn create(&self, who: impl Bearer, body: Value) -> Request {
        self.0
            .request(Method::POST, "/v1/api-keys")
            .bearer(who)
            .json(&body)
    }

    /// `GET /v1/api-keys` as `who`.
    pub fn list(&self, who: impl Bearer) -> Request {
        self.0.get("/v1/api-keys").bearer(who)
    }

    /// `DELETE /v1/api-keys/{id}` as `who`.
    pub fn revoke(&self, id: impl Display, who: impl Bearer) -> Request {
        self.0
            .request(Method::DELETE, &format!("/v1/api-keys/{id}"))
            .bearer(who)
    }
}

impl Instance {
    /// Any method on any path of this instance.
    pub fn request(&self, method: Method, path: &str) -> Request {
        Request(self.client.request(method, format!("{}{path}", self.base)))
    }

    /// `POST /v1/auth/login` on this instance.
    pub fn login(&self, email: &str, password: &str) -> Request {
        self.request(Method::POST, "/v1/auth/login")
            .json(&json!({ "email": email, "password": password }))
    }
}

/// What the tests read off a response.
pub trait ResponseExt {
    /// A header's value; empty when it is missing (or not ASCII).
    fn header_str(&self, name: &str) -> String;

    /// `X-Db-Route`: the shards and roles the request's SQL ran on; empty if it ran none.
    fn route(&self) -> String {
        self.header_str("x-db-route")
    }

    /// `X-Cache`: `hit`, `miss` or `bypass`; empty without a cache.
    fn cache(&self) -> String {
        self.header_str("x-cache")
    }

    /// The JSON body; panics if there is none.
    async fn json_body(self) -> Value;

    /// Asserts `status` and returns the JSON body.
    async fn expect_json(self, status: StatusCode, what: &str) -> Value;
}

impl ResponseExt for Response {
    fn header_str(&self, name: &str) -> String {
        self.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    async fn json_body(self) -> Value {
        let (status, url) = (self.status(), self.url().path().to_owned());
        self.json()
            .await
            .unwrap_or_else(|e| panic!("{status} from {url}: a JSON body ({e})"))
    }

    async fn expect_json(self, status: StatusCode, what: &str) -> Value {
        assert_eq!(self.status(), status, "{what}");
        self.json_body().await
    }
}
