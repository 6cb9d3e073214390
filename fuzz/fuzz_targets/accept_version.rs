//! The version `Accept` asks for (src/http/versioning.rs). Input: `Accept` header values, one
//! per line. Properties, none of which restates the parser:
//! - the ranges are the same whether they come in several headers or in one, comma-joined;
//! - no vendor type at all: the default;
//! - a version chosen that is not the default is chosen whatever the default;
//! - `application/vnd.scalable-api.v1+json` listed first, unweighted, wins (q=1, first on a tie).
#![no_main]

use http::{HeaderMap, HeaderValue, header::ACCEPT};
use libfuzzer_sys::fuzz_target;
use scalable_api::{config::ApiVersion, http::fuzzing::negotiate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let mut headers = HeaderMap::new();
    for line in &lines {
        // Only values the parser reads as text: one it cannot read (obs-text) is skipped,
        // which would break the comma-join comparison below.
        match HeaderValue::from_str(line) {
            Ok(value) if value.to_str().is_ok() => {
                headers.append(ACCEPT, value);
            }
            _ => return,
        }
    }
    let v1 = negotiate(&headers, ApiVersion::V1);
    let v2 = negotiate(&headers, ApiVersion::V2);

    let mut joined = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&lines.join(",")) {
        joined.insert(ACCEPT, value);
        assert_eq!(negotiate(&joined, ApiVersion::V1), v1, "joined: {lines:?}");
        assert_eq!(negotiate(&joined, ApiVersion::V2), v2, "joined: {lines:?}");
    }

    if !text.to_ascii_lowercase().contains("vnd.scalable-api.") {
        assert_eq!(v1, Some(ApiVersion::V1), "{lines:?}");
        assert_eq!(v2, Some(ApiVersion::V2), "{lines:?}");
    }
    if v1 == Some(ApiVersion::V2) {
        assert_eq!(v2, Some(ApiVersion::V2), "{lines:?}");
    }
    if v2 == Some(ApiVersion::V1) {
        assert_eq!(v1, Some(ApiVersion::V1), "{lines:?}");
    }

    let mut first_v1 = HeaderMap::new();
    first_v1.append(
        ACCEPT,
        HeaderValue::from_static("application/vnd.scalable-api.v1+json"),
    );
    for value in headers.get_all(ACCEPT) {
        first_v1.append(ACCEPT, value.clone());
    }
    assert_eq!(
        negotiate(&first_v1, ApiVersion::V2),
        Some(ApiVersion::V1),
        "v1 listed first: {lines:?}"
    );
});
