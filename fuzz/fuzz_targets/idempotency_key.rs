//! `Idempotency-Key` (src/http/idempotency/mod.rs): one header of 1 to 255 visible ASCII
//! characters is the key, byte for byte; anything else (several headers, empty, too long,
//! spaces or other bytes) is refused. Input: the header values, one per line.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use scalable_api::http::{fuzzing::idempotency_key, idempotency::IDEMPOTENCY_KEY_HEADER};

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        // What hyper could hand over: a value without CR, LF or NUL.
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(IDEMPOTENCY_KEY_HEADER, value);
        }
    }
    let values: Vec<&[u8]> = headers
        .get_all(IDEMPOTENCY_KEY_HEADER)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let acceptable = match values.as_slice() {
        [one] => (1..=255).contains(&one.len()) && one.iter().all(u8::is_ascii_graphic),
        _ => false,
    };
    match idempotency_key(&headers) {
        Some(key) => {
            assert!(acceptable, "accepted {values:?}");
            assert_eq!(key.as_bytes(), values[0]);
        }
        None => assert!(!acceptable, "refused {values:?}"),
    }
});
