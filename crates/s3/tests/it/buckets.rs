//! Buckets are namespaces: created without a source, listed, headed, located, and deleted only
//! while empty.

use crate::harness;

#[tokio::test]
async fn buckets_are_created_listed_and_deleted_only_when_empty() {
    let h = harness().await;
    let a = h.send("PUT", "/fresh", &[], b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let ns = h.cache.namespace_row("fresh").await.unwrap();
    assert!(ns.source.is_none());
    let a = h.send("PUT", "/fresh", &[], b"").await;
    assert_eq!((a.status, a.code().as_str()), (409, "BucketAlreadyOwnedByYou"));
    let a = h.send("GET", "/", &[], b"").await;
    let text = String::from_utf8_lossy(&a.body);
    assert!(text.contains("<Name>fresh</Name>") && text.contains("<Name>b</Name>"), "{text}");
    assert_eq!(h.send("HEAD", "/fresh", &[], b"").await.status, 200);
    assert_eq!(h.send("HEAD", "/missing", &[], b"").await.status, 404);
    let a = h.send("GET", "/fresh?location", &[], b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));

    h.op("fresh").write("k", b"v".to_vec()).await.unwrap();
    let a = h.send("DELETE", "/fresh", &[], b"").await;
    assert_eq!((a.status, a.code().as_str()), (409, "BucketNotEmpty"));
    assert!(h.holds("fresh", "k").await);
    h.op("fresh").delete("k").await.unwrap();
    let a = h.send("DELETE", "/fresh", &[], b"").await;
    assert_eq!(a.status, 204);
    assert!(h.cache.namespace_row("fresh").await.is_err());
    let a = h.send("DELETE", "/fresh", &[], b"").await;
    assert_eq!((a.status, a.code().as_str()), (404, "NoSuchBucket"));
}

#[tokio::test]
async fn a_name_that_is_no_namespace_is_an_invalid_bucket_name() {
    let h = harness().await;
    // A valid S3 bucket name the engine refuses as a namespace: it holds "..".
    let a = h.send("PUT", "/a..b", &[], b"").await;
    assert_eq!((a.status, a.code().as_str()), (400, "InvalidBucketName"));
    let a = h.send("GET", "/nosuch/key", &[], b"").await;
    assert_eq!((a.status, a.code().as_str()), (404, "NoSuchBucket"));
}

#[tokio::test]
async fn virtual_host_style_names_the_bucket_in_the_host() {
    let settings = tiercache_s3::S3Settings {
        keys: vec![tiercache_s3::AccessKey {
            access_key: crate::AK.into(),
            secret_key: crate::SK.into(),
            buckets: None,
        }],
        anonymous_read: vec![],
        domain: Some("s3.test".into()),
    };
    let h = crate::harness_with(&settings).await;
    h.cache.create_namespace("vhost", None, &Default::default()).await.unwrap();
    h.op("vhost").write("k.txt", b"by host".to_vec()).await.unwrap();
    let host = format!("vhost.s3.test:{}", h.addr.port());
    let signer = tiercache_testkit::sigv4::Signer { access_key: crate::AK, secret_key: crate::SK };
    let mut req = reqwest::Client::new().get(format!("http://{}/k.txt", h.addr));
    for (k, v) in signer.headers("GET", &host, "/k.txt", &[], &crate::sha256(b"")) {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"by host");
    // Another host name is path style.
    let host = format!("localhost:{}", h.addr.port());
    let mut req = reqwest::Client::new().get(format!("http://{}/vhost/k.txt", h.addr));
    for (k, v) in signer.headers("GET", &host, "/vhost/k.txt", &[], &crate::sha256(b"")) {
        req = req.header(k, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
}
