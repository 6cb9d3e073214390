//! Opaque, tamper-evident keyset cursors for the v2 lists.
//!
//! A cursor is the position after the last item of a page (a user id; for the feed a post's
//! `(created_at, id)`; for a user's posts a post id and whose list it is), followed by a 128-bit
//! BLAKE2b MAC over it, base64url-encoded. The next page is an index seek from that
//! position, so a walk costs the same at page 1 and page 1,000 (v1's offsets read and drop
//! every row before the page, which is why they stop at `api.max_offset`), and a row
//! inserted or deleted during a walk does not shift the pages: each row is returned exactly
//! once, new rows past the position included.
//!
//! Why a MAC: the position is no secret (it is in the page itself), but a cursor is an input
//! the server acts on. Without the tag a client could hand-craft positions, or replay a
//! cursor of one list on another (one user's posts on another user's), and the API would
//! have to validate every such combination; with it, anything the server did not issue is a
//! 400, and the rest of the code can trust what it decodes. The key is derived from the
//! JWT secret (see `signing.rs`): rotating that secret invalidates outstanding cursors, which
//! a client recovers from by starting its walk again.
//!
//! Cost: about 60 bytes per cursor and one keyed hash per page served or followed.
//! Cursors do not expire: a keyset position stays meaningful for ever.

use base64ct::{Base64UrlUnpadded, Encoding};
use chrono::{DateTime, Utc};

use super::signing::{Signer, TAG_LEN};
use crate::{config::AuthConfig, error::Error};

/// Where the next page of a list starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The user list, in id order: users with an id above `after`.
    Users { after: i64 },
    /// User `user`'s posts, newest first: posts with an id below `before` (within a shard
    /// ids grow with time).
    UserPosts { user: i64, before: i64 },
    /// The feed of every post, newest first: posts older than `before`.
    Feed { before: (DateTime<Utc>, i64) },
}

const USERS: u8 = 1;
const USER_POSTS: u8 = 2;
const FEED: u8 = 3;

/// The answer to any cursor the server did not issue for this list.
fn invalid() -> Error {
    Error::BadRequest("cursor is not one this API issued for this list".into())
}

/// Signs and checks cursors.
#[derive(Debug, Clone)]
pub struct Cursors {
    signer: Signer,
}

impl Cursors {
    pub fn new(auth: &AuthConfig) -> Self {
        Self {
            signer: Signer::derive(auth, b"v2-cursor-key"),
        }
    }

    /// The cursor's text: what a client sends back as `?cursor=`.
    pub fn encode(&self, cursor: Cursor) -> String {
        let mut bytes = Vec::with_capacity(1 + 3 * 8 + TAG_LEN);
        match cursor {
            Cursor::Users { after } => {
                bytes.push(USERS);
                bytes.extend_from_slice(&after.to_be_bytes());
            }
            Cursor::UserPosts { user, before } => {
                bytes.push(USER_POSTS);
                bytes.extend_from_slice(&user.to_be_bytes());
                bytes.extend_from_slice(&before.to_be_bytes());
            }
            Cursor::Feed { before } => {
                bytes.push(FEED);
                push_key(&mut bytes, before);
            }
        }
        self.seal(bytes)
    }

    /// `body` with its tag, as text. Only [`Self::encode`] builds bodies; the fuzz target
    /// (`fuzz/fuzz_targets/cursor.rs`, through `http::fuzzing`) seals arbitrary ones, to reach
    /// the decoding behind the tag check.
    pub(crate) fn seal(&self, mut body: Vec<u8>) -> String {
        let tag = self.signer.tag(&body);
        body.extend_from_slice(&tag);
        Base64UrlUnpadded::encode_string(&body)
    }

