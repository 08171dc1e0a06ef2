//! HTTP API tests: the router driven without a socket, over a real cache and a real HTTP source.

use axum::body::Body;
use http::{Method, Request, StatusCode};
use tiercache_engine::{Cache, CacheConfig};
use tiercache_server::{Access, Right};
use tiercache_testkit::{Behavior, Source, bytes, sha256};
use tower::ServiceExt;

mod access;
mod admin;
mod contain;
mod directory;
mod etag;
mod limits;
mod object_size;
mod sources;
mod unknown_length;

/// The write token of every harness.
const WRITE_TOKEN: &str = "test-write-token-0123456789";
/// `Authorization` with [`WRITE_TOKEN`].
const WRITE_AUTH: (&str, &str) = ("authorization", "Bearer test-write-token-0123456789");

struct Harness {
    _dir: tempfile::TempDir,
    cache: Cache,
    app: tiercache_server::App,
    src: Source,
}

/// A harness whose app takes writes with [`WRITE_TOKEN`], reads open, admin endpoints off.
async fn harness() -> Harness {
    harness_with_admin(None).await
}

/// A harness whose app takes writes with [`WRITE_TOKEN`] and has the admin endpoints behind
/// `admin_token` (off when `None`).
async fn harness_with_admin(admin_token: Option<&str>) -> Harness {
    let mut access = Access::new().with_token(Right::Write, WRITE_TOKEN).unwrap();
    if let Some(t) = admin_token {
        access = access.with_token(Right::Admin, t).unwrap();
    }
    harness_with(access).await
}

/// A harness whose app follows `access`, over namespace `web` (mirroring an HTTP source).
async fn harness_with(access: Access) -> Harness {
    let src = Source::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CacheConfig::new(dir.path().join("data"));
    cfg.http.read_timeout = std::time::Duration::from_millis(500);
    let cache = Cache::open(cfg).await.unwrap();
    cache.create_namespace("web", Some(&src.url()), &Default::default()).await.unwrap();
    let metrics = tiercache_server::install_metrics();
    let app = tiercache_server::app_with(cache.clone(), Some(metrics), access);
    Harness { _dir: dir, cache, app, src }
}

/// Waits until `cond` holds, checking every 10 ms; panics naming `what` if it still does not
/// after 30 s. The bound only guards against a hang: nothing is asserted about how long it took.
async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond().await {
        assert!(std::time::Instant::now() < deadline, "waited 30 s, and still not: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Harness {
    /// The same harness serving [`tiercache_server::app`] (the default rules) instead.
    fn with_default_app(self) -> Harness {
        let app = tiercache_server::app(self.cache.clone(), Some(tiercache_server::install_metrics()));
        Harness { app, ..self }
    }

    async fn send(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self.app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body =
            axum::body::to_bytes(body, usize::MAX).await.map(|b| b.to_vec()).unwrap_or_else(|_| b"<aborted>".to_vec());
        Answer { status: parts.status, headers: parts.headers, body }
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, uri, headers, Vec::new()).await
    }

    async fn put_blob(&self, data: &[u8]) -> String {
        let uri = format!("/blobs/{}", sha256(data));
        let a = self.send(Method::PUT, &uri, &[WRITE_AUTH], data.to_vec()).await;
        assert!(a.status.is_success(), "{}", String::from_utf8_lossy(&a.body));
        uri
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_get_head_and_headers() {
    let h = harness().await;
    let data = bytes(1, 100_000);
    let uri = h.put_blob(&data).await;
    let a = h.get(&uri, &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, data);
    assert_eq!(a.header("etag"), Some(format!("\"{}\"", sha256(&data)).as_str()));
    assert_eq!(a.header("content-length"), Some("100000"));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert!(a.header("last-modified").is_some());
    let head = h.send(Method::HEAD, &uri, &[], Vec::new()).await;
    assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));
    assert_eq!(head.header("content-length"), Some("100000"));
    let again = h.send(Method::PUT, &uri, &[WRITE_AUTH], data.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "a second upload of the same bytes is not new");
}

