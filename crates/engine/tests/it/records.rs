//! Entry records in the shared tier: two caches (two nodes) with their own data directories over
//! one shared store (a directory through OpenDAL, or a real Redis), in front of real HTTP sources
//! that count requests. A record lets a node serve an entry it never fetched; anything wrong with
//! a record (missing or damaged blob, malformed or oversized object, a dead store) is a miss, and
//! the read goes to the source.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tiercache_engine::{Cache, CacheConfig, Intent, SharedConfig, StoreLimits};
use tiercache_testkit::servers::{self, RedisServer};
use tiercache_testkit::{Source, bytes, sha256};

use crate::{bounded, collect};

/// A node: a cache over a fresh data directory, sharing `shared` (an OpenDAL URL), with namespace
/// `ns` bound to `source`.
async fn node(shared: &str, ns: &str, source: &Source, revalidate_after: Duration) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CacheConfig::new(dir.path().join("data"));
    cfg.revalidate_after = revalidate_after;
    let mut sc = SharedConfig::new(shared);
    sc.limits = StoreLimits { retries: 0, ..StoreLimits::default() };
    sc.limits.timeout = Duration::from_secs(2);
    sc.limits.io_timeout = Duration::from_secs(2);
    cfg.shared = Some(sc);
    let cache = Cache::open(cfg).await.unwrap();
    cache.create_namespace(ns, Some(&source.url()), &Default::default()).await.unwrap();
    (dir, cache)
}

/// Reads `ns/key` whole: the tier that served it and the bytes.
async fn read(cache: &Cache, ns: &str, key: &str) -> (&'static str, Vec<u8>) {
    let read = bounded(cache.read_entry(ns, key)).await.unwrap();
    let tier = read.meta.tier.as_str();
    (tier, bounded(collect(read, None)).await.unwrap())
}

fn fs_store() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("fs://{}", dir.path().display());
    (dir, url)
}

