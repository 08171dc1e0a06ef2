//! Directory namespaces against real directories built by the tests.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tiercache_engine::{
    Cache, CacheConfig, Error, ListRequest, NamespaceOptions, ReadMeta, ScanProgress, Tier, UpdateReport,
};

use crate::{bounded, collect, hex_md5, wait_until};

struct Fixture {
    _tmp: tempfile::TempDir,
    data: PathBuf,
    root: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (data, root) = (tmp.path().join("data"), tmp.path().join("tree"));
    std::fs::create_dir_all(&root).unwrap();
    Fixture { _tmp: tmp, data, root }
}

async fn open(f: &Fixture, tune: impl FnOnce(&mut CacheConfig)) -> Cache {
    let mut cfg = CacheConfig::new(&f.data);
    tune(&mut cfg);
    Cache::open(cfg).await.unwrap()
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Lets timestamps move past the window in which a just-written file counts as "racily clean"
/// (changed within 100 ms of being hashed, so hashed again by the next update).
///
/// This sleep is not synchronisation: the engine compares a file's ctime with the wall clock at
/// hashing, and a test cannot set a ctime back, so real time has to pass after the last write.
/// 150 ms after the last write the window has passed, whatever the machine's load.
async fn past_racy_window() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

async fn index(cache: &Cache, root: &Path, options: &NamespaceOptions) -> UpdateReport {
    past_racy_window().await;
    let progress = Arc::new(ScanProgress::default());
    bounded(cache.index_directory("d", root, options, true, progress)).await.unwrap()
}

async fn update(cache: &Cache, force: bool) -> UpdateReport {
    past_racy_window().await;
    bounded(cache.update_directory("d", force, Arc::new(ScanProgress::default()))).await.unwrap()
}

/// (added, changed, removed, unchanged)
fn counts(r: &UpdateReport) -> (u64, u64, u64, u64) {
    (r.n_added, r.n_changed, r.n_removed, r.n_unchanged)
}

async fn read(cache: &Cache, key: &[u8]) -> Result<(ReadMeta, Vec<u8>), Error> {
    let r = cache.read_entry_raw("d", key).await?;
    let meta = r.meta.clone();
    let bytes = collect(r, None).await.unwrap();
    Ok((meta, bytes))
}

async fn etag(cache: &Cache, key: &str) -> Option<String> {
    cache.read_entry("d", key).await.unwrap().meta.etag.map(|t| t.to_string())
}

async fn keys(cache: &Cache) -> Vec<String> {
    let page = cache.list("d", ListRequest { limit: 10_000, ..Default::default() }).await.unwrap();
    page.items.iter().map(|i| String::from_utf8_lossy(&i.key).into_owned()).collect()
}

#[tokio::test]
async fn update_reads_only_what_changed_and_sees_every_kind_of_change() {
    let f = fixture();
    for (k, v) in
        [("a", "alpha"), ("b", "bravo"), ("c", "charlie"), ("d/e", "echo"), ("f", "foxtrot"), ("keep", "same")]
    {
        write(&f.root, k, v.as_bytes());
    }
    let cache = open(&f, |_| {}).await;
    let r = index(&cache, &f.root, &NamespaceOptions::default()).await;
    assert_eq!((counts(&r), r.n_hashed, r.kind.as_str()), ((6, 0, 0, 0), 6, "index"));
    let r = update(&cache, false).await;
    assert_eq!((counts(&r), r.n_hashed), ((0, 0, 0, 6), 0), "no change reads nothing");

    // An edit that restores the old mtime (touch -r): size and mtime match, ctime does not.
    let a = f.root.join("a");
    let old_mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
    std::fs::write(&a, b"ALPHA").unwrap();
    std::fs::File::options().write(true).open(&a).unwrap().set_modified(old_mtime).unwrap();
    assert_eq!(std::fs::metadata(&a).unwrap().modified().unwrap(), old_mtime);
    // A same-second, same-size edit.
    std::fs::write(f.root.join("b"), b"BRAVO").unwrap();
    // A rename, a delete, a new file, a file replaced by a directory.
    std::fs::rename(f.root.join("c"), f.root.join("c2")).unwrap();
    std::fs::remove_file(f.root.join("d/e")).unwrap();
    write(&f.root, "new", b"november");
    std::fs::remove_file(f.root.join("f")).unwrap();
    write(&f.root, "f/g", b"golf");
    let r = update(&cache, false).await;
    assert_eq!(counts(&r), (3, 2, 3, 1), "{r:?}");
    assert_eq!(r.n_hashed, 5);
    assert_eq!(keys(&cache).await, ["a", "b", "c2", "f/g", "keep", "new"]);
    assert_eq!(etag(&cache, "a").await, Some(format!("\"{}\"", hex_md5(b"ALPHA"))));
    assert_eq!(etag(&cache, "b").await, Some(format!("\"{}\"", hex_md5(b"BRAVO"))));

    let r = update(&cache, true).await;
    assert_eq!((counts(&r), r.n_hashed, r.kind.as_str()), ((0, 6, 0, 0), 6, "force"));
    let stats = cache.stats(Some("d")).await.unwrap();
    let d = stats.stats.namespaces[0].directory.clone().unwrap();
    assert_eq!((d.n_files, d.n_unhashed, d.last_update_kind.as_deref()), (6, 0, Some("force")));
}

#[tokio::test]
async fn names_symlinks_and_sizes_that_trip_up_walkers() {
    let f = fixture();
    let outside = f._tmp.path().join("outside");
    write(&outside, "secret", b"do not serve");
    write(&f.root, "empty", b"");
    let latin1 = f.root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    std::fs::write(&latin1, b"non-utf8 name").unwrap();
    write(&f.root, "sub/real.txt", b"real");
    write(&f.root, "we%ird_*name", b"literal");
    std::os::unix::fs::symlink("sub/real.txt", f.root.join("link-in")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), f.root.join("link-out")).unwrap();
    std::os::unix::fs::symlink("../../outside/secret", f.root.join("sub/link-up")).unwrap();
    std::os::unix::fs::symlink(".", f.root.join("sub/loop-dir")).unwrap();
    std::os::unix::fs::symlink("l2", f.root.join("l1")).unwrap();
    std::os::unix::fs::symlink("l1", f.root.join("l2")).unwrap();
    let cache = open(&f, |_| {}).await;
    let r = index(&cache, &f.root, &NamespaceOptions::default()).await;
    assert_eq!((r.n_added, r.n_skipped), (5, 5), "{r:?}");
    assert_eq!(keys(&cache).await, ["caf\u{fffd}.txt", "empty", "link-in", "sub/real.txt", "we%ird_*name"]);

    let (rd, body) = read(&cache, b"caf\xe9.txt").await.unwrap();
    assert_eq!(
        (body.as_slice(), rd.etag.as_deref()),
        (&b"non-utf8 name"[..], Some(format!("\"{}\"", hex_md5(b"non-utf8 name")).as_str()))
    );
    let (rd, body) = read(&cache, b"empty").await.unwrap();
    assert_eq!((body.len(), rd.size_bytes), (0, Some(0)));
    assert_eq!(read(&cache, b"link-in").await.unwrap().1, b"real");
    for escape in [&b"link-out"[..], b"sub/link-up", b"sub/loop-dir/real.txt", b"l1", b"missing", b"sub"] {
        let e = read(&cache, escape).await.unwrap_err();
        assert!(matches!(e, Error::Source(tiercache_engine::SourceError::NotFound { .. })), "{escape:?}: {e}");
    }
    for hostile in [&b"../outside/secret"[..], b"/etc/passwd", b"sub/../../outside/secret", b"a\0b", b""] {
        assert!(matches!(read(&cache, hostile).await, Err(Error::Key(_))), "{hostile:?}");
    }
}

