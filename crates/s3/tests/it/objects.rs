//! Objects through a real S3 client: round trips compared by SHA-256, ranges, conditional reads,
//! copies naming the same blob, and the uploads that must store nothing (a digest that does not
//! match, a body shorter than its length, a key a directory cannot hold, a key too long).

use std::sync::Arc;

use md5::Digest as _;
use tiercache_engine::{NamespaceOptions, ScanProgress};
use tiercache_testkit::bytes;

use crate::{harness, sha256};

fn md5_hex(b: &[u8]) -> String {
    hex::encode(md5::Md5::digest(b))
}

#[tokio::test]
async fn put_get_head_delete_round_trip_keeps_every_byte() {
    let h = harness().await;
    let op = h.op("b");
    let data = bytes(1, 3 * 1024 * 1024 + 17);
    op.write("dir/a.bin", data.clone()).await.unwrap();
    let got = op.read("dir/a.bin").await.unwrap().to_vec();
    assert_eq!(sha256(&got), sha256(&data));
    let meta = op.stat("dir/a.bin").await.unwrap();
    assert_eq!(meta.content_length(), data.len() as u64);
    assert_eq!(meta.etag(), Some(format!("\"{}\"", md5_hex(&data)).as_str()));
    op.delete("dir/a.bin").await.unwrap();
    let e = op.stat("dir/a.bin").await.unwrap_err();
    assert_eq!(e.kind(), opendal::ErrorKind::NotFound);
    assert!(!h.holds("b", "dir/a.bin").await);
    // The content type is kept with the object.
    op.write_with("typed.txt", b"text".to_vec()).content_type("text/x-round-trip").await.unwrap();
    assert_eq!(op.stat("typed.txt").await.unwrap().content_type(), Some("text/x-round-trip"));
    // An empty object is an object.
    op.write("empty", Vec::<u8>::new()).await.unwrap();
    assert_eq!(op.read("empty").await.unwrap().len(), 0);
}

#[tokio::test]
async fn ranges_are_served_exactly_and_bad_ones_refused() {
    let h = harness().await;
    let data = bytes(2, 100_000);
    h.op("b").write("r", data.clone()).await.unwrap();
    let part = h.op("b").read_with("r").range(1000..1100).await.unwrap().to_vec();
    assert_eq!(part, data[1000..1100]);
    let a = h.send("GET", "/b/r", &[("range", "bytes=-10")], b"").await;
    assert_eq!(a.status, 206);
    assert_eq!(a.header("content-range"), Some("bytes 99990-99999/100000"));
    assert_eq!(a.body, data[99_990..]);
    let a = h.send("GET", "/b/r", &[("range", "bytes=200000-")], b"").await;
    assert_eq!((a.status, a.code().as_str()), (416, "InvalidRange"));
    // partNumber=1 of a single-part object is the object.
    let a = h.send("GET", "/b/r?partNumber=1", &[], b"").await;
    assert_eq!((a.status, a.body.len()), (200, data.len()));
}

