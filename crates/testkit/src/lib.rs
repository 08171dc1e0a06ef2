//! Test harness: a real HTTP/1.1 source on 127.0.0.1 that counts requests and misbehaves on demand.
//!
//! The server is written on raw TCP on purpose: it must be able to do what a well-behaved HTTP
//! library refuses to do (close mid-body, send fewer or more bytes than its `Content-Length`, hang
//! after the headers). Every response closes its connection, so each request is one connection.
//!
//! Beside it: `servers` starts real Redis and S3-compatible servers, `registry` a real OCI
//! registry (with a counting, Bearer-authenticating proxy and test images pushed by skopeo).
#![allow(unreachable_pub)]

pub mod registry;
pub mod servers;
pub mod sigv4;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Deterministic pseudo-random bytes (xorshift), so tests need no fixtures.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// How the source answers one path.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// Serve the object: 200, 206 for a single range, 304 for matching validators.
    Normal,
    /// Answer this status with a short body.
    Status(u16),
    /// Accept the connection and never answer.
    Hang,
    /// Send the headers with the full Content-Length, then this many body bytes, then close.
    CloseAfter(usize),
    /// Declare a Content-Length this many bytes larger than the body actually sent, then close.
    ShortBy(usize),
    /// Declare a Content-Length this many bytes smaller than the bytes actually sent.
    LongBy(usize),
    /// Send the headers and this many body bytes, then stall until [`Source::release`].
    StallAfter(usize),
    /// Send the body in 16 KiB pieces with this pause between them.
    Slow(Duration),
    /// Answer this redirect status (301, 302, 307, …) with `Location: <location>`.
    Redirect(u16, String),
}

#[derive(Debug, Clone)]
struct Object {
    data: Arc<Vec<u8>>,
    etag: String,
    last_modified: String,
    behavior: Behavior,
    /// Sent chunked, without a `Content-Length` (and the whole body, whatever `Range` asks).
    is_chunked: bool,
    /// Sent without validators (no `ETag`, no `Last-Modified`).
    is_bare: bool,
    /// Sent as `Content-Encoding` whatever the request's `Accept-Encoding` said.
    content_encoding: Option<String>,
}

/// Requests seen for one path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// GET requests without a Range header (conditional ones included, whatever they were answered).
    pub full: u64,
    /// GET requests with a Range header.
    pub ranged: u64,
    /// Requests answered 304.
    pub not_modified: u64,
    /// HEAD requests.
    pub head: u64,
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Object>,
    counts: HashMap<String, Counts>,
    requests: HashMap<String, Vec<HashMap<String, String>>>,
    honors_range: bool,
    refuses_head: bool,
}

