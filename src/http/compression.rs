//! Answers compressed as the client asks: gzip, br or zstd, by `Accept-Encoding`
//! (tower-http's `CompressionLayer`).
//!
//! JSON compresses well (a page of 100 users comes out several times smaller), and the bytes saved
//! are the client's time on a slow link and the egress bill. The encoder's CPU is the cost,
//! on a service whose limit is CPU per request; so only answers of `http.compression.min_bytes`
//! (1 KiB) or more are compressed (a single user or post goes out as it is), at each
//! encoder's default level (brotli at 4, not its very slow 11), and never what is already
//! compressed or streamed (images, except SVG; event streams; gRPC): tower-http's
//! `DefaultPredicate` plus the size threshold. Answers that qualify carry
//! `Vary: Accept-Encoding` whether compressed or not, so a shared cache keeps them apart.
//!
//! `/metrics` is compressed like any answer: Prometheus asks for gzip and decodes it, and a
//! scrape is one of the largest answers the service gives. The probes are below the threshold.
//!
//! # ETags
//!
//! An `ETag` (`src/http/conditional.rs`) hashes the identity body, and tower-http leaves it
//! as it is. A strong ETag promises byte-identical bodies, which the gzip and identity answers
//! are not (RFC 9110 8.8.3: the content coding is part of the representation). So an answer
//! that went out encoded gets its ETag weakened (`W/"..."`), as nginx does: a weak ETag says
//! "the same content", which is what it hashes. Revalidation still works, since `If-None-Match`
//! compares weakly (`conditional.rs` strips `W/` and answers a weak tag with a weak one in the
//! 304). The alternative, a suffix per coding (`"...-gzip"`, Apache's), needs the conditional
//! check to know the codings and broke revalidation there for years.

use axum::{
    Router,
    http::{HeaderValue, header},
    middleware,
    response::Response,
};
use tower_http::compression::{
    CompressionLayer, DefaultPredicate, Predicate, predicate::SizeAbove,
};

use crate::{AppState, config::CompressionConfig};

pub(super) fn apply(router: Router<AppState>, config: &CompressionConfig) -> Router<AppState> {
    if !config.enabled {
        return router;
    }
    let worth_it = DefaultPredicate::new().and(SizeAbove::new(config.min_bytes));
    router
        .layer(CompressionLayer::new().compress_when(worth_it))
        // Outside the compression: it sees the `Content-Encoding` the layer chose.
        .layer(middleware::map_response(weaken_etag))
}

/// `W/` before the ETag of an encoded answer (see the module doc).
async fn weaken_etag(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if headers.contains_key(header::CONTENT_ENCODING)
        && let Some(etag) = headers.get(header::ETAG)
        && !etag.as_bytes().starts_with(b"W/")
    {
        let weak = [b"W/", etag.as_bytes()].concat();
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, weak);
        }
    }
    response
}
