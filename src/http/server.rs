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
//! Shutdown: stop accepting, ask every connection to finish (idle keep-alive connections
//! close at once, busy ones after their response), and resolve once all have; `serve` in
//! `lib.rs` bounds that by `http.shutdown_grace`.

use std::{future::Future, net::SocketAddr, pin::pin, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{Request, body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt;

use crate::config::HttpConfig;

/// Serves `router` on `listener` until `shutdown` resolves, then drains (module doc).
pub async fn run(
    listener: TcpListener,
    router: Router,
    config: &HttpConfig,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    // HTTP/1.1 only, as before: the load balancer in front speaks HTTP/1.1 to instances.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    let connections = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let (slot, stream, peer) = accepted;
        // Each request learns its peer (`ConnectInfo`, as axum's extractor expects it).
        let service = router
            .clone()
            .map_request(move |request: Request<Incoming>| {
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
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
