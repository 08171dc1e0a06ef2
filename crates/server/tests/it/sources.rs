//! How the API talks to HTTP sources: redirects kept within the source's origin, metadata
//! addresses refused, credentials never shown, the source's `Content-Encoding` kept, and a cold
//! HEAD answered from a source HEAD.

use axum::body::Body;
use http::{Method, Request, StatusCode};
use tiercache_engine::{Cache, CacheConfig, NamespaceOptions};
use tiercache_testkit::{Behavior, Source, bytes};
use tower::ServiceExt;

use super::{Answer, Harness, harness_with_admin};

/// The admin token of these tests' harnesses, and the header that sends it (with it, an answer
/// also tells the detail of a source's failure).
const ADMIN: &str = "test-admin-token-0123456789";
const ADMIN_AUTH: (&str, &str) = ("authorization", "Bearer test-admin-token-0123456789");

async fn harness() -> Harness {
    harness_with_admin(Some(ADMIN)).await
}

/// The number of entries of namespace `web`, from the admin API.
async fn n_entries(h: &Harness) -> u64 {
    let a = h.send(Method::GET, "/admin/namespaces/web", &[ADMIN_AUTH], Vec::new()).await;
    let info: serde_json::Value = serde_json::from_slice(&a.body).expect("a JSON answer");
    info["n_entries"].as_u64().unwrap_or_else(|| panic!("no n_entries in {info}"))
}

fn message(a: &Answer) -> String {
    String::from_utf8_lossy(&a.body).into_owned()
}

/// A gzip member holding `data` in one stored (uncompressed) deflate block: a real gzip body,
/// without a compressor.
fn gzip(data: &[u8]) -> Vec<u8> {
    let crc = data.iter().fold(!0u32, |mut crc, &b| {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
        crc
    }) ^ !0;
    let len = u16::try_from(data.len()).expect("one stored block holds at most 65 535 bytes");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255, 1];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A redirect to another origin is a 502 saying so, and nothing is stored; one within the origin
/// is followed and stored under the key asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_out_of_the_source_origin_are_refused_and_nothing_is_stored() {
    let h = harness().await;
    let other = Source::start().await;
    other.put("elsewhere", b"another service's answer".to_vec());
    h.src.set_behavior("away", Behavior::Redirect(302, format!("{}elsewhere", other.url())));
    let a = h.get("/ns/web/away", &[ADMIN_AUTH]).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", message(&a));
    assert!(message(&a).contains("left the source's origin"), "{}", message(&a));
    assert_eq!(other.counts("elsewhere").full, 0, "the other origin was never asked");
    assert_eq!(n_entries(&h).await, 0, "a refused redirect stores nothing");

    let data = bytes(7, 5000);
    h.src.put("moved/here", data.clone());
    h.src.set_behavior("old", Behavior::Redirect(301, "/moved/here".into()));
    let a = h.get("/ns/web/old", &[]).await;
    assert_eq!((a.status, a.body == data), (StatusCode::OK, true));
    super::wait_until("the redirected entry is stored", async || n_entries(&h).await == 1).await;
}

/// A source URL at a link-local metadata address is refused when the namespace is defined (400,
/// nothing written), unless allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_address_is_refused_as_a_source_at_definition() {
    let h = harness().await;
    let auth = [ADMIN_AUTH, ("content-type", "application/json")];
    for url in
        ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://metadata.google.internal/"]
    {
        let body = serde_json::json!({ "source": url }).to_string().into_bytes();
        let a = h.send(Method::PUT, "/admin/namespaces/meta", &auth, body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{url}: {}", message(&a));
        assert!(message(&a).contains("--allow-source-address"), "{}", message(&a));
    }
    let a = h.send(Method::GET, "/admin/namespaces/meta", &auth, Vec::new()).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "nothing was defined");

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CacheConfig::new(dir.path().join("data"));
    cfg.http.allowed_addresses = vec!["169.254.169.254/32".parse().unwrap()];
    let cache = Cache::open(cfg.clone()).await.unwrap();
    let options = NamespaceOptions::default();
    let created = cache.create_namespace("meta", Some("http://169.254.169.254/latest/"), &options).await;
    assert!(created.is_ok(), "an allowed address is accepted: {created:?}");
    drop(cache);

    // Defined while allowed, read once no longer allowed: a 502 from the source, without a request.
    cfg.http.allowed_addresses.clear();
    let app = tiercache_server::app(Cache::open(cfg).await.unwrap(), None);
    let req = Request::builder().uri("/ns/meta/user-data").body(Body::empty()).unwrap();
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::BAD_GATEWAY);
}

