//! Where claims and answers live: one Redis shared by every instance, so a retry that a load
//! balancer sends to another instance, or that arrives after a restart, finds them.
//!
//! A key's record is one string: `claim <fingerprint> <nonce>` while its first request runs
//! (with the lease as its expiry), then `answer <fingerprint>`, the status, the kept headers
//! and the body (with the TTL as its expiry). Both changes are Lua scripts, so two requests
//! racing for a key cannot both claim it, and a request that outlived its lease cannot
//! overwrite or delete the claim of the retry that took the key over (the nonce tells claims
//! apart).
//!
//! Every command is bounded by `command_timeout` and goes through a circuit breaker, on one
//! multiplexed connection ([`SharedConnection`]): no pool checkout per command.

use std::{
    fmt::Write as _,
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use axum::{
    body::Bytes,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts},
};
use blake2::{Blake2b, Digest, digest::consts::U32};
use redis::{RedisResult, Script, aio::MultiplexedConnection};

use crate::{
    config::IdempotencyConfig,
    traffic::{BreakerState, CircuitBreaker, SharedConnection},
};

/// Claims the key unless it has a record; returns the record found, or nil once claimed.
const CLAIM: &str = r"
-- KEYS[1]: the key's record. ARGV: the claim, its lease in ms.
local found = redis.call('GET', KEYS[1])
if found then return found end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Replaces this request's claim with its answer, or deletes it (an empty answer); nothing
/// once the record is no longer this claim (its lease ran out). Returns whether it did.
const SETTLE: &str = r"
-- KEYS[1]: the key's record. ARGV: the claim, the answer ('' = release), its ttl in ms.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// The answer headers a replay carries: what a client reads off a POST's answer. Anything
/// the layers outside add (request id, rate limits, `Server-Timing`) they add to the replay
/// afresh.
const KEPT_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::ETAG,
    header::CACHE_CONTROL,
    header::LAST_MODIFIED,
];

/// What a request is, for telling a retry from another request under the same key: BLAKE2b
/// of its method, path and query (before any `nest` stripped a prefix, so `/v1/posts` and a
/// future `/v2/posts` differ) and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(parts: &Parts, body: &[u8]) -> Self {
        let uri = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map_or(&parts.uri, |original| &original.0);
        let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
        // NUL separates the parts: neither a method nor a request target contains one.
        let digest = Blake2b::<U32>::new()
            .chain_update(parts.method.as_str())
            .chain_update([0])
            .chain_update(target)
            .chain_update([0])
            .chain_update(body)
            .finalize();
        Self(digest.into())
    }

    fn hex(&self) -> String {
        let mut hex = String::with_capacity(64);
        for byte in self.0 {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }
}

/// This request's claim on its key: its fingerprint and a nonce no other claim has.
#[derive(Debug)]
pub struct Claim {
    fingerprint: Fingerprint,
    text: String,
}

impl Claim {
    pub fn new(fingerprint: Fingerprint) -> Self {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        // std's randomly keyed SipHash of a counter: 64 unpredictable bits per claim, unique
        // across instances in practice, with no random-number crate.
        let nonce = RandomState::new().hash_one(SEQUENCE.fetch_add(1, Ordering::Relaxed));
        Self {
            fingerprint,
            text: format!("claim {} {nonce:016x}", fingerprint.hex()),
        }
    }
}

/// A finished request's answer, as kept and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Answer {
    /// The answer with the headers a replay needs (see [`KEPT_HEADERS`]).
    pub fn new(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        let headers = KEPT_HEADERS
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(name)
                    .iter()
                    .map(move |value| (name.clone(), value.clone()))
            })
            .collect();
        Self {
            status,
            headers,
            body,
        }
    }

    /// `answer <fingerprint>\n<status>\n<name>: <value>\n...\n\n<body>`. A header value holds
    /// no newline (`HeaderValue` refuses control characters), so the first blank line ends
    /// the headers whatever the body holds.
    fn encode(&self, fingerprint: Fingerprint) -> Vec<u8> {
        let mut out = Vec::with_capacity(100 + self.body.len());
        out.extend_from_slice(
            format!("answer {}\n{}\n", fingerprint.hex(), self.status.as_u16()).as_bytes(),
        );
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }
}

/// What a key's record holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// Its first request is running.
    Claimed(Fingerprint),
    /// Its first request finished with this answer.
    Answered(Fingerprint, Answer),
}

impl Record {
    pub fn fingerprint(&self) -> Fingerprint {
        match self {
            Self::Claimed(fingerprint) | Self::Answered(fingerprint, _) => *fingerprint,
        }
    }

    /// The record from its stored form; `None` if it is not one of ours.
    fn decode(stored: &[u8]) -> Option<Self> {
        let line_end = stored
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(stored.len());
        let first = std::str::from_utf8(stored.get(..line_end)?).ok()?;
        let mut words = first.split(' ');
        let (kind, fingerprint) = (words.next()?, parse_hex(words.next()?)?);
        match kind {
            "claim" => Some(Self::Claimed(fingerprint)),
            "answer" => {
                let rest = stored.get(line_end + 1..)?;
                let blank = rest.windows(2).position(|w| w == b"\n\n")?;
                let (head, body) = (rest.get(..blank)?, rest.get(blank + 2..)?);
                let mut lines = head.split(|&b| b == b'\n');
                let status = StatusCode::from_bytes(lines.next()?).ok()?;
                let headers = lines
                    .map(|line| {
                        let colon = line.iter().position(|&b| b == b':')?;
                        let name = HeaderName::from_bytes(line.get(..colon)?).ok()?;
                        let value = HeaderValue::from_bytes(line.get(colon + 2..)?).ok()?;
                        Some((name, value))
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(Self::Answered(
                    fingerprint,
                    Answer {
                        status,
                        headers,
                        body: Bytes::copy_from_slice(body),
                    },
                ))
            }
            _ => None,
        }
    }
}

fn parse_hex(text: &str) -> Option<Fingerprint> {
    let mut bytes = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Fingerprint(bytes))
}

/// The store could not be used (breaker open, no connection, an error, a timeout): a client
/// that asked for exactly-once gets a 503 rather than a request run without the guarantee.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable {
    pub retry_after: Duration,
}