/// A running source server. Stops when dropped.
pub struct Source {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    release: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Source {
    /// Starts a source on a free port of 127.0.0.1.
    pub async fn start() -> Source {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { honors_range: true, ..State::default() }));
        let (release, _) = watch::channel(0u64);
        let (st, rel) = (Arc::clone(&state), release.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { continue };
                let (st, rel) = (Arc::clone(&st), rel.subscribe());
                tokio::spawn(async move {
                    let _ = serve(sock, st, rel).await;
                });
            }
        });
        Source { addr, state, release, task }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Serves `data` at `/path` with a fresh ETag and behaves normally.
    pub fn put(&self, path: &str, data: Vec<u8>) {
        let mut st = self.state.lock().unwrap();
        let n = st.objects.len() as u64 + st.counts.len() as u64;
        let etag = format!("\"{}-{}\"", hex::encode(&sha2::Sha256::digest(&data)[..6]), n);
        let last_modified = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n));
        st.objects.insert(
            path.trim_start_matches('/').to_owned(),
            Object {
                data: Arc::new(data),
                etag,
                last_modified,
                behavior: Behavior::Normal,
                is_chunked: false,
                is_bare: false,
                content_encoding: None,
            },
        );
    }

    /// Removes `/path` (it then answers 404).
    pub fn remove(&self, path: &str) {
        self.state.lock().unwrap().objects.remove(path.trim_start_matches('/'));
    }

    /// Sets how `/path` answers (the path must have been `put`, except for `Status` and `Hang`).
    pub fn set_behavior(&self, path: &str, behavior: Behavior) {
        let mut st = self.state.lock().unwrap();
        let entry = st.objects.entry(path.trim_start_matches('/').to_owned()).or_insert_with(|| Object {
            data: Arc::new(Vec::new()),
            etag: "\"empty\"".into(),
            last_modified: httpdate::fmt_http_date(std::time::UNIX_EPOCH),
            behavior: Behavior::Normal,
            is_chunked: false,
            is_bare: false,
            content_encoding: None,
        });
        entry.behavior = behavior;
    }

    /// Sends `/path` (which must have been `put`) chunked, without a `Content-Length`, and
    /// always whole (a length-less body ignores `Range`), until the next `put`.
    pub fn set_chunked(&self, path: &str, on: bool) {
        let mut st = self.state.lock().unwrap();
        if let Some(o) = st.objects.get_mut(path.trim_start_matches('/')) {
            o.is_chunked = on;
        }
    }

    /// Sends `/path` (which must have been `put`) without `ETag` and `Last-Modified`, until the
    /// next `put`.
    pub fn set_bare(&self, path: &str, on: bool) {
        let mut st = self.state.lock().unwrap();
        if let Some(o) = st.objects.get_mut(path.trim_start_matches('/')) {
            o.is_bare = on;
        }
    }

    /// Sends `/path` (which must have been `put`) with `Content-Encoding: <encoding>`, whatever the
    /// request accepts: the bytes `put` are sent as they are.
    pub fn set_content_encoding(&self, path: &str, encoding: &str) {
        let mut st = self.state.lock().unwrap();
        let obj = st.objects.get_mut(path.trim_start_matches('/')).expect("set_content_encoding of a path put first");
        obj.content_encoding = Some(encoding.to_owned());
    }

    /// Whether HEAD requests are answered 405 (as by a server that only knows GET).
    pub fn set_refuses_head(&self, on: bool) {
        self.state.lock().unwrap().refuses_head = on;
    }

    /// The headers (names lowercase) of every request seen for `/path`, in order.
    pub fn requests(&self, path: &str) -> Vec<HashMap<String, String>> {
        self.state.lock().unwrap().requests.get(path.trim_start_matches('/')).cloned().unwrap_or_default()
    }

    /// Whether a Range header is honoured (206) or ignored (200 with the whole body).
    pub fn set_honors_range(&self, on: bool) {
        self.state.lock().unwrap().honors_range = on;
    }

    /// Lets every stalled response go on.
    pub fn release(&self) {
        self.release.send_modify(|n| *n += 1);
    }

    /// Requests seen for `/path`.
    pub fn counts(&self, path: &str) -> Counts {
        self.state.lock().unwrap().counts.get(path.trim_start_matches('/')).copied().unwrap_or_default()
    }

    /// The ETag currently served for `/path`.
    pub fn etag(&self, path: &str) -> Option<String> {
        self.state.lock().unwrap().objects.get(path.trim_start_matches('/')).map(|o| o.etag.clone())
    }
}

/// `s` percent-decoded (bytes that are not UTF-8 replaced).
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

