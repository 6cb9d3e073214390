//! [`ClientAddr`]: the address a request comes from, resolved once for every layer that keys
//! on it (the shield, anonymous rate limits, login limits, the audit log, the request span).
//!
//! The socket peer is the client, unless the peer is one of `http.trusted_proxies` (a load
//! balancer in front). Then the client is the right-most `X-Forwarded-For` hop that is not
//! itself a trusted proxy: each proxy appends the address it received the connection from,
//! so the entries to the right of the first untrusted one were written by our own proxies,
//! and everything to its left was written by the client (who may write anything). Taking the
//! left-most entry, as many examples do, lets any client choose its own rate-limit key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, request::Parts},
    middleware::Next,
    response::Response,
};
use ipnet::IpNet;

use crate::{AppState, error::Error};

/// The request's client address (see the module doc). Every request has one: the layer
/// [`resolve`] inserts it first thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// For handlers that pass the address down (login limits). Missing only if the router lost
/// the [`resolve`] layer: a bug, reported as an internal error.
impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .ok_or_else(|| {
                Error::Internal(anyhow::anyhow!(
                    "the request has no client address: the `client::resolve` layer did not run"
                ))
            })
    }
}

/// A request served without a socket (an in-process `oneshot` in a unit test) has no peer;
/// it counts as this address.
const NO_PEER: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The layer: resolves the client address and stores it in the request's extensions.
pub async fn resolve(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(NO_PEER, |ConnectInfo(peer)| peer.ip());
    let client = client_addr(peer, request.headers(), &app.config.http.trusted_proxies);
    // Runs inside the request span (`telemetry::http::observe`), whose field this fills.
    tracing::Span::current().record("client.address", tracing::field::display(client));
    request.extensions_mut().insert(ClientAddr(client));
    next.run(request).await
}

/// The client address of a request from `peer` with `headers`, trusting `trusted` proxies.
///
/// - `peer` untrusted: `peer`, whatever the headers say.
/// - `peer` trusted: `X-Forwarded-For` read right to left (every such header, in order),
///   skipping trusted hops; the first untrusted hop is the client. An entry that is not an
///   address stops the walk: the chain is broken there, so the last hop we could check is
///   the answer. All hops trusted: the left-most.
///
/// `Forwarded` (RFC 7239) is not read: a proxy that writes it also writes `X-Forwarded-For`
/// here (nginx, Envoy, cloud load balancers), and reading both would need a rule for when
/// they disagree.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |addr: &IpAddr| trusted.iter().any(|net| net.contains(addr));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(addr) = parse_hop(hop) else {
            return client;
        };
        client = addr;
        if !is_trusted(&addr) {
            return addr;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[::1]:80`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn with_xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                "x-forwarded-for",
                HeaderValue::from_str(value).expect("test header"),
            );
        }
        headers
    }

    fn proxies() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ]
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let headers = with_xff(&["1.1.1.1"]);
        assert_eq!(
            client_addr(ip("203.0.113.9"), &headers, &proxies()),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_addr(ip("203.0.113.9"), &headers, &[]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
        // The client wrote "6.6.6.6" itself; our proxy appended the address it saw.
        let headers = with_xff(&["6.6.6.6, 198.51.100.7"]);
        assert_eq!(
            client_addr(ip("10.1.2.3"), &headers, &proxies()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn trusted_hops_are_skipped_across_several_headers() {
        let headers = with_xff(&["6.6.6.6, 198.51.100.7", "10.9.9.9"]);
        assert_eq!(
            client_addr(ip("10.1.2.3"), &headers, &proxies()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_broken_entry_stops_the_walk_at_the_last_checked_hop() {
        let headers = with_xff(&["198.51.100.7, not-an-address, 10.9.9.9"]);
        assert_eq!(
            client_addr(ip("10.1.2.3"), &headers, &proxies()),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn no_header_or_only_trusted_hops() {
        assert_eq!(
            client_addr(ip("10.1.2.3"), &HeaderMap::new(), &proxies()),
            ip("10.1.2.3")
        );
        let headers = with_xff(&["10.4.4.4, 10.5.5.5"]);
        assert_eq!(
            client_addr(ip("10.1.2.3"), &headers, &proxies()),
            ip("10.4.4.4")
        );
    }

    #[test]
    fn ports_and_ipv6_are_understood() {
        let headers = with_xff(&["[2001:db8::1]:443, 198.51.100.7:5555"]);
        assert_eq!(
            client_addr(ip("::1"), &headers, &proxies()),
            ip("198.51.100.7")
        );
    }
}
