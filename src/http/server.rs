//! The HTTP server: connections accepted under a cap, each request's headers read under a
//! deadline, in-flight requests drained on shutdown.
//!
//! `axum::serve` has a knob for neither bound: it serves every connection it can accept,
//! and its HTTP/1 connections have no header-read timer, so a client that sends half of its
//! headers holds a connection and a task for as long as it likes (slowloris: a few thousand
//! such sockets and the instance has no room left). This is the same accept loop on
//! hyper-util, with both bounds:
//!
//! - `http.max_connections`: a connection is accepted only once a slot is free; the excess
//!   waits in the kernel's listen backlog (and times out there on the client's side) instead
//!   of costing a task and buffers here. Sized above what the load balancer opens per
//!   instance: a real client never meets it, a flood does.
//! - `http.header_read_timeout`: a request whose headers have not all arrived in time gets
//!   `408` and the connection is closed.
//!
//! Shutdown: stop accepting, then linger (`http.shutdown_linger`): open connections are
//! still served, but every answer says `Connection: close`, so each closes after it. Then ask
//! every connection left to finish (idle keep-alive connections close at once, busy ones
//! after their response), and resolve once all have; `serve` in `lib.rs` bounds the whole by
//! `http.shutdown_grace`.
//!
//! Why linger: a load balancer keeps idle connections to each instance and sends requests
//! on them. Closing one at the moment the balancer sends on it fails that request: nginx
//! resends a GET to another instance, but never a write that reached this one (it may have
//! committed), so the client gets a 502. Closed by an answer, a connection ends when the
//! balancer knows it does, and with no new connection accepted it sends elsewhere; the
//! idle ones left when the linger ends are the balancer's spares, which it no longer uses.
//! `tests/api/rolling_restart.rs` saw such 502s for writes without the linger.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, response::Response};
use hyper::{
    Request,
    body::Incoming,
    header::{CONNECTION, HeaderValue},
    server::conn::http1,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::{Service, ServiceExt};

use crate::config::HttpConfig;

/// Serves `service` (the router behind header versioning: `super::service`) on `listener`
/// until `shutdown` resolves, then drains (module doc).
pub async fn run<S>(
    listener: TcpListener,
    service: S,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(config.max_connections));
    // HTTP/1.1 only, as before: the load balancer in front speaks HTTP/1.1 to instances.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let connections = GracefulShutdown::new();
    // Set when shutdown begins: from then on every answer closes its connection.
    let closing = Arc::new(AtomicBool::new(false));
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let (slot, stream, peer) = accepted;
        // Each request learns its peer (`ConnectInfo`, as axum's extractor expects it).
        let closing = closing.clone();
        let connection_service = service
            .clone()
            .map_request(move |request: Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            })
            .map_response(move |mut response: Response| {
                if closing.load(Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            });
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(connection_service),
        );
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    closing.store(true, Ordering::Relaxed);
    // The linger ends early once every connection is closed: all slots are free again.
    let all_slots = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(config.shutdown_linger, slots.acquire_many(all_slots)).await;
    connections.shutdown().await;
}

/// The next connection, once a slot is free for it.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> (
    tokio::sync::OwnedSemaphorePermit,
    tokio::net::TcpStream,
    SocketAddr,
) {
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        match listener.accept().await {
            Ok((stream, peer)) => return (slot, stream, peer),
            // Out of file descriptors, or a connection reset before it was accepted: not
            // fatal; pause so an exhausted process does not spin on accept.
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
