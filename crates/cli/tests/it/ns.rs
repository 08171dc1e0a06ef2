//! `ns create | list | show | delete` through the CLI, beside a running server.

use tiercache_testkit::{Source, bytes};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_create_and_delete_are_seen_by_a_running_server_at_once() {
    let d = dirs();
    let src = Source::start().await;
    let data = bytes(1, 100_000);
    src.put("a.bin", data.clone());
    let server = Server::start(&d.data, &["--revalidate-after", "1h"]).await;
    let http = client();

    // Before the namespace exists the server knows nothing of it.
    let (status, _) = http_get(&http, &server.url("/ns/web/a.bin")).await;
    assert_eq!(status, 404);
    assert_eq!(src.counts("a.bin").full, 0);

    let out = tcr(&d.data, &["ns", "create", "web", "--source", &src.url()]).ok();
    assert!(out.stdout.contains("created namespace web"), "{}", out.stdout);
    assert!(d.data.join("namespaces/web.json").is_file());

    // The running server sees it at once and fetches through the source.
    let (status, body) = http_get(&http, &server.url("/ns/web/a.bin")).await;
    assert_eq!(status, 200);
    assert!(body == data, "wrong bytes through the new namespace");
    assert_eq!(src.counts("a.bin").full, 1);
    let (status, body) = http_get(&http, &server.url("/ns/web/a.bin")).await;
    assert_eq!((status, body == data), (200, true));
    assert_eq!(src.counts("a.bin").full, 1, "the second read must not fetch again");
    stats_when_entries(&d.data, 1).await;
    assert!(blob_path(&d.data, &hex_of(&data)).is_file());

    // Creating again with the same source is idempotent.
    let out = tcr(&d.data, &["ns", "create", "web", "--source", &src.url()]).ok();
    assert!(out.stdout.contains("already exists"), "{}", out.stdout);

    // With another source it fails clearly, and changes nothing.
    let out = tcr(&d.data, &["ns", "create", "web", "--source", "http://127.0.0.1:9/other/"]).expect_code(1);
    assert!(out.stderr.contains("already exists with source"), "{}", out.stderr);
    assert!(out.stderr.contains(&src.url()), "the message names the existing source: {}", out.stderr);
    let show = tcr(&d.data, &["ns", "show", "web", "--json"]).ok().json();
    assert_eq!(show["source"], src.url());
    assert_eq!(show["n_entries"], 1);
    let def: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.data.join("namespaces/web.json")).unwrap()).unwrap();
    assert_eq!(def["source"], src.url(), "the definition on disk keeps the first source");

    // `ns list` shows it with its totals.
    let list = tcr(&d.data, &["ns", "list", "--json"]).ok().json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["bytes"], data.len() as u64);

    // Delete: the running server answers 404 at once, and the blob only it referenced is gone.
    let out = tcr(&d.data, &["ns", "delete", "web"]).ok();
    assert!(out.stdout.contains("deleted namespace web"), "{}", out.stdout);
    assert!(out.stdout.contains("1 entries"), "{}", out.stdout);
    let (status, _) = http_get(&http, &server.url("/ns/web/a.bin")).await;
    assert_eq!(status, 404);
    assert_eq!(src.counts("a.bin").full, 1, "a deleted namespace must not fetch");
    assert!(!blob_path(&d.data, &hex_of(&data)).exists());
    assert!(!d.data.join("namespaces/web.json").exists());
    let list = tcr(&d.data, &["ns", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 0);

    // Deleting a namespace that does not exist succeeds and says so.
    let out = tcr(&d.data, &["ns", "delete", "web"]).ok();
    assert!(out.stdout.contains("did not exist"), "{}", out.stdout);
    let out = tcr(&d.data, &["ns", "delete", "never-was", "--json"]).ok();
    assert_eq!(out.json()["existed"], false);

    // `ns show` of a missing namespace fails clearly.
    let out = tcr(&d.data, &["ns", "show", "web"]).expect_code(1);
    assert!(out.stderr.contains("no namespace named \"web\""), "{}", out.stderr);

    // Re-created, the server fetches again.
    tcr(&d.data, &["ns", "create", "web", "--source", &src.url()]).ok();
    let (status, body) = http_get(&http, &server.url("/ns/web/a.bin")).await;
    assert_eq!((status, body == data), (200, true));
    assert_eq!(src.counts("a.bin").full, 2);

    // Deleted and created again at once with another source: the server must serve the new
    // source's bytes, not those of a fetch it finished a moment ago for the old definition.
    let other = Source::start().await;
    let other_data = bytes(2, 50_000);
    other.put("a.bin", other_data.clone());
    tcr(&d.data, &["ns", "delete", "web"]).ok();
    tcr(&d.data, &["ns", "create", "web", "--source", &other.url()]).ok();
    let (status, body) = http_get(&http, &server.url("/ns/web/a.bin")).await;
    assert_eq!(status, 200);
    assert!(body == other_data, "served the deleted namespace's bytes after it was redefined");
    assert_eq!(other.counts("a.bin").full, 1);
    assert_eq!(src.counts("a.bin").full, 2);
}

