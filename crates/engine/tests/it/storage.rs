//! Storage places: namespaces kept in a host directory of their own, and moving a namespace
//! between places (`ns migrate`) while it is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tiercache_engine::{Cache, CacheConfig, Digest, Error, NamespaceOptions, Place, PruneOptions};
use tiercache_testkit::{Source, bytes};

use crate::lifecycle::fetch as read;
use crate::{bounded, collect, setup, wait_until};

fn no_memory(c: &mut CacheConfig) {
    c.memory.is_enabled = false;
}

fn blob_in(root: &Path, content: &[u8]) -> PathBuf {
    let hex = Digest::of(content).hex();
    root.join("blobs/sha256").join(&hex[..2]).join(&hex)
}

fn stored_in(dir: &Path) -> NamespaceOptions {
    NamespaceOptions { storage: Some(dir.to_str().unwrap().to_owned()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_in_its_own_directory_keeps_its_blobs_there() {
    let src = Source::start().await;
    let (a, b) = (bytes(1, 300_000), bytes(2, 200_000));
    src.put("a", a.clone());
    src.put("b", b.clone());
    let (dir, cache) = setup(&src, no_memory).await;
    let data = dir.path().join("data");
    let own = dir.path().join("host/own");
    let (ns, created) = cache.create_namespace("own", Some(&src.url()), &stored_in(&own)).await.unwrap();
    assert!(created);
    assert_eq!(ns.options.storage.as_deref(), own.canonicalize().unwrap().to_str());

    assert_eq!(read(&cache, "web", "a").await, ("source", a.clone()));
    assert_eq!(read(&cache, "own", "a").await, ("source", a.clone()));
    assert_eq!(read(&cache, "own", "b").await, ("source", b.clone()));
    assert_eq!(read(&cache, "own", "b").await, ("disk", b.clone()));
    assert!(blob_in(&own, &a).is_file() && blob_in(&own, &b).is_file());
    assert!(blob_in(&data, &a).is_file(), "web's copy is in the disk tier");
    assert!(!blob_in(&data, &b).exists(), "own's blobs are not in the disk tier");
    assert_eq!(std::fs::read_dir(own.join("tmp")).unwrap().count(), 0);

    // df: the disk tier holds web's blob; own's bytes are in its directory.
    let u = cache.disk_usage().await.unwrap();
    assert_eq!((u.n_blobs, u.blob_bytes), (1, a.len() as u64));
    let own_usage = u.namespaces.iter().find(|n| n.name == "own").unwrap();
    assert_eq!(own_usage.storage, ns.options.storage);
    assert_eq!((own_usage.n_blobs, own_usage.blob_bytes), (2, (a.len() + b.len()) as u64));
    let info = cache.namespace("own").await.unwrap().unwrap();
    assert_eq!(info.storage, ns.options.storage);

    // Deleting web frees the disk tier's copy; own still has its own, and needs no source.
    cache.delete_namespace("web").await.unwrap();
    assert!(!blob_in(&data, &a).exists());
    assert_eq!(read(&cache, "own", "a").await, ("disk", a.clone()));
    assert_eq!(src.counts("a").full, 2, "one fetch per namespace");

    // Uploads into a namespace without a source land in its directory too.
    let drop_box = dir.path().join("host/drop");
    cache.create_namespace("drop", None, &stored_in(&drop_box)).await.unwrap();
    let up = bytes(3, 100_000);
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(up.clone()))]);
    cache.put_entry("drop", b"up", body).await.unwrap();
    assert!(blob_in(&drop_box, &up).is_file() && !blob_in(&data, &up).exists());
    assert_eq!(read(&cache, "drop", "up").await, ("disk", up.clone()));
    cache.delete_namespace("drop").await.unwrap();
    assert!(cache.verify(false, |_, _| {}).await.unwrap().is_clean(), "the disk tier and the index agree");

    // Creating it again keeps its place; another place is refused (that is `migrate`'s job).
    let (_, created) = cache.create_namespace("own", Some(&src.url()), &Default::default()).await.unwrap();
    assert!(!created);
    let elsewhere = stored_in(&dir.path().join("host/other"));
    let e = cache.create_namespace("own", Some(&src.url()), &elsewhere).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");

    // A new process knows where own's blobs are, and so does an index rebuilt from scratch.
    drop(cache);
    for index_file in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(data.join(index_file));
    }
    let cache = Cache::open(CacheConfig::new(&data)).await.unwrap();
    assert_eq!(cache.namespace("own").await.unwrap().unwrap().storage, ns.options.storage);
    assert_eq!(read(&cache, "own", "b").await, ("source", b.clone()), "entries are resolved again");
    assert_eq!(src.counts("b").full, 2);
    assert!(!blob_in(&data, &b).exists(), "the refetch lands in own's directory");

    // Deleting own removes its directory with everything in it.
    let removed = cache.delete_namespace("own").await.unwrap().unwrap();
    assert_eq!(removed.n_blobs, 2);
    assert!(!own.exists(), "the storage directory is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_clumsy_storage_directories_are_refused() {
    let src = Source::start().await;
    let (dir, cache) = setup(&src, no_memory).await;
    let data = dir.path().join("data");
    let busy = dir.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("precious.txt"), b"user data").unwrap();
    let taken = dir.path().join("taken");
    cache.create_namespace("taken", Some(&src.url()), &stored_in(&taken)).await.unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let file_url = format!("file://{}", root.display());
    cache.create_namespace("files", Some(&file_url), &Default::default()).await.unwrap();
    let link = dir.path().join("link-to-data");
    std::os::unix::fs::symlink(&data, &link).unwrap();

    let cases: Vec<(&str, String)> = vec![
        ("relative", "relative/dir".into()),
        ("data dir", data.display().to_string()),
        ("inside data dir", data.join("blobs/mine").display().to_string()),
        ("symlink to the data dir", link.display().to_string()),
        ("parent of data dir", dir.path().display().to_string()),
        ("not empty", busy.display().to_string()),
        ("another namespace's", taken.display().to_string()),
        ("inside another namespace's", taken.join("sub").display().to_string()),
        ("a directory source", root.join("x").display().to_string()),
    ];
    for (what, path) in cases {
        let opts = NamespaceOptions { storage: Some(path.clone()), ..Default::default() };
        let e = cache.create_namespace("victim", Some(&src.url()), &opts).await.unwrap_err();
        assert!(matches!(e, Error::Invalid(_) | Error::Conflict { .. } | Error::Containment { .. }), "{what}: {e}");
        assert!(cache.namespace("victim").await.unwrap().is_none(), "{what}: nothing created");
    }
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1, "the non-empty directory is untouched");
    assert_eq!(std::fs::read(busy.join("precious.txt")).unwrap(), b"user data");
    assert!(!data.join("blobs/mine").exists());

    // A directory namespace is served in place: it has no storage place to choose or move.
    let opts = stored_in(&dir.path().join("fresh"));
    let e = cache.create_namespace("files2", Some(&file_url), &opts).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    let e = cache.move_namespace("files", &Place::Managed).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e}");
    let e = cache.move_namespace("nope", &Place::Managed).await.unwrap_err();
    assert!(matches!(e, Error::NoNamespace(_)), "{e}");
    for bad in ["", "path:", "path:relative", "disk", "Managed", "path"] {
        assert!(bad.parse::<Place>().is_err(), "{bad:?} parsed");
    }
}

