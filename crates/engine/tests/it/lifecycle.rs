//! The disk tier's lifecycle: the quota and eviction, namespace deletion, the pruner (orphans,
//! temp files, age, limits, owners, its timer) and `df`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tiercache_engine::{
    Cache, CacheConfig, Digest, Error, NamespaceOptions, NamespaceUsage, OwnerCheck, PruneOptions, PruneReport,
};
use tiercache_testkit::{Behavior, Source, bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{bounded, collect, setup, walk};

/// The size of most blobs here: above the memory tier's blob limit, a quarter of a MiB.
const S: usize = 256 * 1024;

/// A disk quota of `quota` bytes, no protection of new blobs, and no memory tier (so that every
/// hit is a disk read that holds its blob).
fn tight(quota: u64) -> impl FnOnce(&mut CacheConfig) {
    move |c| {
        c.memory.is_enabled = false;
        c.disk.quota_bytes = Some(quota);
        c.disk.protect_new = Duration::ZERO;
    }
}

fn data_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data")
}

fn blob_path(data: &Path, d: &Digest) -> PathBuf {
    let hex = d.hex();
    data.join("blobs/sha256").join(&hex[..2]).join(&hex)
}

/// Whether the disk tier holds a file for the blob of `content`.
fn has_blob(dir: &tempfile::TempDir, content: &[u8]) -> bool {
    blob_path(&data_dir(dir), &Digest::of(content)).is_file()
}

/// Writes `content` into the disk tier by hand, as a published blob.
fn plant_blob(data: &Path, content: &[u8]) -> PathBuf {
    let path = blob_path(data, &Digest::of(content));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    path
}

/// Sum of the sizes of the files under `p` (files vanishing meanwhile count as nothing).
fn file_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => file_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes of blobs and temp files. `blobs/` first: a file renamed from `tmp/` meanwhile is missed
/// rather than counted twice.
fn bytes_on_disk(data: &Path) -> u64 {
    file_bytes(&data.join("blobs")) + file_bytes(&data.join("tmp"))
}

/// Reads `ns/key` whole, then waits until a fetch it started is stored. Returns the tier that
/// served it and the bytes.
pub(crate) async fn fetch(cache: &Cache, ns: &str, key: &str) -> (&'static str, Vec<u8>) {
    let read = cache.read_entry(ns, key).await.unwrap();
    let tier = read.meta.tier.as_str();
    let got = bounded(collect(read, None)).await.unwrap();
    bounded(cache.settle()).await.unwrap();
    (tier, got)
}

async fn n_entries(cache: &Cache, ns: &str) -> u64 {
    cache.namespace(ns).await.unwrap().unwrap_or_else(|| panic!("no namespace {ns}")).n_entries
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Runs one statement on the index database, as another process would.
fn sql(data: &Path, stmt: &str, params: impl rusqlite::Params) -> usize {
    let c = rusqlite::Connection::open(data.join("index.db")).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute(stmt, params).unwrap()
}

fn kinds(report: &PruneReport) -> Vec<(&'static str, Option<String>, Option<String>)> {
    report.items.iter().map(|i| (i.kind, i.namespace.clone(), i.key.clone())).collect()
}

fn usage_of<'a>(usage: &'a [NamespaceUsage], name: &str) -> &'a NamespaceUsage {
    usage.iter().find(|u| u.name == name).unwrap_or_else(|| panic!("no usage for {name}: {usage:?}"))
}

fn upload_body(data: &[u8]) -> impl futures::Stream<Item = Result<bytes::Bytes, String>> + Send + use<> {
    let chunks: Vec<_> = data.chunks(64 * 1024).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(chunks)
}

/// A source that sends every body chunked, without a Content-Length: the cache learns a body's
/// size only at its end (and reserves quota in steps meanwhile).
struct ChunkedSource {
    addr: std::net::SocketAddr,
    objects: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChunkedSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChunkedSource {
    async fn start() -> ChunkedSource {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let objects: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>> = Arc::default();
        let objs = Arc::clone(&objects);
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { continue };
                let objs = Arc::clone(&objs);
                tokio::spawn(async move {
                    let _ = serve_chunked(sock, objs).await;
                });
            }
        });
        ChunkedSource { addr, objects, task }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn put(&self, key: &str, data: Vec<u8>) {
        self.objects.lock().unwrap().insert(key.to_owned(), Arc::new(data));
    }
}

async fn serve_chunked(
    mut sock: tokio::net::TcpStream,
    objects: Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let path = text.split(' ').nth(1).unwrap_or("/").trim_start_matches('/').to_owned();
    let found = objects.lock().unwrap().get(&path).cloned();
    let Some(data) = found else {
        sock.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
        return sock.shutdown().await;
    };
    let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-test\r\n\
                ETag: \"chunked\"\r\nConnection: close\r\n\r\n";
    sock.write_all(head.as_bytes()).await?;
    for piece in data.chunks(64 * 1024) {
        sock.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).await?;
        sock.write_all(piece).await?;
        sock.write_all(b"\r\n").await?;
    }
    sock.write_all(b"0\r\n\r\n").await?;
    sock.flush().await?;
    sock.shutdown().await
}

// ---- the quota ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_quota_holds_under_32_concurrent_writers() {
    const QUOTA: u64 = 2 << 20;
    const SIZE: usize = 200 * 1024;
    const KEYS: usize = 64;
    let src = Source::start().await;
    let chunked = ChunkedSource::start().await;
    let (dir, cache) = setup(&src, tight(QUOTA)).await;
    cache.create_namespace("chunked", Some(&chunked.url()), &Default::default()).await.unwrap();
    // Every fourth entry comes without a Content-Length.
    let mut objects = Vec::new();
    for i in 0..KEYS {
        let (key, data) = (format!("k{i}"), bytes(1000 + i as u64, SIZE));
        let ns = if i % 4 == 3 {
            chunked.put(&key, data.clone());
            "chunked"
        } else {
            src.put(&key, data.clone());
            "web"
        };
        objects.push((ns, key, data));
    }
    let objects = Arc::new(objects);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, data) = (Arc::clone(&stop), data_dir(&dir));
        std::thread::spawn(move || {
            let (mut max, mut n) = (0, 0u64);
            while !stop.load(Ordering::Relaxed) {
                max = bytes_on_disk(&data).max(max);
                n += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            (max, n)
        })
    };
    // Each round reads 32 entries at once: half of them read in the round before, half not.
    for round in 0..4 {
        let readers: Vec<_> = (0..32)
            .map(|t| {
                let (cache, objects) = (cache.clone(), Arc::clone(&objects));
                tokio::spawn(async move {
                    let (ns, key, data) = &objects[(t + round * 16) % KEYS];
                    let read = cache.read_entry(ns, key).await.unwrap();
                    let got = collect(read, None).await.unwrap();
                    assert!(got == *data, "{ns}/{key}: wrong bytes ({} of {})", got.len(), data.len());
                })
            })
            .collect();
        for r in readers {
            bounded(r).await.unwrap();
        }
    }
    bounded(cache.settle()).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let (max, n_samples) = sampler.join().unwrap();

    assert!(n_samples > 10, "the sampler barely ran ({n_samples} samples)");
    assert!(max <= QUOTA + (1 << 20), "{max} bytes on disk at one point; quota {QUOTA} + one 1 MiB step");
    let q = cache.quota_stats();
    assert!(q.n_evicted > 0, "{q:?}");
    assert_eq!(q.reserved_bytes, 0, "{q:?}");
    assert!(q.used_bytes <= QUOTA, "{q:?}");
    assert!(bytes_on_disk(&data_dir(&dir)) <= QUOTA);
    // What the quota accounts is what the disk tier holds.
    assert_eq!(q.used_bytes, file_bytes(&data_dir(&dir).join("blobs")), "{q:?}");
}