/// A source's `user:pass@` never reaches a client: not in a failed read's answer, not in the
/// admin API's description of the namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_credentials_never_reach_clients() {
    let h = harness().await;
    let auth = [ADMIN_AUTH, ("content-type", "application/json")];
    let url = h.src.url().replace("http://", "http://reader:s3cret@");
    let body = serde_json::json!({ "source": url }).to_string().into_bytes();
    let a = h.send(Method::PUT, "/admin/namespaces/sec", &auth, body).await;
    assert!(a.status.is_success(), "{}", message(&a));
    assert!(!message(&a).contains("s3cret") && message(&a).contains("***:***@"), "{}", message(&a));
    h.src.set_behavior("broken", Behavior::Status(500));
    for path in ["/ns/sec/broken", "/ns/sec/missing"] {
        let a = h.get(path, &[]).await;
        assert!(a.status.is_client_error() || a.status.is_server_error(), "{path}");
        assert!(!message(&a).contains("s3cret") && !message(&a).contains("reader"), "{path}: {}", message(&a));
    }
    for path in ["/admin/namespaces/sec", "/admin/namespaces", "/admin/stats"] {
        let a = h.send(Method::GET, path, &auth, Vec::new()).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(!message(&a).contains("s3cret"), "{path}: {}", message(&a));
    }
    assert_eq!(
        h.src.requests("broken")[0].get("authorization").map(String::as_str),
        Some("Basic cmVhZGVyOnMzY3JldA=="),
        "the source itself gets the credentials"
    );
}

/// A source that sends a gzip body with `Content-Encoding: gzip` (though asked for identity):
/// the bytes are stored as sent, and cold and warm reads carry the header with those bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_content_encoding_is_kept_and_served_with_the_bytes() {
    let h = harness().await;
    let gz = gzip(&bytes(3, 20_000));
    h.src.put("page.html.gz", gz.clone());
    h.src.set_content_encoding("page.html.gz", "gzip");
    let cold = h.get("/ns/web/page.html.gz", &[]).await;
    assert_eq!(cold.status, StatusCode::OK);
    assert_eq!(cold.header("x-tiercache-tier"), Some("source"));
    assert_eq!(cold.header("content-encoding"), Some("gzip"));
    assert!(cold.body == gz, "the cold read is the bytes the source sent");
    let sent = h.src.requests("page.html.gz");
    assert_eq!(sent[0].get("accept-encoding").map(String::as_str), Some("identity"));

    super::wait_until("the entry is stored", async || n_entries(&h).await == 1).await;
    h.cache.settle().await.unwrap(); // Its MD5 (the ETag) is computed beside the fetch.
    let md5 = format!("\"{}\"", hex::encode(<md5::Md5 as md5::Digest>::digest(&gz)));
    for _ in 0..3 {
        let warm = h.get("/ns/web/page.html.gz", &[]).await;
        assert_eq!(warm.status, StatusCode::OK);
        assert_ne!(warm.header("x-tiercache-tier"), Some("source"));
        assert_eq!(warm.header("content-encoding"), Some("gzip"));
        assert_eq!(warm.header("etag"), Some(md5.as_str()), "the ETag is the MD5 of the stored bytes");
        assert!(warm.body == gz);
        let part = h.get("/ns/web/page.html.gz", &[("range", "bytes=0-9")]).await;
        assert_eq!((part.status, part.header("content-encoding")), (StatusCode::PARTIAL_CONTENT, Some("gzip")));
        assert_eq!(part.body, gz[..10]);
    }
    assert_eq!(h.src.counts("page.html.gz").full, 1, "fetched once");
}

/// A HEAD of an entry no tier holds asks the source for a HEAD: its size, ETag and encoding,
/// without downloading or storing anything. A GET then fetches, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_head_is_answered_from_a_source_head_without_storing() {
    let h = harness().await;
    let data = bytes(4, 300_000);
    h.src.put("big.bin", data.clone());
    h.src.set_content_encoding("big.bin", "gzip");
    let head = h.send(Method::HEAD, "/ns/web/big.bin", &[], Vec::new()).await;
    assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));
    assert_eq!(head.header("content-length"), Some("300000"));
    assert_eq!(head.header("etag"), h.src.etag("big.bin").as_deref());
    assert_eq!(head.header("content-type"), Some("application/x-test"));
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    let counts = h.src.counts("big.bin");
    assert_eq!((counts.head, counts.full, counts.ranged), (1, 0, 0), "one HEAD, no GET");
    assert_eq!(n_entries(&h).await, 0, "a HEAD stores nothing");

    let missing = h.send(Method::HEAD, "/ns/web/nope", &[], Vec::new()).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let a = h.get("/ns/web/big.bin", &[]).await;
    assert_eq!((a.status, a.body == data), (StatusCode::OK, true));
    super::wait_until("the entry is stored", async || n_entries(&h).await == 1).await;
    let head = h.send(Method::HEAD, "/ns/web/big.bin", &[], Vec::new()).await;
    assert_eq!((head.status, head.header("content-length")), (StatusCode::OK, Some("300000")));
    assert_eq!((h.src.counts("big.bin").full, h.src.counts("big.bin").head), (1, 1), "the GET fetched once");

    // A source that answers HEAD with 405 is fetched from instead, as for a GET.
    h.src.set_refuses_head(true);
    h.src.put("nohead.bin", data.clone());
    let head = h.send(Method::HEAD, "/ns/web/nohead.bin", &[], Vec::new()).await;
    assert_eq!((head.status, head.header("content-length")), (StatusCode::OK, Some("300000")));
    assert_eq!((h.src.counts("nohead.bin").head, h.src.counts("nohead.bin").full), (1, 1));
}