/// Data-driven Range checks over a 1000-byte blob: (Range header, status, expected body slice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges() {
    let h = harness().await;
    let data = bytes(2, 1000);
    let uri = h.put_blob(&data).await;
    type Case = (&'static str, u16, Option<(usize, usize)>);
    let cases: &[Case] = &[
        ("bytes=0-0", 206, Some((0, 1))),
        ("bytes=10-19", 206, Some((10, 20))),
        ("bytes=990-", 206, Some((990, 1000))),
        ("bytes=-5", 206, Some((995, 1000))),
        ("bytes=500-99999", 206, Some((500, 1000))),
        ("bytes=0-1,5-6", 200, Some((0, 1000))),
        ("items=0-1", 200, Some((0, 1000))),
        ("bytes=1000-", 416, None),
        ("bytes=5-2", 416, None),
        ("bytes=abc", 416, None),
        ("bytes=-", 416, None),
        ("bytes=99999999999999999999999-", 416, None),
        (
            "bytes=0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1,0-1",
            416,
            None,
        ),
    ];
    for (range, status, slice) in cases {
        let a = h.get(&uri, &[("range", range)]).await;
        assert_eq!(a.status.as_u16(), *status, "Range: {range}");
        match slice {
            Some((s, e)) => {
                assert_eq!(a.body, &data[*s..*e], "Range: {range}");
                if *status == 206 {
                    assert_eq!(a.header("content-range"), Some(format!("bytes {}-{}/1000", s, e - 1).as_str()));
                }
            }
            None => {
                assert_eq!(a.header("content-range"), Some("bytes */1000"), "Range: {range}");
                assert!(!a.body.is_empty(), "a 416 says why");
            }
        }
    }
    // If-Range: a matching ETag honours the range, another one gets the whole body.
    let etag = format!("\"{}\"", sha256(&data));
    let a = h.get(&uri, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!((a.status.as_u16(), a.body.len()), (206, 10));
    let a = h.get(&uri, &[("range", "bytes=0-9"), ("if-range", "\"other\"")]).await;
    assert_eq!((a.status.as_u16(), a.body.len()), (200, 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests() {
    let h = harness().await;
    let data = bytes(3, 500);
    let uri = h.put_blob(&data).await;
    let etag = format!("\"{}\"", sha256(&data));
    let weak = format!("W/{etag}");
    let check = |headers: Vec<(&'static str, String)>, status: u16| (headers, status);
    let cases = [
        check(vec![("if-none-match", etag.clone())], 304),
        check(vec![("if-none-match", weak.clone())], 304),
        check(vec![("if-none-match", "\"x\", ".to_string() + &etag)], 304),
        check(vec![("if-none-match", "*".into())], 304),
        check(vec![("if-none-match", "\"x\"".into())], 200),
        check(vec![("if-match", etag.clone())], 200),
        check(vec![("if-match", "*".into())], 200),
        check(vec![("if-match", "\"x\"".into())], 412),
        check(vec![("if-match", weak.clone())], 412),
        check(vec![("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT".into())], 304),
        check(vec![("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT".into())], 200),
        check(vec![("if-modified-since", "not a date".into())], 200),
        // If-None-Match wins over If-Modified-Since.
        check(
            vec![("if-none-match", "\"x\"".into()), ("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT".into())],
            200,
        ),
    ];
    for (headers, status) in cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = h.get(&uri, &hs).await;
        assert_eq!(a.status.as_u16(), status, "{headers:?}");
        if status == 304 {
            assert!(a.body.is_empty());
            assert_eq!(a.header("etag"), Some(etag.as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_read_through_the_source_with_md5_etags() {
    let h = harness().await;
    let data = bytes(4, 70_000);
    h.src.put("dir/a b.bin", data.clone());
    let a = h.get("/ns/web/dir/a%20b.bin", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, data);
    assert_eq!(a.header("x-tiercache-tier"), Some("source"));
    let md5 = {
        use md5::Digest as _;
        format!("\"{}\"", hex::encode(md5::Md5::digest(&data)))
    };
    let mut last = None;
    // The MD5 is computed beside the fetch and never waited for: poll until it is there too.
    wait_until("the entry reaches the disk tier with its MD5", async || {
        let a = h.get("/ns/web/dir/a%20b.bin", &[("range", "bytes=100-199")]).await;
        let is_disk = a.header("x-tiercache-tier") == Some("disk") && a.header("etag") == Some(md5.as_str());
        last = Some(a);
        is_disk
    })
    .await;
    let a = last.unwrap();
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(a.body, &data[100..200]);
    assert_eq!(a.header("etag"), Some(md5.as_str()));
    assert_eq!(a.header("content-type"), Some("application/x-test"));
    let a = h.get("/ns/web/dir/a%20b.bin", &[("if-none-match", &md5)]).await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);
    assert_eq!(h.src.counts("dir/a b.bin").full, 1);
}

/// A small entry held by the memory tier: its headers are built once and reused, so each answer
/// must still get exactly its own status, range and length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_tier_hits_answer_ranges_and_conditions_each_on_their_own() {
    let h = harness().await;
    let data = bytes(5, 4096);
    h.src.put("small", data.clone());
    wait_until("the entry reaches the memory tier", async || {
        h.get("/ns/web/small", &[]).await.header("x-tiercache-tier") == Some("memory")
    })
    .await;
    let etag = h.get("/ns/web/small", &[]).await.header("etag").unwrap().to_owned();
    for _ in 0..2 {
        let a = h.get("/ns/web/small", &[("range", "bytes=10-19")]).await;
        assert_eq!((a.status.as_u16(), a.body.as_slice()), (206, &data[10..20]));
        assert_eq!((a.header("content-range"), a.header("content-length")), (Some("bytes 10-19/4096"), Some("10")));
        let a = h.get("/ns/web/small", &[("if-none-match", &etag)]).await;
        assert_eq!((a.status.as_u16(), a.body.len(), a.header("content-type")), (304, 0, None));
        // Not the entry's length (axum marks the empty body `0`, which hyper leaves off the wire).
        assert!(matches!(a.header("content-length"), None | Some("0")), "304: {:?}", a.headers);
        // Answers with a body of their own have that body's length, not the entry's.
        for (name, value, status) in [("if-match", "\"other\"", 412), ("range", "bytes=5000-", 416)] {
            let a = h.get("/ns/web/small", &[(name, value)]).await;
            assert_eq!(a.status.as_u16(), status);
            assert!(!a.body.is_empty() && a.body != data, "{status}: {:?}", String::from_utf8_lossy(&a.body));
            assert_eq!(a.header("content-length"), Some(a.body.len().to_string().as_str()), "{status}");
        }
        let a = h.get("/ns/web/small", &[]).await;
        assert_eq!((a.status.as_u16(), &a.body), (200, &data));
        assert_eq!((a.header("content-range"), a.header("content-length")), (None, Some("4096")));
        assert_eq!(
            (a.header("content-type"), a.header("x-tiercache-tier")),
            (Some("application/x-test"), Some("memory"))
        );
        assert_eq!(a.header("x-tiercache-digest").map(str::to_owned), Some(sha256(&data)));
    }
    assert_eq!(h.src.counts("small").full, 1);
}

/// Hostile and malformed requests: each gets a clear 4xx and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly() {
    let h = harness().await;
    let long_key = "k".repeat(1025);
    let long_ns = "n".repeat(64);
    let hex = "a".repeat(64);
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("/blobs/sha256:{}", "a".repeat(63)), 400, "malformed digest"),
        (format!("/blobs/sha256:{}", "A".repeat(64)), 400, "malformed digest"),
        (format!("/blobs/sha256:{}g", "a".repeat(63)), 400, "malformed digest"),
        (format!("/blobs/sha512:{hex}"), 400, "unsupported digest algorithm"),
        (format!("/blobs/{hex}"), 400, "malformed digest"),
        (format!("/blobs/sha256:{hex}"), 404, "not in the cache"),
        ("/ns/web/../etc/passwd".into(), 400, "forbidden path segment"),
        ("/ns/web/%2e%2e/etc/passwd".into(), 400, "forbidden path segment"),
        ("/ns/web/a/%2E%2E/%2e%2e/x".into(), 400, "forbidden path segment"),
        ("/ns/web//etc/passwd".into(), 400, "forbidden path segment"),
        ("/ns/web/a%00b".into(), 400, "forbidden character"),
        ("/ns/web/a%5cb".into(), 400, "forbidden character"),
        ("/ns/web/a%ffb".into(), 400, "key is not UTF-8"),
        (format!("/ns/web/{long_key}"), 400, "the limit is 1024"),
        (format!("/ns/{long_ns}/k"), 400, "the limit is 63"),
        ("/ns/%2e%2e/k".into(), 400, "not allowed"),
        ("/ns/Web/k".into(), 400, "not allowed"),
        ("/ns/nope/k".into(), 404, "no namespace named"),
        ("/ns/web/?limit=0".into(), 400, "limit must be between 1 and 10000"),
        ("/ns/web/?limit=x".into(), 400, "is not a number"),
        ("/ns/web/?bogus=1".into(), 400, "unknown listing parameter"),
        ("/ns/nope/".into(), 404, "no namespace named"),
    ];
    for (uri, status, says) in cases {
        let a = h.get(&uri, &[]).await;
        let body = String::from_utf8_lossy(&a.body);
        assert_eq!(a.status.as_u16(), status, "{uri}: {body}");
        assert!(body.contains(says), "{uri}: expected {says:?} in {body}");
    }
    // Nothing reached the source.
    for p in ["etc/passwd", "a/../x", "a", "k"] {
        assert_eq!(h.src.counts(p).full, 0, "{p}");
    }
    // Paths without a namespace, and methods the entry routes do not take.
    for (method, uri, status, allow) in [
        (Method::GET, "/ns/", 404, None),
        (Method::GET, "/ns", 404, None),
        (Method::GET, "/nothing", 404, None),
        (Method::POST, "/nothing", 404, None),
        (Method::POST, "/ns/web/k", 405, Some("GET,HEAD,PUT,DELETE")),
        (Method::OPTIONS, "/ns/web/k", 405, Some("GET,HEAD,PUT,DELETE")),
        (Method::PATCH, "/blobs/sha256:aa", 405, Some("GET,HEAD,PUT")),
        (Method::GET, "/blobs/", 404, None),
        (Method::GET, "/blobs/sha256:aa/b", 404, None),
        (Method::DELETE, "/blobs/sha256:aa", 405, Some("GET,HEAD,PUT")),
        // `web` mirrors an HTTP source: its entries are read-only.
        (Method::PUT, "/ns/web/k", 405, Some("GET,HEAD")),
        (Method::DELETE, "/ns/web/k", 405, Some("GET,HEAD")),
    ] {
        let a = h.send(method.clone(), uri, &[WRITE_AUTH], Vec::new()).await;
        assert_eq!((a.status.as_u16(), a.header("allow")), (status, allow), "{method} {uri}");
    }
    // An upload whose body does not match its digest is refused and stores nothing.
    let data = bytes(5, 10_000);
    let uri = format!("/blobs/{}", sha256(&data));
    let a = h.send(Method::PUT, &uri, &[WRITE_AUTH], bytes(6, 10_000)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&a.body).contains("digest mismatch"));
    assert_eq!(h.get(&uri, &[]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_failures_map_to_gateway_statuses() {
    let h = harness().await;
    h.src.set_behavior("e500", Behavior::Status(500));
    h.src.set_behavior("e403", Behavior::Status(403));
    h.src.set_behavior("hang", Behavior::Hang);
    for (path, status, says) in [
        ("missing", 404, "not found at the source"),
        ("e500", 502, "source answered 500"),
        ("e403", 502, "source answered 403"),
        ("hang", 504, "timed out"),
    ] {
        let a = h.get(&format!("/ns/web/{path}"), &[]).await;
        let body = String::from_utf8_lossy(&a.body);
        assert_eq!(a.status.as_u16(), status, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    // A body cut short after the headers went out cannot change the status: the response is
    // aborted instead of ending cleanly.
    h.src.put("cut", bytes(7, 200_000));
    h.src.set_behavior("cut", Behavior::CloseAfter(50_000));
    let a = h.get("/ns/web/cut", &[]).await;
    assert_ne!(a.body.len(), 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let h = harness().await;
    assert_eq!(h.get("/healthz", &[]).await.status, StatusCode::OK);
    h.src.put("m", bytes(8, 1000));
    assert_eq!(h.get("/ns/web/m", &[]).await.status, StatusCode::OK);
    // The fetch is counted when its task ends, which may be just after the response does.
    let mut text = String::new();
    wait_until("the fetch is counted in /metrics", async || {
        text = String::from_utf8_lossy(&h.get("/metrics", &[]).await.body).into_owned();
        text.contains("tiercache_source_fetches_total")
    })
    .await;
    for name in [
        "tiercache_reads_total",
        "tiercache_read_bytes_total",
        "tiercache_source_fetches_total",
        "tiercache_inflight_fetches",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
}