    /// Checks `text`'s tag and decodes it; anything else is a 400 that says so.
    pub fn decode(&self, text: &str) -> Result<Cursor, Error> {
        // 64 characters hold the longest cursor; refuse anything longer before decoding it.
        if text.len() > 64 {
            return Err(invalid());
        }
        let bytes = Base64UrlUnpadded::decode_vec(text).map_err(|_| invalid())?;
        let split = bytes.len().checked_sub(TAG_LEN).ok_or_else(invalid)?;
        let (body, tag) = bytes.split_at(split);
        if !self.signer.verify(body, tag) {
            return Err(invalid());
        }
        let (&kind, rest) = body.split_first().ok_or_else(invalid)?;
        let mut fields = rest.chunks_exact(8).map(|chunk| {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            i64::from_be_bytes(word)
        });
        let cursor = match (kind, rest.len()) {
            (USERS, 8) => Cursor::Users {
                after: fields.next().ok_or_else(invalid)?,
            },
            (USER_POSTS, 16) => Cursor::UserPosts {
                user: fields.next().ok_or_else(invalid)?,
                before: fields.next().ok_or_else(invalid)?,
            },
            (FEED, 16) => Cursor::Feed {
                before: read_key(&mut fields)?,
            },
            _ => return Err(invalid()),
        };
        Ok(cursor)
    }
}

fn push_key(bytes: &mut Vec<u8>, (at, id): (DateTime<Utc>, i64)) {
    bytes.extend_from_slice(&at.timestamp_micros().to_be_bytes());
    bytes.extend_from_slice(&id.to_be_bytes());
}

fn read_key(fields: &mut impl Iterator<Item = i64>) -> Result<(DateTime<Utc>, i64), Error> {
    let micros = fields.next().ok_or_else(invalid)?;
    let id = fields.next().ok_or_else(invalid)?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(invalid)?;
    Ok((at, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cursors() -> Cursors {
        Cursors::new(&Config::default().auth)
    }

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(micros).expect("a valid time")
    }

    #[test]
    fn every_kind_of_cursor_decodes_to_what_was_encoded() {
        let cursors = cursors();
        for cursor in [
            Cursor::Users { after: 42 },
            Cursor::UserPosts {
                user: 7,
                before: 99,
            },
            Cursor::Feed {
                before: (at(1_700_000_000_000_001), 1_000_000_123),
            },
        ] {
            let text = cursors.encode(cursor);
            assert!(text.len() <= 64, "{text} fits the length bound");
            assert_eq!(cursors.decode(&text).expect("decodes"), cursor);
        }
    }

    #[test]
    fn a_cursor_with_any_byte_changed_is_refused() {
        let cursors = cursors();
        let text = cursors.encode(Cursor::Feed {
            before: (at(1_764_000_000_123_456), 99),
        });
        let bytes = Base64UrlUnpadded::decode_vec(&text).expect("base64");
        for i in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[i] ^= 1;
            let forged = Base64UrlUnpadded::encode_string(&forged);
            assert!(
                matches!(cursors.decode(&forged), Err(Error::BadRequest(_))),
                "byte {i} flipped"
            );
        }
    }

    #[test]
    fn under_a_valid_tag_only_the_shapes_encode_writes_decode() {
        let cursors = cursors();
        let body = |kind: u8, words: &[i64]| {
            let mut body = vec![kind];
            for word in words {
                body.extend_from_slice(&word.to_be_bytes());
            }
            body
        };
        for refused in [
            Vec::new(),
            body(USERS, &[]),
            body(USERS, &[1, 2]),
            body(USER_POSTS, &[1]),
            body(FEED, &[1, 2, 3]),
            // A time chrono cannot hold.
            body(FEED, &[i64::MAX, 1]),
            body(9, &[1]),
        ] {
            let sealed = cursors.seal(refused.clone());
            assert!(
                matches!(cursors.decode(&sealed), Err(Error::BadRequest(_))),
                "{refused:?}"
            );
        }
        let sealed = cursors.seal(body(USERS, &[42]));
        assert_eq!(sealed, cursors.encode(Cursor::Users { after: 42 }));
        assert_eq!(
            cursors.decode(&sealed).ok(),
            Some(Cursor::Users { after: 42 })
        );
    }

    #[test]
    fn garbage_and_cursors_under_another_key_are_refused() {
        let cursors = cursors();
        for text in ["", "not base64 !", "AAAA", &"A".repeat(65)] {
            assert!(matches!(cursors.decode(text), Err(Error::BadRequest(_))));
        }
        let mut other = Config::default().auth;
        other.jwt_secret = "another secret of at least thirty-two bytes".into();
        let foreign = Cursors::new(&other).encode(Cursor::Users { after: 1 });
        assert!(matches!(
            cursors.decode(&foreign),
            Err(Error::BadRequest(_))
        ));
    }
}
