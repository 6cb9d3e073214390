//! Graceful shutdown: on the signal the server stops accepting connections but finishes the
//! requests already in flight.

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
