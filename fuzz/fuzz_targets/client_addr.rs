//! The client address behind trusted proxies (src/http/client.rs). Input: a first byte that
//! picks the peer, then `X-Forwarded-For` values, one per line. Properties: an untrusted peer
//! is the client whatever the headers say; the answer is the peer or one of the hops.
#![no_main]

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use scalable_api::http::client::client_addr;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let trusted: Vec<IpNet> = ["10.0.0.0/8", "127.0.0.0/8", "fd00::/8"]
        .iter()
        .map(|net| net.parse().expect("a network literal"))
        .collect();
    let peer = match pick % 3 {
        0 => IpAddr::from([10, 1, 2, 3]),
        1 => IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, 1]),
        _ => IpAddr::from([203, 0, 113, 9]),
    };
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", value);
        }
    }
    let client = client_addr(peer, &headers, &trusted);
    let peer_trusted = trusted.iter().any(|net| net.contains(&peer));
    if !peer_trusted {
        assert_eq!(client, peer);
    }
    if client != peer {
        // Parsed, not searched for: a hop may be written in another form than the
        // canonical one (`1.2.3.4:80`, `[::1]:80`).
        let parsed = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|hop| {
                hop.parse::<IpAddr>().ok() == Some(client)
                    || hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()) == Some(client)
            });
        assert!(parsed, "{client} is neither the peer nor a hop");
    }
});
