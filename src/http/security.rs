//! What every answer tells a browser: security headers, and CORS from config.
//!
//! - `X-Content-Type-Options: nosniff`: a JSON body is never sniffed into HTML or script.
//! - `X-Frame-Options: DENY`: no page of this API (GraphiQL included) can be framed by
//!   another site to trick a click.
//! - `Referrer-Policy: no-referrer`: ids in URLs do not leak to other sites.
//! - `Strict-Transport-Security` only with `http.hsts`: behind a TLS proxy, where a browser
//!   must never be talked back to plain HTTP; sent over plain HTTP it would lock a developer's
//!   `localhost` to HTTPS for a year.
//! - CORS: none by default, so browsers keep other sites' pages from calling the API with a
//!   user's token. `http.cors_origins` lists the origins that may (or `*`); a preflight from
//!   any other origin gets no `Access-Control-Allow-Origin` and the browser refuses.
//!
//! Outside every other layer but the telemetry one, so errors, timeouts and caught panics
//! carry the headers too.

use axum::{
    Router,
    http::{HeaderName, HeaderValue, Method, header},
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    set_header::SetResponseHeaderLayer,
};

use super::{
    idempotency::{IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER},
    limits::{RATELIMIT_HEADER, RATELIMIT_POLICY_HEADER},
    session::{CACHE_HEADER, CONSISTENCY_HEADER, DB_ROUTE_HEADER},
    versioning::{DEPRECATION_HEADER, SUNSET_HEADER},
};
use crate::{AppState, config::HttpConfig};

pub(super) fn apply(router: Router<AppState>, http: &HttpConfig) -> Router<AppState> {
    let always = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    let hsts = http.hsts.then_some((
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    ));
    let mut router = always
        .into_iter()
        .chain(hsts)
        .fold(router, |router, (name, value)| {
            router.layer(SetResponseHeaderLayer::if_not_present(
                name,
                HeaderValue::from_static(value),
            ))
        });
    if let Some(cors) = cors(&http.cors_origins) {
        router = router.layer(cors);
    }
    router
}

/// The CORS layer for `origins` (validated by `HttpConfig::validate`); `None` when empty.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let exposed: [HeaderName; 12] = [
        CONSISTENCY_HEADER,
        CACHE_HEADER,
        DB_ROUTE_HEADER,
        header::ETAG,
        header::LOCATION,
        header::RETRY_AFTER,
        RATELIMIT_POLICY_HEADER,
        RATELIMIT_HEADER,
        // v1's deprecation notices, so that a page can warn its developers too.
        DEPRECATION_HEADER,
        SUNSET_HEADER,
        header::LINK,
        REPLAYED_HEADER,
    ];
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                CONSISTENCY_HEADER,
                IDEMPOTENCY_KEY_HEADER,
            ])
            .expose_headers(exposed)
            .max_age(std::time::Duration::from_secs(600)),
    )
}
