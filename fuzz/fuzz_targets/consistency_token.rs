//! `X-Consistency-Token`: the token (`ConsistencyToken`'s `FromStr`, src/db/consistency.rs)
//! and the signed header it travels in (`ConsistencyTokens`, src/http/session.rs). Input: a
//! header value. Properties:
//! - a token that parses prints as a token that parses to the same value, and that text is
//!   a fixed point; merging a token into itself changes nothing;
//! - the header the service issues for a token decodes to that token, and not under another
//!   deployment's key;
//! - a header that decodes does not decode under another key, and re-issued it decodes to
//!   the same token.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use scalable_api::{config::Config, db::ConsistencyToken, http::session::ConsistencyTokens};

/// The service's signer (the development secret) and another deployment's.
static KEYS: LazyLock<(ConsistencyTokens, ConsistencyTokens)> = LazyLock::new(|| {
    let ours = ConsistencyTokens::new(&Config::default().auth);
    let mut auth = Config::default().auth;
    auth.jwt_secret = "a production secret of at least thirty-two bytes".into();
    (ours, ConsistencyTokens::new(&auth))
});

fuzz_target!(|data: &[u8]| {
    let (ours, theirs) = &*KEYS;
    // The header reaches the parser as `&str` (`HeaderValue::to_str`); any text is tried.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = ours.decode(text) {
        assert!(theirs.decode(text).is_err(), "both keys accept {text:?}");
        assert_eq!(ours.decode(&ours.encode(&token)).ok(), Some(token));
    }

    let Ok(token) = text.parse::<ConsistencyToken>() else {
        return;
    };
    let shown = token.to_string();
    let again = match shown.parse::<ConsistencyToken>() {
        Ok(again) => again,
        Err(err) => panic!("{text:?} parsed, but its own text {shown:?} does not: {err}"),
    };
    assert_eq!(again, token, "{text:?} -> {shown:?}");
    assert_eq!(again.to_string(), shown, "the display is not a fixed point");
    let mut merged = token.clone();
    merged.merge(&token);
    assert_eq!(merged, token, "merging a token into itself changed it");

    let issued = ours.encode(&token);
    assert_eq!(ours.decode(&issued).ok(), Some(token), "{issued:?}");
    assert!(
        theirs.decode(&issued).is_err(),
        "another key accepts {issued:?}"
    );
});
