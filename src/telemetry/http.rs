//! The one layer every request passes through for observability: request id, server span,
//! trace context, RED metrics, access log.
//!
//! Done once here, never by hand in handlers: a handler's log lines and SQL spans are inside
//! the request span, so they carry its ids without knowing about them.

use std::{net::SocketAddr, time::Instant};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use tower_http::request_id::{MakeRequestId, MakeRequestUuid, RequestId};
use tracing::{Instrument, field::Empty};

use super::{names, traces::RequestTrace};

/// `X-Request-Id`: taken from the request when it is usable, generated otherwise, and
/// returned on the response. It is what a user quotes in a support ticket; the trace id is
/// what links services.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request span's name; the log filter always keeps it (see `super::subscriber`), so a
/// `warn` line still says which request it belongs to.
pub(crate) const REQUEST_SPAN: &str = "request";
/// The request span's target (this module, the default).
pub(crate) const SPAN_TARGET: &str = module_path!();

/// The route label of a request that matched no route: one fixed value, so scanners probing
/// random paths add one series, not one per path.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A client-sent request id longer than this, or with other characters than
/// `[A-Za-z0-9._:-]`, is replaced: it lands in every log line of the request.
const MAX_REQUEST_ID: usize = 128;

/// The middleware (outermost layer): everything inside, panics and timeouts included, is
/// measured and logged with the request's ids.
///
/// Cost per request: a span (a slab slot and its fields), a request id (a UUID v4 when the
/// client sent none), one histogram update (and a counter on REST routes), one access log
/// line, and, with an exporter, one OpenTelemetry span queued for export.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let request_id = accepted_request_id(&request).unwrap_or_else(|| {
        MakeRequestUuid.make_request_id(&request).map_or_else(
            || HeaderValue::from_static("-"),
            |id| id.into_header_value(),
        )
    });
    let span = tracing::info_span!(
        REQUEST_SPAN,
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = route.as_str(),
        http.response.status_code = Empty,
        request_id = request_id.to_str().unwrap_or_default(),
        trace_id = Empty,
        client.address = Empty,
    );
    // The socket peer: behind a proxy, the proxy (trusting its `X-Forwarded-For` is the
    // traffic layer's decision, not the log's).
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        span.record("client.address", tracing::field::display(peer.ip()));
    }
    let trace = RequestTrace::start(&span, request.headers());
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    request
        .headers_mut()
        .insert(REQUEST_ID_HEADER, request_id.clone());
    request
        .extensions_mut()
        .insert(RequestId::new(request_id.clone()));

    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    let elapsed = start.elapsed();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(version) = api_version(&route) {
        metrics::counter!(
            names::HTTP_API_VERSION_REQUESTS,
            "version" => version.to_owned(),
            "route" => route.clone(),
        )
        .increment(1);
    }
    metrics::histogram!(
        names::HTTP_SERVER_REQUEST_DURATION,
        "method" => method,
        "route" => route,
        "status" => status.as_u16().to_string(),
    )
    .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            target: "scalable_api::access",
            status = status.as_u16(),
            latency_ms = elapsed.as_micros() as f64 / 1_000.0,
            "request"
        );
    });
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER, request_id);
    trace.inject(headers);
    response
}

/// The client's `X-Request-Id` when it is safe to log and echo (a proxy in front usually
/// sets one; keeping it links our lines to the proxy's).
fn accepted_request_id(request: &Request) -> Option<HeaderValue> {
    let value = request.headers().get(REQUEST_ID_HEADER)?;
    let usable = (1..=MAX_REQUEST_ID).contains(&value.len())
        && value
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    usable.then(|| value.clone())
}

/// The REST version of a route template: its first segment when that is `v<digits>`
/// (`/v1/users/{id}` -> `v1`). Read off the template, never the raw path: an unmatched path
/// (`/v1/nope`, `unmatched`) is not a version's route and adds no series. Unversioned paths
/// were rewritten to their version before routing (`src/http/versioning.rs`), so a v1 request
/// chosen by `Accept` counts here as v1 too.
fn api_version(route: &str) -> Option<&str> {
    let segment = route.strip_prefix('/')?.split('/').next()?;
    let digits = segment.strip_prefix('v')?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(segment)
}

/// Methods are client-chosen tokens: anything non-standard is one label, `_OTHER` (as
/// OpenTelemetry's HTTP conventions do), so it cannot create series at will.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with_id(id: &str) -> Request {
        Request::builder()
            .header(REQUEST_ID_HEADER, id)
            .body(axum::body::Body::empty())
            .expect("a valid request")
    }

    #[test]
    fn a_sane_request_id_is_kept_and_anything_else_replaced() {
        assert!(accepted_request_id(&request_with_id("req-42_a.b:c")).is_some());
        assert!(accepted_request_id(&request_with_id("has space")).is_none());
        assert!(accepted_request_id(&request_with_id("k=v\"")).is_none());
        assert!(accepted_request_id(&request_with_id(&"a".repeat(129))).is_none());
    }

    #[test]
    fn only_versioned_route_templates_have_an_api_version() {
        assert_eq!(api_version("/v1/users/{id}"), Some("v1"));
        assert_eq!(api_version("/v2/posts"), Some("v2"));
        assert_eq!(api_version("/v12/posts"), Some("v12"));
        for route in [
            "/graphql",
            "/healthz",
            UNMATCHED_ROUTE,
            "/v/x",
            "/vx/users",
            "/users",
        ] {
            assert_eq!(api_version(route), None, "{route}");
        }
    }

    #[test]
    fn non_standard_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        let custom = Method::from_bytes(b"PURGE").expect("a valid token");
        assert_eq!(method_label(&custom), "_OTHER");
    }
}