#[tokio::test]
async fn a_read_checks_markers_and_never_serves_a_stale_etag() {
    let f = fixture();
    write(&f.root, "doc.txt", b"version one");
    let cache = open(&f, |_| {}).await;
    index(&cache, &f.root, &NamespaceOptions::default()).await;
    let (rd, _) = read(&cache, b"doc.txt").await.unwrap();
    assert_eq!(rd.etag.as_deref(), Some(format!("\"{}\"", hex_md5(b"version one")).as_str()));
    assert_eq!(rd.content_type.as_deref(), Some("text/plain"));

    // Same size, mtime restored: only ctime tells.
    let p = f.root.join("doc.txt");
    let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
    std::fs::write(&p, b"version two").unwrap();
    std::fs::File::options().write(true).open(&p).unwrap().set_modified(mtime).unwrap();
    let (rd, body) = read(&cache, b"doc.txt").await.unwrap();
    assert_eq!(body, b"version two");
    assert_eq!(rd.etag.as_deref(), Some(format!("\"{}\"", hex_md5(b"version two")).as_str()), "rehashed on read");
    // The read cache followed.
    let page = cache.list("d", ListRequest { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.items[0].md5, Some(hex_md5(b"version two")));

    std::fs::remove_file(&p).unwrap();
    assert!(read(&cache, b"doc.txt").await.is_err());
    assert!(keys(&cache).await.is_empty(), "a file gone from the directory is gone from the read cache");
}

/// A file read once is held by the memory tier, and its next read needs neither the index nor a
/// blocking thread: here the runtime has one blocking thread, held busy, and the read completes
/// all the same. A file changed since (same size, mtime put back: only the ctime tells) is not
/// served from what is held: its read waits for the index like any first read, and answers the
/// new bytes and ETag once the thread is free.
#[test]
fn a_held_file_is_read_without_the_index_and_a_changed_one_is_not_served_from_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let f = fixture();
        write(&f.root, "sub/doc.txt", b"version one");
        let cache = open(&f, |_| {}).await;
        index(&cache, &f.root, &NamespaceOptions::default()).await;
        let etag_of = |b: &[u8]| Some(format!("\"{}\"", hex_md5(b)));
        // The first read checks the index, and holds the row.
        let (rd, _) = read(&cache, b"sub/doc.txt").await.unwrap();
        assert_eq!(rd.etag.as_deref().map(str::to_owned), etag_of(b"version one"));

        // Every blocking thread busy until released.
        let busy = || {
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let (started, running) = tokio::sync::oneshot::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || {
                let _ = started.send(());
                let _ = wait.recv();
            });
            (release, running, blocker)
        };
        let (release, running, blocker) = busy();
        bounded(running).await.unwrap();
        let (rd, body) = bounded(read(&cache, b"sub/doc.txt")).await.unwrap();
        assert_eq!(
            (rd.etag.as_deref().map(str::to_owned), body.as_slice()),
            (etag_of(b"version one"), &b"version one"[..])
        );
        let range = tiercache_engine::ByteRange { start: 8, end: 10 };
        let r = bounded(cache.read_entry_raw("d", b"sub/doc.txt")).await.unwrap();
        assert_eq!(bounded(collect(r, Some(range))).await.unwrap(), b"one");

        let p = f.root.join("sub/doc.txt");
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::fs::write(&p, b"version two").unwrap();
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(mtime).unwrap();
        let cache2 = cache.clone();
        let mut changed = tokio::spawn(async move { read(&cache2, b"sub/doc.txt").await });
        // Not answered from the held row: the read needs the index, on the busy thread.
        assert!(tokio::time::timeout(Duration::from_millis(300), &mut changed).await.is_err());
        release.send(()).unwrap();
        bounded(blocker).await.unwrap();
        let (rd, body) = bounded(changed).await.unwrap().unwrap();
        assert_eq!(
            (rd.etag.as_deref().map(str::to_owned), body.as_slice()),
            (etag_of(b"version two"), &b"version two"[..])
        );

        // Once past the racy window, the changed file is read the long way once more and held
        // again; a file gone is gone at once, held or not.
        past_racy_window().await;
        read(&cache, b"sub/doc.txt").await.unwrap();
        let (release, running, blocker) = busy();
        bounded(running).await.unwrap();
        let (rd, _) = bounded(read(&cache, b"sub/doc.txt")).await.unwrap();
        assert_eq!(rd.etag.as_deref().map(str::to_owned), etag_of(b"version two"));
        release.send(()).unwrap();
        bounded(blocker).await.unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(bounded(read(&cache, b"sub/doc.txt")).await, Err(Error::Source(_))));
    });
}

