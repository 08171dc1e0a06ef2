//! Containment over HTTP: what a directory namespace may reach (its root, checked wherever a
//! namespace is defined and again at open), names reserved for tiercache's temp files, and keys
//! too long for a file system.

use std::path::{Path, PathBuf};

use http::{Method, StatusCode};
use serde_json::json;
use tiercache_engine::{Cache, CacheConfig};
use tiercache_server::{Access, App, Right};
use tiercache_testkit::Source;

use super::{Answer, Harness};

const TOKEN: &str = "test-admin-token-0123456789";
/// `Authorization` with the admin token: every right, and errors told in full.
const ADMIN: &[(&str, &str)] = &[("authorization", "Bearer test-admin-token-0123456789")];

/// The HTTP API over `cache` with the admin endpoints on (behind [`TOKEN`]).
fn admin_app(cache: Cache) -> App {
    tiercache_server::app_with(cache, None, Access::new().with_token(Right::Admin, TOKEN).unwrap())
}

/// A cache in `<tmp>/parent/data` with the admin endpoints on, a directory `<tmp>/files` with
/// one file, and namespace `kept` stored in `<tmp>/store`.
async fn contained() -> (Harness, PathBuf) {
    let src = Source::start().await;
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(base.join("files")).unwrap();
    std::fs::write(base.join("files/a.txt"), b"hello").unwrap();
    let cache = Cache::open(CacheConfig::new(base.join("parent/data"))).await.unwrap();
    let app = admin_app(cache.clone());
    let h = Harness { _dir: dir, cache, app, src };
    let url = h.src.url();
    let storage = format!("path:{}", base.join("store").display());
    let a = h.define("kept", &json!({ "source": url, "storage": storage })).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&a.body));
    (h, base)
}

