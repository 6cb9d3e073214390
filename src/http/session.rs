//! The request's data-layer [`Session`], `Server-Timing`, and the learner's debug headers.
//!
//! Going in, [`session`] reads `X-Consistency-Token` into the session the data layer routes
//! by; coming out, it answers with the token that covers the request's writes.
//!
//! Every answer also gets `Server-Timing` (in the dev profile, or as `telemetry.server_timing`
//! says): what the
//! session's [`ServerTiming`] gathered (SQL, Redis, DataLoader waits, serialisation; see
//! `src/telemetry/timing.rs`) and this middleware's own elapsed time as `total`. A REST body
//! is serialised in its `IntoResponse`, which has no session, so the middleware runs the
//! handler with the session in a task-local that [`record_serialization`] adds to: a pointer
//! copy, no allocation, and no `Extension` the response would have to carry back.
//!
//! In the dev profile it also attaches a [`DebugHeaders`] trace to the session, which the
//! data layer and the cache report into (through `telemetry::DebugTrace`), and renders it as
//! `X-Db-Route` (which shard and server each statement went to) and `X-Cache` (what the cache
//! did), so a learner can watch writes go to primaries, reads to replicas, and hits skip both.
//!
//! The session is an extractor that refuses to be made up: a handler mounted without this
//! middleware answers 500 (and the tests see it), never a default session that would quietly
//! lose read-your-writes.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderName, HeaderValue, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use base64ct::{Base64UrlUnpadded, Encoding};

use super::signing::Signer;
use crate::{
    AppState,
    config::AuthConfig,
    db::{ConsistencyToken, Session},
    error::Error,
    telemetry::{DebugTrace, Phase, ServerTiming},
};

/// `X-Db-Route: shard=N;role=primary|replica[, ...]`: where this request's SQL went (dev profile).
pub const DB_ROUTE_HEADER: HeaderName = HeaderName::from_static("x-db-route");
/// `X-Cache: hit|miss|bypass[, ...]`: what the cache did for this request (dev profile).
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-cache");
/// `X-Consistency-Token`: returned by writes, sent back by clients for read-your-writes
/// (see `src/db/consistency.rs`).
pub const CONSISTENCY_HEADER: HeaderName = HeaderName::from_static("x-consistency-token");
/// `Server-Timing: db;dur=1.23;desc="2 queries", ..., total;dur=23.40` (W3C Server Timing):
/// where the request's time went (see `src/telemetry/timing.rs`).
pub const SERVER_TIMING_HEADER: HeaderName = HeaderName::from_static("server-timing");

tokio::task_local! {
    /// The running request's session, for what records time without one (REST serialisation).
    static CURRENT: Session;
}

/// Adds `elapsed` of serialising the answer to the running request's timing; nothing outside
/// a request (a unit test of a response type).
pub fn record_serialization(elapsed: Duration) {
    let _ = CURRENT.try_with(|session| session.timing().record(Phase::Serialize, elapsed));
}

/// The middleware; see the module doc.
pub async fn session(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    let server_timing = app.config.server_timing();
    let required = match consistency_token(&request, &app.consistency_tokens) {
        Ok(token) => token,
        Err(err) => {
            let mut response = err.into_response();
            if server_timing {
                // Nothing ran but this refusal: `total` alone.
                let value = ServerTiming::default().header_value(start.elapsed());
                insert_timing(&mut response, value);
            }
            return response;
        }
    };
    let trace = app
        .config
        .is_dev()
        .then(|| Arc::new(DebugHeaders::default()));
    let session = match &trace {
        Some(trace) => Session::traced(required, trace.clone()),
        None => Session::new(required),
    };
    request.extensions_mut().insert(session.clone());
    let mut response = CURRENT.scope(session.clone(), next.run(request)).await;
    let headers = response.headers_mut();
    if let Some(token) = app.db.cluster().consistency_token(&session).await
        && let Ok(value) = HeaderValue::try_from(app.consistency_tokens.encode(&token))
    {
        headers.insert(CONSISTENCY_HEADER, value);
    }
    if let Some(trace) = trace {
        // Shards in order (a cross-shard read asks them concurrently, in no fixed order),
        // each shard's servers in the order the request used them.
        let mut routes = lock(&trace.routes).clone();
        routes.sort_by_key(|(shard, _)| *shard);
        let routes: Vec<String> = routes
            .into_iter()
            .map(|(shard, role)| format!("shard={shard};role={role}"))
            .collect();
        let cache: Vec<String> = lock(&trace.cache).iter().map(|o| o.to_string()).collect();
        for (name, values) in [(CACHE_HEADER, cache), (DB_ROUTE_HEADER, routes)] {
            if !values.is_empty()
                && let Ok(value) = HeaderValue::from_str(&values.join(", "))
            {
                headers.insert(name, value);
            }
        }
    }
    if server_timing {
        // Last, so that `total` covers the consistency token's commit positions too.
        let value = session.timing().header_value(start.elapsed());
        insert_timing(&mut response, value);
    }
    response
}

/// The header, from a value that is ASCII by construction (the `HeaderValue` takes over the
/// string's buffer).
fn insert_timing(response: &mut Response, value: String) {
    if let Ok(value) = HeaderValue::try_from(value) {
        response.headers_mut().insert(SERVER_TIMING_HEADER, value);
    }
}