#[tokio::test]
async fn the_read_cache_resets_on_a_version_or_config_change_and_not_otherwise() {
    let f = fixture();
    write(&f.root, "x.log", b"log");
    write(&f.root, "x.txt", b"text");
    let cache = open(&f, |_| {}).await;
    index(&cache, &f.root, &NamespaceOptions::default()).await;
    drop(cache);

    let cache = open(&f, |_| {}).await;
    assert!(cache.open_notes().is_empty(), "{:?}", cache.open_notes());
    assert_eq!(counts(&update(&cache, false).await), (0, 0, 0, 2));
    drop(cache);

    let cache = open(&f, |c| c.version = "99.0.0-test".into()).await;
    let notes = cache.open_notes();
    assert!(notes.len() == 1 && notes[0].contains("version changed") && notes[0].contains("99.0.0-test"), "{notes:?}");
    assert_eq!(counts(&update(&cache, false).await), (2, 0, 0, 0), "rebuilt from scratch");
    drop(cache);
    let cache = open(&f, |c| c.version = "99.0.0-test".into()).await;
    assert!(cache.open_notes().is_empty(), "the reset happens once");

    let options = NamespaceOptions { ignore: vec!["*.log".into()], ..Default::default() };
    let r = index(&cache, &f.root, &options).await;
    assert!(r.reset.as_deref().is_some_and(|w| w.contains("configuration")), "{r:?}");
    assert_eq!(keys(&cache).await, ["x.txt"]);
    // copy-to-cache changes where bytes are kept, not what is indexed: no reset.
    let options = NamespaceOptions { ignore: vec!["*.log".into()], copy_to_cache: true, ..Default::default() };
    let r = index(&cache, &f.root, &options).await;
    assert_eq!((r.reset.clone(), counts(&r).3), (None, 1));
}

