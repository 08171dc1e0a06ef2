//! Directory namespaces through the real binary: `index`, `update`, `migrate`, `stats`, the
//! version reset hook, HTTP serving in place, listing, writes, and `serve --watch`.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::common::{Server, client, dirs, http_delete, http_put, run, tc, tcr};

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(data))
}

async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let body = http.get(url).send().await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}: {}", String::from_utf8_lossy(&body)))
}

/// Past the window in which a just-written file counts as racily clean (changed within 100 ms of
/// being hashed, so hashed again by the next update).
///
/// This sleep is not synchronisation: the binary compares a file's ctime with the wall clock at
/// hashing, and a test cannot set a ctime back, so real time has to pass after the last write.
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

#[test]
fn index_update_stats_and_migrate_keep_their_promises() {
    let d = dirs();
    let tree = d.tmp.path().join("media");
    write(&tree, "a.txt", b"alpha");
    write(&tree, "sub/b.bin", b"bravo");
    write(&tree, "empty", b"");
    std::fs::write(tree.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), b"latin-1 name").unwrap();
    let t = tree.to_str().unwrap();
    settle();
    let r = tcr(&d.data, &["index", t, "--ns", "media", "--json"]).ok().json();
    assert_eq!((r["n_added"].as_u64(), r["n_hashed"].as_u64(), r["kind"].as_str()), (Some(4), Some(4), Some("index")));

    write(&tree, "a.txt", b"ALPHA");
    settle();
    let r = tcr(&d.data, &["update", "--ns", "media", "--json"]).ok().json();
    let c =
        |r: &serde_json::Value| ["n_added", "n_changed", "n_removed", "n_unchanged"].map(|k| r[k].as_u64().unwrap());
    assert_eq!(c(&r), [0, 1, 0, 3], "{r}");
    let r = tcr(&d.data, &["update", "--ns", "media", "--force", "--json"]).ok().json();
    assert_eq!((c(&r), r["n_hashed"].as_u64()), ([0, 4, 0, 0], Some(4)));
    let human = tcr(&d.data, &["update"]).ok();
    assert!(human.stdout.contains("0 added, 0 changed, 0 removed, 4 unchanged"), "{}", human.stdout);

    let s = tcr(&d.data, &["stats", "--ns", "media", "--json"]).ok().json();
    let dir = &s["namespaces"][0]["directory"];
    assert_eq!((dir["n_files"].as_u64(), dir["bytes"].as_u64()), (Some(4), Some(5 + 5 + 12)), "{s}");
    assert_eq!(dir["last_update_kind"], "update");
    assert!(dir["oldest_ms"].is_i64() && dir["newest_ms"].is_i64() && dir["last_update_ms"].is_i64(), "{s}");

    // Indexed without hashes, then migrated.
    let other = d.tmp.path().join("other");
    for i in 0..5 {
        write(&other, &format!("f{i}"), &vec![b'x'; 1000 * (i + 1)]);
    }
    settle();
    let o = other.to_str().unwrap();
    let r = tcr(&d.data, &["index", o, "--ns", "other", "--no-hash", "--json"]).ok().json();
    assert_eq!((r["n_added"].as_u64(), r["n_hashed"].as_u64()), (Some(5), Some(0)));
    let dry = tcr(&d.data, &["migrate", "--ns", "other", "--dry-run", "--json"]).ok().json();
    assert_eq!((dry["n_unhashed"].as_u64(), dry["bytes_hashed"].as_u64()), (Some(5), Some(15_000)));
    let human = tcr(&d.data, &["migrate", "--ns", "other", "--dry-run"]).ok();
    assert!(human.stdout.contains("5 files (14.6 KiB) would be hashed"), "{}", human.stdout);
    let done = tcr(&d.data, &["migrate", "--ns", "other", "--json"]).ok().json();
    assert_eq!(done["n_hashed"].as_u64(), Some(5));
    let dry = tcr(&d.data, &["migrate", "--ns", "other", "--dry-run", "--json"]).ok().json();
    assert_eq!(dry["n_unhashed"].as_u64(), Some(0), "already hashed files are skipped");

    // The version hook: another tiercache version resets the read caches once, and says so.
    let out = run(tc(&d.data).env("TIERCACHE_TEST_VERSION", "99.9.9").args(["update", "--ns", "media", "--json"]));
    let r = out.json();
    assert!(out.stderr.contains("version changed") && out.stderr.contains("99.9.9"), "{}", out.stderr);
    assert_eq!(c(&r), [4, 0, 0, 0], "rebuilt from scratch");
    let out = run(tc(&d.data).env("TIERCACHE_TEST_VERSION", "99.9.9").args(["update", "--ns", "media", "--json"]));
    assert!(!out.stderr.contains("reset"), "{}", out.stderr);

    // Clumsy input.
    let e = tcr(&d.data, &["index", "/definitely/not/here", "--ns", "x"]).expect_code(1);
    assert!(e.stderr.contains("cannot use directory"), "{}", e.stderr);
    let e = tcr(&d.data, &["index", t, "--ns", "Bad/Name"]).expect_code(1);
    assert!(e.stderr.contains("namespace"), "{}", e.stderr);
    tcr(&d.data, &["ns", "create", "web", "--source", "http://127.0.0.1:9/"]).ok();
    let e = tcr(&d.data, &["update", "--ns", "web"]).expect_code(1);
    assert!(e.stderr.contains("not bound to a directory"), "{}", e.stderr);
    let e = tcr(&d.data, &["index", o, "--ns", "media"]).expect_code(1);
    assert!(e.stderr.contains("already exists with source"), "{}", e.stderr);
    let e = tcr(&d.data, &["index", t, "--ns", "media", "--ignore", "[unclosed"]).expect_code(1);
    assert!(e.stderr.contains("invalid ignore pattern"), "{}", e.stderr);
}