const RETRY_AFTER: Duration = Duration::from_secs(1);

pub struct Store {
    conn: SharedConnection,
    breaker: CircuitBreaker,
    timeout: Duration,
    prefix: String,
    ttl_ms: u64,
    lease_ms: u64,
    claim: Script,
    settle: Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .field("breaker", &self.breaker.state())
            .finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Store {
    /// Opens nothing yet: the connection opens on first use.
    pub fn new(config: &IdempotencyConfig, request_timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            conn: SharedConnection::new(&config.redis_url, config.command_timeout)?,
            breaker: CircuitBreaker::new(config.breaker.clone()).named("idempotency"),
            timeout: config.command_timeout,
            prefix: config.key_prefix.clone(),
            ttl_ms: millis(config.ttl),
            lease_ms: millis(config.lease_or(request_timeout)),
            claim: Script::new(CLAIM),
            settle: Script::new(SETTLE),
        })
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The Redis key of `key` as sent by `scope` (a principal).
    pub fn key(&self, scope: &str, key: &str) -> String {
        format!("{}:{scope}:{key}", self.prefix)
    }

    /// Claims `key` for this request, unless it has a record: then that record.
    pub async fn claim(&self, key: &str, claim: &Claim) -> Result<Option<Record>, Unavailable> {
        let found: Option<Vec<u8>> = self
            .call(|mut conn| async move {
                let mut invocation = self.claim.prepare_invoke();
                invocation.key(key).arg(&claim.text).arg(self.lease_ms);
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        match found {
            None => Ok(None),
            Some(stored) => match Record::decode(&stored) {
                Some(record) => Ok(Some(record)),
                None => {
                    // Something else wrote under our prefix: refuse rather than guess.
                    tracing::error!(key, "an idempotency record that is not ours");
                    Err(Unavailable {
                        retry_after: RETRY_AFTER,
                    })
                }
            },
        }
    }

    /// Replaces the claim with `answer`, kept for the TTL. `Ok(false)`: the claim had lapsed
    /// (the request outlived its lease) and nothing was kept.
    pub async fn keep(
        &self,
        key: &str,
        claim: &Claim,
        answer: &Answer,
    ) -> Result<bool, Unavailable> {
        let stored = answer.encode(claim.fingerprint);
        self.settle(key, claim, &stored).await
    }

    /// Deletes the claim, so that a retry runs again.
    pub async fn release(&self, key: &str, claim: &Claim) -> Result<bool, Unavailable> {
        self.settle(key, claim, &[]).await
    }

    async fn settle(&self, key: &str, claim: &Claim, answer: &[u8]) -> Result<bool, Unavailable> {
        let settled: i32 = self
            .call(|mut conn| async move {
                let mut invocation = self.settle.prepare_invoke();
                invocation
                    .key(key)
                    .arg(&claim.text)
                    .arg(answer)
                    .arg(self.ttl_ms);
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(settled == 1)
    }

    /// Runs one command behind the breaker, with the timeout (`SharedConnection::run`).
    async fn call<'a, T, F, Fut>(&'a self, command: F) -> Result<T, Unavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>> + 'a,
    {
        if let Err(rejected) = self.breaker.admit() {
            return Err(Unavailable {
                retry_after: rejected.retry_after,
            });
        }
        self.conn
            .run(&self.breaker, self.timeout, "idempotency Redis", command)
            .await
            .map_err(|_| Unavailable {
                retry_after: RETRY_AFTER,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(body: &[u8]) -> Fingerprint {
        let (parts, ()) = axum::http::Request::post("/v1/posts")
            .body(())
            .expect("a valid request")
            .into_parts();
        Fingerprint::of(&parts, body)
    }

    #[test]
    fn an_answer_comes_back_as_it_was_kept_whatever_its_body_holds() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::LOCATION, HeaderValue::from_static("/v1/posts/7"));
        headers.insert("x-not-kept", HeaderValue::from_static("1"));
        let body = Bytes::from_static(b"{\"a\":\"x\n\ny\"}\n\n");
        let answer = Answer::new(StatusCode::CREATED, &headers, body);
        assert_eq!(answer.headers.len(), 2, "only the kept headers");

        let print = fingerprint(b"{}");
        let decoded = Record::decode(&answer.encode(print));

        assert_eq!(decoded, Some(Record::Answered(print, answer)));
    }

    #[test]
    fn a_claim_names_its_fingerprint_and_two_claims_differ() {
        let print = fingerprint(b"{}");
        let (a, b) = (Claim::new(print), Claim::new(print));
        assert_ne!(a.text, b.text, "nonces tell claims apart");
        assert_eq!(
            Record::decode(a.text.as_bytes()),
            Some(Record::Claimed(print))
        );
    }

    #[test]
    fn the_fingerprint_covers_the_body_and_a_foreign_record_is_refused() {
        assert_ne!(fingerprint(b"{\"a\":1}"), fingerprint(b"{\"a\":2}"));
        assert_eq!(Record::decode(b"something else"), None);
        assert_eq!(Record::decode(b"claim 12"), None);
    }
}