#[test]
fn ns_create_refuses_invalid_names_and_creates_nothing() {
    let d = dirs();
    // An existing data directory stays exactly as it was.
    tcr(&d.data, &["ns", "create", "fine"]).ok();
    let before = without_index(tree(d.tmp.path()));
    let long = "x".repeat(64);
    for bad in ["../x", "UPPER", long.as_str(), "a/b", "", ".hidden", "-dash", "a..b"] {
        let out = tcr(&d.data, &["ns", "create", "--source", "http://127.0.0.1:9/", "--", bad]);
        assert_eq!(out.code, 1, "ns create {bad:?}: exit {} ({})", out.code, out.stderr);
        assert!(out.stderr.contains("namespace"), "ns create {bad:?}: unclear message: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        assert_eq!(without_index(tree(d.tmp.path())), before, "ns create {bad:?} created something");
    }
    let out = tcr(&d.data, &["ns", "create", &long]).expect_code(1);
    assert!(out.stderr.contains("64 bytes long; the limit is 63"), "{}", out.stderr);
    let out = tcr(&d.data, &["ns", "create", "UPPER"]).expect_code(1);
    assert!(out.stderr.contains("lowercase"), "{}", out.stderr);
    let list = tcr(&d.data, &["ns", "list", "--json"]).ok().json();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fine"]);
    assert!(!d.tmp.path().join("x.json").exists());

    // A bad source URL is refused too, before anything is written.
    let out = tcr(&d.data, &["ns", "create", "good", "--source", "ftp://example.invalid/"]).expect_code(1);
    assert!(!out.stderr.is_empty());
    assert!(!d.data.join("namespaces/good.json").exists());

    // A data directory that does not exist yet is not created just to refuse a bad name.
    let fresh = d.tmp.path().join("fresh");
    let out = tcr(&fresh, &["ns", "create", "../x"]);
    assert_eq!(out.code, 1, "exit {} ({})", out.code, out.stderr);
    assert!(!fresh.exists(), "a refused `ns create` created the data directory {}", fresh.display());
}

/// The tree without SQLite's own files (whose WAL and shared-memory files come and go).
fn without_index(t: std::collections::BTreeMap<std::path::PathBuf, u64>) -> Vec<std::path::PathBuf> {
    t.into_keys()
        .filter(|p| !p.to_string_lossy().contains("index.db"))
        .filter(|p| !p.ends_with("home-not-used"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ns_migrate_moves_a_namespace_while_a_server_reads_it() {
    let d = dirs();
    let src = Source::start().await;
    let contents: Vec<(String, Vec<u8>)> =
        (0..6).map(|i| (format!("k{i}.bin"), bytes(40 + i, 30_000 + 70_000 * i as usize))).collect();
    for (k, v) in &contents {
        src.put(k, v.clone());
    }
    let server = Server::start(&d.data, &["--revalidate-after", "1h", "--no-cache"]).await;
    let http = client();
    let (one, two) = (d.tmp.path().join("host/one"), d.tmp.path().join("host/two"));
    let place = |p: &std::path::Path| format!("path:{}", p.display());

    let out = tcr(&d.data, &["ns", "create", "web", "--source", &src.url(), "--storage", &place(&one)]).ok();
    assert!(out.stdout.contains(&format!("storage: {}", place(&one))), "{}", out.stdout);
    for (k, v) in &contents {
        let (status, body) = http_get(&http, &server.url(&format!("/ns/web/{k}"))).await;
        assert!(status == 200 && body == *v, "{k}: {status}");
    }
    for (_, v) in &contents {
        wait_for_file(&one.join("blobs/sha256").join(&hex_of(v)[..2]).join(hex_of(v))).await;
        assert!(!blob_path(&d.data, &hex_of(v)).exists(), "not in the disk tier");
    }
    let df = tcr(&d.data, &["df", "-v"]).ok().stdout;
    assert!(df.contains("STORAGE") && df.contains(&place(&one)), "{df}");

    // Readers over HTTP the whole time; the moves run in other processes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (http, base, contents, stop) = (http.clone(), server.url(""), contents.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut n, mut failures) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (k, v) = &contents[(n + r) % contents.len()];
                    let (status, body) = http_get(&http, &format!("{base}/ns/web/{k}")).await;
                    if status != 200 || body != *v {
                        failures.push(format!(
                            "{k}: {status}, {} bytes: {}",
                            body.len(),
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        ));
                    }
                    n += 1;
                }
                (n, failures)
            })
        })
        .collect();
    let data = d.data.clone();
    let migrate = move |to: String| {
        let data = data.clone();
        tokio::task::spawn_blocking(move || tcr(&data, &["ns", "migrate", "web", "--to", &to, "--json"]).ok().json())
    };
    let report = migrate("managed".into()).await.unwrap();
    assert_eq!((report["n_copied"].as_u64(), report["n_missing"].as_u64()), (Some(6), Some(0)), "{report}");
    assert!(!one.exists(), "the old storage directory is removed");
    for (_, v) in &contents {
        assert!(blob_path(&d.data, &hex_of(v)).is_file());
    }
    let report = migrate(place(&two)).await.unwrap();
    assert_eq!((report["n_copied"].as_u64(), report["to"].as_str()), (Some(6), Some(place(&two).as_str())));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut n_reads = 0;
    for r in readers {
        let (n, failures) = r.await.unwrap();
        assert!(failures.is_empty(), "reads failed during the moves: {failures:?}\n{}", server.log_text());
        n_reads += n;
    }
    assert!(n_reads > 0);
    for (k, _) in &contents {
        assert_eq!(src.counts(k).full, 1, "{k} was fetched again: bytes were lost in a move");
    }
    for (_, v) in &contents {
        assert!(!blob_path(&d.data, &hex_of(v)).exists(), "released from the disk tier");
    }
    let show = tcr(&d.data, &["ns", "show", "web"]).ok().stdout;
    assert!(show.contains(&format!("storage: {}", place(&two))), "{show}");

    // Clumsy requests fail clearly and change nothing.
    let out = tcr(&d.data, &["ns", "migrate", "web", "--to", "path:relative/dir"]).expect_code(2);
    assert!(out.stderr.contains("not an absolute path"), "{}", out.stderr);
    let out = tcr(&d.data, &["ns", "migrate", "web", "--to", "elsewhere"]).expect_code(2);
    assert!(out.stderr.contains("neither `managed` nor `path:DIR`"), "{}", out.stderr);
    let out = tcr(&d.data, &["ns", "migrate", "nope", "--to", "managed"]).expect_code(1);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    let out = tcr(&d.data, &["ns", "migrate", "web", "--to", &format!("path:{}", d.data.display())]).expect_code(1);
    assert!(out.stderr.contains("overlaps the data directory"), "{}", out.stderr);
    let out = tcr(&d.data, &["ns", "create", "web", "--source", &src.url(), "--storage", "managed"]).expect_code(1);
    assert!(out.stderr.contains("ns migrate"), "{}", out.stderr);

    // Deleting the namespace removes its directory.
    tcr(&d.data, &["ns", "delete", "web"]).ok();
    assert!(!two.exists());
}

