//! `stats`, `cleanup` and `vacuum`.

use tiercache_testkit::{Source, bytes};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_counts_entries_bytes_and_namespaces() {
    let d = dirs();
    let src = Source::start().await;
    let a1 = bytes(11, 10_000);
    let a2 = bytes(12, 20_000);
    let a3 = bytes(13, 30_000);
    let b2 = bytes(14, 40_000);
    src.put("a1", a1.clone());
    src.put("a2", a2.clone());
    src.put("a3", a3.clone());
    src.put("shared", a1.clone()); // Same bytes as a1: one blob, two entries.
    src.put("b2", b2.clone());
    tcr(&d.data, &["ns", "create", "alpha", "--source", &src.url()]).ok();
    tcr(&d.data, &["ns", "create", "beta", "--source", &src.url()]).ok();
    tcr(&d.data, &["ns", "create", "empty"]).ok();

    let s = tcr(&d.data, &["stats", "--json"]).ok().json();
    assert_eq!(
        (s["n_entries"].as_u64(), s["n_blobs"].as_u64(), s["entry_bytes"].as_u64()),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(s["namespaces"].as_array().unwrap().len(), 3);

    let out_file = d.tmp.path().join("out");
    for target in ["alpha/a1", "alpha/a2", "alpha/a3", "beta/shared", "beta/b2", "alpha/a1"] {
        tcr(&d.data, &["get", target, "-o", out_file.to_str().unwrap(), "--revalidate-after", "1h"]).ok();
    }
    assert_eq!(src.counts("a1").full, 1, "the second read of alpha/a1 comes from disk");

    let s = tcr(&d.data, &["stats", "--json"]).ok().json();
    let alpha_bytes = (a1.len() + a2.len() + a3.len()) as u64;
    let beta_bytes = (a1.len() + b2.len()) as u64;
    assert_eq!(s["n_entries"], 5);
    assert_eq!(s["entry_bytes"], alpha_bytes + beta_bytes);
    assert_eq!(s["n_blobs"], 4, "a1 and beta/shared share one blob");
    assert_eq!(s["blob_bytes"], (a1.len() + a2.len() + a3.len() + b2.len()) as u64);
    assert_eq!(s["n_unreferenced_blobs"], 0);
    assert_eq!(s["data_dir"], d.data.to_str().unwrap());
    assert!(s["index_bytes"].as_u64().unwrap() > 0);
    assert!(s["oldest_ms"].as_i64().unwrap() <= s["newest_ms"].as_i64().unwrap());
    let ns = s["namespaces"].as_array().unwrap();
    let names: Vec<&str> = ns.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "empty"]);
    assert_eq!((ns[0]["n_entries"].as_u64(), ns[0]["bytes"].as_u64()), (Some(3), Some(alpha_bytes)));
    assert_eq!((ns[1]["n_entries"].as_u64(), ns[1]["bytes"].as_u64()), (Some(2), Some(beta_bytes)));
    assert_eq!((ns[2]["n_entries"].as_u64(), ns[2]["bytes"].as_u64()), (Some(0), Some(0)));
    assert_eq!(ns[0]["source"], src.url());
    assert!(ns[2]["source"].is_null());
    assert!(ns[0]["hits"].as_u64().unwrap() >= 1, "alpha/a1 was read twice: {}", ns[0]);

    let only = tcr(&d.data, &["stats", "--ns", "beta", "--json"]).ok().json();
    let ns = only["namespaces"].as_array().unwrap();
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0]["name"], "beta");
    assert_eq!(ns[0]["n_entries"], 2);

    let text = tcr(&d.data, &["stats"]).ok().stdout;
    assert!(text.contains("entries: 5"), "{text}");
    assert!(text.contains("blobs: 4"), "{text}");
    assert!(text.contains("alpha") && text.contains("beta"), "{text}");

    let out = tcr(&d.data, &["stats", "--ns", "missing"]).expect_code(1);
    assert!(out.stderr.contains("no namespace named \"missing\""), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    let out = tcr(&d.data, &["stats", "--ns", "Bad/Name"]).expect_code(1);
    assert!(out.stderr.contains("namespace"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_prefix_removes_only_matching_keys_and_unshared_blobs() {
    let d = dirs();
    let src = Source::start().await;
    let a = bytes(21, 50_000); // docs/logs/a only: its blob goes.
    let b = bytes(22, 51_000); // docs/logs/b and docs/img/b: the blob stays.
    let c = bytes(23, 52_000); // docs/logs/c and other/c: the blob stays.
    let x = bytes(24, 53_000); // docs/logsx: no match ("logs/" is byte for byte, no wildcard).
    let e = bytes(25, 54_000); // other/logs/e: another namespace.
    let w = bytes(26, 55_000); // docs/log%: a '%' must not act as a wildcard either.
    for (path, data) in [
        ("logs/a", &a),
        ("logs/b", &b),
        ("img/b", &b),
        ("logs/c", &c),
        ("c", &c),
        ("logsx", &x),
        ("logs/e", &e),
        ("log%", &w),
    ] {
        src.put(path, data.clone());
    }
    tcr(&d.data, &["ns", "create", "docs", "--source", &src.url()]).ok();
    tcr(&d.data, &["ns", "create", "other", "--source", &src.url()]).ok();
    let out = d.tmp.path().join("out");
    let out = out.to_str().unwrap();
    for t in [
        "docs/logs/a",
        "docs/logs/b",
        "docs/img/b",
        "docs/logs/c",
        "other/c",
        "docs/logsx",
        "other/logs/e",
        "docs/log%",
    ] {
        tcr(&d.data, &["get", t, "-o", out, "--revalidate-after", "1h"]).ok();
    }
    let before = blob_files(&d.data);
    assert_eq!(before.len(), 6);

    // A '%' or '_' in the prefix is literal.
    let r = tcr(&d.data, &["cleanup", "--ns", "docs", "--prefix", "log_", "--json"]).ok().json();
    assert_eq!(r["n_entries"], 0, "'_' must not match like SQL LIKE: {r}");
    let r = tcr(&d.data, &["cleanup", "--ns", "docs", "--prefix", "logs/", "--json"]).ok().json();
    assert_eq!(r["n_entries"], 3);
    assert_eq!(r["n_blobs"], 1);
    assert_eq!(r["bytes"], a.len() as u64);

    let after = blob_files(&d.data);
    assert!(!after.contains(&hex_of(&a)), "the blob only docs/logs/a referenced must be deleted");
    for kept in [&b, &c, &x, &e, &w] {
        assert!(after.contains(&hex_of(kept)), "a blob still referenced was deleted");
    }
    assert_eq!(after.len(), 5);

    let s = tcr(&d.data, &["stats", "--json"]).ok().json();
    let ns = s["namespaces"].as_array().unwrap();
    assert_eq!(ns[0]["name"], "docs");
    assert_eq!(ns[0]["n_entries"], 3, "docs keeps img/b, logsx and log%");
    assert_eq!(ns[1]["n_entries"], 2, "other is untouched");
    assert_eq!(s["n_blobs"], 5);

    // Removed entries are fetched again; kept ones are not.
    let counts_b = src.counts("img/b").full;
    tcr(&d.data, &["get", "docs/img/b", "-o", out, "--revalidate-after", "1h"]).ok();
    assert_eq!(src.counts("img/b").full, counts_b);
    tcr(&d.data, &["get", "docs/logs/a", "-o", out, "--revalidate-after", "1h"]).ok();
    assert_eq!(src.counts("logs/a").full, 2);
    assert!(std::fs::read(out).unwrap() == a);

    // A text report, and clear failures.
    let text = tcr(&d.data, &["cleanup", "--ns", "docs", "--prefix", "logs/"]).ok().stdout;
    assert!(text.contains("removed 1 entries and 1 blobs"), "{text}");
    let o = tcr(&d.data, &["cleanup", "--ns", "missing"]).expect_code(1);
    assert!(o.stderr.contains("no namespace named \"missing\""), "{}", o.stderr);
    let o = tcr(&d.data, &["cleanup", "--prefix", "logs/"]).expect_code(2);
    assert!(o.stderr.contains("--ns"), "{}", o.stderr);
    tcr(&d.data, &["cleanup"]).expect_code(2);
    tcr(&d.data, &["verify"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_all_needs_yes_and_keeps_uploaded_blobs() {
    let d = dirs();
    let src = Source::start().await;
    let objs: Vec<Vec<u8>> = (0..4).map(|i| bytes(30 + i, 70_000 + i as usize * 1000)).collect();
    for (i, o) in objs.iter().enumerate() {
        src.put(&format!("k{i}"), o.clone());
    }
    let server = Server::start(&d.data, &["--revalidate-after", "1h"]).await;
    let http = client();
    tcr(&d.data, &["ns", "create", "one", "--source", &src.url()]).ok();
    tcr(&d.data, &["ns", "create", "two", "--source", &src.url()]).ok();
    for (i, o) in objs.iter().enumerate() {
        let ns = if i % 2 == 0 { "one" } else { "two" };
        let (status, body) = http_get(&http, &server.url(&format!("/ns/{ns}/k{i}"))).await;
        assert_eq!((status, body == *o), (200, true));
    }
    stats_when_entries(&d.data, 4).await;
    // Uploads: one with new bytes, one with the bytes of an entry (now retained as well).
    let uploaded = bytes(39, 123_456);
    assert_eq!(http_put_blob(&http, &server.base, &uploaded).await, 201);
    assert_eq!(http_put_blob(&http, &server.base, &objs[0]).await, 200, "already held");
    assert_eq!(blob_files(&d.data).len(), 5);

    // Without --yes, with standard input not a terminal: refused, nothing removed.
    let before = tree(&d.data.join("blobs"));
    let out = tcr(&d.data, &["cleanup", "--all"]);
    assert_eq!(out.code, 1, "cleanup --all without --yes must refuse: {}", out.stderr);
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(tree(&d.data.join("blobs")), before);
    assert_eq!(tcr(&d.data, &["stats", "--json"]).ok().json()["n_entries"], 4);

    let r = tcr(&d.data, &["cleanup", "--all", "--yes", "--json"]).ok().json();
    assert_eq!(r["n_entries"], 4);
    assert_eq!(r["n_blobs"], 3, "the three unretained blobs go; uploads stay");
    let left = blob_files(&d.data);
    let expected: std::collections::BTreeSet<String> = [hex_of(&uploaded), hex_of(&objs[0])].into_iter().collect();
    assert_eq!(left, expected);
    let s = tcr(&d.data, &["stats", "--json"]).ok().json();
    assert_eq!(s["n_entries"], 0);
    assert_eq!(s["n_blobs"], 2);
    assert_eq!(s["n_unreferenced_blobs"], 2);
    assert_eq!(s["namespaces"].as_array().unwrap().len(), 2, "namespaces themselves stay");

    // Uploaded blobs are still served; entries are fetched again.
    let (status, body) = http_get(&http, &server.url(&format!("/blobs/{}", digest(&uploaded)))).await;
    assert_eq!((status, body == uploaded), (200, true));
    let (status, body) = http_get(&http, &server.url("/ns/two/k1")).await;
    assert_eq!((status, body == objs[1]), (200, true));
    assert_eq!(src.counts("k1").full, 2);
    stats_when_entries(&d.data, 1).await;

    // `-y` works as well, and a second run finds nothing.
    let r = tcr(&d.data, &["cleanup", "--all", "-y", "--json"]).ok().json();
    assert_eq!(r["n_entries"], 1);
    let r = tcr(&d.data, &["cleanup", "--all", "-y", "--json"]).ok().json();
    assert_eq!((r["n_entries"].as_u64(), r["n_blobs"].as_u64()), (Some(0), Some(0)));
    tcr(&d.data, &["verify"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_reports_before_after_and_saved() {
    let d = dirs();
    let src = Source::start().await;
    for i in 0..40 {
        src.put(&format!("f{i}"), bytes(100 + i, 1000));
    }
    tcr(&d.data, &["ns", "create", "v", "--source", &src.url()]).ok();
    let out = d.tmp.path().join("out");
    for i in 0..40 {
        tcr(&d.data, &["get", &format!("v/f{i}"), "-o", out.to_str().unwrap()]).ok();
    }
    tcr(&d.data, &["cleanup", "--all", "--yes"]).ok();

    let text = tcr(&d.data, &["vacuum"]).ok().stdout;
    assert!(text.contains("before:") && text.contains("after:") && text.contains("saved:"), "{text}");
    let j = tcr(&d.data, &["vacuum", "--json"]).ok().json();
    let (before, after, saved) =
        (j["before_bytes"].as_u64().unwrap(), j["after_bytes"].as_u64().unwrap(), j["saved_bytes"].as_u64().unwrap());
    assert!(after > 0, "{j}");
    assert_eq!(saved, before.saturating_sub(after), "{j}");
    // The index still works after compaction.
    assert_eq!(tcr(&d.data, &["stats", "--json"]).ok().json()["namespaces"][0]["name"], "v");
    tcr(&d.data, &["verify"]).ok();
}
