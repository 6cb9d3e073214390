//! API keys: what a key looks like, how one is made, and how a presented one is checked.
//!
//! # Format: `sk_<id>_<secret>`
//!
//! `id` is the key's row in the directory database: public, it only says where to look, so a
//! check is one primary-key lookup instead of a scan comparing hashes. `secret` is 32 bytes
//! from the operating system's random source, base64url (43 characters). The `sk_` prefix
//! makes a leaked key recognisable (to a secret scanner, in a log review) and tells it apart
//! from an access token at a glance.
//!
//! # Stored: a fast hash of the secret, not argon2
//!
//! Passwords are stored with argon2 because people choose them: a stolen hash can be attacked
//! with a dictionary, and argon2's cost (19 MiB and tens of ms per try) is what slows that
//! down. A key's secret is 256 random bits; no dictionary holds it, and trying 2^255 secrets
//! is out of reach at any hashing speed. One BLAKE2b-256 (about a microsecond) is then exactly
//! as safe as argon2, and argon2 on every API request would cost a core and 19 MiB per
//! request, and turn `auth.max_concurrent_hashes` into a bound on API traffic. The stored hash
//! is compared in constant time.
//!
//! # Checked against a short in-process cache
//!
//! A verified key's row is cached per instance for `auth.api_keys.cache_ttl` (default 30 s),
//! so a busy client costs one directory query per instance per TTL, not one per request;
//! concurrent first uses of one key share one query. Unknown ids are not cached: ids are
//! sequential, so a "no such key" for the next id would make the key created next unusable
//! for a TTL on this instance.
//!
//! Revocation bound: the instance that revokes a key drops it from its cache at once; every
//! other instance stops accepting it when its cached row expires, within `cache_ttl`. A
//! change of tier by an operator reaches instances within the same bound. (Redis pub/sub, as
//! the two-tier cache uses, would shorten that to milliseconds at the price of one more moving
//! part; the TTL bound is what holds when a message is lost anyway.)

use std::{fmt, pin::Pin, sync::Arc};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64ct::{Base64UrlUnpadded, Encoding};
use blake2::{Blake2b, Digest, digest::consts::U32};
use moka::future::Cache;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::KeyHolder;
use crate::{config::ApiKeyConfig, error::Error, telemetry::audit::AuditEvent};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "sk_";
/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;
/// Their base64url length (no padding).
const SECRET_CHARS: usize = 43;

/// What a store knows of a key: enough to check a presented secret and to act for its owner.
#[derive(Clone)]
pub struct StoredKey {
    pub holder: KeyHolder,
    /// BLAKE2b-256 of the secret.
    pub secret_hash: Vec<u8>,
    pub revoked: bool,
}

/// Where keys are kept. Implemented over the directory database in
/// `src/operations/api_keys.rs`: a trait, so that this module (below the data layer) checks
/// keys without knowing where they live.
pub trait KeyStore: Send + Sync {
    /// Key `id`, revoked or not; `None` when there is none.
    fn find(&self, id: i64) -> KeyLookup<'_>;
}

/// What [`KeyStore::find`] returns.
pub type KeyLookup<'a> =
    Pin<Box<dyn Future<Output = Result<Option<StoredKey>, Error>> + Send + 'a>>;

/// A secret just made: the text to show once and the hash to store.
pub struct MintedSecret {
    secret: SecretString,
    hash: [u8; 32],
}

impl MintedSecret {
    /// 32 bytes from the operating system's random source.
    pub fn new() -> Result<Self, Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        OsRng.try_fill_bytes(&mut bytes).map_err(|err| {
            Error::Internal(anyhow::anyhow!("the OS random source failed: {err}"))
        })?;
        let secret = Base64UrlUnpadded::encode_string(&bytes);
        let hash = hash_secret(&secret);
        Ok(Self {
            secret: secret.into(),
            hash,
        })
    }

    /// What the store keeps.
    pub fn hash(&self) -> &[u8] {
        &self.hash
    }

    /// The whole key, once the store has given the key its id.
    pub fn key(&self, id: i64) -> SecretString {
        format!("{KEY_PREFIX}{id}_{}", self.secret.expose_secret()).into()
    }
}

impl fmt::Debug for MintedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MintedSecret(..)")
    }
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Blake2b::<U32>::digest(secret.as_bytes()).into()
}

/// A presented key, split: its id and the hash of its secret.
#[derive(Debug, PartialEq, Eq)]
struct Presented {
    id: i64,
    hash: [u8; 32],
}

/// Splits `raw` into id and secret, checking the shape; `None` for anything else (which is
/// then never looked up).
fn parse(raw: &str) -> Option<Presented> {
    let (id, secret) = raw.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let id_ok = !id.is_empty() && id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit());
    let secret_ok = secret.len() == SECRET_CHARS
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !(id_ok && secret_ok) {
        return None;
    }
    Some(Presented {
        id: id.parse().ok().filter(|id| *id > 0)?,
        hash: hash_secret(secret),
    })
}

const UNKNOWN: Error = Error::Unauthorized("the API key is not valid");
const REVOKED: Error = Error::Unauthorized("the API key has been revoked");

