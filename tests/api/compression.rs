//! Compression: gzip, br or zstd as the client asks, on answers worth it, never on small
//! ones; ETags of compressed answers weak and still good for a 304.

use std::io::Read;

use reqwest::{Response, StatusCode};

use crate::helpers::{ResponseExt, TestApp};

/// The body decoded from `encoding`, with the codecs the server's own encoders come with.
fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => flate2::read::GzDecoder::new(body).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(body, 4096).read_to_end(&mut out),
        "zstd" => zstd::stream::read::Decoder::new(body).and_then(|mut d| d.read_to_end(&mut out)),
        other => panic!("no decoder for {other}"),
    }
    .unwrap_or_else(|e| panic!("a valid {encoding} body: {e}"));
    out
}

/// Whether the answer says it depends on `Accept-Encoding`.
fn varies_on_encoding(response: &Response) -> bool {
    response
        .headers()
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("accept-encoding"))
}

#[tokio::test]
async fn a_large_answer_is_compressed_as_each_client_asks_and_decodes_to_the_same_bytes() {
    // Arrange: a page of 100 users is several kilobytes of JSON.
    let app = TestApp::spawn_seeded(100, 0, |_| {}).await;
    let plain = app.users().list("?limit=100").await;
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(
        plain.header_str("content-encoding"),
        "",
        "no Accept-Encoding: identity"
    );
    assert!(varies_on_encoding(&plain), "Vary: Accept-Encoding");
    let identity = plain.bytes().await.expect("a body").to_vec();
    assert!(identity.len() > 4096, "{} bytes", identity.len());

    for encoding in ["gzip", "br", "zstd"] {
        // Act
        let response = app
            .users()
            .list("?limit=100")
            .header("accept-encoding", encoding)
            .await;

        // Assert
        assert_eq!(response.status(), StatusCode::OK, "{encoding}");
        assert_eq!(response.header_str("content-encoding"), encoding);
        assert!(varies_on_encoding(&response), "{encoding}: Vary");
        let body = response.bytes().await.expect("a body").to_vec();
        assert!(
            body.len() < identity.len() / 2,
            "{encoding}: {} bytes of {}",
            body.len(),
            identity.len()
        );
        assert_eq!(decode(encoding, &body), identity, "{encoding} decodes");
    }
}

#[tokio::test]
async fn a_small_answer_goes_out_as_it_is() {
    // Arrange
    let app = TestApp::spawn().await;
    let ada = app.register("ada@example.com", "Ada").await;

    // Act: one user is about a hundred bytes, under `http.compression.min_bytes`.
    let response = app
        .users()
        .get(ada.id)
        .header("accept-encoding", "gzip, br, zstd")
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.header_str("content-encoding"), "");
    assert!(!varies_on_encoding(&response));
}

#[tokio::test]
async fn a_compressed_answers_etag_is_weak_and_still_gets_a_304() {
    // Arrange: every answer compressed, so that a single post is.
    let app = TestApp::spawn_with(|config| config.http.compression.min_bytes = 1).await;
    let ada = app.register("ada@example.com", "Ada").await;
    let id = app.create_post(&ada, "Weak").await["id"]
        .as_i64()
        .expect("post id");
    let identity = app.posts().get(id).await.header_str("etag");
    assert!(identity.starts_with('"'), "strong as it is: {identity}");

    // Act
    let compressed = app.posts().get(id).header("accept-encoding", "gzip").await;
    let etag = compressed.header_str("etag");
    let again = app
        .posts()
        .get(id)
        .header("accept-encoding", "gzip")
        .header("if-none-match", &etag)
        .await;

    // Assert: the same tag, weak; the client's copy is still current.
    assert_eq!(compressed.header_str("content-encoding"), "gzip");
    assert_eq!(etag, format!("W/{identity}"));
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        again.header_str("etag"),
        etag,
        "named as the client holds it"
    );
}

#[tokio::test]
async fn with_compression_off_a_large_answer_goes_out_as_it_is() {
    // Arrange
    let app = TestApp::spawn_seeded(100, 0, |config| config.http.compression.enabled = false).await;

    // Act
    let response = app
        .users()
        .list("?limit=100")
        .header("accept-encoding", "gzip, br, zstd")
        .await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.header_str("content-encoding"), "");
    assert!(!varies_on_encoding(&response));
}
