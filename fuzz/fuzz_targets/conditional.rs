//! `If-None-Match` against a resource's `ETag` (src/http/conditional.rs). Input: the
//! resource's rendering (first line), then `If-None-Match` values, one per line. Properties:
//! - the answer is 200 or 304 and always carries the ETag, weak only if the match was weak;
//! - a 304 needs the ETag or `*` somewhere in the headers;
//! - the ETag sent back (strong or weak), alone or after any other values, is a 304.
#![no_main]

use http::{HeaderMap, HeaderValue, StatusCode, header::IF_NONE_MATCH};
use libfuzzer_sys::fuzz_target;
use scalable_api::http::fuzzing::conditional_get;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(Ok(body)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let (status, etag) = conditional_get(&HeaderMap::new(), body);
    assert_eq!(status, StatusCode::OK);
    let etag = etag.expect("a 200 carries an ETag");
    let etag = etag.to_str().expect("an ETag is visible ASCII").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );
    let weak = format!("W/{etag}");

    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(IF_NONE_MATCH, value);
        }
    }
    let (status, answered) = conditional_get(&headers, body);
    let answered = answered.expect("every answer carries the ETag");
    let named = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(&etag) || v.contains('*'));
    match status {
        StatusCode::OK => assert_eq!(answered, etag.as_str()),
        StatusCode::NOT_MODIFIED => {
            assert!(named, "304 without the ETag or `*` in {headers:?}");
            assert!(answered == etag.as_str() || answered == weak.as_str());
        }
        other => panic!("{other} for a conditional GET"),
    }

    for sent in [&etag, &weak] {
        let value = HeaderValue::from_str(sent).expect("an ETag is a header value");
        let mut alone = HeaderMap::new();
        alone.insert(IF_NONE_MATCH, value.clone());
        assert_eq!(
            conditional_get(&alone, body),
            (StatusCode::NOT_MODIFIED, Some(value.clone()))
        );
        let mut after = headers.clone();
        after.append(IF_NONE_MATCH, value);
        assert_eq!(conditional_get(&after, body).0, StatusCode::NOT_MODIFIED);
    }
});