fn consistency_token(
    request: &Request,
    tokens: &ConsistencyTokens,
) -> Result<ConsistencyToken, Error> {
    let Some(value) = request.headers().get(CONSISTENCY_HEADER) else {
        return Ok(ConsistencyToken::default());
    };
    let text = value
        .to_str()
        .map_err(|_| Error::BadRequest("X-Consistency-Token is not ASCII".into()))?;
    tokens.decode(text)
}

/// Signs the consistency tokens the service hands out, and refuses any it did not.
///
/// A token sends a client's reads past every replica that has not replayed its LSNs, to
/// the primary. Unsigned, a made-up token (`0=FFFFFFFF/FFFFFFFF`) would send every read of
/// whoever sends it to the primaries for good, past the cache's single flight, from any
/// number of clients: a cheap way to load the one server per shard that takes writes. A
/// genuine token names a position the primary has reached, which replicas reach within
/// their lag, so it pins nothing for long. (Clamping tokens to the primary position the
/// health monitor last saw would not do: a token from a write just now is ahead of it.)
///
/// Text: `0=0/3A3FB398, 1=0/1A2B3C; sig=<22 base64url characters>`, the tag over the token's
/// canonical rendering: a client cannot change the value it got (another LSN, another
/// shard, a merge of two tokens), though a respelling of the same value (spaces, order)
/// still verifies. The service merges a token it receives into the one it answers a write
/// with.
#[derive(Debug, Clone)]
pub struct ConsistencyTokens {
    signer: Signer,
}

impl ConsistencyTokens {
    pub fn new(auth: &AuthConfig) -> Self {
        Self {
            signer: Signer::derive(auth, b"consistency-tkn"),
        }
    }

    /// The header value for `token`.
    pub fn encode(&self, token: &ConsistencyToken) -> String {
        let text = token.to_string();
        let tag = self.signer.tag(text.as_bytes());
        format!("{text}; sig={}", Base64UrlUnpadded::encode_string(&tag))
    }

    /// The token in `text`, if the service issued it; a 400 naming the problem if not.
    pub fn decode(&self, text: &str) -> Result<ConsistencyToken, Error> {
        let unsigned = || {
            Error::BadRequest(
                "X-Consistency-Token is not one this API issued: send back the header a write answered with, unchanged".into(),
            )
        };
        let (body, sig) = text.rsplit_once(';').ok_or_else(unsigned)?;
        let sig = sig.trim().strip_prefix("sig=").ok_or_else(unsigned)?;
        if sig.len() > 32 {
            return Err(unsigned());
        }
        let tag = Base64UrlUnpadded::decode_vec(sig).map_err(|_| unsigned())?;
        let token: ConsistencyToken = body
            .parse()
            .map_err(|why| Error::BadRequest(format!("X-Consistency-Token: {why}")))?;
        if !self.signer.verify(token.to_string().as_bytes(), &tag) {
            return Err(unsigned());
        }
        Ok(token)
    }
}

/// The request's session, as [`session`] built it.
impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        parts.extensions.get::<Session>().cloned().ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "the request has no data-layer session: the `http::session` middleware is not in front of this route"
            ))
        })
    }
}

/// What the request did, as the debug headers show it: distinct values in first-seen order.
#[derive(Debug, Default)]
pub struct DebugHeaders {
    routes: Mutex<Vec<(u16, &'static str)>>,
    cache: Mutex<Vec<&'static str>>,
}

impl DebugTrace for DebugHeaders {
    fn db_route(&self, shard: u16, role: &'static str) {
        push_distinct(&self.routes, (shard, role));
    }

    fn cache_outcome(&self, outcome: &'static str) {
        push_distinct(&self.cache, outcome);
    }
}

fn push_distinct<T: PartialEq>(values: &Mutex<Vec<T>>, value: T) {
    let mut values = lock(values);
    if !values.contains(&value) {
        values.push(value);
    }
}

/// A poisoned lock only means another task panicked mid-push; the list is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn tokens() -> ConsistencyTokens {
        ConsistencyTokens::new(&Config::default().auth)
    }

    #[test]
    fn an_issued_token_reads_back_as_itself() {
        let token: ConsistencyToken = "0=0/3A3FB398, 1=16/1A2B3C".parse().expect("valid");
        let text = tokens().encode(&token);
        assert!(
            text.starts_with("0=0/3A3FB398, 1=16/1A2B3C; sig="),
            "{text}"
        );
        assert_eq!(tokens().decode(&text).expect("issued"), token);
    }

    #[test]
    fn made_up_edited_and_unsigned_tokens_are_refused() {
        let tokens = tokens();
        let issued = tokens.encode(&"0=0/10".parse().expect("valid"));
        let sig = issued.rsplit_once("; ").expect("signed").1;
        for forged in [
            "0=FFFFFFFF/FFFFFFFF".to_string(),
            format!("0=FFFFFFFF/FFFFFFFF; {sig}"),
            format!("0=0/11; {sig}"),
            format!("0=0/10, 1=0/1; {sig}"),
            issued.replace("sig=", "sig=A"),
            format!("{issued}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            "0=0/10; sig=".to_string(),
        ] {
            assert!(
                matches!(tokens.decode(&forged), Err(Error::BadRequest(_))),
                "{forged} was accepted"
            );
        }
        // Another deployment's secret signs other tokens.
        let mut other = Config::default();
        other.auth.jwt_secret = "another-secret-of-at-least-32-bytes!!".to_string().into();
        let foreign = ConsistencyTokens::new(&other.auth).encode(&"0=0/10".parse().expect("valid"));
        assert!(tokens.decode(&foreign).is_err());
    }
}
