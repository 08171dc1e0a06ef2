//! The listener's limits against a real socket: `serve` on 127.0.0.1:0 with short time limits set
//! here, and raw TCP clients that stall, idle or crowd it. Nothing is asserted about how long
//! anything took: each test waits for what it expects (a closed socket, an answer), with a bound
//! that only guards against a hang.

use std::net::SocketAddr;
use std::time::Duration;

use tiercache_engine::{Cache, CacheConfig};
use tiercache_server::Limits;
use tiercache_testkit::{bytes, sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wait_until;

/// The bound on any single wait: only a hang reaches it.
const HANG: Duration = Duration::from_secs(30);
/// A time limit that a test does not mean to reach.
const LONG: Duration = Duration::from_secs(600);

/// A running `serve` over a fresh cache.
struct Running {
    addr: SocketAddr,
    cache: Cache,
    data: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(limits: Limits, quota_bytes: Option<u64>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cfg = CacheConfig::new(&data);
    cfg.disk.quota_bytes = quota_bytes;
    let cache = Cache::open(cfg).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(tiercache_server::serve(
        listener,
        cache.clone(),
        (access(), Default::default()),
        limits,
        async move {
            let _ = rx.await;
        },
    ));
    Running { addr, cache, data, stop: Some(tx), served, _dir: dir }
}

/// Limits with every time limit out of reach, and `max_connections`.
fn limits(max_connections: usize) -> Limits {
    Limits {
        max_connections,
        header_read_timeout: LONG,
        keep_alive_timeout: LONG,
        body_idle_timeout: LONG,
        reserve: 8,
        access_log: true,
    }
}

/// The access rules of these servers: writes with [`super::WRITE_TOKEN`].
fn access() -> tiercache_server::Access {
    tiercache_server::Access::new().with_token(tiercache_server::Right::Write, super::WRITE_TOKEN).unwrap()
}

/// The head of an upload of `len` bytes to `/blobs/<digest>`, on a connection kept open. The one
/// place a test builds an upload request: a header every write needs goes here.
fn upload_head(digest: &str, len: usize) -> String {
    let token = super::WRITE_TOKEN;
    format!("PUT /blobs/{digest} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {len}\r\n\r\n")
}

/// A GET of `path` that asks the server to close the connection after its answer.
fn get_closing(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
}

/// Reads until the server closes the connection, and returns what it sent. A reset counts as a
/// close; a hang fails the test.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(HANG, s.read(&mut buf)).await.expect("the server neither answered nor closed") {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one answer with a body of `Content-Length` bytes, leaving the connection open.
async fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return (status_of(&got), text);
            }
        }
        let n = tokio::time::timeout(HANG, s.read(&mut buf)).await.expect("no answer").unwrap();
        assert!(n > 0, "closed before a whole answer: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Whether the server closed `s` (a read would see the end or a reset), without waiting.
fn is_closed(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.try_read(&mut buf) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn status_of(answer: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(answer);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

/// Sends `request` on a new connection and returns the whole answer (the server closes after it).
async fn exchange(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A connection refused at the limit may be closed before the request is written.
    let _ = s.write_all(request.as_bytes()).await;
    read_until_closed(&mut s).await
}

impl Running {
    /// Stops the server and waits for `serve` to return.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(HANG, &mut self.served).await.expect("serve did not return").unwrap().unwrap();
    }

    /// Connections that are open and past the accept loop, as the metric-free check sees them:
    /// a request answered on each.
    async fn idle_keep_alive(&self, n: usize) -> Vec<TcpStream> {
        let mut conns = Vec::new();
        for _ in 0..n {
            let mut s = TcpStream::connect(self.addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
            assert_eq!(read_answer(&mut s).await.0, 200);
            conns.push(s);
        }
        conns
    }
}

#[tokio::test]
async fn a_request_head_that_stalls_is_closed_after_the_header_timeout() {
    let srv = start(Limits { header_read_timeout: Duration::from_millis(200), ..limits(64) }, None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /healthz HT").await.unwrap();
    assert_eq!(read_until_closed(&mut s).await, b"", "closed without an answer");
    // A connection that sends nothing at all is closed the same way.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, b"");
    // And the server still serves.
    assert_eq!(status_of(&exchange(srv.addr, &get_closing("/healthz")).await), 200);
    srv.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let srv = start(Limits { keep_alive_timeout: Duration::from_millis(200), ..limits(64) }, None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        assert_eq!(read_answer(&mut s).await.0, 200);
    }
    assert_eq!(read_until_closed(&mut s).await, b"", "closed without another answer");
    srv.stop().await;
}

/// An upload that keeps sending, slower than the keep-alive and header timeouts but never idle
/// for the body timeout, is stored: the connection's time limits do not apply while it is busy.
#[tokio::test]
async fn a_slow_upload_that_keeps_sending_is_stored() {
    let short = Duration::from_millis(100);
    let srv = start(
        Limits { header_read_timeout: short, keep_alive_timeout: short, body_idle_timeout: LONG, ..limits(64) },
        None,
    )
    .await;
    let data = bytes(1, 8 * 1000);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(upload_head(&sha256(&data), data.len()).as_bytes()).await.unwrap();
    for chunk in data.chunks(1000) {
        // Pacing, not a wait for a condition: the upload must outlast the short limits.
        tokio::time::sleep(short).await;
        s.write_all(chunk).await.unwrap();
    }
    assert_eq!(read_answer(&mut s).await.0, 201);
    srv.stop().await;
}

/// An answer given before the request's body was read says `Connection: close` and the
/// connection ends, so a client does not send its next request down it; an answer after the whole
/// body keeps the connection.
#[tokio::test]
async fn an_answer_that_leaves_the_body_unread_closes_the_connection() {
    let srv = start(limits(64), None).await;
    let data = bytes(2, 64 * 1000);
    let digest = sha256(&data);
    // No token: refused before a byte of the body is read. The body is never sent.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!("PUT /blobs/{digest} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", data.len());
    s.write_all(head.as_bytes()).await.unwrap();
    let refused = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&refused).to_ascii_lowercase();
    assert_eq!(status_of(&refused), 401, "{text}");
    assert!(text.contains("connection: close"), "{text}");
    // The whole body read: the same connection answers the next request.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(upload_head(&digest, data.len()).as_bytes()).await.unwrap();
    s.write_all(&data).await.unwrap();
    let (status, text) = read_answer(&mut s).await;
    assert_eq!(status, 201, "{text}");
    assert!(!text.to_ascii_lowercase().contains("connection: close"), "{text}");
    s.write_all(get_closing("/healthz").as_bytes()).await.unwrap();
    assert_eq!(status_of(&read_until_closed(&mut s).await), 200);
    srv.stop().await;
}

#[tokio::test]
async fn at_the_connection_limit_healthz_answers_and_other_requests_get_503() {
    let srv = start(limits(4), None).await;
    // Four connections that never send a request fill the pool (they are not idle keep-alive
    // connections, so nothing can be closed to make room).
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    // Served from the reserve, one request per connection.
    let health = exchange(srv.addr, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status_of(&health), 200, "{}", String::from_utf8_lossy(&health));
    let refused = exchange(srv.addr, "GET /blobs/sha256:00 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let text = String::from_utf8_lossy(&refused).to_ascii_lowercase();
    assert_eq!(status_of(&refused), 503, "{text}");
    assert!(text.contains("retry-after: 1") && text.contains("connection: close"), "{text}");
    // With the reserve full too, a connection is closed at once rather than left waiting.
    for _ in 0..8 {
        silent.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    let beyond = exchange(srv.addr, &get_closing("/healthz")).await;
    assert!(beyond.is_empty() || status_of(&beyond) == 200, "{}", String::from_utf8_lossy(&beyond));
    // Once the crowd leaves, requests are served again.
    drop(silent);
    wait_until("a request is served after the crowd left", async || {
        let a = exchange(srv.addr, &get_closing("/blobs/sha256:00")).await;
        !a.is_empty() && status_of(&a) == 400
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn at_the_connection_limit_idle_keep_alive_connections_make_room() {
    let srv = start(limits(4), None).await;
    let idle = srv.idle_keep_alive(4).await;
    // Once they have been idle a while, a fifth client is served in full (400: a bad digest, not
    // the reserve's 503), and an idle one is closed to make room.
    wait_until("a client beyond the limit is served in full", async || {
        let answer = exchange(srv.addr, &get_closing("/blobs/sha256:00")).await;
        let status = status_of(&answer);
        assert!(status == 400 || status == 503, "{}", String::from_utf8_lossy(&answer));
        status == 400
    })
    .await;
    wait_until("an idle connection is closed to make room", async || idle.iter().any(is_closed)).await;
    srv.stop().await;
}

/// The reproduction: stalled uploads declaring 100 MB hold the whole quota until the body idle
/// timeout cuts them; then their reservations are released, their temp files deleted, and a
/// normal upload is stored and read back.
#[tokio::test]
async fn stalled_uploads_are_cut_and_release_their_quota() {
    let quota = 10 << 20;
    let srv = start(Limits { body_idle_timeout: Duration::from_millis(300), ..limits(64) }, Some(quota)).await;
    let mut stalled = Vec::new();
    for i in 0..12 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let digest = sha256(&bytes(100 + i, 16));
        s.write_all(upload_head(&digest, 100_000_000).as_bytes()).await.unwrap();
        s.write_all(&bytes(i, 1000)).await.unwrap();
        stalled.push(s);
    }
    let mut n_timed_out = 0;
    for s in &mut stalled {
        let answer = read_until_closed(s).await;
        let status = status_of(&answer);
        // An upload that found no room at all was refused at once (507); the others were cut.
        assert!(status == 408 || status == 507, "{}", String::from_utf8_lossy(&answer));
        n_timed_out += usize::from(status == 408);
    }
    assert!(n_timed_out >= 1, "no upload was cut by the body idle timeout");
    wait_until("every reservation is released", async || srv.cache.quota_stats().reserved_bytes == 0).await;
    let temps: Vec<_> = std::fs::read_dir(srv.data.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(temps.is_empty(), "temp files left behind: {temps:?}");

    let data = bytes(7, 2 << 20);
    let digest = sha256(&data);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(upload_head(&digest, data.len()).as_bytes()).await.unwrap();
    s.write_all(&data).await.unwrap();
    assert_eq!(read_answer(&mut s).await.0, 201);
    let got = exchange(srv.addr, &get_closing(&format!("/blobs/{digest}"))).await;
    assert_eq!(status_of(&got), 200);
    assert!(got.ends_with(&data), "the blob read back differs");
    srv.stop().await;
}

/// The sum of the series of metric `series` (name and labels as exported) in this process.
fn metric(series: &str) -> f64 {
    let text = tiercache_server::install_metrics().render();
    text.lines().filter_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok()).sum()
}

/// A client that asks for a large blob and reads none of it is disconnected after the body idle
/// timeout, so that it holds neither a connection nor a blob file for ever.
#[tokio::test]
async fn a_client_that_reads_nothing_of_its_answer_is_disconnected() {
    let srv = start(Limits { body_idle_timeout: Duration::from_millis(500), ..limits(64) }, None).await;
    let data = bytes(9, 16 << 20);
    let digest: tiercache_engine::Digest = sha256(&data).parse().unwrap();
    let body = futures::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from(data.clone())) });
    srv.cache.put_blob(&digest, body).await.unwrap();
    let before = metric("tiercache_http_timeouts_total{kind=\"send\"}");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(srv.addr).await.unwrap();
    s.write_all(format!("GET /blobs/{digest} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await.unwrap();
    wait_until("the server gives up on the client", async || {
        metric("tiercache_http_timeouts_total{kind=\"send\"}") > before
    })
    .await;
    let got = read_until_closed(&mut s).await;
    assert!(got.len() < data.len(), "the whole blob was sent to a client that read none of it");
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let srv = start(limits(64), None).await;
    let mut idle = srv.idle_keep_alive(2).await;
    let silent = TcpStream::connect(srv.addr).await.unwrap();
    srv.stop().await;
    for s in &mut idle {
        assert_eq!(read_until_closed(s).await, b"");
    }
    drop(silent);
}