async fn wait_for_file(p: &std::path::Path) {
    wait_until(&format!("{} is a file", p.display()), async || p.is_file()).await;
}

/// `ns create`, `ns pin` and `ns unpin` say what they did as JSON with `--json`: whether the
/// namespace was made, which pins changed, a URL's credentials hidden.
#[test]
fn ns_create_pin_and_unpin_report_as_json() {
    let d = dirs();
    let create =
        |name: &str| tcr(&d.data, &["ns", "create", name, "--source", "http://user:pw@127.0.0.1:9/files/", "--json"]);
    let made = create("web").ok().json();
    assert_eq!(
        made,
        serde_json::json!({ "name": "web", "created": true, "source": "http://***:***@127.0.0.1:9/files/", "storage": "managed" })
    );
    assert_eq!(create("web").ok().json()["created"], false, "idempotent, and says so");
    let bare = tcr(&d.data, &["ns", "create", "up", "--json"]).ok().json();
    assert_eq!(bare["source"], serde_json::Value::Null);

    let pin = |args: &[&str]| tcr(&d.data, &[&["ns"], args, &["--json"]].concat()).ok().json();
    assert_eq!(
        pin(&["pin", "web"]),
        serde_json::json!({ "namespace": "web", "action": "pin", "keys": [{ "key": null, "changed": true }] })
    );
    assert_eq!(pin(&["pin", "web"])["keys"][0]["changed"], false, "pinned already");
    let keys = pin(&["pin", "web", "--key", "a", "--key", "b/c"]);
    assert_eq!(keys["keys"], serde_json::json!([{ "key": "a", "changed": true }, { "key": "b/c", "changed": true }]));
    let unpinned = pin(&["unpin", "web", "--key", "a", "--key", "never-pinned"]);
    assert_eq!(unpinned["action"], "unpin");
    assert_eq!(
        unpinned["keys"],
        serde_json::json!([{ "key": "a", "changed": true }, { "key": "never-pinned", "changed": false }])
    );
    // What `ns show` says agrees.
    let shown = tcr(&d.data, &["ns", "show", "web"]).ok().stdout;
    assert!(shown.contains("pins: (all), b/c"), "{shown}");
}