#[tokio::test]
async fn a_vanished_or_unreadable_root_is_an_error_and_keeps_the_read_cache() {
    let f = fixture();
    for i in 0..20 {
        write(&f.root, &format!("f{i}"), format!("file {i}").as_bytes());
    }
    let cache = open(&f, |_| {}).await;
    index(&cache, &f.root, &NamespaceOptions::default()).await;
    let moved = f._tmp.path().join("moved");
    std::fs::rename(&f.root, &moved).unwrap();
    let e = cache.update_directory("d", false, Arc::default()).await.unwrap_err();
    assert!(e.to_string().contains("cannot open directory"), "{e}");
    assert_eq!(keys(&cache).await.len(), 20, "nothing was taken as deleted");
    std::fs::rename(&moved, &f.root).unwrap();
    assert_eq!(counts(&update(&cache, false).await), (0, 0, 0, 20));
}

#[tokio::test]
async fn files_deleted_and_added_during_a_scan_converge() {
    let f = fixture();
    for i in 0..2000 {
        write(&f.root, &format!("d{}/f{i:05}", i % 20), &vec![b'x'; 4096 + i]);
    }
    let cache = open(&f, |_| {}).await;
    past_racy_window().await; // Before the changes start, so that they do not land in its pause.
    let progress = Arc::new(ScanProgress::default());
    let churn = {
        let (root, progress) = (f.root.clone(), Arc::clone(&progress));
        std::thread::spawn(move || {
            // The changes start once the scan has: they land while it walks and hashes.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while progress.n_walked.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                assert!(std::time::Instant::now() < deadline, "waited 30 s, and still not: the scan has started");
                std::thread::sleep(Duration::from_millis(1));
            }
            for i in (0..2000).step_by(3) {
                let _ = std::fs::remove_file(root.join(format!("d{}/f{i:05}", i % 20)));
                let _ = std::fs::write(root.join(format!("d{}/new{i:05}", i % 20)), b"new");
            }
            let _ = std::fs::remove_dir_all(root.join("d7"));
        })
    };
    bounded(cache.index_directory("d", &f.root, &NamespaceOptions::default(), true, progress)).await.unwrap();
    churn.join().unwrap();
    update(&cache, false).await;
    let mut on_disk = Vec::new();
    for d in std::fs::read_dir(&f.root).unwrap().flatten() {
        for e in std::fs::read_dir(d.path()).unwrap().flatten() {
            on_disk.push(format!("{}/{}", d.file_name().to_string_lossy(), e.file_name().to_string_lossy()));
        }
    }
    on_disk.sort();
    assert_eq!(keys(&cache).await, on_disk);
    let stats = cache.stats(Some("d")).await.unwrap().stats.namespaces[0].directory.clone().unwrap();
    assert_eq!(stats.n_unhashed, 0);
}

