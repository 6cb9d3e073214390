//! Keyed tags on what the server hands out and later acts on: the v2 lists' cursors and the
//! consistency tokens. A client may keep and send them back, but not make them up.
//!
//! Each use derives its own key from the JWT secret under its own BLAKE2 personalisation, so
//! no tag of one kind is valid as another, and rotating the secret invalidates them all.
//! A tag is 128 bits of BLAKE2b-MAC (the `blake2` crate): one keyed hash per issue or check,
//! well under a microsecond for these few bytes.

use blake2::{Blake2bMac, digest::Mac, digest::consts::U16, digest::consts::U32};
use secrecy::ExposeSecret;

use crate::config::AuthConfig;

/// Bytes in a tag.
pub const TAG_LEN: usize = 16;

/// Tags and checks byte strings of one kind (the key lives here, derived once at start-up).
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { key: [redacted] }")
    }
}

impl Signer {
    /// The signer of one kind of value: `persona` (at most 16 bytes) names the kind.
    pub fn derive(auth: &AuthConfig, persona: &[u8]) -> Self {
        let secret = auth.jwt_secret.expose_secret().as_bytes();
        // BLAKE2b takes keys of up to 64 bytes; the JWT secret is at least 32.
        let mut mac = Blake2bMac::<U32>::new_with_salt_and_personal(
            &secret[..secret.len().min(64)],
            b"",
            persona,
        )
        .expect("BLAKE2b accepts keys of at most 64 bytes and a persona of at most 16");
        mac.update(b"scalable-api");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self) -> Blake2bMac<U16> {
        Blake2bMac::<U16>::new_from_slice(&self.key).expect("a 32-byte key fits BLAKE2b")
    }

    /// The tag of `bytes`.
    pub fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac();
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is `bytes`' tag, in constant time: a client must not learn a valid tag
    /// byte by byte from timings.
    pub fn verify(&self, bytes: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(bytes);
        mac.verify_slice(tag).is_ok()
    }
}
