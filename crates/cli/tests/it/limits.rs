//! `serve`'s connection and request limits, set by flag, variable and config file: at the limit
//! `/healthz` and `/metrics` still answer and other requests get a 503; stalled heads and bodies
//! are cut, and the metrics count what the limits did.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Server, digest, dirs, tcr};

/// The head of an upload of `len` bytes to `/blobs/<digest>`. The one place these tests build an
/// upload request: a header every write needs goes here.
fn upload_head(digest: &str, len: usize) -> String {
    let token = crate::common::WRITE_TOKEN;
    format!("PUT /blobs/{digest} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {len}\r\n\r\n")
}

/// Reads an answer's head from `s` (a hang fails the test).
async fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf));
        match read.await.expect("the server did not answer") {
            Ok(0) | Err(_) => break,
            Ok(_) => got.push(buf[0]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads until the server closes `s` (a hang fails the test) and returns what it sent.
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf));
        match read.await.expect("the server neither answered nor closed") {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn limits_from_flag_env_and_file_keep_health_checks_answering() {
    let d = dirs();
    let config = d.tmp.path().join("config.toml");
    std::fs::write(&config, "body_idle_timeout = \"300ms\"\n").unwrap();
    let srv = Server::start_with_env(
        &d.data,
        &["--config", config.to_str().unwrap(), "--max-connections", "2", "--header-read-timeout", "60s"],
        &[("TIERCACHE_KEEP_ALIVE_TIMEOUT", "60s")],
    )
    .await;
    // Fill the pool with connections that stay in it: each asks for something, and once
    // answered starts another request and never finishes it (neither idle nor closing). The
    // health check of `start` may hold a place for a while or give it up at any moment; whatever
    // it does, a few such connections fill a pool of 2, and the next one is refused.
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() < 4, "a pool of 2 should be full by now");
        let mut s = TcpStream::connect(srv.base.trim_start_matches("http://")).await.unwrap();
        s.write_all(b"GET /blobs/sha256:00 HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        let head = read_head(&mut s).await;
        if !head.starts_with("HTTP/1.1 400") {
            break head;
        }
        s.write_all(b"GET /healthz HT").await.unwrap();
        held.push(s);
    };
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1\r\n"), "{refused}");
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let health = fresh().get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    srv.wait_metric("tiercache_http_connections_refused_total{reason=\"overloaded\"}", 1.0).await;
    drop(held);
    // Until the server has seen them close, a new connection would still find the pool full.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while srv.metric("tiercache_http_connections").await > 1.0 {
        assert!(std::time::Instant::now() < deadline, "the held connections were never seen closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A stalled upload is cut by the body idle timeout from the file, and answered 408.
    let mut s = TcpStream::connect(srv.base.trim_start_matches("http://")).await.unwrap();
    s.write_all(upload_head(&digest(b"never sent whole"), 1_000_000).as_bytes()).await.unwrap();
    s.write_all(&[7u8; 1000]).await.unwrap();
    let answer = read_until_closed(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    srv.wait_metric("tiercache_http_timeouts_total{kind=\"body\"}", 1.0).await;
    // The client's failure, counted as the upload's own, never as a local I/O failure.
    srv.wait_metric("tiercache_http_errors_total{kind=\"upload_body\"}", 1.0).await;
    assert_eq!(srv.metric("tiercache_http_errors_total{kind=\"io\"}").await, 0.0);
    assert!(!srv.log_text().contains("request failed"), "{}", srv.log_text());
}

#[tokio::test]
async fn a_stalled_head_is_cut_and_counted() {
    let d = dirs();
    let srv = Server::start(&d.data, &["--header-read-timeout", "200ms"]).await;
    let mut s = TcpStream::connect(srv.base.trim_start_matches("http://")).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHos").await.unwrap();
    assert_eq!(read_until_closed(&mut s).await, "");
    srv.wait_metric("tiercache_http_timeouts_total{kind=\"header\"}", 1.0).await;
    assert!(srv.metric("tiercache_http_connections").await >= 1.0, "the scrape's own connection is counted");
}

#[test]
fn zero_limits_are_refused() {
    let d = dirs();
    for (flag, key) in [
        ("--header-read-timeout", "header_read_timeout"),
        ("--keep-alive-timeout", "keep_alive_timeout"),
        ("--body-idle-timeout", "body_idle_timeout"),
        ("--max-connections", "max_connections"),
    ] {
        let zero = if key == "max_connections" { "0" } else { "0s" };
        let out = tcr(&d.data, &["serve", "--listen", "127.0.0.1:9", flag, zero]).expect_code(1);
        assert!(out.stderr.contains(key), "{flag}: {}", out.stderr);
    }
}