#[tokio::test]
async fn writes_go_to_the_directory_first_and_stay_inside_it() {
    let f = fixture();
    let cache = open(&f, |_| {}).await;
    index(&cache, &f.root, &NamespaceOptions::default()).await;
    let body = |b: &'static [u8]| futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b))]);
    let stored = cache.put_entry("d", b"deep/er/file.bin", body(b"payload")).await.unwrap();
    assert_eq!(stored.md5, hex_md5(b"payload"));
    assert_eq!(std::fs::read(f.root.join("deep/er/file.bin")).unwrap(), b"payload");
    assert_eq!(
        read(&cache, b"deep/er/file.bin").await.unwrap().0.etag.as_deref(),
        Some(format!("\"{}\"", stored.md5).as_str())
    );
    for hostile in [&b"../escape"[..], b"/abs", b"a/./b", b"a//b"] {
        assert!(matches!(cache.put_entry("d", hostile, body(b"x")).await, Err(Error::Key(_))), "{hostile:?}");
    }
    std::os::unix::fs::symlink(f._tmp.path(), f.root.join("out")).unwrap();
    assert!(cache.put_entry("d", b"out/escape", body(b"x")).await.is_err());
    assert!(!f._tmp.path().join("escape").exists());
    assert!(matches!(cache.put_entry("d", b"deep", body(b"x")).await, Err(Error::Conflict { .. })), "a directory");
    assert!(cache.delete_entry("d", b"deep/er/file.bin").await.unwrap());
    assert!(!f.root.join("deep/er/file.bin").exists());
    assert!(!cache.delete_entry("d", b"deep/er/file.bin").await.unwrap());
    assert!(!keys(&cache).await.contains(&"deep/er/file.bin".to_owned()));
    let leftovers: Vec<_> = std::fs::read_dir(f.root.join("deep/er")).unwrap().flatten().collect();
    assert!(leftovers.is_empty(), "no temp file left behind");
    cache.create_namespace("web", Some("http://127.0.0.1:9/"), &Default::default()).await.unwrap();
    assert!(matches!(cache.put_entry("web", b"k", body(b"x")).await, Err(Error::ReadOnly { .. })));
}

#[tokio::test]
async fn copy_to_cache_serves_later_reads_from_the_disk_tier() {
    let f = fixture();
    write(&f.root, "big.bin", &tiercache_testkit::bytes(7, 3 << 20));
    let cache = open(&f, |_| {}).await;
    index(&cache, &f.root, &NamespaceOptions { copy_to_cache: true, ..Default::default() }).await;
    let (first, body) = read(&cache, b"big.bin").await.unwrap();
    assert_eq!((first.tier, body.len()), (Tier::Source, 3 << 20));
    wait_until("the copy serves from the disk tier", async || {
        read(&cache, b"big.bin").await.unwrap().0.tier == Tier::Disk
    })
    .await;
    let (rd, body) = read(&cache, b"big.bin").await.unwrap();
    assert_eq!(rd.etag.as_deref(), Some(format!("\"{}\"", hex_md5(&body)).as_str()));
    assert_eq!(body, tiercache_testkit::bytes(7, 3 << 20));
    // A changed file is never served from the old copy.
    std::fs::write(f.root.join("big.bin"), b"changed").unwrap();
    let (rd, body) = read(&cache, b"big.bin").await.unwrap();
    assert_eq!((rd.tier, body.as_slice()), (Tier::Source, &b"changed"[..]));
}

