//! Credentials: a wrong secret, an unknown key, a key limited to one bucket, anonymous reads of
//! an open bucket only, and a front door nobody could use refused at build time.

use tiercache_s3::{S3Settings, SetupError};
use tiercache_testkit::sigv4::Signer;

use crate::{LIMITED_AK, LIMITED_SK, SK, harness};

#[tokio::test]
async fn a_wrong_secret_is_signature_does_not_match() {
    let h = harness().await;
    let signer = Signer { access_key: crate::AK, secret_key: "not-the-secret" };
    let a = h.send_as(signer, "GET", "/b?list-type=2", &[], b"").await;
    assert_eq!((a.status, a.code().as_str()), (403, "SignatureDoesNotMatch"));
    let e = h.op_as("b", crate::AK, "not-the-secret").write("x", vec![1u8]).await.unwrap_err();
    assert_eq!(e.kind(), opendal::ErrorKind::PermissionDenied, "{e}");
    assert!(!h.holds("b", "x").await);
}

#[tokio::test]
async fn an_unknown_key_is_invalid_access_key_id() {
    let h = harness().await;
    let signer = Signer { access_key: "nobody", secret_key: SK };
    let a = h.send_as(signer, "GET", "/", &[], b"").await;
    assert_eq!((a.status, a.code().as_str()), (403, "InvalidAccessKeyId"));
}

#[tokio::test]
async fn a_key_limited_to_one_bucket_is_denied_the_others() {
    let h = harness().await;
    h.cache.create_namespace("only", None, &Default::default()).await.unwrap();
    let signer = Signer { access_key: LIMITED_AK, secret_key: LIMITED_SK };
    let a = h.send_as(signer, "PUT", "/only/k", &[], b"mine").await;
    assert_eq!(a.status, 200);
    let a = h.send_as(signer, "PUT", "/b/k", &[], b"not mine").await;
    assert_eq!((a.status, a.code().as_str()), (403, "AccessDenied"));
    assert!(!h.holds("b", "k").await);
    let a = h.send_as(signer, "GET", "/b?list-type=2", &[], b"").await;
    assert_eq!((a.status, a.code().as_str()), (403, "AccessDenied"));
    // Copying out of a bucket it may not read is denied too.
    h.cache.create_namespace("not-yours", None, &Default::default()).await.unwrap();
    h.op("not-yours").write("secret", b"s".to_vec()).await.unwrap();
    let a = h.send_as(signer, "PUT", "/only/copy", &[("x-amz-copy-source", "not-yours/secret")], b"").await;
    assert_eq!((a.status, a.code().as_str()), (403, "AccessDenied"));
    // Its bucket list holds its own bucket only.
    let a = h.send_as(signer, "GET", "/", &[], b"").await;
    let text = String::from_utf8_lossy(&a.body);
    assert!(text.contains("<Name>only</Name>") && !text.contains("<Name>b</Name>"), "{text}");
}

#[tokio::test]
async fn anonymous_clients_read_open_buckets_only() {
    let h = harness().await;
    h.cache.create_namespace("open", None, &Default::default()).await.unwrap();
    h.op("open").write("public", b"hello".to_vec()).await.unwrap();
    h.op("b").write("private", b"hello".to_vec()).await.unwrap();
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("http://{}{path}", h.addr)).send();
    let res = get("/open/public").await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"hello");
    assert_eq!(get("/b/private").await.unwrap().status(), 403);
    let res = client.put(format!("http://{}/open/new", h.addr)).body("x").send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(!h.holds("open", "new").await);
}

#[test]
fn a_front_door_without_credentials_is_refused() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cache =
            tiercache_engine::Cache::open(tiercache_engine::CacheConfig::new(dir.path().join("data"))).await.unwrap();
        let e = tiercache_s3::service(cache, &S3Settings::default()).unwrap_err();
        assert!(matches!(e, SetupError::NoCredentials), "{e}");
        assert!(e.to_string().contains("TIERCACHE_S3_ACCESS_KEY"), "{e}");
    });
}

#[tokio::test]
async fn a_presigned_url_reads_and_a_tampered_one_does_not() {
    let h = harness().await;
    h.op("b").write("shared.txt", b"presigned".to_vec()).await.unwrap();
    let req = h.op("b").presign_read("shared.txt", std::time::Duration::from_secs(300)).await.unwrap();
    let url = req.uri().to_string();
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"presigned");
    // The same signature for another key does not hold.
    let res = reqwest::get(url.replace("shared.txt", "other.txt")).await.unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn a_request_signed_an_hour_ago_is_request_time_too_skewed() {
    let h = harness().await;
    let host = h.addr.to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let signer = Signer { access_key: crate::AK, secret_key: SK };
    let empty = crate::sha256(b"");
    let mut req = reqwest::Client::new().get(format!("http://{host}/"));
    for (k, v) in signer.sign("GET", &host, "/", &[], &empty, now - 3600) {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.text().await.unwrap().contains("<Code>RequestTimeTooSkewed</Code>"));
}
