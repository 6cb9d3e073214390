//! API versioning: REST versions side by side under their prefix (`/v1`, `/v2`), unversioned
//! paths (`/users/4`) served in the version `Accept` names, and v1's deprecation notices.
//!
//! **Header versioning.** An unversioned resource path picks its version from the vendor media
//! type in `Accept`: `application/vnd.scalable-api.v1+json` -> v1, `...v2+json` -> v2; no
//! vendor type (no `Accept`, `*/*`, `application/json`) -> `http.versioning.default` (v2).
//! The request's URI is rewritten to the versioned path (`/users/4` -> `/v1/users/4`) *before*
//! the router sees it, so no handler exists twice, and everything behind the router (rate
//! limits, shedding, metrics, logs) sees the versioned route template, as if the client had
//! called `/v1/users/{id}` itself. That is why this is a service around the `Router` and not
//! one of its layers: `Router::layer` runs after routing, too late to change the route.
//!
//! `Accept` rules, kept simple: only vendor types count (`application/json;q=1` does not
//! outweigh a vendor type); among those naming a version on offer the highest `q` wins (the
//! first listed on a tie); `q=0` refuses that version. A vendor type naming only versions
//! not on offer (`...v3+json`), or a refused default, gets 406 problem+json listing the
//! types on offer. A vendor type without a version (`application/vnd.scalable-api+json`) names
//! none: the default. Every answer on an unversioned path carries `Vary: Accept`, so no cache
//! hands a v1 body to a v2 client. `/v1/...` and `/v2/...` ignore `Accept`'s version.
//!
//! **Deprecation.** With `http.versioning.v1_deprecated_at` set, every v1 answer (errors, 429s
//! and timeouts included, and unversioned requests that resolved to v1) carries
//! `Deprecation: @<unix seconds>` (RFC 9745), `Sunset: <HTTP-date>` (RFC 8594, with
//! `v1_sunset_at`) and `Link: </v2/...>; rel="successor-version"`, the same path in v2. v2 and
//! GraphQL answers never do. Who still calls v1, per route: `http_api_version_requests_total`
//! (counted by `telemetry::http`).
//!
//! Cost: a prefix comparison on every request; on unversioned paths a scan of `Accept` and a
//! rebuilt URI; on answers that get headers (v1, unversioned) one boxed future and, for the
//! `Link`, one formatted string. v2 and GraphQL requests go straight to the router's future.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    Router,
    extract::Request,
    http::{
        HeaderMap, HeaderName, HeaderValue, Uri,
        header::{self, ACCEPT},
        uri::PathAndQuery,
    },
    response::Response,
    routing::future::RouteFuture,
};
use futures_util::future::Either;
use tower::Service;

use crate::{
    config::{ApiVersion, VersioningConfig},
    error::Error,
};

/// RFC 9745.
pub const DEPRECATION_HEADER: HeaderName = HeaderName::from_static("deprecation");
/// RFC 8594.
pub const SUNSET_HEADER: HeaderName = HeaderName::from_static("sunset");

/// The vendor media types name a version between these: `application/vnd.scalable-api.v1+json`.
const VENDOR_PREFIX: &str = "application/vnd.scalable-api.";
const VENDOR_SUFFIX: &str = "+json";

/// The first segments of the versioned routes: `/users/4` is unversioned, `/graphql`,
/// `/healthz` and `/metrics` are not versioned at all. A new resource joins here.
const RESOURCES: [&str; 4] = ["/users", "/posts", "/auth", "/api-keys"];

/// The router with header versioning in front of it: what the server serves
/// ([`super::service`]).
#[derive(Clone)]
pub struct HeaderVersioning {
    router: Router,
    policy: Arc<Policy>,
}

impl HeaderVersioning {
    pub fn new(router: Router, config: &VersioningConfig) -> Self {
        Self {
            router,
            policy: Arc::new(Policy::new(config)),
        }
    }
}

/// Set on an unversioned request whose `Accept` named no version on offer: it reaches the
/// router unrewritten, matches no route, and the router's fallback answers [`not_acceptable`]
/// instead of 404. Answering there rather than here keeps the 406 inside every layer (request
/// id, access log, metrics, rate limits).
#[derive(Debug, Clone, Copy)]
pub struct VersionNotOffered;

