//! Conditional requests against an entry whose MD5 (its ETag) is not known yet: the entry is
//! served at once with its source's ETag as a weak one (or none), which `If-None-Match` compares
//! weakly and `If-Match` and `If-Range` never match, and no tag is taken for the MD5 before it is
//! known.

use http::{Method, StatusCode};
use tiercache_testkit::bytes;

use super::{Harness, harness, wait_until};

fn md5_tag(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(<md5::Md5 as md5::Digest>::digest(data)))
}

/// Reads `/ns/web/<key>` until the disk tier answers.
async fn until_stored(h: &Harness, key: &str) {
    let uri = format!("/ns/web/{key}");
    wait_until("the entry is stored", async || h.get(&uri, &[]).await.header("x-tiercache-tier") == Some("disk")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_on_an_entry_before_its_md5_is_known() {
    let h = harness().await;
    let data = bytes(81, 5 << 20);
    h.src.put("big", data.clone());
    let (md5, weak) = (md5_tag(&data), format!("W/{}", h.src.etag("big").unwrap()));
    let strong_source = h.src.etag("big").unwrap();

    let pause = h.cache.pause_md5().await;
    let cold = h.get("/ns/web/big", &[]).await;
    assert_eq!((cold.status, cold.header("x-tiercache-tier")), (StatusCode::OK, Some("source")));
    until_stored(&h, "big").await;

    let a = h.get("/ns/web/big", &[("if-none-match", &md5)]).await;
    assert_eq!(a.status, StatusCode::OK, "the MD5 is not the ETag before it is known");
    assert!(a.body == data);
    assert_eq!(a.header("etag"), Some(weak.as_str()));
    for tag in [&weak, &strong_source] {
        let a = h.get("/ns/web/big", &[("if-none-match", tag)]).await;
        assert_eq!((a.status, a.body.len()), (StatusCode::NOT_MODIFIED, 0), "{tag}: weak comparison, same bytes");
    }
    let a = h.get("/ns/web/big", &[("if-match", &weak)]).await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED, "a weak tag never matches If-Match");
    let a = h.get("/ns/web/big", &[("range", "bytes=0-9"), ("if-range", &weak)]).await;
    assert_eq!((a.status, a.body.len()), (StatusCode::OK, data.len()), "nor If-Range: the whole body");
    let a = h.send(Method::HEAD, "/ns/web/big", &[], Vec::new()).await;
    assert_eq!((a.status, a.header("etag")), (StatusCode::OK, Some(weak.as_str())));
    assert_eq!(a.header("content-length"), Some(data.len().to_string().as_str()));

    drop(pause);
    h.cache.settle().await.unwrap();
    let a = h.get("/ns/web/big", &[("if-none-match", &md5)]).await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED, "the MD5 is the ETag once known");
    assert_eq!(a.header("etag"), Some(md5.as_str()));
    let a = h.get("/ns/web/big", &[("if-none-match", &weak)]).await;
    assert_eq!((a.status, a.header("etag")), (StatusCode::OK, Some(md5.as_str())), "the weak tag is gone");
    assert_eq!(h.src.counts("big").full, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_any_etag_yet_is_never_not_modified_by_tag() {
    let h = harness().await;
    let data = bytes(82, 3 << 20);
    h.src.put("bare", data.clone());
    h.src.set_bare("bare", true);
    let md5 = md5_tag(&data);

    let pause = h.cache.pause_md5().await;
    assert_eq!(h.get("/ns/web/bare", &[]).await.status, StatusCode::OK);
    until_stored(&h, "bare").await;
    let a = h.get("/ns/web/bare", &[("if-none-match", &md5)]).await;
    assert_eq!((a.status, a.header("etag")), (StatusCode::OK, None));
    assert!(a.body == data);
    let a = h.get("/ns/web/bare", &[("if-none-match", "*")]).await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED, "`*` matches any current representation");
    let a = h.get("/ns/web/bare", &[("if-match", &md5)]).await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    drop(pause);
    h.cache.settle().await.unwrap();
    let a = h.get("/ns/web/bare", &[("if-none-match", &md5)]).await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);
}
