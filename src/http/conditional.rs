//! HTTP caching for single resources: `ETag` and `If-None-Match` -> 304, and a
//! `Cache-Control` that is honest about who may reuse a response.
//!
//! The ETag hashes the rendered body, so it changes exactly when what this viewer sees
//! changes (a user's own view includes their email; others' does not, and neither do their
//! ETags). A 304 still costs the server the lookup and the rendering, but not the transfer.
//! `no-cache` means "revalidate every time": the data changes under writes we cannot predict,
//! so no max-age is safe to promise; a per-viewer body is `private` (no shared cache may keep
//! it) and `Vary: Authorization`.
//!
//! The body is serialised here (timed as the `ser` entry of `Server-Timing`, like
//! [`super::extract::Json`]'s).
//!
//! The hash is std's SipHash with fixed keys: stable for a given build, so ETags change
//! across deploys (one full response per client after a deploy), which is harmless.

use std::hash::{DefaultHasher, Hash, Hasher};

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::error::Error;

/// Who may reuse a response.
#[derive(Debug, Clone, Copy)]
pub enum Audience {
    /// The same for every viewer: shared caches may keep it.
    Public,
    /// Depends on the viewer's credentials.
    PerViewer,
}

/// A JSON response with an ETag, or 304 when the client's `If-None-Match` already names it.
pub fn conditional_json<T: Serialize>(
    request: &HeaderMap,
    value: &T,
    audience: Audience,
) -> Result<Response, Error> {
    let start = std::time::Instant::now();
    let body = serde_json::to_vec(value);
    super::session::record_serialization(start.elapsed());
    let body = body.map_err(|err| Error::Internal(err.into()))?;
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    let mut etag = format!("\"{:016x}\"", hasher.finish());
    // Weak comparison (RFC 9110 13.1.2): a compressed answer's ETag went out weak
    // (`src/http/compression.rs`) and comes back as `W/"..."`.
    let matched = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|tag| {
            let (weak, opaque) = match tag.strip_prefix("W/") {
                Some(opaque) => (true, opaque),
                None => (false, tag),
            };
            (opaque == etag || opaque == "*").then_some(weak)
        });
    let mut response = if let Some(weak) = matched {
        // The 304 names the ETag as the client holds it, so that its cache, which matches
        // stored answers by validator, freshens the one it has.
        if weak {
            etag.insert_str(0, "W/");
        }
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    audience.mark(headers);
    Ok(response)
}

impl Audience {
    /// Says who may reuse an answer: `Cache-Control`, and for a per-viewer body `Vary:
    /// Authorization`. Lists say it too: a page of users holds the viewer's own email when
    /// the viewer is on it, and a shared cache must not hand that page to the next client.
    pub fn mark(self, headers: &mut HeaderMap) {
        match self {
            Audience::Public => {
                headers.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, no-cache"),
                );
            }
            Audience::PerViewer => {
                headers.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, no-cache"),
                );
                headers.append(header::VARY, HeaderValue::from_static("Authorization"));
            }
        }
    }
}
