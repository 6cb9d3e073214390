//! Resource ids (`domain::parse_id`, REST paths and GraphQL `ID`s): accepted exactly when the
//! text is the canonical decimal of a positive `i64`, so that one resource has one URL, one
//! cache key and one ETag scope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scalable_api::domain::parse_id;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    match parse_id(raw) {
        Ok(id) => {
            assert!(id > 0, "{raw:?} gave {id}");
            assert_eq!(format!("{id}"), raw, "a non-canonical id was accepted");
        }
        Err(_) => {
            // Refused: then it is not the canonical text of a positive i64.
            if let Ok(n) = raw.parse::<i64>() {
                assert!(n <= 0 || format!("{n}") != raw, "canonical {raw:?} refused");
            }
        }
    }
});
