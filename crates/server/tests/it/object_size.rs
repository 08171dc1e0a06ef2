//! The maximum object size over HTTP: uploads declaring more are refused before their body is
//! read, uploads streaming past it are cut with 413 and store nothing, and source objects larger
//! than it are served pass-through, not stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, StatusCode};
use tiercache_engine::{Cache, CacheConfig};
use tiercache_testkit::{Source, bytes, sha256};
use tower::ServiceExt;

use super::{Answer, Harness};

/// The maximum object size of these tests.
const MAX: u64 = 64 * 1024;

/// A harness whose cache keeps objects of at most [`MAX`] bytes under a 4 MiB quota, with the
/// namespace `web` on a testkit source and `up` without one (for uploads); and its cache.
async fn limited() -> (Harness, Cache) {
    let src = Source::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CacheConfig::new(dir.path().join("data"));
    cfg.max_object_bytes = MAX;
    cfg.disk.quota_bytes = Some(4 << 20);
    cfg.memory.is_enabled = false;
    let cache = Cache::open(cfg).await.unwrap();
    cache.create_namespace("web", Some(&src.url()), &Default::default()).await.unwrap();
    cache.create_namespace("up", None, &Default::default()).await.unwrap();
    // Anonymous writes: these tests are about sizes, not tokens.
    let access = tiercache_server::Access::new().allow_anonymous_writes(true);
    let app = tiercache_server::app_with(cache.clone(), None, access);
    (Harness { _dir: dir, cache: cache.clone(), app, src }, cache)
}

/// A PUT of `chunks` as a streamed body (no length known in advance), with `headers`; also how
/// many bytes of it the server pulled.
async fn put_streamed(h: &Harness, uri: &str, headers: &[(&str, &str)], chunks: Vec<Vec<u8>>) -> (Answer, u64) {
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&pulled);
    let stream = futures::stream::iter(chunks).map(move |c| {
        counter.fetch_add(c.len() as u64, Ordering::SeqCst);
        Ok::<_, std::io::Error>(Bytes::from(c))
    });
    let mut req = Request::builder().method(Method::PUT).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = h.app.clone().oneshot(req.body(Body::from_stream(stream)).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
    (Answer { status, headers, body }, pulled.load(Ordering::SeqCst))
}

fn message(a: &Answer) -> String {
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
    v["message"].as_str().unwrap_or_default().to_owned()
}

/// Nothing reserved, no temp file left: what a refused upload leaves behind.
fn nothing_held(h: &Harness, cache: &Cache) {
    let q = cache.quota_stats();
    assert_eq!((q.reserved_bytes, q.used_bytes), (0, 0), "{q:?}");
    let tmp = h._dir.path().join("data/tmp");
    let left: Vec<_> =
        std::fs::read_dir(&tmp).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_declaring_more_than_the_maximum_is_refused_before_its_body_is_read() {
    let (h, cache) = limited().await;
    let data = bytes(1, MAX as usize + 1);
    let blob_uri = format!("/blobs/{}", sha256(&data));
    let declared = (MAX + 1).to_string();
    for uri in [blob_uri.as_str(), "/ns/up/big"] {
        let (a, pulled) = put_streamed(&h, uri, &[("content-length", declared.as_str())], vec![data.clone()]).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}: {}", String::from_utf8_lossy(&a.body));
        assert_eq!(pulled, 0, "{uri}: the body was read");
        let why = message(&a);
        assert!(why.contains(&format!("{} bytes", MAX + 1)) && why.contains("maximum object size"), "{why}");
    }
    // A body whose length is known (the client's whole buffer) is refused the same way.
    let a = h.send(Method::PUT, &blob_uri, &[], data.clone()).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    nothing_held(&h, &cache);
    assert_eq!(h.get(&blob_uri, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/ns/up/big", &[]).await.status, StatusCode::NOT_FOUND);

    // Exactly the maximum is stored.
    let fits = bytes(2, MAX as usize);
    let a = h.send(Method::PUT, &format!("/blobs/{}", sha256(&fits)), &[], fits.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&a.body));
    let a = h.send(Method::PUT, "/ns/up/fits", &[], fits.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(h.get("/ns/up/fits", &[]).await.body, fits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_streaming_past_the_maximum_is_cut_and_stores_nothing() {
    let (h, cache) = limited().await;
    let data = bytes(3, 3 * MAX as usize);
    let chunks: Vec<Vec<u8>> = data.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let blob_uri = format!("/blobs/{}", sha256(&data));
    for uri in [blob_uri.as_str(), "/ns/up/big"] {
        let (a, pulled) = put_streamed(&h, uri, &[], chunks.clone()).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{uri}: {}", String::from_utf8_lossy(&a.body));
        assert!(message(&a).contains("larger than the maximum object size"), "{}", message(&a));
        // Cut at the limit: not read to its end.
        assert!(pulled < data.len() as u64, "{uri}: read {pulled} bytes");
        nothing_held(&h, &cache);
    }
    assert_eq!(h.get(&blob_uri, &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/ns/up/big", &[]).await.status, StatusCode::NOT_FOUND);
    // The quota is whole again: an upload of the maximum size goes through.
    let fits = bytes(4, MAX as usize);
    let chunks: Vec<Vec<u8>> = fits.chunks(10_000).map(<[u8]>::to_vec).collect();
    let (a, _) = put_streamed(&h, "/ns/up/fits", &[], chunks).await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_object_larger_than_the_maximum_is_served_but_not_stored() {
    let (h, cache) = limited().await;
    let big = bytes(5, 3 * MAX as usize);
    h.src.put("big", big.clone());
    for n in 1..=2 {
        let a = h.get("/ns/web/big", &[]).await;
        assert_eq!((a.status, a.body == big), (StatusCode::OK, true), "read {n}");
        assert_eq!(h.src.counts("big").full, n, "read {n} went to the source");
    }
    let q = cache.quota_stats();
    assert_eq!((q.n_pass_through, q.used_bytes, q.reserved_bytes), (2, 0, 0), "{q:?}");
    assert!(q.last_pass_through.as_deref().is_some_and(|r| r.contains("maximum object size")), "{q:?}");
    // A range of it is served too.
    let a = h.get("/ns/web/big", &[("range", "bytes=100-199")]).await;
    assert_eq!((a.status, a.body.as_slice()), (StatusCode::PARTIAL_CONTENT, &big[100..200]));
    // An object of the maximum size is stored: the second read does not reach the source.
    let fits = bytes(6, MAX as usize);
    h.src.put("fits", fits.clone());
    for _ in 0..2 {
        assert_eq!(h.get("/ns/web/fits", &[]).await.body, fits);
    }
    cache.settle().await.unwrap();
    assert_eq!(h.src.counts("fits").full, 1);
}
