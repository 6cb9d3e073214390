//! The baseline: a hello-world axum server, built in this workspace with the same axum,
//! Tokio and allocator as the service. Its requests/s under a workload's load is the most
//! this machine serves with this load generator on it; every run is quoted as a ratio to it.

use std::net::SocketAddr;

use axum::{Router, routing::get};

pub fn router() -> Router {
    Router::new().route("/", get(|| async { "Hello, World!" }))
}

/// Serves until the process ends; prints `listening on http://ADDR` once bound.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router()).await?;
    Ok(())
}