/// The 406 for [`VersionNotOffered`], naming the types on offer and the default.
pub fn not_acceptable(default: ApiVersion) -> Error {
    let offered: Vec<String> = ApiVersion::ALL
        .iter()
        .map(|v| format!("{VENDOR_PREFIX}{}{VENDOR_SUFFIX}", v.as_str()))
        .collect();
    Error::NotAcceptable(format!(
        "this Accept header accepts none of the API versions on offer: {} (or no vendor type: {}, the default)",
        offered.join(", "),
        default.as_str()
    ))
}

/// The configuration, with its headers rendered once.
struct Policy {
    default: ApiVersion,
    /// `Deprecation` and `Sunset` for v1, when v1 is deprecated.
    v1_notice: Option<(HeaderValue, Option<HeaderValue>)>,
}

impl Policy {
    fn new(config: &VersioningConfig) -> Self {
        let v1_notice = config.v1_deprecated_at.map(|deprecated| {
            // An sf-date (RFC 9651): `@` and the Unix time in seconds.
            let deprecation = HeaderValue::try_from(format!("@{}", deprecated.timestamp()))
                .expect("`@` and an integer are a header value");
            let sunset = config.v1_sunset_at.map(|sunset| {
                // IMF-fixdate, the HTTP-date every client parses.
                HeaderValue::try_from(sunset.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
                    .expect("a formatted date is printable ASCII, a header value")
            });
            (deprecation, sunset)
        });
        Self {
            default: config.default,
            v1_notice,
        }
    }
}

/// What a request's answer gets on its way out.
struct Notices {
    vary_accept: bool,
    /// `Deprecation`, `Sunset`, `Link`.
    deprecation: Option<(HeaderValue, Option<HeaderValue>, Option<HeaderValue>)>,
}

impl Notices {
    fn apply(self, headers: &mut HeaderMap) {
        if self.vary_accept && !varies_on_accept(headers) {
            headers.append(header::VARY, HeaderValue::from_static("Accept"));
        }
        if let Some((deprecation, sunset, link)) = self.deprecation {
            headers.insert(DEPRECATION_HEADER, deprecation);
            if let Some(sunset) = sunset {
                headers.insert(SUNSET_HEADER, sunset);
            }
            if let Some(link) = link {
                headers.append(header::LINK, link);
            }
        }
    }
}

fn varies_on_accept(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*" || v.trim().eq_ignore_ascii_case("accept"))
}

type Decorated = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Service<Request> for HeaderVersioning {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<RouteFuture<Infallible>, Decorated>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let path = request.uri().path();
        let (version, vary_accept) = if let Some(version) = versioned(path) {
            (Some(version), false)
        } else if is_unversioned_resource(path) {
            match negotiate(request.headers(), self.policy.default) {
                Ok(version) => {
                    rewrite(&mut request, version);
                    (Some(version), true)
                }
                Err(VersionNotOffered) => {
                    request.extensions_mut().insert(VersionNotOffered);
                    (None, true)
                }
            }
        } else {
            (None, false)
        };
        let deprecation = match (version, &self.policy.v1_notice) {
            (Some(ApiVersion::V1), Some((deprecation, sunset))) => Some((
                deprecation.clone(),
                sunset.clone(),
                successor_link(request.uri().path()),
            )),
            _ => None,
        };
        let future = self.router.call(request);
        if !vary_accept && deprecation.is_none() {
            return Either::Left(future);
        }
        let notices = Notices {
            vary_accept,
            deprecation,
        };
        Either::Right(Box::pin(async move {
            let mut response = future.await?;
            notices.apply(response.headers_mut());
            Ok(response)
        }))
    }
}

/// The version whose prefix `path` starts with (`/v1`, `/v1/...`; not `/v1x`).
fn versioned(path: &str) -> Option<ApiVersion> {
    ApiVersion::ALL
        .into_iter()
        .find(|v| under(path, v.prefix()))
}

fn is_unversioned_resource(path: &str) -> bool {
    RESOURCES.iter().any(|resource| under(path, resource))
}

/// `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `</v2/users/4>; rel="successor-version"` for the v1 path `/v1/users/4`.
fn successor_link(v1_path: &str) -> Option<HeaderValue> {
    let rest = v1_path.strip_prefix(ApiVersion::V1.prefix())?;
    let successor = ApiVersion::V2.prefix();
    HeaderValue::try_from(format!("<{successor}{rest}>; rel=\"successor-version\"")).ok()
}

