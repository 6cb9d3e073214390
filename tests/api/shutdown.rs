//! Graceful shutdown: on the signal the server stops accepting connections but finishes the
//! requests already in flight, and serves a request on an open connection once more, closing
//! the connection with its answer (`http.shutdown_linger`).

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::helpers::TestApp;

#[tokio::test]
async fn shutdown_drains_an_in_flight_request_and_refuses_new_connections() {
    // Arrange: a server whose shutdown signal the test controls.
    let app = TestApp::spawn().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(scalable_api::serve(listener, app.state.clone(), async {
        let _ = stopped.await;
    }));

    // A request is in flight: headers and half of its body sent.
    let body = r#"{"email":"late@example.com","name":"Late","password":"correct horse battery"}"#;
    let (first, rest) = body.split_at(body.len() / 2);
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/auth/register HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.expect("send head");
    client
        .write_all(first.as_bytes())
        .await
        .expect("send half the body");
    tokio::time::sleep(Duration::from_millis(100)).await; // let the server start reading it

    // Act: the shutdown signal, then the rest of the request.
    stop.send(()).expect("server still running");
    tokio::time::sleep(Duration::from_millis(100)).await;
    client
        .write_all(rest.as_bytes())
        .await
        .expect("send the rest");
    let mut response = String::new();
    client
        .read_to_string(&mut response)
        .await
        .expect("read the response");

    // Assert: the in-flight request completed, then the server finished on its own.
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "in-flight request answered: {response}"
    );
    let finished = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "serve returned cleanly after draining"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test]
async fn on_shutdown_an_open_keep_alive_connection_is_served_once_more_and_closed_by_the_answer() {
    // Arrange: a server with a linger longer than the test, and a keep-alive connection that
    // has served one request and sits idle, as a load balancer's pooled connection does.
    let app = TestApp::spawn_with(|config| {
        config.http.shutdown_grace = Duration::from_secs(20);
        config.http.shutdown_linger = Duration::from_secs(20);
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(scalable_api::serve(listener, app.state.clone(), async {
        let _ = stopped.await;
    }));
    let mut pooled = TcpStream::connect(addr).await.expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";
    pooled.write_all(request).await.expect("send");
    let first = read_response(&mut pooled).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        !first.to_lowercase().contains("connection: close"),
        "{first}"
    );

    // Act: the shutdown signal, then a request on the pooled connection.
    stop.send(()).expect("server still running");
    tokio::time::sleep(Duration::from_millis(100)).await;
    pooled
        .write_all(request)
        .await
        .expect("send on the pooled connection");
    let second = read_response(&mut pooled).await;

    // Assert: new connections are refused, the pooled one was served and its answer closed
    // it (closing it idle instead could cross a write in flight), and with no connection
    // left the linger ended at once rather than after its 20 s.
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections once shutdown began"
    );
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(
        second.to_lowercase().contains("connection: close"),
        "the answer closes the connection: {second}"
    );
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(10), pooled.read_to_end(&mut rest)).await;
    assert!(
        matches!(eof, Ok(Ok(0))),
        "the server closed the connection after its answer: {eof:?}"
    );
    let finished = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "serve returned once its last connection closed"
    );
}

/// One HTTP/1.1 response from `stream`: its head, and a body of its `content-length`.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "connection closed mid-response: {}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&buf[..n]);
    }
}