/// Checks presented keys against the store, through the per-instance cache (module doc).
pub struct ApiKeyVerifier {
    store: Arc<dyn KeyStore>,
    /// `None` when `cache_ttl` is zero: every check asks the store.
    cache: Option<Cache<i64, Arc<StoredKey>>>,
}

impl fmt::Debug for ApiKeyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyVerifier")
            .field("cached", &self.cache.as_ref().map(Cache::entry_count))
            .finish_non_exhaustive()
    }
}

/// Why a cache fill produced no entry. Shared between the requests that waited on one fill.
enum Miss {
    NoSuchKey,
    Failed(Error),
}

impl ApiKeyVerifier {
    pub fn new(config: &ApiKeyConfig, store: Arc<dyn KeyStore>) -> Self {
        let cache = (!config.cache_ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(config.cache_max_entries)
                .time_to_live(config.cache_ttl)
                .build()
        });
        Self { store, cache }
    }

    /// The holder of `raw`, or a 401: malformed, unknown, wrong secret and revoked keys are
    /// refused (and each refusal is audited). Never logs `raw`.
    pub async fn verify(&self, raw: &str) -> Result<KeyHolder, Error> {
        let Some(presented) = parse(raw) else {
            return Err(refused(None, None, UNKNOWN));
        };
        let Some(stored) = self.lookup(presented.id).await? else {
            return Err(refused(Some(presented.id), None, UNKNOWN));
        };
        let matches: bool = stored.secret_hash.ct_eq(&presented.hash).into();
        if !matches {
            return Err(refused(Some(presented.id), None, UNKNOWN));
        }
        if stored.revoked {
            return Err(refused(Some(presented.id), Some(stored.holder), REVOKED));
        }
        Ok(stored.holder)
    }

    /// Sets `in_process_entries{map="api_keys"}`: verified keys cached (sampled at scrape).
    pub fn report_gauges(&self) {
        if let Some(cache) = &self.cache {
            crate::telemetry::metrics::report_entries("api_keys", cache.entry_count());
        }
    }

    /// Drops key `id` from this instance's cache: called after revoking it here, so that
    /// this instance refuses it at once (others within `cache_ttl`).
    pub async fn forget(&self, id: i64) {
        if let Some(cache) = &self.cache {
            cache.invalidate(&id).await;
        }
    }

    async fn lookup(&self, id: i64) -> Result<Option<Arc<StoredKey>>, Error> {
        let Some(cache) = &self.cache else {
            return Ok(self.store.find(id).await?.map(Arc::new));
        };
        let fill = async {
            match self.store.find(id).await {
                Ok(Some(key)) => Ok(Arc::new(key)),
                Ok(None) => Err(Miss::NoSuchKey),
                Err(err) => Err(Miss::Failed(err)),
            }
        };
        match cache.try_get_with(id, fill).await {
            Ok(key) => Ok(Some(key)),
            Err(miss) => match &*miss {
                Miss::NoSuchKey => Ok(None),
                Miss::Failed(err) => Err(shared(err)),
            },
        }
    }
}

/// A refusal of a presented key, audited: `key` the id it named (if it parsed), `holder` set
/// when the secret was right (so the owner is known).
fn refused(key: Option<i64>, holder: Option<KeyHolder>, err: Error) -> Error {
    AuditEvent {
        action: "api_key.refused",
        actor: holder.map(|h| h.owner),
        key: holder.map(|h| h.key_id),
        subject: key,
        outcome: err.slug(),
    }
    .record();
    err
}

/// An error that several waiters of one lookup share, for each of them: what it means to the
/// client is kept, an internal error's text travels as text.
fn shared(err: &Error) -> Error {
    match err {
        Error::Unavailable {
            detail,
            retry_after,
        } => Error::Unavailable {
            detail,
            retry_after: *retry_after,
        },
        other => Error::Internal(anyhow::anyhow!("looking up an API key failed: {other:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_key_parses_back_to_its_id_and_hash() {
        let minted = MintedSecret::new().expect("the OS has randomness");
        let key = minted.key(42);
        let key = key.expose_secret();
        assert!(key.starts_with("sk_42_"), "{key}");
        assert_eq!(key.len(), "sk_42_".len() + SECRET_CHARS);
        let presented = parse(key).expect("a minted key parses");
        assert_eq!(presented.id, 42);
        assert_eq!(presented.hash.as_slice(), minted.hash());
    }

    #[test]
    fn two_minted_secrets_differ() {
        let (a, b) = (
            MintedSecret::new().expect("random"),
            MintedSecret::new().expect("random"),
        );
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn malformed_keys_are_not_looked_up() {
        let secret = "A".repeat(SECRET_CHARS);
        assert!(parse(&format!("sk_7_{secret}")).is_some());
        for bad in [
            String::new(),
            format!("pk_7_{secret}"),
            format!("sk__{secret}"),
            format!("sk_0_{secret}"),
            format!("sk_-7_{secret}"),
            format!("sk_99999999999999999999_{secret}"),
            format!("sk_7_{}", &secret[1..]),
            format!("sk_7_{secret}A"),
            format!("sk_7_{}!", &secret[1..]),
            "sk_7".to_owned(),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }
}
