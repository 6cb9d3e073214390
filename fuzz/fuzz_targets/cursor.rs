//! The v2 lists' cursors (src/http/cursor.rs). The first input byte picks what the rest is:
//! - 0: a cursor's text from a client. Properties: it never decodes under a key it was not
//!   sealed with, and one that decodes is exactly the text the server issues for that position
//!   (no second spelling of a cursor passes the tag check);
//! - 1: a body, sealed with the server's key (as if the server had issued it), to reach the
//!   decoding behind the tag. Properties: another key refuses it; if it decodes, re-encoding
//!   gives the same text (only bodies `encode` writes are accepted);
//! - 2: a position (kind and three 64-bit words), then an optional one-character edit of its
//!   text. Properties: it round-trips, fits in 64 characters, and another key refuses it; an
//!   edited text is refused or is the same text.
#![no_main]

use std::sync::LazyLock;

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use scalable_api::{
    config::Config,
    http::{
        cursor::{Cursor, Cursors},
        fuzzing::seal_cursor,
    },
};

/// The server's cursors (the development secret) and another deployment's.
static KEYS: LazyLock<(Cursors, Cursors)> = LazyLock::new(|| {
    let ours = Cursors::new(&Config::default().auth);
    let mut auth = Config::default().auth;
    auth.jwt_secret = "a production secret of at least thirty-two bytes".into();
    (ours, Cursors::new(&auth))
});

fn word(bytes: &[u8], i: usize) -> i64 {
    let mut word = [0u8; 8];
    if let Some(chunk) = bytes.get(8 * i..8 * i + 8) {
        word.copy_from_slice(chunk);
    }
    i64::from_be_bytes(word)
}

fuzz_target!(|data: &[u8]| {
    let (ours, theirs) = &*KEYS;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            assert!(theirs.decode(text).is_err() || ours.decode(text).is_err());
            if let Ok(cursor) = ours.decode(text) {
                assert_eq!(ours.encode(cursor), text, "a second spelling of {cursor:?}");
            }
        }
        1 => {
            let sealed = seal_cursor(ours, rest.to_vec());
            assert!(
                theirs.decode(&sealed).is_err(),
                "another key accepted {rest:?}"
            );
            if let Ok(cursor) = ours.decode(&sealed) {
                assert_eq!(
                    ours.encode(cursor),
                    sealed,
                    "body {rest:?} decoded as {cursor:?}"
                );
            }
        }
        _ => {
            let Some((&kind, rest)) = rest.split_first() else {
                return;
            };
            let cursor = match kind % 3 {
                0 => Cursor::Users {
                    after: word(rest, 0),
                },
                1 => Cursor::UserPosts {
                    user: word(rest, 0),
                    before: word(rest, 1),
                },
                _ => {
                    let Some(at) = DateTime::from_timestamp_micros(word(rest, 0)) else {
                        return;
                    };
                    Cursor::Feed {
                        before: (at, word(rest, 1)),
                    }
                }
            };
            let text = ours.encode(cursor);
            assert!(text.len() <= 64, "{cursor:?} is {} characters", text.len());
            assert_eq!(ours.decode(&text).ok(), Some(cursor));
            assert!(theirs.decode(&text).is_err());
            // The edit: a position and a replacement from the base64url alphabet.
            let (Some(&at), Some(&with)) = (rest.get(24), rest.get(25)) else {
                return;
            };
            const ALPHABET: &[u8] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut edited = text.clone().into_bytes();
            let at = usize::from(at) % edited.len();
            edited[at] = ALPHABET[usize::from(with) % ALPHABET.len()];
            let Ok(edited) = String::from_utf8(edited) else {
                return;
            };
            if edited != text {
                assert!(
                    ours.decode(&edited).is_err(),
                    "{text} edited to {edited} passes"
                );
            }
        }
    }
});