#[test]
fn unreadable_files_and_directories_are_reported_not_fatal() {
    let d = dirs();
    let tree = d.tmp.path().join("t");
    write(&tree, "ok.txt", b"fine");
    write(&tree, "secret.txt", b"hidden");
    write(&tree, "locked/inner.txt", b"inner");
    let probe = d.tmp.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o555)).unwrap();
    let Some(mut cmd) = crate::datadir::unprivileged(&d.data, &probe) else {
        eprintln!("SKIPPED: running as root without setpriv; cannot deny a permission to the binary");
        return;
    };
    std::fs::set_permissions(tree.join("secret.txt"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(tree.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    settle();
    let out = run(cmd.args(["index", tree.to_str().unwrap(), "--ns", "t", "--json"]));
    let r = out.json();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!((r["n_added"].as_u64(), r["n_hashed"].as_u64(), r["n_unhashed"].as_u64()), (Some(2), Some(1), Some(1)));
    assert_eq!(r["n_unreadable_dirs"].as_u64(), Some(1));
    let problems = r["problems"].to_string();
    assert!(problems.contains("secret.txt") && problems.contains("locked/"), "{problems}");
    assert!(problems.contains("ermission denied"), "{problems}");

    // A root the process may not read: a clear error, and nothing is taken as deleted.
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = crate::datadir::unprivileged(&d.data, &probe).unwrap();
    let out = run(cmd.args(["update", "--ns", "t"]));
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot open directory") || out.stderr.contains("cannot read directory"),
        "{}",
        out.stderr
    );
    let s = tcr(&d.data, &["stats", "--ns", "t", "--json"]).ok().json();
    assert_eq!(s["namespaces"][0]["directory"]["n_files"].as_u64(), Some(2));
    std::fs::set_permissions(tree.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test]
async fn serve_answers_from_the_directory_with_md5_etags_ranges_listing_and_writes() {
    let d = dirs();
    let tree = d.tmp.path().join("site");
    write(&tree, "index.html", b"<h1>hello</h1>");
    write(&tree, "img/a.png", b"not really a png");
    write(&tree, "img/b%_*.png", b"odd name");
    std::fs::write(tree.join(std::ffi::OsStr::from_bytes(b"caf\xe9")), b"latin-1").unwrap();
    settle();
    tcr(&d.data, &["index", tree.to_str().unwrap(), "--ns", "site"]).ok();
    let server = Server::start(&d.data, &["--watch"]).await;
    let http = client();

    let r = http.get(server.url("/ns/site/index.html")).send().await.unwrap();
    let etag = format!("\"{}\"", md5_hex(b"<h1>hello</h1>"));
    assert_eq!((r.status().as_u16(), r.headers()["etag"].to_str().unwrap()), (200, etag.as_str()));
    assert_eq!(r.headers()["content-type"], "text/html");
    assert_eq!(r.bytes().await.unwrap(), &b"<h1>hello</h1>"[..]);
    let r = http.get(server.url("/ns/site/index.html")).header("range", "bytes=4-8").send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.bytes().await.unwrap()), (206, bytes::Bytes::from_static(b"hello")));
    let r = http.get(server.url("/ns/site/index.html")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 304);
    let r = http.get(server.url("/ns/site/caf%E9")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.bytes().await.unwrap()), (200, bytes::Bytes::from_static(b"latin-1")));
    for (path, status) in [("/ns/site/..%2F..%2Fetc%2Fpasswd", 400), ("/ns/site/img", 404), ("/ns/site/nope", 404)] {
        assert_eq!(http.get(server.url(path)).send().await.unwrap().status().as_u16(), status, "{path}");
    }

    let list = get_json(&http, &server.url("/ns/site/?prefix=img/b%25_&limit=10")).await;
    assert_eq!(list["entries"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["entries"][0]["key"], "img/b%_*.png");
    assert_eq!(list["entries"][0]["etag"], format!("\"{}\"", md5_hex(b"odd name")));
    let list = get_json(&http, &server.url("/ns/site/?delimiter=/&limit=2")).await;
    assert_eq!((list["is_truncated"].as_bool(), list["entries"].as_array().unwrap().len()), (Some(true), 1), "{list}");
    assert_eq!(list["entries"][0]["key_url"], "caf%E9");
    assert_eq!(list["common_prefixes"][0], "img/");
    let next = list["next_after"].as_str().unwrap().to_owned();
    let list = get_json(&http, &server.url(&format!("/ns/site/?delimiter=/&limit=2&after={next}"))).await;
    assert_eq!(
        (list["entries"][0]["key"].as_str(), list["is_truncated"].as_bool()),
        (Some("index.html"), Some(false)),
        "{list}"
    );
    let bad = http.get(server.url("/ns/site/?limit=0")).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // Writes land in the directory first.
    let r = http_put(&http, &server.url("/ns/site/new/dir/file.txt")).body("written").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{}\"", md5_hex(b"written")));
    assert_eq!(std::fs::read(tree.join("new/dir/file.txt")).unwrap(), b"written");
    let r = http_put(&http, &server.url("/ns/site/..%2Fescape")).body("x").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(!d.tmp.path().join("escape").exists());
    let r = http_delete(&http, &server.url("/ns/site/new/dir/file.txt")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(!tree.join("new/dir/file.txt").exists());
    assert_eq!(
        http_delete(&http, &server.url("/ns/site/new/dir/file.txt")).send().await.unwrap().status().as_u16(),
        404
    );

    // `serve --watch` follows a file made behind its back.
    write(&tree, "later.txt", b"appeared");
    let mut listed = false;
    for _ in 0..200 {
        let list = get_json(&http, &server.url("/ns/site/?prefix=later")).await;
        if list["entries"].as_array().is_some_and(|e| e.len() == 1) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listed, "the watcher indexed a new file; log:\n{}", server.log_text());
}

#[test]
fn files_of_several_gib_are_sized_exactly() {
    let d = dirs();
    let tree = d.tmp.path().join("big");
    std::fs::create_dir_all(&tree).unwrap();
    let size: u64 = 6 * 1024 * 1024 * 1024 + 7; // Sparse: no disk space, but a size past 32 bits.
    std::fs::File::create(tree.join("disk.img")).unwrap().set_len(size).unwrap();
    settle();
    let r = tcr(&d.data, &["index", tree.to_str().unwrap(), "--ns", "big", "--no-hash", "--json"]).ok().json();
    assert_eq!(r["n_added"].as_u64(), Some(1));
    let s = tcr(&d.data, &["stats", "--ns", "big", "--json"]).ok().json();
    assert_eq!(s["namespaces"][0]["directory"]["bytes"].as_u64(), Some(size), "{s}");
    let dry = tcr(&d.data, &["migrate", "--ns", "big", "--dry-run", "--json"]).ok().json();
    assert_eq!((dry["n_unhashed"].as_u64(), dry["bytes_hashed"].as_u64()), (Some(1), Some(size)));
}
