//! The one address a load test may send to, and a minimal HTTP/1.1 client for it.
//!
//! A load generator is a denial-of-service tool pointed somewhere. Every request this crate
//! sends, the load itself, setup (ids, logins) and metric scrapes alike, goes through a
//! [`Target`], and a `Target` is built only from a URL the user configured, resolved once:
//! nothing a server answers (a `Location`, an absolute link) can send it elsewhere. It
//! refuses a base URL that resolves to anything but loopback unless the caller opts in
//! (`--allow-remote`): measuring someone else's server is not something to do by typo.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1::{self, SendRequest},
    header,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A validated `http://host:port[/prefix]` base URL, resolved to one socket address.
#[derive(Debug, Clone)]
pub struct Target {
    addr: SocketAddr,
    /// `Host` header value: `host:port` as the user wrote it.
    authority: String,
    /// Path prefix without a trailing slash (`""` for the root).
    prefix: String,
    base: String,
}

impl Target {
    /// Parses and resolves `base`. Refuses https (this tool measures the service, not TLS),
    /// query strings, credentials, and, unless `allow_remote`, any address that is not
    /// loopback: every address the name resolves to must be.
    pub async fn resolve(base: &str, allow_remote: bool) -> anyhow::Result<Self> {
        let url = url::Url::parse(base).with_context(|| format!("`{base}` is not a URL"))?;
        ensure!(
            url.scheme() == "http",
            "`{base}`: only http:// base URLs are supported (TLS would measure the handshake, not the service)"
        );
        ensure!(
            url.query().is_none() && url.fragment().is_none(),
            "`{base}`: a base URL has no query or fragment"
        );
        ensure!(
            url.username().is_empty() && url.password().is_none(),
            "`{base}`: a base URL carries no credentials"
        );
        let host = url
            .host_str()
            .with_context(|| format!("`{base}` has no host"))?
            .to_owned();
        let port = url
            .port_or_known_default()
            .with_context(|| format!("`{base}` has no port"))?;
        let lookup_host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((lookup_host, port))
            .await
            .with_context(|| format!("cannot resolve `{host}`"))?
            .collect();
        let Some(&addr) = addrs.first() else {
            bail!("`{host}` resolves to no address");
        };
        if !allow_remote && let Some(remote) = addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!(
                "`{base}` resolves to {}, which is not a loopback address: a load test sends \
                 thousands of requests a second, so it only targets this machine unless you \
                 pass --allow-remote",
                remote.ip()
            );
        }
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let prefix = url.path().trim_end_matches('/').to_owned();
        let base = format!("http://{authority}{prefix}");
        Ok(Self {
            addr,
            authority,
            prefix,
            base,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port[/prefix]`, for reports.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request for `path_and_query` (which must start with `/`) on this target.
    pub fn request(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
        token: Option<&str>,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        ensure!(
            path_and_query.starts_with('/'),
            "`{path_and_query}` is not a path: requests never leave the base URL"
        );
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.prefix))
            .header(header::HOST, &self.authority)
            .header(header::USER_AGENT, "scalable-api-loadtest");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        Ok(builder.body(Full::new(body.unwrap_or_default()))?)
    }

    /// Opens one keep-alive HTTP/1.1 connection. The connection's I/O runs on its own task,
    /// which ends when the returned sender is dropped or the server closes.
    pub async fn connect(&self, timeout: Duration) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| anyhow::anyhow!("connect timed out after {timeout:?}"))?
            .with_context(|| format!("connect to {}", self.addr))?;
        // Requests are small and one is in flight per connection: Nagle would only add delay.
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// One request on a fresh connection, for setup and metric scrapes (not the load).
    pub async fn fetch(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Bytes>,
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let request = self.request(method.clone(), path_and_query, body, token)?;
        let exchange = async {
            let mut sender = self.connect(Duration::from_secs(5)).await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| anyhow::anyhow!("{method} {path_and_query}: no answer in 30 s"))?
            .with_context(|| format!("{method} {}{path_and_query}", self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_loopback_base_url_is_accepted_with_its_prefix() {
        let target = Target::resolve("http://127.0.0.1:8080/api/", false)
            .await
            .expect("loopback is fine");
        assert_eq!(target.base(), "http://127.0.0.1:8080/api");
        let request = target
            .request(Method::GET, "/v1/users/1", None, None)
            .expect("a path");
        assert_eq!(request.uri(), "/api/v1/users/1");
        assert_eq!(request.headers()[header::HOST], "127.0.0.1:8080");
        assert!(
            Target::resolve("http://localhost:8080", false)
                .await
                .is_ok(),
            "localhost resolves to loopback"
        );
        assert!(Target::resolve("http://[::1]:8080", false).await.is_ok());
    }

    #[tokio::test]
    async fn a_remote_base_url_is_refused_unless_allowed() {
        let err = Target::resolve("http://10.1.2.3:8080", false)
            .await
            .expect_err("not loopback");
        let message = format!("{err:#}");
        assert!(message.contains("10.1.2.3"), "{message}");
        assert!(message.contains("--allow-remote"), "{message}");
        let allowed = Target::resolve("http://10.1.2.3:8080", true)
            .await
            .expect("allowed by the flag");
        assert_eq!(allowed.addr(), "10.1.2.3:8080".parse().expect("addr"));
    }

    #[tokio::test]
    async fn other_schemes_queries_and_absolute_paths_are_refused() {
        for base in [
            "https://127.0.0.1:8443",
            "http://127.0.0.1:8080/?x=1",
            "http://u:p@127.0.0.1:8080",
            "not a url",
        ] {
            assert!(
                Target::resolve(base, false).await.is_err(),
                "{base} must be refused"
            );
        }
        let target = Target::resolve("http://127.0.0.1:8080", false)
            .await
            .expect("loopback");
        assert!(
            target
                .request(Method::GET, "http://10.0.0.1/x", None, None)
                .is_err(),
            "an absolute URL must not become a request"
        );
    }
}
