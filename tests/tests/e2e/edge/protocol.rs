//! Protocol hygiene: malformed, oversized and smuggling-shaped requests get
//! a clean 4xx and never reach the origin; TLS termination with HTTP/1.1
//! and HTTP/2 (ALPN), and h2c on the plain port.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::upstream::TestUpstream;
use super::{TestEdge, edge_config, region, x_cache};

/// Sends raw bytes and returns the status code of the first response.
async fn raw_status(edge: &TestEdge, request: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(edge.url.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut buffer = vec![0u8; 4096];
    let mut read = 0;
    while read < 12 {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer[read..]))
            .await
            .expect("a response within 5 s")
            .expect("read");
        if n == 0 {
            break;
        }
        read += n;
    }
    let head = String::from_utf8_lossy(&buffer[..read]);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_smuggling_requests_are_refused_before_the_origin() {
    let upstream = TestUpstream::start("local").await;
    let edge = TestEdge::start(edge_config(
        "local",
        vec![region("local", upstream.addr, 0)],
    ))
    .await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "x".repeat(128 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "CL and TE together",
            b"POST /cart HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "two different lengths",
            b"POST /cart HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
        ),
        (
            "obfuscated transfer coding",
            b"POST /cart HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec(),
        ),
        ("no host", b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n".to_vec()),
        ("bad host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec()),
        ("two hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec()),
        ("unknown method", b"TRACE / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()),
        ("oversized headers", huge.into_bytes()),
    ];
    for (what, request) in cases {
        let status = raw_status(&edge, &request).await;
        assert!((400..500).contains(&status), "{what}: got {status}");
    }
    // Bytes that are not HTTP at all (a TLS hello on the plain port) get no
    // answer: pingora's parser waits for a request head, then times out.
    // They never reach the origin either.
    let mut stream = tokio::net::TcpStream::connect(edge.url.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream
        .write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upstream.total(), 0, "nothing reached the origin");
    // The edge still serves normal traffic afterwards.
    assert_eq!(edge.get("/ok").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_http2_and_http1_and_h2c() {
    let upstream = TestUpstream::start("local").await;
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let mut config = edge_config("local", vec![region("local", upstream.addr, 0)]);
    let tls_port = meridian_launcher::free_port().unwrap();
    config.tls = Some(meridian_edge::config::TlsConfig {
        listen: ([127, 0, 0, 1], tls_port).into(),
        cert,
        key,
    });
    // Short, so the HTTP/2 connections below outlive it: their frames are
    // not timed as request heads.
    config.request_head_timeout = Duration::from_millis(200);
    let edge = TestEdge::start(config).await;
    let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let url = format!("https://localhost:{tls_port}/tls?cc=public,max-age=60");

    let h2 = reqwest::Client::builder()
        .add_root_certificate(root.clone())
        .build()
        .unwrap();
    let response = h2
        .get(&url)
        .send()
        .await
        .expect("TLS handshake and request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.version(),
        reqwest::Version::HTTP_2,
        "ALPN picks h2"
    );
    assert_eq!(x_cache(&response), "MISS");

    let h1 = reqwest::Client::builder()
        .add_root_certificate(root)
        .http1_only()
        .build()
        .unwrap();
    let response = h1.get(&url).send().await.expect("HTTP/1.1 over TLS");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(x_cache(&response), "HIT");

    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // Another host name (127.0.0.1), so another key: a miss, then a hit.
    for expected in ["MISS", "HIT"] {
        let response = h2c
            .get(format!("{}/tls?cc=public,max-age=60", edge.url))
            .send()
            .await
            .expect("h2c");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(x_cache(&response), expected);
    }

    // Idle for longer than the head deadline, the HTTP/2 connections (TLS
    // and h2c) and the HTTP/1.1 one still serve the next request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (client, url) in [
        (&h2, url.clone()),
        (&h1, url.clone()),
        (&h2c, format!("{}/tls?cc=public,max-age=60", edge.url)),
    ] {
        let response = client.get(url).send().await.expect("a kept connection");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        edge.metric("meridian_edge_request_heads_timed_out_total", &[])
            .await,
        0.0
    );
}
