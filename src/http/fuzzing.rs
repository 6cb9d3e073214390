//! Entry points for the fuzz targets (`fuzz/`, run by `scripts/fuzz`): the parsers of client
//! input that are private to their modules, one function each, doing no more than the
//! request path does with a header. Not an API: hidden from the docs, and nothing in the
//! service calls it. The parsers that are public already (`ConsistencyToken`'s `FromStr`,
//! `session::ConsistencyTokens::decode`, `domain::parse_id`, `Cursors::decode`,
//! `client::client_addr`, `Config::load`) are fuzzed directly.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::IntoResponse,
};

use super::{
    conditional::{Audience, conditional_json},
    cursor::Cursors,
    idempotency, versioning,
};
use crate::config::ApiVersion;

/// `body` with `cursors`' tag, as text: a cursor the server could have issued, whatever the
/// body holds, so that the fuzzer reaches the decoding behind the tag check.
pub fn seal_cursor(cursors: &Cursors, body: Vec<u8>) -> String {
    cursors.seal(body)
}

/// The version an unversioned request with these headers is served in; `None`: a 406.
pub fn negotiate(headers: &HeaderMap, default: ApiVersion) -> Option<ApiVersion> {
    versioning::negotiate(headers, default).ok()
}

/// The request's `Idempotency-Key`, if it is one the service accepts.
pub fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    idempotency::parse_key(headers).ok().map(str::to_owned)
}

/// A conditional GET of a resource whose rendering is `body` (a JSON string), with the
/// request's `headers` (`If-None-Match`): the status (200 or 304) and the `ETag`.
pub fn conditional_get(headers: &HeaderMap, body: &str) -> (StatusCode, Option<HeaderValue>) {
    match conditional_json(headers, &body, Audience::Public) {
        Ok(response) => (
            response.status(),
            response.headers().get(header::ETAG).cloned(),
        ),
        Err(err) => (err.into_response().status(), None),
    }
}
