//! `Idempotency-Key` on POST: a client that retries a POST (its connection dropped, its
//! answer timed out) gets the first attempt's answer back instead of a second post.
//!
//! A POST with `Idempotency-Key: <key>` (1 to 255 visible ASCII characters; a UUID is the
//! usual choice) is run once per key and principal:
//!
//! - The first request claims the key in Redis ([`store`]) before it runs, with a lease
//!   (`http.idempotency.lease`, by default the request timeout, the longest it can run). Its
//!   answer (status, `Content-Type`, `Location`, `ETag`, `Cache-Control`, body) replaces the
//!   claim and is kept for `http.idempotency.ttl` (24 h by default).
//! - A retry (same key, same method, path, query and body) gets that answer byte for byte,
//!   with `Idempotent-Replayed: true`, and runs nothing.
//! - The same key with another request: 422 `idempotency-key-reused`. A key names one request.
//! - A request while the key's first one still runs: 409 `idempotency-key-in-use` with
//!   `Retry-After: 1` (they would otherwise both run).
//! - An answer the retry should not get is not kept, and the key is released so that a retry
//!   runs again: a 5xx or a 429 (the request did not happen, or may go through later), a 401
//!   or a 403 (about the credentials, not the operation: the client may retry with others), and an
//!   answer marked `Cache-Control: no-store` (a new API key, shown once: it is not copied into
//!   Redis for a day; a retry makes another key, and the first, whose secret the client never
//!   saw, can be revoked from the list).
//! - Redis unusable: a POST with a key gets 503 (the client asked for exactly-once, which
//!   cannot be promised without the store); POSTs without a key are untouched.
//!
//! Keys are scoped by principal: a user (`user:<id>`), an API key (`key:<id>`: two services
//! of one owner do not share keys), or `anonymous` and the path (registration). Anonymous
//! clients share a scope; what keeps one from replaying another's answer is the fingerprint,
//! which covers the body (a registration's password included), so random keys matter there
//! most.
//!
//! Layered on the REST routers only ([`apply`]), inside the session and the rate limits: a
//! replay is charged like any request, and the principal is the one the limits resolved.
//! Requests that are not a POST with the header pass through without a box or an await.
//!
//! What it does not cover: a request cut off by the timeout keeps its claim until the lease
//! ends, then a retry runs again, even if the first committed just before the cut (the lease
//! is as long as the timeout, so no retry runs *beside* it). And an answer that ran but could
//! not be kept (Redis failed in between) leaves the claim to lapse the same way.
//!
//! Cost: nothing for requests without the header. With it: the body buffered and hashed,
//! two Redis round trips (claim, then keep), and the answer buffered; a replay, one round trip.

mod store;

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::future::{BoxFuture, Either};
use tower::{Layer, Service};

pub use store::Store;
use store::{Answer, Claim, Fingerprint, Record, Unavailable};

use crate::{AppState, auth::Principal, error::Error, telemetry::names};

/// `Idempotency-Key: <key>` (IETF httpapi draft `idempotency-key-header`).
pub const IDEMPOTENCY_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// `Idempotent-Replayed: true` on an answer that is a replay.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The longest key accepted.
const MAX_KEY_LEN: usize = 255;

/// `router` with `Idempotency-Key` honoured on its POSTs; unchanged when
/// `http.idempotency.enabled` is off. One line per REST version (see `src/http/mod.rs`).
pub fn apply(router: Router<AppState>, app: &AppState) -> Router<AppState> {
    if app.idempotency.is_none() {
        return router;
    }
    router.layer(IdempotencyLayer(app.clone()))
}

#[derive(Clone)]
struct IdempotencyLayer(AppState);

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency {
            app: self.0.clone(),
            inner,
        }
    }
}

/// A service rather than a `from_fn` middleware: the requests it does not concern (every GET,
/// every POST without the header) go straight to the route, with no boxed future of their own.
#[derive(Clone)]
struct Idempotency<S> {
    app: AppState,
    inner: S,
}

impl<S> Service<Request> for Idempotency<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.method() != Method::POST
            || !request.headers().contains_key(IDEMPOTENCY_KEY_HEADER)
        {
            return Either::Left(self.inner.call(request));
        }
        // The service made ready goes with the request; its clone stays for the next one.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let app = self.app.clone();
        Either::Right(Box::pin(async move {
            Ok(run(&app, ready, request)
                .await
                .unwrap_or_else(IntoResponse::into_response))
        }))
    }
}

/// What happened to a POST with a key, as the metric counts it.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Stored,
    Replayed,
    Conflict,
    Mismatch,
    Released,
    Unavailable,
}

impl Outcome {
    fn count(self) {
        let outcome = match self {
            Self::Stored => "stored",
            Self::Replayed => "replayed",
            Self::Conflict => "conflict",
            Self::Mismatch => "mismatch",
            Self::Released => "released",
            Self::Unavailable => "unavailable",
        };
        metrics::counter!(names::HTTP_IDEMPOTENCY, "outcome" => outcome).increment(1);
    }
}

fn unavailable(Unavailable { retry_after }: Unavailable) -> Error {
    Outcome::Unavailable.count();
    Error::Unavailable {
        detail: "requests with an Idempotency-Key cannot be checked now; retry later, or send the request without the key",
        retry_after,
    }
}