/// `/users/4?limit=5` -> `/v1/users/4?limit=5`.
fn rewrite(request: &mut Request, version: ApiVersion) {
    let uri = request.uri();
    let path_and_query = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let mut parts = uri.clone().into_parts();
    // Cannot fail: a valid path and query behind a prefix of path characters is still one;
    // if it ever did, the request would stay unversioned and get the fallback's 404.
    let Ok(rewritten) = PathAndQuery::try_from(format!("{}{path_and_query}", version.prefix()))
    else {
        return;
    };
    parts.path_and_query = Some(rewritten);
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// The version `Accept` asks for (module doc for the rules).
pub(super) fn negotiate(
    headers: &HeaderMap,
    default: ApiVersion,
) -> Result<ApiVersion, VersionNotOffered> {
    // (version, weight in thousandths); the first listed wins a tie.
    let mut best: Option<(ApiVersion, u16)> = None;
    let mut refused = Vec::new();
    let mut asked_for_another = false;
    let ranges = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for range in ranges {
        let Some((requested, weight)) = vendor_version(range) else {
            continue;
        };
        match (requested, weight) {
            (Requested::Offered(version), 0) => refused.push(version),
            (Requested::Offered(version), weight) => {
                if best.is_none_or(|(_, current)| weight > current) {
                    best = Some((version, weight));
                }
            }
            (Requested::Other, 0) => {}
            (Requested::Other, _) => asked_for_another = true,
        }
    }
    match best {
        Some((version, _)) => Ok(version),
        None if asked_for_another || refused.contains(&default) => Err(VersionNotOffered),
        None => Ok(default),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Requested {
    Offered(ApiVersion),
    /// A version this service does not serve (`v3`, `vfoo`).
    Other,
}

/// The version a media range of `Accept` names, with its weight in thousandths; `None` for
/// anything but a versioned vendor type, or a malformed weight (the range is ignored).
fn vendor_version(range: &str) -> Option<(Requested, u16)> {
    let mut parts = range.split(';');
    let media_type = parts.next()?.trim().to_ascii_lowercase();
    let version = media_type
        .strip_prefix(VENDOR_PREFIX)?
        .strip_suffix(VENDOR_SUFFIX)?;
    let requested = ApiVersion::ALL
        .into_iter()
        .find(|v| v.as_str() == version)
        .map_or(Requested::Other, Requested::Offered);
    let mut weight = 1000;
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            weight = qvalue(value.trim())?;
        }
    }
    Some((requested, weight))
}

/// RFC 9110's qvalue (`0`, `0.5`, `1.000`) in thousandths.
fn qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits_ok = fraction.len() <= 3 && fraction.bytes().all(|b| b.is_ascii_digit());
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" if digits_ok => Some(thousandths),
        "1" if digits_ok && thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Login and registration, in any REST version (`/v1/auth/login`, `/v2/auth/register`):
/// unversioned paths are rewritten to a version before the limits and the
/// shedder, which ask this, see them.
pub(crate) fn is_auth(path: &str) -> bool {
    path.strip_prefix("/v")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(version, rest)| {
            !version.is_empty()
                && version.bytes().all(|b| b.is_ascii_digit())
                && rest.starts_with("auth/")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                ACCEPT,
                HeaderValue::from_str(value).expect("a header value"),
            );
        }
        headers
    }

    fn pick(values: &[&str]) -> Result<ApiVersion, VersionNotOffered> {
        negotiate(&accept(values), ApiVersion::V2)
    }

    const V1: &str = "application/vnd.scalable-api.v1+json";
    const V2: &str = "application/vnd.scalable-api.v2+json";

    #[test]
    fn no_vendor_type_gets_the_default() {
        let cases: [&[&str]; 4] = [
            &[],
            &["*/*"],
            &["application/json"],
            &["application/vnd.scalable-api+json"],
        ];
        for values in cases {
            assert!(matches!(pick(values), Ok(ApiVersion::V2)), "{values:?}");
        }
        assert!(matches!(
            negotiate(&accept(&["application/json"]), ApiVersion::V1),
            Ok(ApiVersion::V1)
        ));
    }

    #[test]
    fn a_vendor_type_names_its_version_in_any_case_with_parameters() {
        assert!(matches!(pick(&[V1]), Ok(ApiVersion::V1)));
        assert!(matches!(
            pick(&["Application/VND.Scalable-API.V1+JSON; charset=utf-8"]),
            Ok(ApiVersion::V1)
        ));
        assert!(matches!(
            pick(&["application/json, application/vnd.scalable-api.v1+json"]),
            Ok(ApiVersion::V1)
        ));
    }

    #[test]
    fn the_highest_q_wins_and_the_first_listed_breaks_a_tie() {
        let v1 = |values: &[String]| {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            matches!(pick(&values), Ok(ApiVersion::V1))
        };
        assert!(v1(&[format!("{V2};q=0.5, {V1};q=0.9")]));
        // Over several Accept lines too.
        assert!(v1(&[format!("{V2};q=0.5"), format!("{V1};q=0.51")]));
        assert!(v1(&[format!("{V1};q=0.8, {V2};q=0.8")]));
        assert!(!v1(&[format!("{V2};q=0.8, {V1};q=0.8")]));
        // A version on offer beats one that is not, whatever their weights.
        assert!(v1(&[format!(
            "application/vnd.scalable-api.v3+json, {V1};q=0.1"
        )]));
    }

    #[test]
    fn only_versions_not_on_offer_or_a_refused_default_are_not_acceptable() {
        assert!(pick(&["application/vnd.scalable-api.v3+json"]).is_err());
        assert!(pick(&["application/vnd.scalable-api.vfoo+json"]).is_err());
        assert!(pick(&[format!("{V2};q=0").as_str()]).is_err());
        assert!(matches!(
            pick(&[format!("{V2};q=0, {V1}").as_str()]),
            Ok(ApiVersion::V1)
        ));
        // q=0 on a version not on offer refuses nothing that matters.
        assert!(matches!(
            pick(&["application/vnd.scalable-api.v3+json;q=0"]),
            Ok(ApiVersion::V2)
        ));
    }

    #[test]
    fn malformed_weights_drop_their_range() {
        for q in ["2", "0.1234", "-1", "1.5", "x", ""] {
            assert!(
                matches!(pick(&[format!("{V1};q={q}").as_str()]), Ok(ApiVersion::V2)),
                "q={q}"
            );
        }
        assert_eq!(qvalue("0.25"), Some(250));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("1."), Some(1000));
    }

    #[test]
    fn only_resource_paths_are_unversioned_and_prefixes_end_at_a_segment() {
        assert!(is_unversioned_resource("/users"));
        assert!(is_unversioned_resource("/users/4/posts"));
        assert!(is_unversioned_resource("/auth/login"));
        assert!(is_unversioned_resource("/api-keys/3"));
        for path in [
            "/graphql",
            "/healthz",
            "/metrics",
            "/usersx",
            "/",
            "/v1/users",
        ] {
            assert!(!is_unversioned_resource(path), "{path}");
        }
        assert_eq!(versioned("/v1/users/4"), Some(ApiVersion::V1));
        assert_eq!(versioned("/v1"), Some(ApiVersion::V1));
        assert_eq!(versioned("/v2/posts"), Some(ApiVersion::V2));
        assert_eq!(versioned("/v10/posts"), None);
        assert_eq!(versioned("/v1x"), None);
    }

    #[test]
    fn the_successor_is_the_same_path_in_v2() {
        let link = successor_link("/v1/users/4/posts").expect("a link");
        assert_eq!(link, "</v2/users/4/posts>; rel=\"successor-version\"");
    }

    #[test]
    fn the_notices_are_an_sf_date_and_an_http_date() {
        let date = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|d| d.to_utc())
                .expect("a valid RFC 3339 date")
        };
        let policy = Policy::new(&VersioningConfig {
            default: ApiVersion::V2,
            v1_deprecated_at: Some(date("2026-01-01T00:00:00Z")),
            v1_sunset_at: Some(date("2026-07-01T00:00:00Z")),
        });
        let (deprecation, sunset) = policy.v1_notice.expect("v1 is deprecated");
        assert_eq!(deprecation, "@1767225600");
        assert_eq!(sunset.expect("a sunset"), "Wed, 01 Jul 2026 00:00:00 GMT");
        assert!(
            Policy::new(&VersioningConfig::default())
                .v1_notice
                .is_none()
        );
    }

    #[test]
    fn vary_accept_is_added_once() {
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Authorization"));
        let notices = || Notices {
            vary_accept: true,
            deprecation: None,
        };
        notices().apply(&mut headers);
        notices().apply(&mut headers);
        let vary: Vec<_> = headers.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Authorization", "Accept"]);
    }
}