async fn serve(mut sock: TcpStream, st: Arc<Mutex<State>>, mut release: watch::Receiver<u64>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut tmp).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let path = percent_decode(first.next().unwrap_or("/").trim_start_matches('/'));
    let headers: HashMap<String, String> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let range = headers.get("range").cloned();
    let (obj, honors_range, refuses_head) = {
        let mut st = st.lock().unwrap();
        let c = st.counts.entry(path.clone()).or_default();
        match (method.as_str(), &range) {
            ("HEAD", _) => c.head += 1,
            (_, Some(_)) => c.ranged += 1,
            (_, None) => c.full += 1,
        }
        st.requests.entry(path.clone()).or_default().push(headers.clone());
        (st.objects.get(&path).cloned(), st.honors_range, st.refuses_head)
    };
    if refuses_head && method == "HEAD" {
        return respond_simple(&mut sock, 405, "HEAD is not supported here").await;
    }
    let Some(obj) = obj else {
        return respond_simple(&mut sock, 404, "no such object").await;
    };
    match obj.behavior {
        Behavior::Status(code) => return respond_simple(&mut sock, code, "misbehaving on purpose").await,
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        Behavior::Redirect(code, ref location) => {
            let head = format!(
                "HTTP/1.1 {code} Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            sock.write_all(head.as_bytes()).await?;
            return sock.shutdown().await;
        }
        _ => {}
    }
    let inm = headers.get("if-none-match");
    let ims = headers.get("if-modified-since");
    if inm.map(|v| v == &obj.etag).unwrap_or(false)
        || (inm.is_none() && ims.map(|v| v == &obj.last_modified).unwrap_or(false))
    {
        st.lock().unwrap().counts.entry(path.clone()).or_default().not_modified += 1;
        let head = format!("HTTP/1.1 304 Not Modified\r\nETag: {}\r\nConnection: close\r\n\r\n", obj.etag);
        sock.write_all(head.as_bytes()).await?;
        return Ok(());
    }
    // Preconditions of RFC 9110 §13.2.2: If-Match (strong), else If-Unmodified-Since; then
    // If-Range, which keeps the Range only for the current version.
    let precondition_failed = match (headers.get("if-match"), headers.get("if-unmodified-since")) {
        (Some(tags), _) => !tags.split(',').any(|t| t.trim() == "*" || (t.trim() == obj.etag)),
        (None, Some(since)) => since != &obj.last_modified,
        (None, None) => false,
    };
    if precondition_failed {
        return respond_simple(&mut sock, 412, "precondition failed").await;
    }
    let range = range.filter(|_| headers.get("if-range").is_none_or(|v| v == &obj.etag || v == &obj.last_modified));
    let total = obj.data.len();
    let mut status = "200 OK".to_owned();
    let (mut start, mut end) = (0usize, total);
    let mut extra = String::new();
    if let (Some(r), true) = (range, honors_range && !obj.is_chunked)
        && let Some((a, b)) = r.strip_prefix("bytes=").and_then(|s| s.split_once('-'))
    {
        let a: usize = a.parse().unwrap_or(0);
        let b: usize = b.parse().map(|b: usize| b + 1).unwrap_or(total).min(total);
        if a >= total || a >= b {
            return respond_simple(&mut sock, 416, "range not satisfiable").await;
        }
        (start, end) = (a, b);
        status = "206 Partial Content".into();
        extra = format!("Content-Range: bytes {}-{}/{}\r\n", a, b - 1, total);
    }
    let body = &obj.data[start..end];
    let declared = match obj.behavior {
        Behavior::ShortBy(n) => body.len() + n,
        Behavior::LongBy(n) => body.len().saturating_sub(n),
        _ => body.len(),
    };
    let length = match obj.is_chunked {
        true => "Transfer-Encoding: chunked".to_owned(),
        false => format!("Content-Length: {declared}"),
    };
    let validators = match obj.is_bare {
        true => String::new(),
        false => format!("ETag: {}\r\nLast-Modified: {}\r\n", obj.etag, obj.last_modified),
    };
    if let Some(encoding) = &obj.content_encoding {
        extra.push_str(&format!("Content-Encoding: {encoding}\r\n"));
    }
    let head = format!(
        "HTTP/1.1 {status}\r\n{length}\r\nContent-Type: application/x-test\r\n{validators}Accept-Ranges: bytes\r\n{extra}Connection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await?;
    if method == "HEAD" {
        return Ok(());
    }
    let chunked = obj.is_chunked;
    match obj.behavior {
        Behavior::CloseAfter(n) => {
            write_body(&mut sock, &body[..n.min(body.len())], chunked).await?;
            return sock.shutdown().await; // Short: without a chunked body's last chunk too.
        }
        Behavior::StallAfter(n) => {
            // Before the first bytes: a client may call `release` as soon as it has read some,
            // while the rest of the `n` are still being written.
            let seen = *release.borrow_and_update();
            write_body(&mut sock, &body[..n.min(body.len())], chunked).await?;
            sock.flush().await?;
            while *release.borrow() == seen {
                if release.changed().await.is_err() {
                    return Ok(());
                }
            }
            write_body(&mut sock, &body[n.min(body.len())..], chunked).await?;
        }
        Behavior::Slow(pause) => {
            for piece in body.chunks(16 * 1024) {
                write_body(&mut sock, piece, chunked).await?;
                sock.flush().await?;
                tokio::time::sleep(pause).await;
            }
        }
        _ => write_body(&mut sock, body, chunked).await?,
    }
    if chunked {
        sock.write_all(b"0\r\n\r\n").await?;
    }
    sock.flush().await?;
    sock.shutdown().await
}

/// Writes `bytes` of a body: as they are, or as one chunk of a chunked body.
async fn write_body(sock: &mut TcpStream, bytes: &[u8], chunked: bool) -> std::io::Result<()> {
    if !chunked {
        return sock.write_all(bytes).await;
    }
    if bytes.is_empty() {
        return Ok(()); // An empty chunk would end the body.
    }
    sock.write_all(format!("{:x}\r\n", bytes.len()).as_bytes()).await?;
    sock.write_all(bytes).await?;
    sock.write_all(b"\r\n").await?;
    sock.flush().await
}

async fn respond_simple(sock: &mut TcpStream, code: u16, msg: &str) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {code} Test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}", msg.len());
    sock.write_all(head.as_bytes()).await?;
    sock.shutdown().await
}
