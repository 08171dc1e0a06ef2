//! A directory namespace over HTTP: files read once are held by the memory tier and read again the
//! short way (open, fstat, markers compared), with ranges and conditional requests answered there
//! too; a file changed in any way is served with its new bytes and ETag on the very next request.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use tiercache_engine::{NamespaceOptions, ScanProgress};
use tiercache_testkit::bytes;

use crate::{Answer, Harness, harness};

fn md5_etag(data: &[u8]) -> String {
    use md5::Digest as _;
    format!("\"{}\"", hex::encode(md5::Md5::digest(data)))
}

/// A harness with directory namespace `d` over a tree holding `files`, indexed once the files'
/// timestamps are past the window in which a just-written file counts as racily clean (its row
/// would not be held). The sleep is not synchronisation: see `past_racy_window` in the engine's
/// directory tests.
async fn with_tree(files: &[(&[u8], &[u8])]) -> (Harness, tempfile::TempDir) {
    let h = harness().await;
    let tree = tempfile::tempdir().unwrap();
    for (rel, data) in files {
        write(tree.path(), rel, data);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let progress = Arc::new(ScanProgress::default());
    h.cache.index_directory("d", tree.path(), &NamespaceOptions::default(), true, progress).await.unwrap();
    (h, tree)
}

fn write(root: &Path, rel: &[u8], data: &[u8]) {
    let p = root.join(std::ffi::OsStr::from_bytes(rel));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Asserts a 200 whose body is `data` and whose ETag is its MD5.
fn assert_serves(a: &Answer, data: &[u8], what: &str) {
    assert_eq!(a.status, StatusCode::OK, "{what}: {}", String::from_utf8_lossy(&a.body));
    assert!(a.body == data, "{what}: other bytes");
    assert_eq!(a.header("etag"), Some(md5_etag(data).as_str()), "{what}");
    assert_eq!(a.header("content-length"), Some(data.len().to_string().as_str()), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_files_answer_ranges_and_conditions_and_a_changed_file_its_new_etag_at_once() {
    let big = bytes(3, 1 << 20);
    let (h, tree) = with_tree(&[(b"a/page.html", b"<p>version one</p>"), (b"big.bin", &big)]).await;
    for pass in ["first read (index)", "second read (held)", "third read (held)"] {
        let a = h.get("/ns/d/a/page.html", &[]).await;
        assert_serves(&a, b"<p>version one</p>", pass);
        assert_eq!(a.header("content-type"), Some("text/html"), "{pass}");
        assert_eq!(a.header("x-tiercache-tier"), Some("source"), "{pass}");
        assert!(a.header("last-modified").is_some(), "{pass}");
        assert_serves(&h.get("/ns/d/big.bin", &[]).await, &big, pass);
    }
    let etag = md5_etag(b"<p>version one</p>");
    let range = h.get("/ns/d/a/page.html", &[("range", "bytes=3-9")]).await;
    assert_eq!((range.status, range.body.as_slice()), (StatusCode::PARTIAL_CONTENT, &b"version"[..]));
    assert_eq!(range.header("content-range"), Some("bytes 3-9/18"));
    let mid = h.get("/ns/d/big.bin", &[("range", "bytes=500000-600000")]).await;
    assert_eq!((mid.status, mid.body.as_slice()), (StatusCode::PARTIAL_CONTENT, &big[500_000..=600_000]));
    assert_eq!(h.get("/ns/d/a/page.html", &[("range", "bytes=18-")]).await.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h.get("/ns/d/a/page.html", &[("if-none-match", &etag)]).await.status, StatusCode::NOT_MODIFIED);
    assert_eq!(h.get("/ns/d/a/page.html", &[("if-match", "\"other\"")]).await.status, StatusCode::PRECONDITION_FAILED);
    let stale_range = h.get("/ns/d/a/page.html", &[("range", "bytes=0-1"), ("if-range", "\"other\"")]).await;
    assert_eq!(stale_range.status, StatusCode::OK, "If-Range with another ETag: the whole file");
    let head = h.send(Method::HEAD, "/ns/d/a/page.html", &[], Vec::new()).await;
    assert_eq!((head.status, head.body.len(), head.header("etag")), (StatusCode::OK, 0, Some(etag.as_str())));

    // Same size, mtime put back: only the ctime tells. The next request has the new bytes, its
    // new ETag, and the old ETag no longer matches.
    let p = tree.path().join("a/page.html");
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    std::fs::write(&p, b"<p>version two</p>").unwrap();
    std::fs::File::options().write(true).open(&p).unwrap().set_modified(mtime).unwrap();
    assert_eq!(h.get("/ns/d/a/page.html", &[("if-none-match", &etag)]).await.status, StatusCode::OK);
    assert_serves(&h.get("/ns/d/a/page.html", &[]).await, b"<p>version two</p>", "changed in place");
    let range = h.get("/ns/d/a/page.html", &[("range", "bytes=3-9"), ("if-range", &etag)]).await;
    assert_eq!(range.status, StatusCode::OK, "If-Range with the old ETag: the whole new file");
    assert!(range.body == b"<p>version two</p>");

    // Replaced by a rename (another inode), as editors and deploys do; removed; created again.
    let staged = tree.path().join("a/.staged");
    std::fs::write(&staged, b"<p>version three, longer</p>").unwrap();
    std::fs::rename(&staged, &p).unwrap();
    assert_serves(&h.get("/ns/d/a/page.html", &[]).await, b"<p>version three, longer</p>", "renamed over");
    std::fs::remove_file(&p).unwrap();
    assert_eq!(h.get("/ns/d/a/page.html", &[]).await.status, StatusCode::NOT_FOUND);
    write(tree.path(), b"a/page.html", b"<p>back</p>");
    assert_serves(&h.get("/ns/d/a/page.html", &[]).await, b"<p>back</p>", "created again");

    // A large file changed in place is never served under its old ETag either.
    let mut big2 = big.clone();
    big2[123_456] ^= 0xff;
    std::fs::write(tree.path().join("big.bin"), &big2).unwrap();
    let a = h.get("/ns/d/big.bin", &[]).await;
    assert!(a.status == StatusCode::OK && a.body == big2);
    assert_eq!(a.header("etag"), Some(md5_etag(&big2).as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_path_swapped_for_a_symlink_or_a_directory_is_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), b"secret.txt", b"outside the root");
    let (h, tree) = with_tree(&[(b"docs/readme.txt", b"inside"), (b"name\xff.bin", b"raw name")]).await;
    let raw = "/ns/d/name%FF.bin";
    for _ in 0..2 {
        assert_serves(&h.get("/ns/d/docs/readme.txt", &[]).await, b"inside", "held");
        assert_serves(&h.get(raw, &[]).await, b"raw name", "a name that is not UTF-8");
    }
    // The directory on a held path swapped for a symlink to outside the root, with a file of the
    // same name there: refused (a path whose directories include a symlink is not a file here).
    write(outside.path(), b"docs/readme.txt", b"outside the root");
    std::fs::rename(tree.path().join("docs"), tree.path().join("docs.old")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("docs"), tree.path().join("docs")).unwrap();
    assert_eq!(h.get("/ns/d/docs/readme.txt", &[]).await.status, StatusCode::NOT_FOUND);
    // A held file swapped for a directory, then for a symlink to a file outside.
    let raw_path = tree.path().join(std::ffi::OsStr::from_bytes(b"name\xff.bin"));
    std::fs::remove_file(&raw_path).unwrap();
    std::fs::create_dir(&raw_path).unwrap();
    assert_eq!(h.get(raw, &[]).await.status, StatusCode::NOT_FOUND);
    std::fs::remove_dir(&raw_path).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), &raw_path).unwrap();
    assert_eq!(h.get(raw, &[]).await.status, StatusCode::NOT_FOUND);
}
