//! The shield: a per-address flood guard in front of every route but the probes, kept in
//! this process's memory (tower_governor: GCRA, one timestamp per address).
//!
//! It answers before anything costs a Redis round trip, a token check or a database query,
//! so a flood from one address is refused at the price of a hash-map lookup. Its state is per
//! process on purpose: shared limits are the distributed limiter's job (`src/http/limits.rs`);
//! each instance admits `ratelimit.shield.per_second` per address on its own.
//!
//! Two traps of tower_governor's defaults avoided here:
//! - its `SmartIpKeyExtractor` keys on the left-most `X-Forwarded-For` entry, which the client
//!   writes itself (rotate it, and every request is a new address). [`ClientKey`] reads the
//!   [`ClientAddr`] that `client::resolve` found instead: the socket peer, or the right-most
//!   hop our trusted proxies did not write.
//! - its `per_second(n)` sets the replenish *period* (one request every n seconds), not a
//!   rate; the period here is `1s / per_second`.
//!
//! IPv6 clients are keyed by their /64: one host usually holds a whole /64, and keying by
//! the full address would give it 2^64 budgets.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use axum::{
    body::Body,
    http::{Request, Response},
    response::IntoResponse,
};
use governor::middleware::NoOpMiddleware;
use tower_governor::{
    GovernorError, GovernorLayer,
    governor::{GovernorConfig, GovernorConfigBuilder},
    key_extractor::KeyExtractor,
};

use super::client::ClientAddr;
use crate::{
    config::ShieldConfig, error::Error, telemetry::names::SHIELD_REFUSALS, traffic::limit_key,
};

/// How often addresses idle for longer than their bucket are dropped from the shield's map.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Keys the shield on the request's [`ClientAddr`] (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct ClientKey;

impl KeyExtractor for ClientKey {
    type Key = IpAddr;

    fn extract<T>(&self, request: &Request<T>) -> Result<IpAddr, GovernorError> {
        // `client::resolve` runs first and always inserts it; without it (a router used
        // without that layer) every request shares one key, which limits rather than opens.
        let addr = request
            .extensions()
            .get::<ClientAddr>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ClientAddr(addr)| *addr);
        Ok(limit_key(addr))
    }
}

/// The shield's layer, or `None` when it is switched off.
pub fn layer(config: &ShieldConfig) -> Option<GovernorLayer<ClientKey, NoOpMiddleware, Body>> {
    if !config.enabled {
        return None;
    }
    let period = (Duration::from_secs(1) / config.per_second.max(1)).max(Duration::from_nanos(1));
    let governor = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(config.burst.max(1))
        .key_extractor(ClientKey)
        .finish()?;
    let governor = Arc::new(governor);
    sweep_idle_addresses(&governor);
    Some(GovernorLayer::new(governor).error_handler(refusal))
}

/// Our 429 problem+json instead of tower_governor's plain text. Its wait is whole seconds
/// rounded down (0 for most waits at these rates); one more second keeps a client that
/// honours `Retry-After` from coming back early.
fn refusal(error: GovernorError) -> Response<Body> {
    match error {
        GovernorError::TooManyRequests { wait_time, .. } => {
            metrics::counter!(SHIELD_REFUSALS).increment(1);
            Error::TooManyRequests {
                detail: "too many requests from this address",
                retry_after: Duration::from_secs(wait_time + 1),
            }
            .into_response()
        }
        // `ClientKey` never fails; any other error is tower_governor's own.
        other => Error::Internal(anyhow::anyhow!("the shield failed: {other}")).into_response(),
    }
}

/// Every address the shield has seen keeps an entry until it is swept: without this, a scan
/// from many addresses grows the map for the life of the process. The task ends with the
/// shield (it holds only a weak reference).
fn sweep_idle_addresses(governor: &Arc<GovernorConfig<ClientKey, NoOpMiddleware>>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // built outside a runtime (a unit test): nothing to sweep for
    };
    let limiter = Arc::downgrade(governor.limiter());
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            let Some(limiter) = limiter.upgrade() else {
                return;
            };
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });
}
