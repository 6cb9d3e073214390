//! `[http]`: the listener and the bounds on every request.

use std::{net::SocketAddr, time::Duration};

use anyhow::ensure;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::idempotency::IdempotencyConfig;
use super::versioning::VersioningConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on. Port 0 picks a free port (tests do this).
    pub addr: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub body_limit_bytes: usize,
    /// A request still running after this long is answered with 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// On SIGTERM/Ctrl-C, in-flight requests get this long to finish before the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// On shutdown, how long open connections keep being served (each answer then closes
    /// its connection) before idle ones are closed; part of `shutdown_grace`, and cut short
    /// once every connection is closed. A load balancer's pooled connection closed by the
    /// service at the moment it sends a request on it fails that request, and a write is
    /// never resent (a 502): this gives the balancer time to use and drop its connections,
    /// or to stop sending here, first. `0s`: idle connections close at once.
    #[serde(with = "humantime_serde")]
    pub shutdown_linger: Duration,
    /// Connections served at once per instance; more wait in the kernel's backlog. Sized
    /// above what the load balancer opens, so that only a flood meets it.
    pub max_connections: usize,
    /// A request whose headers have not all arrived by then gets 408 and its connection is
    /// closed (a client sending headers a byte at a time must not hold a connection).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Origins whose browser pages may call the API (`https://app.example.com`), or `["*"]`
    /// for any. Empty (the default): no CORS headers, so browsers keep other sites' pages out.
    pub cors_origins: Vec<String>,
    /// Send `Strict-Transport-Security`: only behind TLS (a proxy that terminates it), where
    /// browsers must never fall back to plain HTTP for this host.
    pub hsts: bool,
    /// Networks of the proxies in front of the service (`["10.0.0.0/8"]`): only when the
    /// socket peer is in one is `X-Forwarded-For` read, right to left, for the client address
    /// that rate limits and logs use. Empty (the default): the peer is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Which REST version an unversioned path serves, and v1's deprecation dates.
    pub versioning: VersioningConfig,
    /// `Idempotency-Key` on POST: a retried request runs once (see `src/http/idempotency/`).
    pub idempotency: IdempotencyConfig,
    /// Answers compressed by `Accept-Encoding` (see `src/http/compression.rs`).
    pub compression: CompressionConfig,
}

/// `[http.compression]`: gzip, br or zstd, as the client accepts, on answers worth it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// `false`: every answer goes out as it is (`identity`).
    pub enabled: bool,
    /// Answers smaller than this many bytes go out as they are: below about a kilobyte the
    /// encoder's CPU buys a few hundred bytes at most, less than one packet. At most 65535.
    pub min_bytes: u16,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_bytes: 1024,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            body_limit_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(20),
            shutdown_linger: Duration::from_secs(1),
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            cors_origins: Vec::new(),
            hsts: false,
            trusted_proxies: Vec::new(),
            versioning: VersioningConfig::default(),
            idempotency: IdempotencyConfig::default(),
            compression: CompressionConfig::default(),
        }
    }
}

impl HttpConfig {
    /// This section with the idempotency Redis's password masked.
    pub(super) fn redacted(&self) -> Self {
        Self {
            idempotency: self.idempotency.redacted(),
            ..self.clone()
        }
    }

    /// Each CORS origin is `*` or a bare `http(s)://host[:port]` (an origin has no path: a
    /// trailing slash or a path would never match what a browser sends).
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.max_connections >= 1,
            "http.max_connections must be at least 1"
        );
        ensure!(
            !self.header_read_timeout.is_zero(),
            "http.header_read_timeout must be more than 0s"
        );
        ensure!(
            self.shutdown_linger <= self.shutdown_grace,
            "http.shutdown_linger must not exceed http.shutdown_grace, which bounds the whole drain"
        );
        self.idempotency.validate()?;
        for origin in self.cors_origins.iter().filter(|o| o.as_str() != "*") {
            let parsed = url::Url::parse(origin).ok();
            let bare = parsed.as_ref().is_some_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none()
            });
            ensure!(
                bare && !origin.ends_with('/'),
                "http.cors_origins: `{origin}` is not an origin like `https://app.example.com` (scheme, host, optional port, nothing else)"
            );
        }
        self.versioning.validate()
    }
}
