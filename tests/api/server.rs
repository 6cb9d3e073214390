//! The server's own bounds, over raw TCP: a client that sends its headers slowly is cut off,
//! and connections past the cap wait until a slot frees.

use std::time::{Duration, Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::TestApp;

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";

/// The test app's address, as `host:port`.
fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads whatever arrives within `limit`: the bytes, or `None` if nothing did.
async fn read_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut buffer = vec![0; 4096];
    match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
        Ok(Ok(n)) => Some(buffer[..n].to_vec()),
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_client_that_sends_half_its_headers_is_cut_off_after_the_header_timeout() {
    // Arrange
    let app = TestApp::spawn_with(|config| {
        config.http.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = TcpStream::connect(addr(&app)).await.expect("connect");
    let started = Instant::now();

    // Act: half a request, then nothing.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: te")
        .await
        .expect("send");

    // Assert: the server answers 408 (or closes) soon after the timeout, never serving it.
    let answer = read_within(&mut slow, Duration::from_secs(5))
        .await
        .expect("the server acted within 5 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the timeout"
    );
    let rest = read_within(&mut slow, Duration::from_secs(2)).await;
    assert_eq!(
        rest.as_deref(),
        Some(&[][..]),
        "and the connection is closed"
    );
}

#[tokio::test]
async fn a_connection_past_the_cap_waits_for_a_free_slot() {
    // Arrange: two slots, both held by open keep-alive connections.
    let app = TestApp::spawn_with(|config| config.http.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut connection = TcpStream::connect(addr(&app)).await.expect("connect");
        connection.write_all(REQUEST).await.expect("send");
        let answer = read_within(&mut connection, Duration::from_secs(5)).await;
        assert!(answer.is_some_and(|a| a.starts_with(b"HTTP/1.1 200")));
        held.push(connection);
    }

    // Act: a third connection (the kernel accepts it into the backlog) sends a request.
    let mut third = TcpStream::connect(addr(&app)).await.expect("connect");
    third.write_all(REQUEST).await.expect("send");

    // Assert: no answer while both slots are held; one as soon as a slot frees.
    assert_eq!(
        read_within(&mut third, Duration::from_millis(700)).await,
        None
    );
    drop(held.pop());
    let answer = read_within(&mut third, Duration::from_secs(5))
        .await
        .expect("served once a slot freed");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