#[tokio::test]
async fn conditional_reads_answer_304_and_412() {
    let h = harness().await;
    let data = bytes(3, 5000);
    h.op("b").write("c", data.clone()).await.unwrap();
    let etag = format!("\"{}\"", md5_hex(&data));
    let a = h.send("GET", "/b/c", &[("if-none-match", &etag)], b"").await;
    assert_eq!(a.status, 304);
    assert_eq!(a.header("etag"), Some(etag.as_str()));
    let a = h.send("GET", "/b/c", &[("if-match", "\"0123\"")], b"").await;
    assert_eq!((a.status, a.code().as_str()), (412, "PreconditionFailed"));
    let a = h.send("GET", "/b/c", &[("if-match", &etag)], b"").await;
    assert_eq!((a.status, a.body.len()), (200, data.len()));
    let a = h.send("GET", "/b/c", &[("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")], b"").await;
    assert_eq!(a.status, 304);
    let a = h.send("GET", "/b/c", &[("if-unmodified-since", "Thu, 01 Jan 1970 00:00:00 GMT")], b"").await;
    assert_eq!(a.status, 412);
    let a = h.send("GET", "/b/c?response-content-type=text%2Fx-test&response-cache-control=no-store", &[], b"").await;
    assert_eq!(a.header("content-type"), Some("text/x-test"));
    assert_eq!(a.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn a_copy_names_the_same_blob() {
    let h = harness().await;
    // A copy source names its bucket by S3's rules (three characters at least): s3s checks them.
    h.cache.create_namespace("source", None, &Default::default()).await.unwrap();
    h.cache.create_namespace("other", None, &Default::default()).await.unwrap();
    let data = bytes(4, 70_000);
    h.op("source").write("src", data.clone()).await.unwrap();
    let a = h.send("PUT", "/other/dst", &[("x-amz-copy-source", "source/src")], b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(String::from_utf8_lossy(&a.body).contains(&md5_hex(&data)));
    let got = h.op("other").read("dst").await.unwrap().to_vec();
    assert_eq!(sha256(&got), sha256(&data));
    let src = h.cache.read_entry("source", "src").await.unwrap().meta.digest;
    let dst = h.cache.read_entry("other", "dst").await.unwrap().meta.digest;
    assert!(src.is_some() && src == dst, "{src:?} {dst:?}");
    // Between two buckets kept in the disk tier, the engine names the blob again: no byte copied.
    let again = h.cache.copy_entry(("source", b"src"), ("other", b"dst2")).await.unwrap();
    assert_eq!(again.map(|s| s.digest), src);
}

#[tokio::test]
async fn a_content_md5_that_does_not_match_stores_nothing() {
    let h = harness().await;
    let data = bytes(5, 10_000);
    let wrong = base64_of(&md5::Md5::digest(b"something else"));
    let a = h.send("PUT", "/b/k", &[("content-md5", &wrong)], &data).await;
    assert_eq!((a.status, a.code().as_str()), (400, "BadDigest"));
    assert!(!h.holds("b", "k").await);
    let right = base64_of(&md5::Md5::digest(&data));
    let a = h.send("PUT", "/b/k", &[("content-md5", &right)], &data).await;
    assert_eq!(a.status, 200);
    assert!(h.holds("b", "k").await);
}

#[tokio::test]
async fn checksums_are_verified_and_returned() {
    let h = harness().await;
    let data = bytes(6, 10_000);
    let wrong = base64_of(&sha2::Sha256::digest(b"other"));
    let a = h.send("PUT", "/b/s", &[("x-amz-checksum-sha256", &wrong)], &data).await;
    assert_eq!((a.status, a.code().as_str()), (400, "BadDigest"));
    assert!(!h.holds("b", "s").await);
    let right = base64_of(&sha2::Sha256::digest(&data));
    let a = h.send("PUT", "/b/s", &[("x-amz-checksum-sha256", &right)], &data).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-amz-checksum-sha256"), Some(right.as_str()));
    // A client that computes its own (OpenDAL's CRC32C) is accepted.
    opendal::install_default();
    let op = opendal::Operator::new(
        opendal::services::S3::default()
            .bucket("b")
            .endpoint(&format!("http://{}", h.addr))
            .region("us-east-1")
            .access_key_id(crate::AK)
            .secret_access_key(crate::SK)
            .checksum_algorithm("crc32c")
            .disable_config_load()
            .disable_ec2_metadata(),
    )
    .unwrap();
    op.write("crc", data.clone()).await.unwrap();
    assert_eq!(op.read("crc").await.unwrap().to_vec(), data);
}

#[tokio::test]
async fn a_body_shorter_than_its_length_stores_nothing() {
    let h = harness().await;
    let (status, _) = h.raw("PUT", "/b/short", &[("content-length", "1000")], &[7u8; 500]).await;
    assert_ne!(status, 200);
    assert!(!h.holds("b", "short").await);
}

#[tokio::test]
async fn if_none_match_star_refuses_to_overwrite() {
    let h = harness().await;
    let a = h.send("PUT", "/b/once", &[("if-none-match", "*")], b"first").await;
    assert_eq!(a.status, 200);
    let a = h.send("PUT", "/b/once", &[("if-none-match", "*")], b"second").await;
    assert_eq!((a.status, a.code().as_str()), (412, "PreconditionFailed"));
    assert_eq!(h.op("b").read("once").await.unwrap().to_vec(), b"first");
}

#[tokio::test]
async fn keys_too_long_or_hostile_are_refused_and_touch_nothing() {
    let h = harness().await;
    let long = format!("/b/{}", "k".repeat(1025));
    let a = h.send("PUT", &long, &[], b"x").await;
    assert_eq!((a.status, a.code().as_str()), (400, "KeyTooLongError"));

    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("kept"), b"kept").unwrap();
    let progress = Arc::new(ScanProgress::default());
    h.cache.index_directory("d", tree.path(), &NamespaceOptions::default(), true, progress).await.unwrap();
    let before = listing(tree.path());
    for path in ["/d/a/../../escape", "/d/../b/x", "/d/a/%00b", "/d/a//b", "/d/./x"] {
        let (status, text) = h.raw("PUT", path, &[], b"hostile").await;
        assert!(status == 400 || status == 403, "{path}: {text}");
        if status == 400 && path != "/d/../b/x" {
            assert!(text.contains("InvalidArgument") || text.contains("InvalidURI"), "{path}: {text}");
        }
    }
    assert_eq!(listing(tree.path()), before);
    assert!(!h.dir.path().join("escape").exists());
    // A plain key is a file in the directory.
    let a = h.send("PUT", "/d/sub/file.txt", &[], b"through s3").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(std::fs::read(tree.path().join("sub/file.txt")).unwrap(), b"through s3");
}

/// Every path under `root`, sorted.
fn listing(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn base64_of(b: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(b)
}

#[tokio::test]
async fn attributes_are_kept_with_the_object_copied_replaced_and_cleared() {
    let h = harness().await;
    h.cache.create_namespace("meta-src", None, &Default::default()).await.unwrap();
    let headers = [
        ("x-amz-meta-color", "blue"),
        ("cache-control", "max-age=60"),
        ("content-disposition", "attachment; filename=\"m.txt\""),
        ("content-type", "text/plain"),
    ];
    let a = h.send("PUT", "/meta-src/m", &headers, b"meta").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let check = async |path: &str, color: Option<&str>| {
        let a = h.send("HEAD", path, &[], b"").await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.header("x-amz-meta-color"), color, "{path}");
        a
    };
    let a = check("/meta-src/m", Some("blue")).await;
    assert_eq!(a.header("cache-control"), Some("max-age=60"));
    assert_eq!(a.header("content-disposition"), Some("attachment; filename=\"m.txt\""));
    assert_eq!(a.header("content-type"), Some("text/plain"));
    // A copy keeps them; a copy with REPLACE takes the request's.
    let a = h.send("PUT", "/b/kept", &[("x-amz-copy-source", "meta-src/m")], b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    check("/b/kept", Some("blue")).await;
    let replace =
        [("x-amz-copy-source", "meta-src/m"), ("x-amz-metadata-directive", "REPLACE"), ("x-amz-meta-color", "red")];
    let a = h.send("PUT", "/b/replaced", &replace, b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    check("/b/replaced", Some("red")).await;
    // Written again without them, the object has none.
    h.op("meta-src").write("m", b"plain".to_vec()).await.unwrap();
    check("/meta-src/m", None).await;
}

#[tokio::test]
async fn delete_objects_deletes_each_and_reports_each() {
    let h = harness().await;
    let op = h.op("b");
    for k in ["batch/1", "batch/2", "keep"] {
        op.write(k, b"x".to_vec()).await.unwrap();
    }
    op.delete_iter(vec!["batch/1", "batch/2", "batch/never-was"]).await.unwrap();
    assert!(!h.holds("b", "batch/1").await && !h.holds("b", "batch/2").await);
    assert!(h.holds("b", "keep").await);
}