/// A quota of four and a half blobs of [`S`] bytes: storing a fifth evicts exactly one.
const FOUR_AND_A_HALF: u64 = 4 * S as u64 + S as u64 / 2;

/// Puts `keys` on `src`, each [`S`] bytes, and returns their contents by key.
fn put_all(src: &Source, seed: u64, keys: &[&str]) -> HashMap<String, Vec<u8>> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let data = bytes(seed + i as u64, S);
            src.put(k, data.clone());
            (k.to_string(), data)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_a_frequently_read_blob_and_takes_a_one_hit_one() {
    let src = Source::start().await;
    let v = put_all(&src, 100, &["a", "b", "c", "d", "e"]);
    let (dir, cache) = setup(&src, tight(FOUR_AND_A_HALF)).await;
    for k in ["a", "b", "c", "d"] {
        assert_eq!(fetch(&cache, "web", k).await, ("source", v[k].clone()));
    }
    for _ in 0..3 {
        assert_eq!(fetch(&cache, "web", "a").await, ("disk", v["a"].clone()));
    }
    cache.flush().await.unwrap(); // The reads reach the eviction policy.

    assert_eq!(fetch(&cache, "web", "e").await, ("source", v["e"].clone()));
    let on_disk: Vec<bool> = ["a", "b", "c", "d", "e"].iter().map(|k| has_blob(&dir, &v[*k])).collect();
    assert_eq!(on_disk, [true, false, true, true, true], "a was read, b only stored: b goes");
    let q = cache.quota_stats();
    assert_eq!((q.n_evicted, q.evicted_bytes, q.n_evicted_entries), (1, S as u64, 1), "{q:?}");
    assert_eq!(q.used_bytes, 4 * S as u64);
    // The evicted entry is fetched again.
    assert_eq!(fetch(&cache, "web", "b").await, ("source", v["b"].clone()));
    assert_eq!(src.counts("b").full, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_blob_is_not_the_first_victim() {
    let src = Source::start().await;
    let v = put_all(&src, 110, &["a", "b", "c", "d", "e"]);
    let (dir, cache) = setup(&src, tight(FOUR_AND_A_HALF)).await;
    for k in ["a", "b", "c"] {
        fetch(&cache, "web", k).await;
    }
    for k in ["a", "b", "c"] {
        assert_eq!(fetch(&cache, "web", k).await.0, "disk");
    }
    cache.flush().await.unwrap();
    // d is stored last and never read: by its reads alone it would go first.
    fetch(&cache, "web", "d").await;
    fetch(&cache, "web", "e").await;
    let on_disk: Vec<bool> = ["a", "b", "c", "d", "e"].iter().map(|k| has_blob(&dir, &v[*k])).collect();
    assert_eq!(on_disk, [false, true, true, true, true], "the newest blob (d) went before older ones");
    assert_eq!(cache.quota_stats().n_evicted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_read_and_uploaded_blobs_are_never_evicted_and_a_full_quota_passes_through() {
    let src = Source::start().await;
    let v = put_all(&src, 120, &["p", "h1", "h2", "x", "y", "w1", "w2", "w3"]);
    let (dir, cache) = setup(&src, tight(FOUR_AND_A_HALF)).await;
    let upload = bytes(129, S);
    assert!(cache.put_blob(&Digest::of(&upload), upload_body(&upload)).await.unwrap());
    fetch(&cache, "web", "p").await;
    assert!(cache.pin("web", Some("p")).await.unwrap());
    fetch(&cache, "web", "h1").await;
    fetch(&cache, "web", "h2").await;
    assert_eq!(cache.quota_stats().used_bytes, 4 * S as u64);

    // Two reads under way (their bodies not yet read): with the pin and the upload, nothing is
    // evictable, so the next miss is served from the source and not stored.
    let held1 = cache.read_entry("web", "h1").await.unwrap();
    let held2 = cache.read_entry("web", "h2").await.unwrap();
    assert_eq!((held1.meta.tier.as_str(), held2.meta.tier.as_str()), ("disk", "disk"));
    let (tier, got) = fetch(&cache, "web", "x").await;
    assert_eq!((tier, got == v["x"]), ("source", true));
    assert!(!has_blob(&dir, &v["x"]), "a pass-through read stores nothing");
    assert_eq!(n_entries(&cache, "web").await, 3);
    let q = cache.quota_stats();
    assert_eq!((q.n_pass_through, q.n_evicted), (1, 0), "{q:?}");
    let why = q.last_pass_through.unwrap_or_default();
    assert!(why.contains("cannot be evicted"), "{why}");
    for k in ["p", "h1", "h2"] {
        assert!(has_blob(&dir, &v[k]), "{k}");
    }
    assert!(has_blob(&dir, &upload));

    // Once a read is done with its blob, that blob is the one to go.
    assert_eq!(collect(held1, None).await.unwrap(), v["h1"]);
    assert_eq!(fetch(&cache, "web", "y").await.0, "source");
    assert!(has_blob(&dir, &v["y"]));
    assert!(!has_blob(&dir, &v["h1"]), "h1 is no longer read: evicted");
    assert!(has_blob(&dir, &v["h2"]), "h2 is still being read");
    drop(held2);

    // More misses evict what they must, never the pinned entry's blob or the upload.
    for k in ["w1", "w2", "w3"] {
        assert_eq!(fetch(&cache, "web", k).await.0, "source");
        assert!(has_blob(&dir, &v[k]), "{k} was stored");
        assert!(has_blob(&dir, &v["p"]) && has_blob(&dir, &upload), "after {k}");
        assert!(cache.quota_stats().used_bytes <= FOUR_AND_A_HALF);
    }
    assert_eq!(cache.quota_stats().n_evicted, 4);
    assert_eq!(fetch(&cache, "web", "p").await, ("disk", v["p"].clone()));
    assert_eq!(collect(cache.read_blob(&Digest::of(&upload)).await.unwrap(), None).await.unwrap(), upload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_full_of_new_blobs_admits_the_next_and_evicts_the_oldest_new_one() {
    let src = Source::start().await;
    let v = put_all(&src, 130, &["a", "b", "c", "d", "e", "f"]);
    let (dir, cache) = setup(&src, |c| {
        tight(FOUR_AND_A_HALF)(c);
        c.disk.protect_new = Duration::from_secs(3600);
    })
    .await;
    for k in ["a", "b", "c", "d"] {
        fetch(&cache, "web", k).await;
    }
    // Every blob is new: the oldest of them yields to the one just read, which is stored.
    assert_eq!(fetch(&cache, "web", "e").await, ("source", v["e"].clone()));
    let on_disk: Vec<bool> = ["a", "b", "c", "d", "e"].iter().map(|k| has_blob(&dir, &v[*k])).collect();
    assert_eq!(on_disk, [false, true, true, true, true]);
    let q = cache.quota_stats();
    assert_eq!((q.n_evicted, q.n_evicted_new, q.n_pass_through), (1, 1, 0), "{q:?}");
    assert_eq!(fetch(&cache, "web", "e").await, ("disk", v["e"].clone()));
    assert_eq!(src.counts("e").full, 1);
    // A new blob being read stays; the oldest one not being read goes instead.
    let held = cache.read_entry("web", "b").await.unwrap();
    assert_eq!(fetch(&cache, "web", "f").await.0, "source");
    let on_disk: Vec<bool> = ["b", "c", "d", "e", "f"].iter().map(|k| has_blob(&dir, &v[*k])).collect();
    assert_eq!(on_disk, [true, false, true, true, true]);
    assert_eq!(collect(held, None).await.unwrap(), v["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_larger_than_the_whole_quota_passes_through() {
    let src = Source::start().await;
    let small = bytes(140, S);
    let big = bytes(141, 2 << 20);
    src.put("small", small.clone());
    src.put("big", big.clone());
    let (dir, cache) = setup(&src, tight(1 << 20)).await;
    fetch(&cache, "web", "small").await;

    let (tier, got) = fetch(&cache, "web", "big").await;
    assert_eq!((tier, got == big), ("source", true));
    assert!(!has_blob(&dir, &big));
    assert!(has_blob(&dir, &small), "nothing is evicted for a blob that cannot fit anyway");
    let q = cache.quota_stats();
    assert_eq!((q.n_evicted, q.n_pass_through, q.used_bytes), (0, 1, S as u64), "{q:?}");
    let why = q.last_pass_through.unwrap_or_default();
    assert!(why.contains("larger than the whole disk quota"), "{why}");
    assert_eq!(std::fs::read_dir(data_dir(&dir).join("tmp")).unwrap().count(), 0);
    // Again: still not stored, still the right bytes.
    assert_eq!(fetch(&cache, "web", "big").await, ("source", big));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_larger_than_the_quota_still_reaches_the_reader() {
    let chunked = ChunkedSource::start().await;
    let big = bytes(142, 3 << 20);
    chunked.put("big", big.clone());
    let src = Source::start().await;
    let (dir, cache) = setup(&src, tight(1 << 20)).await;
    cache.create_namespace("chunked", Some(&chunked.url()), &Default::default()).await.unwrap();
    // Two readers of one flight: one goes on with the flight's own body once the quota is full,
    // the other asks the source again and skips what it already has.
    let (first, second) = tokio::join!(cache.read_entry("chunked", "big"), cache.read_entry("chunked", "big"));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!((first.meta.size_bytes, second.meta.size_bytes), (None, None));
    let (got, got2) = bounded(async { tokio::join!(collect(first, None), collect(second, None)) }).await;
    bounded(cache.settle()).await.unwrap();
    assert!(got.as_ref().is_ok_and(|g| *g == big), "{:?}", got.map(|g| g.len()));
    assert!(got2.as_ref().is_ok_and(|g| *g == big), "{:?}", got2.map(|g| g.len()));
    assert!(cache.quota_stats().n_pass_through >= 1);
    assert!(!has_blob(&dir, &big));
    assert_eq!(std::fs::read_dir(data_dir(&dir).join("tmp")).unwrap().count(), 0);
}

// ---- the maximum object size ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_past_the_max_object_size_is_passed_through() {
    const MAX: u64 = 300 * 1024;
    let chunked = ChunkedSource::start().await;
    let big = bytes(143, 3 * MAX as usize);
    let small = bytes(144, MAX as usize);
    chunked.put("big", big.clone());
    chunked.put("small", small.clone());
    let src = Source::start().await;
    let (dir, cache) = setup(&src, |c| {
        tight(64 << 20)(c);
        c.max_object_bytes = MAX;
    })
    .await;
    cache.create_namespace("chunked", Some(&chunked.url()), &Default::default()).await.unwrap();
    // Two readers of one flight: both get every byte, though the flight stops storing at the limit.
    let (first, second) = tokio::join!(cache.read_entry("chunked", "big"), cache.read_entry("chunked", "big"));
    let (first, second) = (first.unwrap(), second.unwrap());
    let (got, got2) = bounded(async { tokio::join!(collect(first, None), collect(second, None)) }).await;
    bounded(cache.settle()).await.unwrap();
    assert!(got.as_ref().is_ok_and(|g| *g == big), "{:?}", got.map(|g| g.len()));
    assert!(got2.as_ref().is_ok_and(|g| *g == big), "{:?}", got2.map(|g| g.len()));
    let q = cache.quota_stats();
    // Once per flight: a reader that comes after the flight has handed its body on (a busy
    // machine can delay it that long) starts a flight of its own, passed through as well.
    assert!((1..=2).contains(&q.n_pass_through), "{q:?}");
    assert_eq!((q.used_bytes, q.reserved_bytes), (0, 0), "{q:?}");
    assert!(q.last_pass_through.as_deref().is_some_and(|r| r.contains("maximum object size")), "{q:?}");
    assert!(!has_blob(&dir, &big));
    assert_eq!(std::fs::read_dir(data_dir(&dir).join("tmp")).unwrap().count(), 0);
    // One of exactly the maximum size is stored.
    assert_eq!(fetch(&cache, "chunked", "small").await, ("source", small.clone()));
    assert!(has_blob(&dir, &small));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_the_max_object_size_are_cut_and_store_nothing() {
    const MAX: u64 = 200 * 1024;
    let src = Source::start().await;
    let (dir, cache) = setup(&src, |c| {
        tight(8 << 20)(c);
        c.max_object_bytes = MAX;
    })
    .await;
    cache.create_namespace("up", None, &Default::default()).await.unwrap();
    let files = tempfile::tempdir().unwrap();
    let root = format!("file://{}", files.path().display());
    cache.create_namespace("files", Some(&root), &Default::default()).await.unwrap();
    let big = bytes(145, MAX as usize + 1);
    let too_large = |r: Result<_, Error>| matches!(r, Err(Error::TooLarge { declared_bytes: None, max_bytes: MAX }));
    assert!(too_large(cache.put_blob(&Digest::of(&big), upload_body(&big)).await.map(|_| ())));
    assert!(too_large(cache.put_entry("up", b"big", upload_body(&big)).await.map(|_| ())));
    assert!(too_large(cache.put_entry("files", b"big", upload_body(&big)).await.map(|_| ())));
    assert!(matches!(cache.check_object_size(MAX + 1), Err(Error::TooLarge { declared_bytes: Some(_), .. })));
    cache.check_object_size(MAX).unwrap();
    let q = cache.quota_stats();
    assert_eq!((q.used_bytes, q.reserved_bytes), (0, 0), "{q:?}");
    assert!(!has_blob(&dir, &big));
    assert_eq!(std::fs::read_dir(data_dir(&dir).join("tmp")).unwrap().count(), 0);
    let left: Vec<_> = std::fs::read_dir(files.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the directory namespace kept {left:?}");
    // The maximum itself is accepted everywhere.
    let fits = &big[..MAX as usize];
    cache.put_blob(&Digest::of(fits), upload_body(fits)).await.unwrap();
    cache.put_entry("up", b"fits", upload_body(fits)).await.unwrap();
    cache.put_entry("files", b"fits", upload_body(fits)).await.unwrap();
    assert_eq!(std::fs::read(files.path().join("fits")).unwrap(), fits);
}

// ---- namespaces ----

/// Namespaces `web` and `web2` on one source: `a` only in `web`, `b` only in `web2`, and
/// `shared` (the same bytes) in both.
async fn two_namespaces_sharing_a_blob(
    sizes: (usize, usize, usize),
) -> (Source, tempfile::TempDir, Cache, [Vec<u8>; 3]) {
    let src = Source::start().await;
    let (a, b, shared) = (bytes(200, sizes.0), bytes(201, sizes.1), bytes(202, sizes.2));
    src.put("a", a.clone());
    src.put("b", b.clone());
    src.put("shared", shared.clone());
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    cache.create_namespace("web2", Some(&src.url()), &Default::default()).await.unwrap();
    for (ns, key) in [("web", "a"), ("web", "shared"), ("web2", "b"), ("web2", "shared")] {
        fetch(&cache, ns, key).await;
    }
    (src, dir, cache, [a, b, shared])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_keeps_the_blobs_another_one_names() {
    let (src, dir, cache, [a, b, shared]) = two_namespaces_sharing_a_blob((300_000, 500_000, 400_000)).await;
    assert_eq!(walk(&data_dir(&dir).join("blobs")), 3);

    let report = cache.delete_namespace("web").await.unwrap().expect("web existed");
    assert_eq!((report.n_entries, report.n_blobs, report.bytes), (2, 1, a.len() as u64));
    assert!(!has_blob(&dir, &a), "web's own blob is gone");
    assert!(has_blob(&dir, &shared) && has_blob(&dir, &b));
    assert!(!data_dir(&dir).join("namespaces/web.json").exists());
    assert!(matches!(cache.read_entry("web", "a").await, Err(Error::NoNamespace(_))));
    // The shared blob is still served to the other namespace, from disk.
    assert_eq!(fetch(&cache, "web2", "shared").await, ("disk", shared.clone()));
    assert_eq!(src.counts("shared").full, 2, "one fetch per namespace, none after the delete");
    assert!(cache.delete_namespace("web").await.unwrap().is_none(), "deleting again is a no-op");
    assert_eq!(cache.quota_stats().used_bytes, (b.len() + shared.len()) as u64, "the deleted blob left the account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_mid_read_lets_the_reads_finish_and_leaves_nothing() {
    let src = Source::start().await;
    let (big, pending) = (bytes(210, 8 << 20), bytes(211, 8 << 20));
    src.put("big", big.clone());
    src.put("pending", pending.clone());
    src.set_behavior("pending", Behavior::StallAfter(256 * 1024));
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    fetch(&cache, "web", "big").await;

    // A read of a stored entry, part way through; and a fetch stalled part way through.
    let read = cache.read_entry("web", "big").await.unwrap();
    assert_eq!(read.meta.tier.as_str(), "disk");
    let mut stored = read.into_stream(None);
    let mut got_stored = bounded(stored.next()).await.unwrap().unwrap().to_vec();
    let read = cache.read_entry("web", "pending").await.unwrap();
    assert_eq!(read.meta.tier.as_str(), "source");
    let mut fetching = read.into_stream(None);
    let mut got_fetching = Vec::new();
    while got_fetching.len() < 256 * 1024 {
        got_fetching.extend_from_slice(&bounded(fetching.next()).await.unwrap().unwrap());
    }

    let report = cache.delete_namespace("web").await.unwrap().expect("web existed");
    assert_eq!((report.n_entries, report.n_blobs), (1, 1));
    while let Some(chunk) = bounded(stored.next()).await {
        got_stored.extend_from_slice(&chunk.unwrap());
    }
    assert!(got_stored == big, "the stored entry's read ended with {} bytes", got_stored.len());
    src.release();
    while let Some(chunk) = bounded(fetching.next()).await {
        got_fetching.extend_from_slice(&chunk.unwrap());
    }
    assert!(got_fetching == pending, "the fetch's read ended with {} bytes", got_fetching.len());
    bounded(cache.settle()).await.unwrap();

    // The fetch stored its blob with no entry (the namespace is gone): an orphan, pruned.
    let opts = PruneOptions { orphans: true, orphan_grace: Some(Duration::ZERO), ..Default::default() };
    let pruned = prune_until(&cache, &opts, |r| r.items.iter().any(|i| i.digest == Some(Digest::of(&pending)))).await;
    assert_eq!(kinds(&pruned), [("orphan", None, None)]);
    assert_eq!(pruned.freed_bytes, pending.len() as u64);
    assert!(!has_blob(&dir, &big) && !has_blob(&dir, &pending));
    assert_eq!(walk(&data_dir(&dir).join("blobs")), 0);
    assert_eq!(std::fs::read_dir(data_dir(&dir).join("tmp")).unwrap().count(), 0);
    assert_eq!(cache.stats(None).await.unwrap().stats.n_blobs, 0);
}

/// Prunes until `done` holds for a report (bounded). A blob's age is in whole milliseconds, so a
/// grace of zero takes a blob created in the current millisecond on the next pass only.
async fn prune_until(cache: &Cache, opts: &PruneOptions, done: impl Fn(&PruneReport) -> bool) -> PruneReport {
    bounded(async {
        loop {
            let report = cache.prune(opts).await.unwrap();
            if done(&report) {
                return report;
            }
            assert!(report.items.is_empty(), "pruned something else first: {report:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn df_splits_shared_blobs_between_namespaces() {
    let (_src, _dir, cache, [a, b, shared]) = two_namespaces_sharing_a_blob((300_000, 500_000, 400_000)).await;
    let (a, b, sh) = (a.len() as u64, b.len() as u64, shared.len() as u64);
    let u = cache.disk_usage().await.unwrap();
    assert_eq!((u.n_blobs, u.blob_bytes, u.n_orphans, u.n_uploads, u.pinned_bytes), (3, a + b + sh, 0, 0, 0));
    let web = usage_of(&u.namespaces, "web");
    assert_eq!((web.n_entries, web.entry_bytes, web.n_blobs, web.blob_bytes), (2, a + sh, 2, a + sh));
    assert_eq!((web.unique_bytes, web.shared_bytes, web.attributed_bytes), (a, sh, a + sh / 2));
    let web2 = usage_of(&u.namespaces, "web2");
    assert_eq!((web2.unique_bytes, web2.shared_bytes, web2.attributed_bytes), (b, sh, b + sh / 2));
    let attributed: u64 = u.namespaces.iter().map(|n| n.attributed_bytes).sum();
    assert_eq!(attributed, u.blob_bytes, "attributed bytes sum to the referenced bytes");
    assert!(!web.is_pinned && web.n_pinned_keys == 0);

    cache.pin("web2", None).await.unwrap();
    cache.pin("web", Some("a")).await.unwrap();
    let u = cache.disk_usage().await.unwrap();
    assert_eq!(u.pinned_bytes, a + b + sh);
    let (web, web2) = (usage_of(&u.namespaces, "web"), usage_of(&u.namespaces, "web2"));
    assert_eq!((web.is_pinned, web.n_pinned_keys, web2.is_pinned, web2.n_pinned_keys), (false, 1, true, 0));

    // After deleting web, web2 holds the formerly shared blob alone.
    cache.delete_namespace("web").await.unwrap();
    let u = cache.disk_usage().await.unwrap();
    let web2 = usage_of(&u.namespaces, "web2");
    assert_eq!((web2.unique_bytes, web2.shared_bytes, web2.attributed_bytes), (b + sh, 0, b + sh));
    assert_eq!(u.namespaces.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn df_attributed_bytes_sum_exactly_with_odd_sizes() {
    let (_src, _dir, cache, _) = two_namespaces_sharing_a_blob((100_000, 200_000, 100_001)).await;
    let u = cache.disk_usage().await.unwrap();
    let attributed: u64 = u.namespaces.iter().map(|n| n.attributed_bytes).sum();
    assert_eq!(attributed, u.blob_bytes, "{:?}", u.namespaces);
}

// ---- the pruner ----

/// A temp file of a process that cannot exist (above the largest pid Linux hands out).
fn plant_dead_temp(data: &Path, len: usize) -> PathBuf {
    let path = data.join("tmp/4194305-00000000deadbeef.part");
    std::fs::write(&path, bytes(300, len)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_published_before_a_crash_is_adopted_and_pruned_as_an_orphan() {
    let src = Source::start().await;
    let kept = bytes(310, 100_000);
    src.put("k", kept.clone());
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    fetch(&cache, "web", "k").await;
    drop(cache);

    // A crash between the rename into blobs/ and the index commit: the file, and a pending row.
    let data = data_dir(&dir);
    let lost = bytes(311, 70_000);
    let lost_path = plant_blob(&data, &lost);
    let ten_minutes_ago = now_ms() - 600_000;
    sql(
        &data,
        "INSERT INTO blobs (digest, size, state, created_at, last_access) VALUES (?1, ?2, 0, ?3, ?3)",
        rusqlite::params![Digest::of(&lost).hex(), lost.len() as i64, ten_minutes_ago],
    );
    let cache = Cache::open(CacheConfig::new(&data)).await.unwrap();
    let temp = plant_dead_temp(&data, 12_345);
    assert_eq!(cache.disk_usage().await.unwrap().n_orphans, 1, "recovery adopted the blob");

    // The configured grace (an hour) keeps an orphan ten minutes old.
    let report = cache.prune(&PruneOptions { orphans: true, ..Default::default() }).await.unwrap();
    assert!(report.items.is_empty(), "{report:?}");

    let opts = PruneOptions {
        orphans: true,
        files: true,
        orphan_grace: Some(Duration::ZERO),
        dry_run: true,
        ..Default::default()
    };
    let dry = cache.prune(&opts).await.unwrap();
    let expect = |r: &PruneReport| {
        assert_eq!(kinds(r), [("orphan", None, None), ("temp", None, None)], "{r:?}");
        assert_eq!(r.items[0].digest, Some(Digest::of(&lost)));
        assert_eq!(r.items[1].path.as_deref(), Some(temp.to_str().unwrap()));
        assert_eq!((r.n_blobs, r.n_files, r.freed_bytes), (1, 1, lost.len() as u64 + 12_345));
    };
    expect(&dry);
    assert!(dry.dry_run);
    assert!(lost_path.is_file() && temp.is_file(), "a dry run removes nothing");
    assert_eq!(cache.disk_usage().await.unwrap().n_orphans, 1);

    let done = cache.prune(&PruneOptions { dry_run: false, ..opts.clone() }).await.unwrap();
    expect(&done);
    assert!(!lost_path.exists() && !temp.exists());
    assert_eq!(cache.disk_usage().await.unwrap().n_orphans, 0);
    assert!(cache.prune(&PruneOptions { dry_run: false, ..opts }).await.unwrap().items.is_empty());
    // The entry's blob was never a candidate.
    assert_eq!(fetch(&cache, "web", "k").await, ("disk", kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_the_index_adopted_blobs_are_pruned_unless_named_again() {
    let src = Source::start().await;
    let kept = bytes(320, 100_000);
    src.put("k", kept.clone());
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    fetch(&cache, "web", "k").await;
    drop(cache);
    let data = data_dir(&dir);
    let stray = bytes(321, 50_000);
    let stray_path = plant_blob(&data, &stray);
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }

    let cache = Cache::open(CacheConfig::new(&data)).await.unwrap();
    let u = cache.disk_usage().await.unwrap();
    assert_eq!((u.n_blobs, u.n_orphans), (2, 2), "the rebuild adopted both files");
    // The entry is fetched again and names its adopted blob; the other stays an orphan.
    assert_eq!(fetch(&cache, "web", "k").await, ("source", kept.clone()));
    assert_eq!(src.counts("k").full, 2);
    let opts = PruneOptions { orphans: true, orphan_grace: Some(Duration::ZERO), ..Default::default() };
    let report = prune_until(&cache, &opts, |r| !r.items.is_empty()).await;
    assert_eq!(report.items.len(), 1, "{report:?}");
    assert_eq!(report.items[0].digest, Some(Digest::of(&stray)));
    assert_eq!(report.freed_bytes, stray.len() as u64);
    assert!(!stray_path.exists());
    assert!(has_blob(&dir, &kept));
    assert_eq!(fetch(&cache, "web", "k").await, ("disk", kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_pruning_goes_by_last_access_and_spares_pinned_entries() {
    let src = Source::start().await;
    let v = put_all(&src, 400, &["old", "recent", "pinned"]);
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    for k in ["old", "recent", "pinned"] {
        fetch(&cache, "web", k).await;
    }
    // All three were created and last read two hours ago (as far as the index knows) …
    let two_hours_ago = now_ms() - 2 * 3600 * 1000;
    sql(&data_dir(&dir), "UPDATE entries SET created_at = ?1, last_access = ?1", [two_hours_ago]);
    sql(&data_dir(&dir), "UPDATE blobs SET created_at = ?1, last_access = ?1", [two_hours_ago]);
    // … then one is read now, and one pinned.
    assert_eq!(fetch(&cache, "web", "recent").await.0, "disk");
    cache.pin("web", Some("pinned")).await.unwrap();

    let hour = Duration::from_secs(3600);
    let dry = cache.prune(&PruneOptions { older_than: Some(hour), dry_run: true, ..Default::default() }).await;
    let dry = dry.unwrap();
    assert_eq!(kinds(&dry), [("age", Some("web".into()), Some("old".into()))]);
    assert_eq!((dry.n_entries, dry.n_blobs, dry.freed_bytes), (1, 1, S as u64));
    assert!(has_blob(&dir, &v["old"]));

    let report = cache.prune(&PruneOptions { older_than: Some(hour), ..Default::default() }).await.unwrap();
    assert_eq!(kinds(&report), [("age", Some("web".into()), Some("old".into()))]);
    assert_eq!((report.n_entries, report.n_blobs, report.freed_bytes), (1, 1, S as u64));
    assert!(!has_blob(&dir, &v["old"]));
    assert!(has_blob(&dir, &v["recent"]) && has_blob(&dir, &v["pinned"]));
    assert_eq!(n_entries(&cache, "web").await, 2);
    assert_eq!(fetch(&cache, "web", "old").await, ("source", v["old"].clone()));
    // Nothing here is an hour old now, except the pinned entry.
    let again = cache.prune(&PruneOptions { older_than: Some(hour), ..Default::default() }).await.unwrap();
    assert!(again.items.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_max_ages_prune_by_last_access() {
    let src = Source::start().await;
    let v = put_all(&src, 450, &["g/old", "g/new", "n/old", "n/new"]);
    // A global max age of a day, and a namespace of its own with an hour.
    let (dir, cache) = setup(&src, |c| {
        c.memory.is_enabled = false;
        c.pruner.max_age = Some(Duration::from_secs(24 * 3600));
    })
    .await;
    let hourly = NamespaceOptions { max_age_ms: Some(3600 * 1000), ..Default::default() };
    cache.create_namespace("hourly", Some(&src.url()), &hourly).await.unwrap();
    for (ns, k) in [("web", "g/old"), ("web", "g/new"), ("hourly", "n/old"), ("hourly", "n/new")] {
        fetch(&cache, ns, k).await;
    }
    let data = data_dir(&dir);
    // Two hours old: past the namespace's hour, not the global day.
    sql(&data, "UPDATE entries SET last_access = ?1", [now_ms() - 2 * 3600 * 1000]);
    sql(&data, "UPDATE entries SET last_access = ?1 WHERE key LIKE '%/old'", [now_ms() - 2 * 24 * 3600 * 1000]);
    sql(&data, "UPDATE entries SET last_access = ?1 WHERE key = 'g/new'", [now_ms() - 2 * 3600 * 1000]);

    let report = cache.prune(&PruneOptions { max_age: true, ..Default::default() }).await.unwrap();
    let got: BTreeSet<_> = kinds(&report).into_iter().collect();
    let want: BTreeSet<_> = [("web", "g/old"), ("hourly", "n/old"), ("hourly", "n/new")]
        .into_iter()
        .map(|(ns, k)| ("age", Some(ns.to_owned()), Some(k.to_owned())))
        .collect();
    assert_eq!(got, want, "{report:?}");
    assert!(has_blob(&dir, &v["g/new"]));
    for k in ["g/old", "n/old", "n/new"] {
        assert!(!has_blob(&dir, &v[k]), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_limits_keep_the_most_recently_read_entries() {
    let src = Source::start().await;
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    let url = src.url();
    let limited = [
        ("count", NamespaceOptions { max_entries: Some(2), ..Default::default() }),
        ("bytes", NamespaceOptions { quota_bytes: Some(S as u64 * 3 / 2), ..Default::default() }),
        ("pinned", NamespaceOptions { max_entries: Some(2), ..Default::default() }),
    ];
    let mut v = HashMap::new();
    for (seed, (ns, opts)) in limited.iter().enumerate() {
        cache.create_namespace(ns, Some(&url), opts).await.unwrap();
        let keys: Vec<String> = ["a", "b", "c", "d"].iter().map(|k| format!("{ns}/{k}")).collect();
        v.extend(put_all(&src, 500 + 10 * seed as u64, &keys.iter().map(String::as_str).collect::<Vec<_>>()));
        for k in ["a", "b", "c", "d"] {
            fetch(&cache, ns, &format!("{ns}/{k}")).await;
        }
    }
    // Last read: a four hours ago, c two, d one, and b now.
    let data = data_dir(&dir);
    for (k, hours) in [("a", 4), ("b", 3), ("c", 2), ("d", 1)] {
        sql(
            &data,
            "UPDATE entries SET last_access = ?1 WHERE key LIKE ?2",
            rusqlite::params![now_ms() - hours * 3600 * 1000, format!("%/{k}")],
        );
    }
    for (ns, _) in &limited {
        assert_eq!(fetch(&cache, ns, &format!("{ns}/b")).await.0, "disk");
    }
    cache.pin("pinned", Some("pinned/a")).await.unwrap();

    let report = cache.prune(&PruneOptions { limits: true, ..Default::default() }).await.unwrap();
    let got: BTreeSet<_> = kinds(&report).into_iter().collect();
    let want: BTreeSet<_> = [
        ("count", "a"),
        ("count", "c"),
        ("bytes", "a"),
        ("bytes", "c"),
        ("bytes", "d"),
        // The pinned entry counts towards the limit but is never removed.
        ("pinned", "c"),
    ]
    .into_iter()
    .map(|(ns, k)| ("limit", Some(ns.to_owned()), Some(format!("{ns}/{k}"))))
    .collect();
    assert_eq!(got, want, "{report:?}");
    assert_eq!((report.n_entries, report.n_blobs, report.freed_bytes), (6, 6, 6 * S as u64));
    let left: Vec<u64> = {
        let mut left = Vec::new();
        for (ns, _) in &limited {
            left.push(n_entries(&cache, ns).await);
        }
        left
    };
    assert_eq!(left, [2, 1, 3]);
    for key in ["count/b", "count/d", "bytes/b", "pinned/a", "pinned/b", "pinned/d"] {
        assert!(has_blob(&dir, &v[key]), "{key}");
    }
    assert!(cache.prune(&PruneOptions { limits: true, ..Default::default() }).await.unwrap().items.is_empty());
}

/// The owner check of these tests, from a fixed table: job-1 is gone, `weird` cannot be told,
/// others live.
#[derive(Debug)]
struct Owners;

impl OwnerCheck for Owners {
    fn is_alive<'a>(&'a self, owner: &'a str) -> futures::future::BoxFuture<'a, Option<bool>> {
        let answer = match owner {
            "job-1" => Some(false),
            "weird" => None,
            _ => Some(true),
        };
        Box::pin(std::future::ready(answer))
    }
}

async fn owned_namespaces(src: &Source, cache: &Cache, owners: &[(&str, Option<&str>)]) -> HashMap<String, Vec<u8>> {
    let mut v = HashMap::new();
    for (i, (ns, owner)) in owners.iter().enumerate() {
        let opts = NamespaceOptions { owner: owner.map(str::to_owned), ..Default::default() };
        cache.create_namespace(ns, Some(&src.url()), &opts).await.unwrap();
        let (key, data) = (format!("{ns}/x"), bytes(600 + i as u64, S));
        src.put(&key, data.clone());
        fetch(cache, ns, &key).await;
        v.insert(ns.to_string(), data);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_of_gone_owners_are_deleted_unless_being_read() {
    let src = Source::start().await;
    let (dir, cache) = setup(&src, |c| {
        c.memory.is_enabled = false;
        c.pruner.owner_hook = Some(Arc::new(Owners));
        c.pruner.owner_grace = Duration::ZERO;
    })
    .await;
    let owners = [
        ("gone", Some("job-1")),
        ("busy", Some("job-1")),
        ("alive", Some("job-2")),
        ("unsure", Some("weird")),
        ("nobody", None),
    ];
    let v = owned_namespaces(&src, &cache, &owners).await;
    let held = cache.read_entry("busy", "busy/x").await.unwrap();
    assert_eq!(held.meta.tier.as_str(), "disk");

    let owners_only = PruneOptions { owners: true, ..Default::default() };
    let dry = cache.prune(&PruneOptions { dry_run: true, ..owners_only.clone() }).await.unwrap();
    assert_eq!(kinds(&dry), [("owner", Some("gone".into()), None)]);
    assert_eq!((dry.n_namespaces, dry.freed_bytes, &dry.skipped_in_use[..]), (1, S as u64, &["busy".to_owned()][..]));
    assert!(cache.namespace("gone").await.unwrap().is_some(), "a dry run deletes nothing");

    let report = cache.prune(&owners_only).await.unwrap();
    assert_eq!(kinds(&report), [("owner", Some("gone".into()), None)]);
    assert_eq!((report.n_namespaces, report.n_entries, report.n_blobs), (1, 1, 1));
    assert_eq!((report.freed_bytes, &report.skipped_in_use[..]), (S as u64, &["busy".to_owned()][..]));
    assert!(cache.namespace("gone").await.unwrap().is_none());
    assert!(!has_blob(&dir, &v["gone"]));
    for ns in ["busy", "alive", "unsure", "nobody"] {
        assert!(cache.namespace(ns).await.unwrap().is_some(), "{ns}");
        assert!(has_blob(&dir, &v[ns]), "{ns}");
    }

    // The read ends; the next pass deletes the namespace it was holding.
    assert_eq!(collect(held, None).await.unwrap(), v["busy"]);
    let report = cache.prune(&owners_only).await.unwrap();
    assert_eq!(kinds(&report), [("owner", Some("busy".into()), None)]);
    assert!(report.skipped_in_use.is_empty());
    assert!(cache.namespace("busy").await.unwrap().is_none());
    assert!(!has_blob(&dir, &v["busy"]));
    let names: Vec<String> = cache.namespaces().await.unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["alive", "nobody", "unsure", "web"]);
    assert!(cache.prune(&owners_only).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_owner_s_namespace_is_kept_for_the_grace_period() {
    let src = Source::start().await;
    let (dir, cache) = setup(&src, |c| {
        c.memory.is_enabled = false;
        c.pruner.owner_hook = Some(Arc::new(Owners));
        c.pruner.owner_grace = Duration::from_secs(3600);
    })
    .await;
    let v = owned_namespaces(&src, &cache, &[("gone", Some("job-1"))]).await;
    for _ in 0..2 {
        let report = cache.prune(&PruneOptions::all()).await.unwrap();
        assert!(report.items.is_empty() && report.skipped_in_use.is_empty(), "{report:?}");
        assert!(cache.namespace("gone").await.unwrap().is_some());
    }
    assert!(has_blob(&dir, &v["gone"]));
}

#[tokio::test(start_paused = true)]
async fn the_background_pruner_runs_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(&dir);
    // A blob in the disk tier and no index: the rebuild at open adopts it, an orphan.
    let orphan = bytes(700, 10_000);
    let path = plant_blob(&data, &orphan);
    let mut cfg = CacheConfig::new(&data);
    cfg.pruner.interval = Duration::from_secs(60);
    cfg.pruner.orphan_grace = Duration::ZERO;
    let cache = Cache::open(cfg).await.unwrap();
    // Adopted in this very millisecond, perhaps: dated back a second, so that a grace of zero has
    // passed whenever the pass runs.
    sql(&data, "UPDATE blobs SET created_at = created_at - 1000", []);
    assert_eq!(cache.disk_usage().await.unwrap().n_orphans, 1);
    cache.spawn_pruner();
    // Let the pruner task start: its interval counts from then.
    tokio::time::sleep(Duration::from_millis(1)).await;

    tokio::time::advance(Duration::from_secs(59)).await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(path.exists(), "no pass before the interval");

    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..1000 {
        if !path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!path.exists(), "the pass at 60 s removed the orphan");
    assert_eq!(cache.disk_usage().await.unwrap().n_orphans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_that_cannot_be_met_leaves_the_eviction_order_alone() {
    let src = Source::start().await;
    let v = put_all(&src, 800, &["a", "b", "c", "d", "e"]);
    let big = bytes(809, 3 * S);
    src.put("big", big.clone());
    let (dir, cache) = setup(&src, tight(FOUR_AND_A_HALF)).await;
    for k in ["a", "b", "c", "d"] {
        fetch(&cache, "web", k).await;
    }
    // With b and c pinned, only a and d (6/9 of what big needs) could go: big passes through.
    cache.pin("web", Some("b")).await.unwrap();
    cache.pin("web", Some("c")).await.unwrap();
    assert_eq!(fetch(&cache, "web", "big").await, ("source", big));
    let q = cache.quota_stats();
    assert_eq!((q.n_pass_through, q.n_evicted), (1, 0), "{q:?}");
    cache.unpin("web", Some("b")).await.unwrap();
    cache.unpin("web", Some("c")).await.unwrap();

    // Nothing was read: the next miss evicts the oldest blob, as if big had never been asked for.
    fetch(&cache, "web", "e").await;
    let on_disk: Vec<bool> = ["a", "b", "c", "d", "e"].iter().map(|k| has_blob(&dir, &v[*k])).collect();
    assert_eq!(on_disk, [false, true, true, true, true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_max_size_evicts_the_least_recently_read_sparing_pins_and_uploads() {
    let src = Source::start().await;
    let v = put_all(&src, 830, &["a", "b", "c", "d"]);
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    let upload = bytes(839, S);
    cache.put_blob(&Digest::of(&upload), upload_body(&upload)).await.unwrap();
    for k in ["a", "b", "c", "d"] {
        fetch(&cache, "web", k).await;
    }
    // Last read: the pinned d longest ago, then a, c, b; the upload longest ago of all.
    let data = data_dir(&dir);
    for (content, hours) in [(&upload, 9), (&v["d"], 5), (&v["a"], 4), (&v["c"], 3), (&v["b"], 2)] {
        sql(
            &data,
            "UPDATE blobs SET last_access = ?1 WHERE digest = ?2",
            rusqlite::params![now_ms() - hours * 3600 * 1000, Digest::of(content).hex()],
        );
    }
    cache.pin("web", Some("d")).await.unwrap();
    let opts = PruneOptions { max_size: Some(3 * S as u64), dry_run: true, ..Default::default() };
    let dry = cache.prune(&opts).await.unwrap();
    let evicted: Vec<_> = dry.items.iter().map(|i| (i.kind, i.digest)).collect();
    let want = vec![("evict", Some(Digest::of(&v["a"]))), ("evict", Some(Digest::of(&v["c"])))];
    assert_eq!(evicted, want);
    assert_eq!(dry.freed_bytes, 2 * S as u64);
    assert!(has_blob(&dir, &v["a"]) && has_blob(&dir, &v["c"]), "a dry run evicts nothing");

    let done = cache.prune(&PruneOptions { dry_run: false, ..opts }).await.unwrap();
    assert_eq!(done.items.iter().map(|i| (i.kind, i.digest)).collect::<Vec<_>>(), want);
    let on_disk: Vec<bool> = ["a", "b", "c", "d"].iter().map(|k| has_blob(&dir, &v[*k])).collect();
    assert_eq!(on_disk, [false, true, false, true]);
    assert!(has_blob(&dir, &upload));
    assert_eq!(cache.disk_usage().await.unwrap().blob_bytes, 3 * S as u64);
    assert_eq!(n_entries(&cache, "web").await, 2, "the evicted blobs' entries are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_pass_above_the_high_watermark_evicts_down_to_the_low_one() {
    let src = Source::start().await;
    let v = put_all(&src, 840, &["a", "b", "c", "d"]);
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    for k in ["a", "b", "c", "d"] {
        fetch(&cache, "web", k).await;
    }
    drop(cache);
    let data = data_dir(&dir);
    for (k, hours) in [("c", 4), ("a", 3), ("d", 2), ("b", 1)] {
        sql(
            &data,
            "UPDATE blobs SET last_access = ?1 WHERE digest = ?2",
            rusqlite::params![now_ms() - hours * 3600 * 1000, Digest::of(&v[k]).hex()],
        );
    }
    // Reopened with a quota of three blobs: four are over the high watermark (95%); a pass evicts
    // the least recently read down to the low one (90%: 2.7 blobs).
    let mut cfg = CacheConfig::new(&data);
    tight(3 * S as u64)(&mut cfg);
    let cache = Cache::open(cfg).await.unwrap();
    assert_eq!(cache.quota_stats().used_bytes, 4 * S as u64);
    cache.prune(&PruneOptions::default()).await.unwrap();
    let on_disk: Vec<bool> = ["a", "b", "c", "d"].iter().map(|k| has_blob(&dir, &v[*k])).collect();
    assert_eq!(on_disk, [false, true, false, true]);
    let q = cache.quota_stats();
    assert_eq!((q.n_evicted, q.used_bytes), (2, 2 * S as u64), "{q:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_quota_counts_a_blob_named_twice_once() {
    let src = Source::start().await;
    let (same, other) = (bytes(870, S), bytes(871, S));
    src.put("x1", same.clone());
    src.put("x2", same.clone());
    src.put("y", other.clone());
    let (dir, cache) = setup(&src, |c| c.memory.is_enabled = false).await;
    for k in ["y", "x2", "x1"] {
        fetch(&cache, "web", k).await;
    }
    let data = data_dir(&dir);
    for (k, hours) in [("y", 3), ("x2", 2), ("x1", 1)] {
        sql(
            &data,
            "UPDATE entries SET last_access = ?1 WHERE key = ?2",
            rusqlite::params![now_ms() - hours * 3600 * 1000, k],
        );
    }
    // The namespace holds 2 S on disk (3 S of entries): within 2.5 S nothing goes.
    let limit = |q: u64| NamespaceOptions { quota_bytes: Some(q), ..Default::default() };
    cache.create_namespace("web", Some(&src.url()), &limit(S as u64 * 5 / 2)).await.unwrap();
    let report = cache.prune(&PruneOptions { limits: true, ..Default::default() }).await.unwrap();
    assert!(report.items.is_empty(), "{report:?}");
    // Within 1.5 S only y goes: x2's blob is x1's, already counted.
    cache.create_namespace("web", Some(&src.url()), &limit(S as u64 * 3 / 2)).await.unwrap();
    let report = cache.prune(&PruneOptions { limits: true, ..Default::default() }).await.unwrap();
    assert_eq!(kinds(&report), [("limit", Some("web".to_owned()), Some("y".to_owned()))]);
    assert!(has_blob(&dir, &same) && !has_blob(&dir, &other));
}