impl Harness {
    async fn define(&self, name: &str, body: &serde_json::Value) -> Answer {
        let auth = format!("Bearer {TOKEN}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        self.send(Method::PUT, &format!("/admin/namespaces/{name}"), &headers, body.to_string().into_bytes()).await
    }

    fn says(a: &Answer) -> String {
        String::from_utf8_lossy(&a.body).into_owned()
    }
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_namespace_never_reaches_the_data_directory_or_a_storage_directory() {
    let (h, base) = contained().await;
    let data = base.join("parent/data");
    std::os::unix::fs::symlink(&data, base.join("link")).unwrap();
    let cases: [(&str, String, &str); 7] = [
        ("rootfs", "file:///".to_owned(), "the root directory /"),
        ("data", file_url(&data), "is the data directory"),
        ("parent", file_url(&base.join("parent")), "contains the data directory"),
        ("inside", file_url(&data.join("blobs")), "is inside the data directory"),
        ("link", file_url(&base.join("link")), "is the data directory"),
        ("store", file_url(&base.join("store")), "where namespace kept keeps its blobs"),
        ("above", file_url(&base), "contains the data directory"),
    ];
    for (name, url, says) in cases {
        let a = h.define(name, &json!({ "source": url })).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name}: {}", Harness::says(&a));
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(body["error"], "containment", "{name}: {body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{name}: expected {says:?} in {body}");
        // Nothing was defined: no definition file, nothing served.
        assert!(!data.join(format!("namespaces/{name}.json")).exists(), "{name}");
        assert_eq!(h.get(&format!("/ns/{name}/etc/passwd"), &[]).await.status, StatusCode::NOT_FOUND, "{name}");
    }
    // The reproduction: nothing under / is served, the index is not readable, no blob is written.
    assert_eq!(h.get("/ns/rootfs/etc/passwd", &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/ns/parent/data/index.db", &[]).await.status, StatusCode::NOT_FOUND);
    // A missing directory, or a file, is refused too; a directory of the operator's is fine, and
    // another namespace over the same tree (a read-only view, say) is allowed.
    let a = h.define("missing", &json!({ "source": file_url(&base.join("nope")) })).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", Harness::says(&a));
    let a = h.define("file", &json!({ "source": file_url(&base.join("files/a.txt")) })).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", Harness::says(&a));
    for name in ["files", "again"] {
        let a = h.define(name, &json!({ "source": file_url(&base.join("files")) })).await;
        assert_eq!(a.status, StatusCode::CREATED, "{name}: {}", Harness::says(&a));
        let a = h.get(&format!("/ns/{name}/a.txt"), &[]).await;
        assert_eq!((a.status, a.body.as_slice()), (StatusCode::OK, &b"hello"[..]), "{name}");
    }
    // A storage directory may not be put around a directory source either.
    let storage = format!("path:{}", base.join("files/blobs").display());
    let a = h.define("around", &json!({ "source": h.src.url(), "storage": storage })).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", Harness::says(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_breaking_the_rule_is_refused_at_open_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let data = base.join("data");
    std::fs::create_dir_all(data.join("namespaces")).unwrap();
    // As an older version wrote it: a namespace over the data directory's parent.
    let def = json!({ "name": "rootfs", "source": file_url(&base) });
    std::fs::write(data.join("namespaces/rootfs.json"), def.to_string()).unwrap();
    std::fs::write(base.join("secret"), b"s").unwrap();
    let cache = Cache::open(CacheConfig::new(&data)).await.unwrap();
    let notes = cache.open_notes().join("\n");
    assert!(notes.contains("directory namespace rootfs is refused"), "{notes}");
    let app = admin_app(cache.clone());
    let h = Harness { _dir: dir, cache: cache.clone(), app, src: Source::start().await };
    for (method, uri) in [
        (Method::GET, "/ns/rootfs/secret"),
        (Method::GET, "/ns/rootfs/data/index.db"),
        (Method::PUT, "/ns/rootfs/data/blobs/x"),
        (Method::DELETE, "/ns/rootfs/secret"),
        (Method::GET, "/ns/rootfs/"),
    ] {
        let a = h.send(method.clone(), uri, ADMIN, b"x".to_vec()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{method} {uri}: {}", Harness::says(&a));
        assert!(Harness::says(&a).contains("namespace rootfs is refused"), "{method} {uri}: {}", Harness::says(&a));
    }
    // A client without the admin token is refused too, and not told where the root is.
    let a = h.get("/ns/rootfs/secret", &[]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", Harness::says(&a));
    assert!(!Harness::says(&a).contains(&*base.to_string_lossy()), "{}", Harness::says(&a));
    assert_eq!(std::fs::read(base.join("secret")).unwrap(), b"s");
    assert!(!data.join("blobs/x").exists());
    // It can still be deleted.
    assert!(cache.delete_namespace("rootfs").await.unwrap().is_some());
    assert!(!data.join("namespaces/rootfs.json").exists());
}

/// A cache with directory namespace `files` over `<tmp>/files`.
async fn directory() -> (Harness, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap().join("files");
    std::fs::create_dir_all(&root).unwrap();
    let cache = Cache::open(CacheConfig::new(dir.path().join("data"))).await.unwrap();
    cache.create_namespace("files", Some(&file_url(&root)), &Default::default()).await.unwrap();
    let app = admin_app(cache.clone());
    (Harness { _dir: dir, cache, app, src: Source::start().await }, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_file_names_cannot_be_claimed_read_written_or_listed() {
    let (h, root) = directory().await;
    // Files a client (or anyone with access to the directory) created under temp names: the old
    // form (pid and counter) and the new one (random).
    let old = format!(".tiercache-{}-0.tmp", std::process::id());
    let new = format!(".tiercache-{}.tmp", "0".repeat(32));
    for name in [&old, &new] {
        std::fs::write(root.join(name), b"planted").unwrap();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d").join(name), b"planted").unwrap();
    }
    for i in 0..3 {
        let body = format!("version {i}").into_bytes();
        for key in ["a.txt", "d/b.txt"] {
            let a = h.send(Method::PUT, &format!("/ns/files/{key}"), ADMIN, body.clone()).await;
            assert!(a.status.is_success(), "PUT {key}: {} {}", a.status, Harness::says(&a));
            let a = h.get(&format!("/ns/files/{key}"), &[]).await;
            assert_eq!((a.status, &a.body), (StatusCode::OK, &body), "{key}");
        }
    }
    for name in [&old, &new, &".tiercache-namespace".to_owned()] {
        for key in [name.clone(), format!("d/{name}"), format!("{name}/x")] {
            for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
                let a = h.send(method.clone(), &format!("/ns/files/{key}"), ADMIN, b"x".to_vec()).await;
                assert_eq!(a.status, StatusCode::BAD_REQUEST, "{method} {key}: {}", Harness::says(&a));
                if method != Method::HEAD {
                    assert!(Harness::says(&a).contains("reserved"), "{method} {key}: {}", Harness::says(&a));
                }
            }
        }
    }
    for name in [&old, &new] {
        assert_eq!(std::fs::read(root.join(name)).unwrap(), b"planted", "left alone");
    }
    let a = h.get("/ns/files/?prefix=.tiercache-", &[]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", Harness::says(&a));
    let a = h.get("/ns/files/", &[]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", Harness::says(&a));
    assert!(!Harness::says(&a).contains(".tiercache-"), "{}", Harness::says(&a));
    // No temp file of tiercache's own is left beside the files written.
    let mut names: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut expected = vec![old.clone(), new.clone(), "a.txt".to_owned(), "d".to_owned()];
    expected.sort();
    assert_eq!(names, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_too_long_for_the_file_system_is_a_client_error() {
    let (h, _root) = directory().await;
    let long = "n".repeat(1024);
    for key in [long.clone(), format!("a/{long}")] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let a = h.send(method.clone(), &format!("/ns/files/{key}"), ADMIN, b"x".to_vec()).await;
            assert_eq!(a.status, StatusCode::URI_TOO_LONG, "{method}: {}", Harness::says(&a));
            let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert_eq!(body["error"], "name_too_long", "{body}");
            assert!(body["message"].as_str().unwrap().contains("at most"), "{body}");
        }
    }
    // At the limit a name is fine.
    let a = h.send(Method::PUT, &format!("/ns/files/{}", "n".repeat(255)), ADMIN, b"x".to_vec()).await;
    assert!(a.status.is_success(), "{}", Harness::says(&a));
}