async fn run<S>(app: &AppState, mut inner: S, request: Request) -> Result<Response, Error>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let Some(store) = app.idempotency.as_ref() else {
        return Ok(call(&mut inner, request).await);
    };
    let key = parse_key(request.headers())?.to_owned();
    let (mut parts, body) = request.into_parts();
    // Bad credentials are refused here, before the key is claimed: whose key it is must be
    // known. The resolution is kept in the extensions, so the handler does not repeat it.
    let principal = Principal::from_request_parts(&mut parts, app).await?;
    // Buffered under the same limit (and with the same 413) as the handler's extractor.
    let body = Bytes::from_request(Request::from_parts(parts.clone(), body), app)
        .await
        .map_err(|rejection| match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
            _ => Error::BadRequest(rejection.body_text()),
        })?;
    let fingerprint = Fingerprint::of(&parts, &body);
    let record_key = store.key(&scope(&principal, parts.uri.path()), &key);
    let claim = Claim::new(fingerprint);

    match store
        .claim(&record_key, &claim)
        .await
        .map_err(unavailable)?
    {
        None => {}
        Some(record) if record.fingerprint() != fingerprint => {
            Outcome::Mismatch.count();
            return Err(Error::IdempotencyKeyReused);
        }
        Some(Record::Claimed(_)) => {
            Outcome::Conflict.count();
            return Err(Error::IdempotencyKeyInUse);
        }
        Some(Record::Answered(_, answer)) => {
            Outcome::Replayed.count();
            return Ok(replay(answer));
        }
    }

    let response = call(&mut inner, Request::from_parts(parts, Body::from(body))).await;
    if !keeps(&response) {
        // If this fails, the claim lapses with its lease instead.
        let _ = store.release(&record_key, &claim).await;
        Outcome::Released.count();
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    // POST answers here are one rendered resource or a problem: small, already in memory.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(err) => {
            let _ = store.release(&record_key, &claim).await;
            Outcome::Released.count();
            return Err(Error::Internal(
                anyhow::Error::new(err).context("Failed to buffer an answer to keep"),
            ));
        }
    };
    let answer = Answer::new(parts.status, &parts.headers, body.clone());
    match store.keep(&record_key, &claim, &answer).await {
        Ok(true) => Outcome::Stored.count(),
        Ok(false) => {
            tracing::warn!("a request outlived its idempotency lease; its answer is not kept");
            Outcome::Released.count();
        }
        Err(_) => {
            // The work is done: the client gets its answer; a retry after the lease runs again.
            tracing::warn!("an answer could not be kept for its idempotency key");
            Outcome::Unavailable.count();
        }
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

async fn call<S>(inner: &mut S, request: Request) -> Response
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The key, if it is one header of 1 to 255 visible ASCII characters; else a 400.
pub(crate) fn parse_key(headers: &HeaderMap) -> Result<&str, Error> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Error::BadRequest(
            "send one Idempotency-Key header, not several".into(),
        ));
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(Error::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters (no spaces), such as a UUID"
        )));
    }
    value
        .to_str()
        .map_err(|_| Error::BadRequest("Idempotency-Key is not ASCII".into()))
}

/// Whose keys these are: see the module doc.
fn scope(principal: &Principal, path: &str) -> String {
    match principal {
        // Per path: every anonymous client shares this scope, and a key one of them used for
        // a registration must not turn another's unauthenticated call elsewhere into a 422
        // instead of the 401 it is.
        Principal::Anonymous => format!("anonymous:{path}"),
        Principal::User(user) => format!("user:{}", user.id),
        Principal::ApiKey(key) => format!("key:{}", key.key_id),
    }
}

/// Whether an answer is kept for replay: see the module doc.
fn keeps(response: &Response) -> bool {
    let status = response.status();
    let no_store = response
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| directive.trim().eq_ignore_ascii_case("no-store"));
    let about_credentials = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    !(status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || about_credentials
        || no_store)
}

fn replay(answer: Answer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        headers.append(name, value);
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str) -> Result<String, Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            IDEMPOTENCY_KEY_HEADER,
            HeaderValue::from_str(value).expect("a header value"),
        );
        parse_key(&headers).map(str::to_owned)
    }

    #[test]
    fn a_key_is_1_to_255_visible_ascii_characters() {
        assert_eq!(
            key("0b6f4e1c-6f3a-4f0e-9d43-1f6f4c1f0c1e").ok().as_deref(),
            Some("0b6f4e1c-6f3a-4f0e-9d43-1f6f4c1f0c1e")
        );
        assert!(key(&"k".repeat(255)).is_ok());
        for bad in ["", "has space", &"k".repeat(256), "tab\there"] {
            assert!(matches!(key(bad), Err(Error::BadRequest(_))), "{bad:?}");
        }
    }

    #[test]
    fn errors_retries_and_secrets_are_not_kept() {
        let with = |status: StatusCode, cache_control: Option<&'static str>| {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = status;
            if let Some(value) = cache_control {
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
            }
            keeps(&response)
        };
        assert!(with(StatusCode::CREATED, None));
        assert!(with(StatusCode::UNPROCESSABLE_ENTITY, None));
        assert!(with(StatusCode::CONFLICT, Some("private, no-cache")));
        assert!(!with(StatusCode::SERVICE_UNAVAILABLE, None));
        assert!(!with(StatusCode::INTERNAL_SERVER_ERROR, None));
        assert!(!with(StatusCode::TOO_MANY_REQUESTS, None));
        assert!(!with(StatusCode::UNAUTHORIZED, None));
        assert!(!with(StatusCode::FORBIDDEN, None));
        assert!(!with(StatusCode::CREATED, Some("private, No-Store")));
    }
}
