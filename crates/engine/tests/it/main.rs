//! Engine integration tests: the read path against a real HTTP source on 127.0.0.1.

mod define;
mod directory;
mod etag;
mod fetching;
mod lifecycle;
mod multipart;
mod records;
mod registry_options;
mod s3_source;
mod storage;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tiercache_engine::{ByteRange, Cache, CacheConfig, Digest, Error, PutOptions, Read, SourceError};
use tiercache_testkit::{Behavior, Source, bytes};

/// A cache over a fresh data directory with one namespace `web` bound to `source`.
async fn setup(source: &Source, tune: impl FnOnce(&mut CacheConfig)) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CacheConfig::new(dir.path().join("data"));
    tune(&mut cfg);
    let cache = Cache::open(cfg).await.unwrap();
    cache.create_namespace("web", Some(&source.url()), &Default::default()).await.unwrap();
    (dir, cache)
}

async fn collect(read: Read, range: Option<ByteRange>) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    let mut s = read.into_stream(range);
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Guards against a hang; never used to assert how fast something is.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f).await.expect("operation hung")
}

/// Waits until `cond` holds, checking every 10 ms; panics naming `what` if it still does not
/// after 30 s. The bound only guards against a hang: nothing is asserted about how long it took.
async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(std::time::Instant::now() < deadline, "waited 30 s, and still not: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether some thread is blocked in `flock` on a file directly under `dir`: `/proc/locks` shows a
/// waiter as a line with `->`, naming the file by device (hex major:minor) and inode. A waiter in
/// this very process shows up too, as long as it locks through an open of its own.
fn has_lock_waiter(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(files) = std::fs::read_dir(dir) else { return false };
    let ids: Vec<(u64, u64, u64)> = files
        .flatten()
        .filter_map(|f| f.metadata().ok())
        .map(|m| {
            let dev = m.dev();
            let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
            let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
            (major, minor, m.ino())
        })
        .collect();
    let locks = std::fs::read_to_string("/proc/locks").expect("read /proc/locks");
    locks.lines().filter(|l| l.split_whitespace().nth(1) == Some("->")).any(|l| {
        let id = l.split_whitespace().find_map(|t| {
            let mut parts = t.split(':');
            let (major, minor, ino) = (parts.next()?, parts.next()?, parts.next()?);
            Some((u64::from_str_radix(major, 16).ok()?, u64::from_str_radix(minor, 16).ok()?, ino.parse().ok()?))
        });
        id.is_some_and(|id| ids.contains(&id))
    })
}

/// Files under `<data>/tmp` and `<data>/blobs`, and index entries: what a failed fetch must not leave.
async fn leftovers(dir: &tempfile::TempDir, cache: &Cache) -> (usize, usize, u64) {
    let tmp = std::fs::read_dir(dir.path().join("data/tmp")).unwrap().count();
    let blobs = walk(&dir.path().join("data/blobs"));
    let entries = cache.stats(None).await.unwrap().stats.n_entries;
    (tmp, blobs, entries)
}

fn walk(p: &std::path::Path) -> usize {
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_serves_the_same_bytes_from_disk() {
    let src = Source::start().await;
    let data = bytes(1, 300_000);
    src.put("dir/file.bin", data.clone());
    let (_d, cache) = setup(&src, |_| {}).await;

    let first = cache.read_entry("web", "dir/file.bin").await.unwrap();
    assert_eq!(first.meta.tier.as_str(), "source");
    assert_eq!(
        first.meta.etag.as_deref(),
        src.etag("dir/file.bin").as_deref(),
        "a cold read carries the source's ETag"
    );
    assert_eq!(bounded(collect(first, None)).await.unwrap(), data);

    // The fetch is committed before the flight reports done; poll the index, not the clock.
    let second = loop {
        let r = cache.read_entry("web", "dir/file.bin").await.unwrap();
        if r.meta.tier.as_str() == "disk" {
            break r;
        }
        bounded(collect(r, None)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(second.meta.digest, Some(Digest::of(&data)));
    assert_eq!(bounded(collect(second, None)).await.unwrap(), data);
    // The MD5 is computed beside the fetch, and never waited for: once it is in, hits carry it.
    bounded(cache.settle()).await.unwrap();
    let md5 = format!("\"{}\"", hex_md5(&data));
    let third = cache.read_entry("web", "dir/file.bin").await.unwrap();
    assert_eq!(third.meta.etag.as_deref(), Some(md5.as_str()), "a disk hit carries the MD5 ETag");
    assert_eq!(src.counts("dir/file.bin").full, 1);

    let blob = cache.read_blob(&Digest::of(&data)).await.unwrap();
    let part = collect(blob, Some(ByteRange { start: 1000, end: 1999 })).await.unwrap();
    assert_eq!(part, &data[1000..2000]);
}

fn hex_md5(data: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_misses_make_one_source_fetch() {
    let src = Source::start().await;
    let data = bytes(2, 2 << 20);
    src.put("big", data.clone());
    // The source stalls after the first 64 KiB until every reader has joined.
    src.set_behavior("big", Behavior::StallAfter(64 * 1024));
    let (_d, cache) = setup(&src, |_| {}).await;

    let joined = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..64 {
        let (cache, joined) = (cache.clone(), Arc::clone(&joined));
        readers.push(tokio::spawn(async move {
            let read = cache.read_entry("web", "big").await.unwrap();
            joined.fetch_add(1, Ordering::SeqCst);
            collect(read, None).await.unwrap()
        }));
    }
    // While the source is stalled no fetch can finish, so a reader that has its headers has
    // joined a fetch under way (a second fetch would be counted below). Once all 64 have, let
    // the source finish.
    wait_until("all 64 readers have joined the fetch", async || joined.load(Ordering::SeqCst) == 64).await;
    src.release();
    for r in readers {
        assert_eq!(bounded(r).await.unwrap(), data);
    }
    assert_eq!(src.counts("big").full, 1, "64 concurrent misses must make exactly one source fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_get_bytes_while_the_fetch_is_still_running() {
    let src = Source::start().await;
    let data = bytes(3, 1 << 20);
    src.put("slow", data.clone());
    src.set_behavior("slow", Behavior::StallAfter(200 * 1024));
    let (_d, cache) = setup(&src, |_| {}).await;

    let read = cache.read_entry("web", "slow").await.unwrap();
    let mut stream = read.into_stream(None);
    let mut got = Vec::new();
    // The source is stalled (not released): these bytes can only come from the running fetch.
    while got.len() < 200 * 1024 {
        got.extend_from_slice(&bounded(stream.next()).await.unwrap().unwrap());
    }
    assert_eq!(&got[..], &data[..got.len()]);
    src.release();
    while let Some(chunk) = bounded(stream.next()).await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_range_does_not_wait_for_the_whole_blob() {
    let src = Source::start().await;
    let data = bytes(4, 16 << 20);
    src.put("huge", data.clone());
    src.set_behavior("huge", Behavior::StallAfter(64 * 1024));
    let (_d, cache) = setup(&src, |_| {}).await;

    let read = cache.read_entry("web", "huge").await.unwrap();
    assert_eq!(read.meta.size_bytes, Some(16 << 20));
    let r = ByteRange { start: 15 << 20, end: (15 << 20) + 9999 };
    // The whole-blob fetch is stalled at 64 KiB; the range must still arrive.
    let part = bounded(collect(read, Some(r))).await.unwrap();
    assert_eq!(part, &data[r.start as usize..=r.end as usize]);
    assert_eq!(src.counts("huge").ranged, 1);
    src.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_range_is_cut_correctly_when_the_source_ignores_range() {
    let src = Source::start().await;
    src.set_honors_range(false);
    let data = bytes(5, 12 << 20);
    src.put("huge", data.clone());
    src.set_behavior("huge", Behavior::Slow(Duration::from_millis(1)));
    let (_d, cache) = setup(&src, |_| {}).await;
    let read = cache.read_entry("web", "huge").await.unwrap();
    let r = ByteRange { start: 10 << 20, end: (10 << 20) + 123_456 };
    let part = bounded(collect(read, Some(r))).await.unwrap();
    assert_eq!(part, &data[r.start as usize..=r.end as usize]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_failures_are_clear_errors_and_leave_nothing_behind() {
    let src = Source::start().await;
    let data = bytes(6, 256 * 1024);
    let (dir, cache) = setup(&src, |c| {
        c.http.read_timeout = Duration::from_millis(300);
        c.http.connect_timeout = Duration::from_millis(300);
    })
    .await;

    // Failures before any body byte: the read itself fails.
    src.put("gone", data.clone());
    src.remove("gone");
    let e = cache.read_entry("web", "gone").await.unwrap_err();
    assert!(matches!(e, Error::Source(SourceError::NotFound { .. })), "{e}");
    src.set_behavior("boom", Behavior::Status(500));
    let e = cache.read_entry("web", "boom").await.unwrap_err();
    assert!(matches!(e, Error::Source(SourceError::Status { status: 500, .. })), "{e}");
    src.set_behavior("hang", Behavior::Hang);
    let e = bounded(cache.read_entry("web", "hang")).await.unwrap_err();
    assert!(matches!(e, Error::Source(SourceError::Timeout { .. })), "{e}");

    // Failures mid-body: the headers were sent, so the body stream ends with an error (or, when
    // the flight failed before this reader joined it, the read itself fails).
    for (key, behavior) in [
        ("closed", Behavior::CloseAfter(100_000)),
        ("short", Behavior::ShortBy(1000)),
        ("stalled", Behavior::StallAfter(10_000)),
    ] {
        src.put(key, data.clone());
        src.set_behavior(key, behavior);
        let result = match cache.read_entry("web", key).await {
            Ok(read) => bounded(collect(read, None)).await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        assert!(result.is_err(), "{key}: a broken body must not look complete");
    }
    // Let the failed flights finish cleaning up, then check nothing is left.
    bounded(async {
        loop {
            let (tmp, blobs, entries) = leftovers(&dir, &cache).await;
            if tmp == 0 {
                assert_eq!((blobs, entries), (0, 0));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // And a later read of a healthy key still works.
    src.put("fine", data.clone());
    let read = cache.read_entry("web", "fine").await.unwrap();
    assert_eq!(collect(read, None).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_its_content_length_is_never_stored_as_the_object() {
    let src = Source::start().await;
    let data = bytes(7, 100_000);
    src.put("long", data.clone());
    src.set_behavior("long", Behavior::LongBy(1000));
    let (_d, cache) = setup(&src, |_| {}).await;
    let read = cache.read_entry("web", "long").await.unwrap();
    // HTTP framing ends the message at Content-Length: the declared bytes are what is served, and
    // the trailing junk never becomes part of any blob.
    let got = bounded(collect(read, None)).await.unwrap();
    assert_eq!(got, &data[..data.len() - 1000]);
    // Whatever the fetch stores is committed once it settles: only then does a missing blob show
    // that it was never stored, not that it was not stored yet.
    bounded(cache.settle()).await.unwrap();
    assert!(cache.read_blob(&Digest::of(&data)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_are_revalidated_and_changes_are_picked_up() {
    let src = Source::start().await;
    let (v1, v2) = (bytes(8, 50_000), bytes(9, 60_000));
    src.put("doc", v1.clone());
    let (_d, cache) = setup(&src, |c| c.revalidate_after = Duration::ZERO).await;

    assert_eq!(collect(cache.read_entry("web", "doc").await.unwrap(), None).await.unwrap(), v1);
    wait_for_disk(&cache, "doc").await;
    let c = src.counts("doc");
    // Two GETs without Range: the first fetch, and a conditional one answered 304.
    assert_eq!((c.full, c.not_modified), (2, 1), "the disk read above revalidated with a 304");

    src.put("doc", v2.clone());
    let read = cache.read_entry("web", "doc").await.unwrap();
    assert_eq!(read.meta.tier.as_str(), "source");
    assert_eq!(collect(read, None).await.unwrap(), v2);
    assert_eq!(src.counts("doc").full, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_entries_are_served_without_asking_the_source() {
    let src = Source::start().await;
    src.put("doc", bytes(10, 1000));
    let (_d, cache) = setup(&src, |c| c.revalidate_after = Duration::from_secs(3600)).await;
    collect(cache.read_entry("web", "doc").await.unwrap(), None).await.unwrap();
    wait_for_disk(&cache, "doc").await;
    // Once its MD5 (computed beside the fetch, never waited for) is in, a disk hit of a small
    // blob keeps it in the memory tier, which serves the later reads.
    bounded(cache.settle()).await.unwrap();
    let tiers: Vec<_> = read_tiers(&cache).await;
    assert!(tiers.iter().all(|t| ["disk", "memory"].contains(t)), "{tiers:?}");
    assert_eq!(tiers[1..], ["memory"; 4], "{tiers:?}");
    let c = src.counts("doc");
    assert_eq!((c.full, c.not_modified, c.ranged), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_entry_overwritten_or_deleted_is_not_served_from_memory() {
    let src = Source::start().await;
    let (_d, cache) = setup(&src, |_| {}).await;
    cache.create_namespace("up", None, &Default::default()).await.unwrap();
    let put = |data: &'static [u8]| {
        let cache = cache.clone();
        async move {
            let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(data))]);
            cache.put_entry("up", b"k", body).await.unwrap()
        }
    };
    let read = || async { cache.read_entry("up", "k").await.map(|r| r.meta.tier.as_str()) };
    put(b"one").await;
    assert_eq!((read().await.unwrap(), read().await.unwrap()), ("disk", "memory"));
    put(b"two").await;
    let r = cache.read_entry("up", "k").await.unwrap();
    assert_eq!((r.meta.tier.as_str(), collect(r, None).await.unwrap()), ("disk", b"two".to_vec()));
    assert_eq!(read().await.unwrap(), "memory");
    assert!(cache.delete_entry("up", b"k").await.unwrap());
    assert!(matches!(read().await, Err(Error::NoEntry { .. })), "a deleted entry is gone from memory too");
}

async fn read_tiers(cache: &Cache) -> Vec<&'static str> {
    let mut tiers = Vec::new();
    for _ in 0..5 {
        let r = cache.read_entry("web", "doc").await.unwrap();
        tiers.push(r.meta.tier.as_str());
        collect(r, None).await.unwrap();
    }
    tiers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_blob_vanished_is_fetched_again() {
    let src = Source::start().await;
    let data = bytes(11, 5000);
    src.put("k", data.clone());
    // Without the memory tier, which would still hold the small blob.
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    collect(cache.read_entry("web", "k").await.unwrap(), None).await.unwrap();
    wait_for_disk(&cache, "k").await;
    let hex = Digest::of(&data).hex();
    std::fs::remove_file(dir.path().join("data/blobs/sha256").join(&hex[..2]).join(&hex)).unwrap();
    let read = cache.read_entry("web", "k").await.unwrap();
    assert_eq!(read.meta.tier.as_str(), "source");
    assert_eq!(collect(read, None).await.unwrap(), data);
    assert_eq!(src.counts("k").full, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_verified_and_a_mismatch_stores_nothing() {
    let src = Source::start().await;
    let (dir, cache) = setup(&src, |_| {}).await;
    let data = bytes(12, 70_000);
    let d = Digest::of(&data);
    let body = |b: Vec<u8>| {
        futures::stream::iter(
            b.chunks(4096).map(|c| Ok::<_, String>(bytes::Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
        )
    };

    let e = cache.put_blob(&d, body(bytes(13, 70_000))).await.unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    assert_eq!(leftovers(&dir, &cache).await.0, 0);
    assert_eq!(walk(&dir.path().join("data/blobs")), 0);

    assert!(cache.put_blob(&d, body(data.clone())).await.unwrap());
    assert!(!cache.put_blob(&d, body(data.clone())).await.unwrap());
    assert_eq!(collect(cache.read_blob(&d).await.unwrap(), None).await.unwrap(), data);
    // Uploaded blobs are retained by cleanup: they may be the only copy.
    let report = cache.cleanup(None, None).await.unwrap();
    assert_eq!(report.n_blobs, 0);
    assert!(cache.read_blob(&d).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_entry_uploads_are_stored_alike() {
    use md5::Digest as _;
    let src = Source::start().await;
    let (dir, cache) = setup(&src, |_| {}).await;
    cache.create_namespace("up", None, &Default::default()).await.unwrap();
    let body = |b: &[u8]| {
        let chunks: Vec<_> = b.chunks(4096).map(|c| Ok::<_, String>(bytes::Bytes::copy_from_slice(c))).collect();
        futures::stream::iter(chunks)
    };
    // Sizes either side of the 64 KiB held in memory, and none at all.
    let sizes = [0usize, 1, 4096, 65_536, 65_537, 300_000];
    for (i, &size) in sizes.iter().enumerate() {
        let data = bytes(40 + i as u64, size);
        let key = format!("k{size}");
        let opts = PutOptions {
            content_type: Some("text/x-test".into()),
            attrs: Some(format!("{{\"n\":{size}}}")),
            is_create_only: true,
        };
        let stored = cache.put_entry_with("up", key.as_bytes(), body(&data), opts.clone()).await.unwrap();
        assert_eq!(stored.size_bytes, size as u64);
        assert_eq!(stored.digest, Digest::of(&data), "{size} bytes");
        assert_eq!(stored.md5, hex::encode(md5::Md5::digest(&data)), "{size} bytes");
        let read = cache.read_entry("up", &key).await.unwrap();
        assert_eq!(read.meta.content_type.as_deref(), Some("text/x-test"));
        assert_eq!(collect(read, None).await.unwrap(), data, "{size} bytes");
        // The attributes came with the entry, in its own transaction.
        assert_eq!(cache.entry_attrs("up", key.as_bytes()).await.unwrap(), opts.attrs);
        // Create-only: the key has an entry now.
        let again = cache.put_entry_with("up", key.as_bytes(), body(&data), opts).await.unwrap_err();
        assert!(matches!(again, Error::Exists { .. }), "{size} bytes: {again}");
    }
    let blobs = walk(&dir.path().join("data/blobs"));
    assert_eq!(blobs, sizes.len());
    // The same small bytes under another key: one more entry, no second file, no temp file left.
    let data = bytes(41, 1);
    let stored = cache.put_entry("up", b"same", body(&data)).await.unwrap();
    assert_eq!(stored.digest, Digest::of(&data));
    assert_eq!(collect(cache.read_entry("up", "same").await.unwrap(), None).await.unwrap(), data);
    assert_eq!(walk(&dir.path().join("data/blobs")), blobs);
    // A rewrite without attributes clears the old ones.
    cache.put_entry("up", b"k1", body(b"new")).await.unwrap();
    assert_eq!(cache.entry_attrs("up", b"k1").await.unwrap(), None);
    let blobs = walk(&dir.path().join("data/blobs"));

    // A body that fails, small or past the memory limit, stores nothing.
    for size in [100usize, 200_000] {
        let data = bytes(50, size);
        let failing = body(&data).chain(futures::stream::iter([Err::<bytes::Bytes, _>("client went away".to_owned())]));
        let e = cache.put_entry("up", b"failed", failing).await.unwrap_err();
        assert!(matches!(e, Error::UploadBody { .. }), "{size} bytes: {e}");
        assert!(cache.read_entry("up", "failed").await.is_err());
    }
    assert_eq!(leftovers(&dir, &cache).await.0, 0, "no temp file is left");
    assert_eq!(walk(&dir.path().join("data/blobs")), blobs, "no blob was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_unknown_namespaces_are_refused() {
    let src = Source::start().await;
    let (_d, cache) = setup(&src, |_| {}).await;
    for key in ["../etc/passwd", "a/../../b", "/abs", "a\\b", "a\0b", "", "a//b"] {
        let e = cache.read_entry("web", key).await.unwrap_err();
        assert!(matches!(e, Error::Key(_)), "{key:?}: {e}");
    }
    let e = cache.read_entry("nope", "k").await.unwrap_err();
    assert!(matches!(e, Error::NoNamespace(_)), "{e}");
    for ns in ["..", "A", "a/b", ""] {
        assert!(cache.create_namespace(ns, None, &Default::default()).await.is_err(), "{ns:?}");
    }
    assert!(matches!(
        cache.create_namespace("x", Some("ftp://host/"), &Default::default()).await,
        Err(Error::Invalid(_))
    ));
    assert_eq!(src.counts("etc/passwd").full, 0);
}

async fn wait_for_disk(cache: &Cache, key: &str) {
    bounded(async {
        loop {
            let r = cache.read_entry("web", key).await.unwrap();
            let tier = r.meta.tier.as_str();
            collect(r, None).await.unwrap();
            if tier == "disk" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop. `None` (with the reason
/// printed) when this process may not mount; as root, failing to mount fails the test.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        if out.status.success() {
            return Some(SmallDisk { dir });
        }
        let is_root = std::fs::read_to_string("/proc/self/status")
            .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
            .unwrap_or(false);
        let why = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!is_root, "running as root but cannot mount a small tmpfs for the full-disk test: {why}");
        eprintln!("SKIPPED: the full-disk test needs to mount a tmpfs (run as root): {why}");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let Some(disk) = SmallDisk::mount("3m") else { return };
    let src = Source::start().await;
    let cache = Cache::open(CacheConfig::new(disk.dir.path().join("data"))).await.unwrap();
    cache.create_namespace("web", Some(&src.url()), &Default::default()).await.unwrap();
    let small = bytes(20, 100_000);
    src.put("small", small.clone());
    assert_eq!(collect(cache.read_entry("web", "small").await.unwrap(), None).await.unwrap(), small);

    // Too big for what is left: the file system's free space is checked before the write, so the
    // entry is served pass-through from its source, whole and correct, and nothing is stored.
    let big_entry = bytes(21, 8 << 20);
    src.put("big", big_entry.clone());
    let read = cache.read_entry("web", "big").await.unwrap();
    assert_eq!(read.meta.tier.as_str(), "source");
    assert!(collect(read, None).await.unwrap() == big_entry, "wrong bytes served pass-through");
    assert_eq!(cache.quota_stats().n_pass_through, 1);
    assert!(cache.quota_stats().last_pass_through.unwrap().contains("bytes free"));
    // An upload (length unknown in advance) fails with a clear full-disk error instead.
    let big = bytes(22, 8 << 20);
    let body = futures::stream::iter(
        big.chunks(65536).map(|c| Ok::<_, String>(bytes::Bytes::copy_from_slice(c))).collect::<Vec<_>>(),
    );
    let e = cache.put_blob(&Digest::of(&big), body).await.unwrap_err();
    assert!(matches!(e, Error::StorageFull { .. }), "{e}");

    bounded(async {
        while std::fs::read_dir(disk.dir.path().join("data/tmp")).unwrap().count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // What was stored before is intact, and the space is usable again.
    let stats = cache.stats(None).await.unwrap().stats;
    assert_eq!((stats.n_entries, stats.n_blobs), (1, 1));
    assert_eq!(collect(cache.read_entry("web", "small").await.unwrap(), None).await.unwrap(), small);
    let report = cache.verify(false, |_, _| {}).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    drop(cache);
}

/// Two `Cache`s on one data directory stand for two processes: their flight maps are separate,
/// so only the fetch lock in the data directory can keep them from fetching twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_data_directory_fetch_once() {
    let src = Source::start().await;
    let data = bytes(30, 1 << 20);
    src.put("shared", data.clone());
    src.set_behavior("shared", Behavior::StallAfter(64 * 1024));
    let (dir, a) = setup(&src, |_| {}).await;
    let b = Cache::open(CacheConfig::new(dir.path().join("data"))).await.unwrap();

    let first = a.read_entry("web", "shared").await.unwrap();
    let reader_a = tokio::spawn(collect(first, None));
    let b2 = b.clone();
    let reader_b = tokio::spawn(async move { collect(b2.read_entry("web", "shared").await.unwrap(), None).await });
    // The source stays stalled until the second process is blocked on the fetch lock the first
    // one's fetch holds: released any earlier, the second could find the entry already stored and
    // never contend for the lock at all.
    let locks = dir.path().join("data/locks");
    wait_until("the second process waits on the fetch lock", async || has_lock_waiter(&locks)).await;
    src.release();
    assert_eq!(bounded(reader_a).await.unwrap().unwrap(), data);
    let got_b = bounded(reader_b).await.unwrap().unwrap();
    assert_eq!(got_b, data);
    assert_eq!(src.counts("shared").full, 1, "the second process waited and read the first one's copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_hits_carry_the_md5_etag() {
    let src = Source::start().await;
    let data = bytes(40, 3 << 20);
    src.put("m", data.clone());
    let (_d, cache) = setup(&src, |_| {}).await;
    collect(cache.read_entry("web", "m").await.unwrap(), None).await.unwrap();
    // The fetch is committed: every read from here on is a hit.
    bounded(cache.settle()).await.unwrap();
    let reads: Vec<_> = futures::future::join_all((0..8).map(|_| {
        let cache = cache.clone();
        async move { cache.read_entry("web", "m").await.map(|r| (r.meta.tier.as_str(), r.meta.etag)) }
    }))
    .await;
    let md5 = format!("\"{}\"", hex_md5(&data));
    for r in reads {
        let (tier, etag) = r.unwrap();
        assert!(["disk", "memory"].contains(&tier), "a read after the commit went to the {tier}");
        assert_eq!(etag.as_deref(), Some(md5.as_str()), "a {tier} hit without the MD5 ETag");
    }
    assert_eq!(src.counts("m").full, 1);
}
