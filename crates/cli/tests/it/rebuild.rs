//! Losing the index: `serve` rebuilds it from the disk tier and the namespace definitions.

use tiercache_testkit::{Source, bytes};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_is_rebuilt_when_index_db_is_deleted() {
    let d = dirs();
    let src = Source::start().await;
    let other = Source::start().await;
    let objs: Vec<Vec<u8>> = (0..5).map(|i| bytes(70 + i, 150_000 + 10 * i as usize)).collect();
    for (i, o) in objs.iter().enumerate() {
        src.put(&format!("k{i}"), o.clone());
    }
    let uploaded = bytes(79, 333_333);

    let mut server = Server::start(&d.data, &["--revalidate-after", "1h"]).await;
    let http = client();
    tcr(&d.data, &["ns", "create", "main", "--source", &src.url()]).ok();
    tcr(&d.data, &["ns", "create", "mirror", "--source", &other.url()]).ok();
    tcr(&d.data, &["ns", "create", "local"]).ok();
    for (i, o) in objs.iter().enumerate() {
        let (status, body) = http_get(&http, &server.url(&format!("/ns/main/k{i}"))).await;
        assert_eq!((status, body == *o), (200, true));
    }
    assert_eq!(http_put_blob(&http, &server.base, &uploaded).await, 201);
    let stats_before = stats_when_entries(&d.data, 5).await;
    assert_eq!(stats_before["n_blobs"], 6);
    let ns_before = tcr(&d.data, &["ns", "list", "--json"]).ok().json();
    assert!(!server.log_text().contains("rebuild"), "no rebuild on a fresh data directory");

    server.stop();
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(d.data.join(f));
    }
    assert!(!d.data.join("index.db").exists());

    let server = Server::start(&d.data, &["--revalidate-after", "1h"]).await;
    let log = server.log_text();
    assert!(log.contains("index database was missing or reset: rebuilding it"), "log:\n{log}");
    assert!(log.contains("index rebuilt"), "log:\n{log}");

    // Every blob is known again, with its size.
    let stats = tcr(&d.data, &["stats", "--json"]).ok().json();
    assert_eq!(stats["n_blobs"], stats_before["n_blobs"], "{stats}");
    assert_eq!(stats["blob_bytes"], stats_before["blob_bytes"], "{stats}");
    // The namespaces are back, with their sources.
    let ns_after = tcr(&d.data, &["ns", "list", "--json"]).ok().json();
    let strip = |v: &serde_json::Value| -> Vec<(String, Option<String>)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| (n["name"].as_str().unwrap().to_owned(), n["source"].as_str().map(str::to_owned)))
            .collect()
    };
    assert_eq!(strip(&ns_after), strip(&ns_before));
    assert_eq!(strip(&ns_after)[0], ("local".to_owned(), None));
    tcr(&d.data, &["verify"]).ok();

    // Reads work: entries (re-resolved through their source) and blobs by digest.
    for (i, o) in objs.iter().enumerate() {
        let (status, body) = http_get(&http, &server.url(&format!("/ns/main/k{i}"))).await;
        assert_eq!((status, body == *o), (200, true), "main/k{i} after the rebuild");
    }
    let (status, body) = http_get(&http, &server.url(&format!("/blobs/{}", digest(&uploaded)))).await;
    assert_eq!((status, body == uploaded), (200, true));
    let (status, body) = http_get(&http, &server.url(&format!("/blobs/{}", digest(&objs[3])))).await;
    assert_eq!((status, body == objs[3]), (200, true));
    let stats = stats_when_entries(&d.data, 5).await;
    assert_eq!(stats["n_blobs"], 6, "re-resolved entries reuse the blobs already on disk");
    tcr(&d.data, &["verify"]).ok();

    // The CLI rebuilds as well, e.g. for `stats` on a stopped cache.
    drop(server);
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(d.data.join(f));
    }
    let out = tcr(&d.data, &["stats", "--json"]).ok();
    assert!(out.stderr.contains("rebuilding"), "{}", out.stderr);
    assert_eq!(out.json()["n_blobs"], 6);
    assert_eq!(strip(&tcr(&d.data, &["ns", "list", "--json"]).ok().json()), strip(&ns_before));
}