/// Readers loop over every key until told to stop, checking each body and counting each read
/// finished in `n_done`; returns the reads done and the failures seen.
fn spawn_readers(
    cache: &Cache,
    contents: &Arc<Vec<(String, Vec<u8>)>>,
    stop: &Arc<AtomicBool>,
    n_done: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<(u64, Vec<String>)>> {
    (0..4)
        .map(|r| {
            let (cache, contents, stop) = (cache.clone(), Arc::clone(contents), Arc::clone(stop));
            let n_done = Arc::clone(n_done);
            tokio::spawn(async move {
                let (mut n, mut failures) = (0u64, Vec::new());
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let (key, want) = &contents[i % contents.len()];
                    i += 1;
                    n += 1;
                    match cache.read_entry("web", key).await {
                        Ok(read) => match collect(read, None).await {
                            Ok(got) if got == *want => {}
                            Ok(got) => failures.push(format!("{key}: {} wrong bytes", got.len())),
                            Err(e) => failures.push(format!("{key}: body: {e}")),
                        },
                        Err(e) => failures.push(format!("{key}: {e}")),
                    }
                    n_done.fetch_add(1, Ordering::Relaxed);
                }
                (n, failures)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_namespace_back_and_forth_loses_nothing_and_no_read_fails() {
    let src = Source::start().await;
    let contents: Vec<(String, Vec<u8>)> =
        (0..12).map(|i| (format!("k{i}"), bytes(100 + i, 20_000 + 60_000 * i as usize))).collect();
    for (k, v) in &contents {
        src.put(k, v.clone());
    }
    let (dir, cache) = setup(&src, no_memory).await;
    let data = dir.path().join("data");
    // Another namespace names k0's bytes too: that blob stays in the disk tier throughout.
    cache.create_namespace("other", Some(&src.url()), &Default::default()).await.unwrap();
    read(&cache, "other", "k0").await;
    for (k, _) in &contents {
        read(&cache, "web", k).await;
    }
    let contents = Arc::new(contents);
    let stop = Arc::new(AtomicBool::new(false));
    let n_done = Arc::new(AtomicU64::new(0));
    let readers = spawn_readers(&cache, &contents, &stop, &n_done);

    let (d1, d2) = (dir.path().join("host/one"), dir.path().join("host/two"));
    let moves = [Place::Path(d1.clone()), Place::Path(d2.clone()), Place::Managed];
    let total_bytes: u64 = contents.iter().map(|(_, v)| v.len() as u64).sum();
    let migrations = AtomicU64::new(0);
    for to in &moves {
        // Each move starts with the readers at work: four more reads done since the last move.
        let before = n_done.load(Ordering::Relaxed);
        wait_until("the readers read on", async || n_done.load(Ordering::Relaxed) >= before + 4).await;
        let report = bounded(cache.move_namespace("web", to)).await.unwrap();
        migrations.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            report.to,
            match to {
                Place::Managed => "managed".to_owned(),
                Place::Path(p) => format!("path:{}", p.canonicalize().unwrap().display()),
            }
        );
        assert_eq!((report.n_blobs, report.n_missing), (12, 0), "{report:?}");
        let copied_expected = match to {
            Place::Managed => 11, // k0 never left the disk tier: other names it.
            Place::Path(_) => 12,
        };
        assert_eq!(report.n_copied, copied_expected, "{report:?}");
        let ns = cache.namespace("web").await.unwrap().unwrap();
        for (_, v) in contents.iter() {
            match to {
                Place::Path(p) => assert!(blob_in(p, v).is_file()),
                Place::Managed => assert!(blob_in(&data, v).is_file()),
            }
        }
        match to {
            Place::Path(p) => {
                assert_eq!(ns.storage, p.canonicalize().ok().and_then(|c| c.to_str().map(str::to_owned)))
            }
            Place::Managed => assert_eq!(ns.storage, None),
        }
    }
    // Managed → one: the disk tier kept only k0. one → two: one is gone. two → managed: two is gone.
    assert!(!d1.exists() && !d2.exists(), "old storage directories are removed");
    let u = cache.disk_usage().await.unwrap();
    assert_eq!(u.blob_bytes, total_bytes, "every blob is back in the disk tier, once");
    assert_eq!(u.n_orphans, 0);

    stop.store(true, Ordering::Relaxed);
    let mut n_reads = 0;
    for r in readers {
        let (n, failures) = r.await.unwrap();
        assert!(failures.is_empty(), "reads failed during the moves: {failures:?}");
        n_reads += n;
    }
    assert!(n_reads > 12, "the readers ran ({n_reads} reads)");
    for (k, _) in contents.iter() {
        let expected = if k == "k0" { 2 } else { 1 };
        assert_eq!(src.counts(k).full, expected, "{k} was fetched again: a byte was lost on the way");
    }
    assert!(cache.verify(false, |_, _| {}).await.unwrap().is_clean());
    assert_eq!(migrations.load(Ordering::Relaxed), 3);

    // Moving where it already is does nothing.
    let report = cache.move_namespace("web", &Place::Managed).await.unwrap();
    assert_eq!((report.n_copied, report.released_bytes), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruner_keeps_a_storage_directory_to_its_entries() {
    let src = Source::start().await;
    let contents: Vec<Vec<u8>> = (0..3).map(|i| bytes(200 + i, 50_000)).collect();
    for (i, v) in contents.iter().enumerate() {
        src.put(&format!("k{i}"), v.clone());
    }
    let (dir, cache) = setup(&src, no_memory).await;
    let own = dir.path().join("own");
    let opts = NamespaceOptions { max_entries: Some(2), ..stored_in(&own) };
    cache.create_namespace("own", Some(&src.url()), &opts).await.unwrap();
    for i in 0..3 {
        read(&cache, "own", &format!("k{i}")).await;
        // Distinct last-access times. Not synchronisation: the pruner orders entries by the wall
        // clock's millisecond of their last read, which a test cannot set for a read, so the clock
        // has to move between the reads (`fetch` has settled each read's access time already).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A blob left by a crash between rename and commit, and a dead process's temp file.
    let orphan = bytes(299, 10_000);
    let orphan_path = blob_in(&own, &orphan);
    std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    std::fs::write(&orphan_path, &orphan).unwrap();
    let temp = own.join("tmp/4194305-00000000deadbeef.part");
    std::fs::write(&temp, b"half a blob").unwrap();

    let dry = cache
        .prune(&PruneOptions { dry_run: true, orphan_grace: Some(Duration::ZERO), ..PruneOptions::all() })
        .await
        .unwrap();
    assert!(orphan_path.is_file() && temp.is_file() && blob_in(&own, &contents[0]).is_file(), "{dry:?}");
    let report =
        cache.prune(&PruneOptions { orphan_grace: Some(Duration::ZERO), ..PruneOptions::all() }).await.unwrap();
    let kinds: Vec<(&str, Option<String>)> = report.items.iter().map(|i| (i.kind, i.key.clone())).collect();
    assert!(kinds.contains(&("limit", Some("k0".into()))), "{kinds:?}");
    assert!(!blob_in(&own, &contents[0]).exists(), "the pruned entry's file is gone");
    assert!(!orphan_path.exists(), "the orphan is gone");
    assert!(!temp.exists(), "the dead temp file is gone");
    assert!(blob_in(&own, &contents[1]).is_file() && blob_in(&own, &contents[2]).is_file());
    assert_eq!(read(&cache, "own", "k2").await, ("disk", contents[2].clone()));
}