#[tokio::test]
async fn the_watcher_sees_create_modify_delete_and_rename() {
    let f = fixture();
    write(&f.root, "old.txt", b"old");
    let cache = open(&f, |c| c.watch_debounce = Duration::from_millis(50)).await;
    index(&cache, &f.root, &NamespaceOptions { ignore: vec!["**/*.swp".into()], ..Default::default() }).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.watch_directories(&[], async { stop_rx.await.unwrap_or(()) }).await })
    };
    // The watcher sets up its watch, then reconciles the directory with the index, then applies
    // events: a file indexed after the watcher started was seen by one or the other, so from then
    // on the watch is in place and the first reconcile done.
    write(&f.root, "ready.txt", b"probe");
    wait_until("the watcher is running", async || keys(&cache).await.contains(&"ready.txt".to_owned())).await;
    std::fs::remove_file(f.root.join("ready.txt")).unwrap();
    wait_until("a deleted probe file is dropped", async || keys(&cache).await == ["old.txt"]).await;

    write(&f.root, "made.txt", b"created");
    write(&f.root, "edit.swp", b"ignored");
    wait_until("a created file is indexed", async || keys(&cache).await.contains(&"made.txt".to_owned())).await;
    std::fs::write(f.root.join("made.txt"), b"modified!").unwrap();
    let want = format!("\"{}\"", hex_md5(b"modified!"));
    wait_until("a modified file is rehashed", async || {
        let page =
            cache.list("d", ListRequest { prefix: b"made".to_vec(), limit: 1, ..Default::default() }).await.unwrap();
        page.items.first().and_then(|i| i.md5.clone()).map(|m| format!("\"{m}\"")) == Some(want.clone())
    })
    .await;
    std::fs::rename(f.root.join("made.txt"), f.root.join("renamed.txt")).unwrap();
    wait_until("a rename moves the row", async || keys(&cache).await == ["old.txt", "renamed.txt"]).await;
    std::fs::remove_file(f.root.join("old.txt")).unwrap();
    wait_until("a delete removes the row", async || keys(&cache).await == ["renamed.txt"]).await;
    // A whole directory moved in from outside the root.
    let staged = f._tmp.path().join("staged");
    write(&staged, "x/1", b"one");
    write(&staged, "x/2", b"two");
    std::fs::rename(&staged, f.root.join("moved-in")).unwrap();
    wait_until("a directory moved in is indexed", async || keys(&cache).await.len() == 3).await;
    std::fs::remove_dir_all(f.root.join("moved-in")).unwrap();
    wait_until("a directory removed is dropped", async || keys(&cache).await == ["renamed.txt"]).await;
    let _ = stop_tx.send(());
    bounded(watcher).await.unwrap().unwrap();
}

#[tokio::test]
async fn listing_is_paged_byte_exact_and_works_for_every_namespace_kind() {
    let f = fixture();
    for k in ["a/1", "a/2", "a%/3", "b", "B"] {
        write(&f.root, k, k.as_bytes());
    }
    let cache = open(&f, |_| {}).await;
    index(&cache, &f.root, &NamespaceOptions::default()).await;
    let req = ListRequest { delimiter: Some(b"/".to_vec()), limit: 2, ..Default::default() };
    let page = cache.list("d", req.clone()).await.unwrap();
    let cps: Vec<_> = page.common_prefixes.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    assert_eq!((cps, page.items.len(), page.is_truncated), (vec!["a%/".to_owned()], 1, true));
    let page2 = cache.list("d", ListRequest { after: page.last.clone(), ..req.clone() }).await.unwrap();
    let k2: Vec<_> = page2.items.iter().map(|i| String::from_utf8_lossy(&i.key).into_owned()).collect();
    let c2: Vec<_> = page2.common_prefixes.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    assert_eq!((c2, k2, page2.is_truncated), (vec!["a/".to_owned()], vec!["b".to_owned()], false));
    assert!(matches!(cache.list("d", ListRequest { limit: 0, ..Default::default() }).await, Err(Error::Invalid(_))));
    cache.create_namespace("plain", None, &Default::default()).await.unwrap();
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"v"))]);
    cache.put_entry("plain", b"x/y", body).await.unwrap();
    let page =
        cache.list("plain", ListRequest { prefix: b"x/".to_vec(), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.len(), 1);
}