/// The files under `dir` (recursively) whose path contains `part`.
fn files_with(dir: &Path, part: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().contains(part) {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_an_entry_another_fetched_without_asking_the_source() {
    let src = Source::start().await;
    let data = bytes(700, 3 * (1 << 20) + 17);
    src.put("img/layer.tar", data.clone());
    let (_store, url) = fs_store();
    let (_a, a) = node(&url, "img", &src, Duration::from_secs(3600)).await;
    let (_b, b) = node(&url, "images", &src, Duration::from_secs(3600)).await;
    let (_c, c) = node(&url, "img", &src, Duration::from_secs(3600)).await;

    assert_eq!(read(&a, "img", "img/layer.tar").await, ("source", data.clone()));
    // The record is written once the write-back finished and the MD5 is known.
    bounded(a.settle()).await.unwrap();

    // B names the namespace differently: the record is the source's, so B shares it.
    assert_eq!(read(&b, "images", "img/layer.tar").await, ("shared", data.clone()));
    // A HEAD is answered from the record, as the whole read is.
    let head = bounded(c.read_entry_with("img", b"img/layer.tar", Intent::Headers)).await.unwrap();
    assert_eq!(head.meta.size_bytes, Some(data.len() as u64));
    assert_eq!(head.meta.digest.map(|d| d.to_string()), Some(sha256(&data)));
    assert!(head.meta.etag.is_some(), "the record's MD5 is the ETag");
    let counts = src.counts("img/layer.tar");
    assert_eq!((counts.full, counts.ranged, counts.head, counts.not_modified), (1, 0, 0, 0));
    for n in [&b, &c] {
        n.flush().await.unwrap();
        let counted = n.shared_counters().await.unwrap();
        assert_eq!(counted.get("record_hits"), Some(&1), "{counted:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_of_an_unknown_entry_look_its_record_up_once() {
    let src = Source::start().await;
    let data = bytes(710, 2 * (1 << 20));
    src.put("k", data.clone());
    let (_store, url) = fs_store();
    let (_a, a) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    let (_b, b) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    read(&a, "web", "k").await;
    bounded(a.settle()).await.unwrap();
    let b = std::sync::Arc::new(b);
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let b = std::sync::Arc::clone(&b);
            tokio::spawn(async move { read(&b, "web", "k").await.1 })
        })
        .collect();
    for r in readers {
        assert!(r.await.unwrap() == data);
    }
    assert_eq!(src.counts("k").full, 1, "no reader asked the source");
    b.flush().await.unwrap();
    let counted = b.shared_counters().await.unwrap();
    let lookups: i64 = ["record_hits", "record_stale", "record_misses", "record_errors"]
        .iter()
        .map(|n| counted.get(*n).copied().unwrap_or(0))
        .sum();
    assert_eq!(lookups, 1, "one record lookup for sixteen readers: {counted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_with_the_same_key_never_collide() {
    let (src1, src2) = (Source::start().await, Source::start().await);
    let (one, two) = (bytes(701, 100_000), bytes(702, 120_000));
    src1.put("k", one.clone());
    src2.put("k", two.clone());
    let (_store, url) = fs_store();
    let (_a, a) = node(&url, "web", &src1, Duration::from_secs(3600)).await;
    let (_b, b) = node(&url, "web", &src2, Duration::from_secs(3600)).await;
    assert_eq!(read(&a, "web", "k").await, ("source", one));
    bounded(a.settle()).await.unwrap();
    assert_eq!(read(&b, "web", "k").await, ("source", two), "same namespace name and key, another source");
    assert_eq!((src1.counts("k").full, src2.counts("k").full), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_blob_is_missing_or_corrupt_is_a_miss() {
    let src = Source::start().await;
    let (gone, bad) = (bytes(703, 200_000), bytes(704, 300_000));
    src.put("gone", gone.clone());
    src.put("bad", bad.clone());
    let (store, url) = fs_store();
    let (_a, a) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    let (_b, b) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    read(&a, "web", "gone").await;
    read(&a, "web", "bad").await;
    bounded(a.settle()).await.unwrap();

    // The blob the record names is gone from the shared tier.
    let gone_hex = &sha256(&gone)["sha256:".len()..];
    for f in files_with(store.path(), gone_hex) {
        std::fs::remove_file(f).unwrap();
    }
    // The blob is there, but a byte of it is wrong.
    let bad_hex = &sha256(&bad)["sha256:".len()..];
    let blob =
        files_with(store.path(), bad_hex).into_iter().find(|p| !p.to_string_lossy().ends_with(".chunks")).unwrap();
    let mut damaged = std::fs::read(&blob).unwrap();
    damaged[10] ^= 0x01;
    std::fs::write(&blob, damaged).unwrap();

    assert_eq!(read(&b, "web", "gone").await, ("source", gone));
    assert_eq!(read(&b, "web", "bad").await, ("source", bad));
    assert_eq!((src.counts("gone").full, src.counts("bad").full), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_oversized_record_is_a_miss() {
    let src = Source::start().await;
    let (small, large) = (bytes(705, 10_000), bytes(706, 20_000));
    src.put("m", small.clone());
    src.put("o", large.clone());
    let (store, url) = fs_store();
    let (_a, a) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    let (_b, b) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    read(&a, "web", "m").await;
    read(&a, "web", "o").await;
    bounded(a.settle()).await.unwrap();
    let records = files_with(&store.path().join("entries"), "");
    assert_eq!(records.len(), 2, "one record per entry: {records:?}");
    for r in &records {
        let text = std::fs::read_to_string(r).unwrap();
        let replacement = if text.contains("\nkey m\n") {
            text.replacen("tiercache-entry 1", "tiercache-entry 1 ", 1)
        } else {
            format!("{text}{}", "x".repeat(1 << 20))
        };
        std::fs::write(r, replacement).unwrap();
    }
    assert_eq!(read(&b, "web", "m").await, ("source", small));
    assert_eq!(read(&b, "web", "o").await, ("source", large));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_record_is_revalidated_and_a_changed_source_gives_the_new_bytes() {
    let src = Source::start().await;
    let (v1, v2) = (bytes(707, 2 * (1 << 20) + 5), bytes(708, 1 << 20));
    src.put("doc", v1.clone());
    let (_store, url) = fs_store();
    let (_a, a) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    // B revalidates everything: every record is past its window.
    let (_b, b) = node(&url, "web", &src, Duration::ZERO).await;
    assert_eq!(read(&a, "web", "doc").await, ("source", v1.clone()));
    bounded(a.settle()).await.unwrap();

    // One conditional request, answered 304: served from the shared tier (B has no copy).
    assert_eq!(read(&b, "web", "doc").await, ("shared", v1.clone()));
    let c = src.counts("doc");
    assert_eq!((c.full, c.not_modified), (2, 1), "the first fetch and one conditional GET");

    src.put("doc", v2.clone());
    let (tier, got) = read(&b, "web", "doc").await;
    assert_eq!(tier, "source");
    assert!(got == v2, "the new bytes, never the old");
    bounded(b.settle()).await.unwrap();
    // A third node adopts the new record.
    let (_c, c) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    assert_eq!(read(&c, "web", "doc").await, ("shared", v2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_store_is_a_miss_not_an_error() {
    let Some(mut redis) = servers::or_skip("Redis", RedisServer::start()) else { return };
    let src = Source::start().await;
    let data = bytes(709, 500_000);
    src.put("k", data.clone());
    let url = format!("{}/records", redis.url());
    let (_a, a) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    let (_b, b) = node(&url, "web", &src, Duration::from_secs(3600)).await;
    assert_eq!(read(&a, "web", "k").await, ("source", data.clone()));
    bounded(a.settle()).await.unwrap();
    redis.kill();
    assert_eq!(read(&b, "web", "k").await, ("source", data));
    assert_eq!(src.counts("k").full, 2);
    b.flush().await.unwrap();
    assert_eq!(b.shared_counters().await.unwrap().get("record_errors"), Some(&1));
}
