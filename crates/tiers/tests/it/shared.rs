//! The shared tier's behaviour suite: one table of named behaviours ([`CASES`]), each run against
//! every backend (a directory through OpenDAL's `fs`, a real S3-compatible server, a real Redis), and
//! a few tests of stores that fail (dead, hanging), which need no backend.
//!
//! Every (backend, behaviour) pair is its own test, `shared::<backend>::<behaviour>`, so a failure
//! names both, and `cargo test shared::redis::` runs one backend. Each behaviour gets a store of
//! its own (its own directory, S3 prefix or Redis root), so behaviours never see each other's
//! objects. Servers are shared between the tests that run at the same time (see [`Running`]); a
//! server that cannot start skips its tests, or fails them under `TIERCACHE_REQUIRE_SERVERS=1`
//! (`tiercache_testkit::servers`).
//!
//! This file does not test the disk or memory tiers, nor how the engine uses the shared tier.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use tiercache_core::Digest;
use tiercache_testkit::servers::{self, RedisServer, S3Server};
use tiercache_tiers::shared::{
    BreakerState, Counter, EntryRecord, MAX_RECORD_BYTES, MAX_SIDE_OBJECT_BYTES, PutOutcome, RecordLookup,
    SharedConfig, SharedError, SharedTier, WriteBack,
};

const CHUNK: u64 = 64 * 1024;
/// The leaf: the smallest span a range read fetches and verifies.
const LEAF: u64 = 4096;

/// How long a test waits for a condition (a background write-back, say) before it fails.
const WAIT: Duration = Duration::from_secs(30);

fn config(url: &str) -> SharedConfig {
    let mut c = SharedConfig::new(url);
    c.chunk_bytes = CHUNK;
    c.leaf_bytes = LEAF;
    c.limits.timeout = Duration::from_secs(5);
    c.limits.io_timeout = Duration::from_secs(5);
    c
}

/// A behaviour: runs against `store` and panics, through its assertions, if the store's tier
/// misbehaves.
type CaseFn = for<'a> fn(&'a Store) -> BoxFuture<'a, ()>;

/// Declares the behaviours once: the table [`CASES`], and one `#[tokio::test]` per backend and
/// behaviour, each running its row of the table.
macro_rules! behaviours {
    ($($case:ident),* $(,)?) => {
        /// Every behaviour of the suite, by name.
        const CASES: &[(&str, CaseFn)] = &[$((stringify!($case), |store| Box::pin($case(store)))),*];
        backend_tests!(fs, Fs, $($case),*);
        backend_tests!(s3, S3, $($case),*);
        backend_tests!(redis, Redis, $($case),*);
    };
}

macro_rules! backend_tests {
    ($module:ident, $backend:ident, $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $case() {
                    super::run(super::Backend::$backend, stringify!($case)).await;
                }
            )*
        }
    };
}

behaviours![
    miss_then_stored_then_existed,
    reads_whole_and_ranged,
    empty_blob_round_trips,
    corrupt_chunk_is_a_miss_and_repaired,
    truncated_blob_is_corrupt_and_deleted,
    damaged_chunk_list_is_refused_and_deleted,
    blob_without_chunk_list_is_invisible,
    rotted_local_copy_is_never_uploaded,
    write_back_queue_is_bounded_and_drops_when_full,
    watched_write_back,
    records_round_trip,
    malformed_records_are_misses,
    small_range_reads_and_verifies_its_leaves_only,
    damage_anywhere_is_detected,
    damaged_leaf_digests_are_refused,
    legacy_chunks_blob_is_read_and_upgraded,
    side_objects_have_the_documented_format,
    oversized_side_object_is_refused_unread,
];

// ---------------------------------------------------------------------------------------------
// The behaviours.

/// A miss, then a write-back, then a second write-back that finds it there.
async fn miss_then_stored_then_existed(store: &Store) {
    let tier = store.open();
    let (_, digest, path) = store.blob_file(1, 5 * CHUNK as usize + 123);
    assert!(tier.lookup(&digest).await.unwrap().is_none());
    assert_eq!(tier.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    assert_eq!(tier.put_file(&digest, &path).await.unwrap(), PutOutcome::Existed);
}

/// Whole and ranged reads, across chunk boundaries and at the edges.
async fn reads_whole_and_ranged(store: &Store) {
    let tier = store.open();
    let len = 5 * CHUNK as usize + 123;
    let (data, digest, path) = store.blob_file(1, len);
    assert_eq!(tier.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    let list = tier.lookup(&digest).await.unwrap().unwrap();
    assert_eq!((list.size_bytes, list.n_chunks(), list.leaf_bytes(), list.is_legacy()), (len as u64, 6, LEAF, false));
    assert_eq!(read_all(&tier, &digest, 0, len as u64).await.unwrap(), data);
    for (s, e) in [(0, 1), (CHUNK - 1, CHUNK + 1), (len as u64 - 1, len as u64), (100, 3 * CHUNK + 7), (4096, 8192)] {
        assert_eq!(read_all(&tier, &digest, s, e).await.unwrap(), &data[s as usize..e as usize], "range {s}..{e}");
    }
}

/// An empty blob round-trips too.
async fn empty_blob_round_trips(store: &Store) {
    let tier = store.open();
    let (_, empty, empty_path) = store.blob_file(2, 0);
    assert_eq!(tier.put_file(&empty, &empty_path).await.unwrap(), PutOutcome::Stored);
    assert_eq!(read_all(&tier, &empty, 0, 0).await.unwrap(), b"");
}

/// A flipped byte in chunk 2: chunks 0 and 1 still verify, chunk 2 is refused, and the pair is
/// deleted so the next write-back repairs it.
async fn corrupt_chunk_is_a_miss_and_repaired(store: &Store) {
    let len = 5 * CHUNK as usize + 123;
    let (data, digest, path) = store.blob_file(1, len);
    assert_eq!(store.open().put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    let mut bad = data.clone();
    bad[2 * CHUNK as usize + 5] ^= 0x40;
    store.raw.write(&SharedTier::blob_key(&digest), bad).await.unwrap();

    let fresh = store.open();
    assert_eq!(read_all(&fresh, &digest, 0, 2 * CHUNK).await.unwrap(), &data[..2 * CHUNK as usize]);
    let e = read_all(&fresh, &digest, 0, len as u64).await.unwrap_err();
    assert!(matches!(e, SharedError::Corrupt { .. }), "{e}");
    assert_eq!(fresh.stats().get(Counter::Corrupt), 1);
    assert!(fresh.lookup(&digest).await.unwrap().is_none(), "a corrupt blob is deleted");
    assert_eq!(fresh.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    assert_eq!(read_all(&fresh, &digest, 0, len as u64).await.unwrap(), data);
}

/// A truncated blob object is refused too, and deleted: the next write-back stores it again.
async fn truncated_blob_is_corrupt_and_deleted(store: &Store) {
    let len = 5 * CHUNK as usize + 123;
    let (data, digest, path) = store.blob_file(1, len);
    assert_eq!(store.open().put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    store.raw.write(&SharedTier::blob_key(&digest), data[..len - 10].to_vec()).await.unwrap();

    let fresh = store.open();
    let got = read_all(&fresh, &digest, 0, len as u64).await;
    assert!(matches!(got, Err(SharedError::Corrupt { .. })), "{got:?}");
    assert_eq!(fresh.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
}

/// A damaged chunk list is refused at lookup and deleted.
async fn damaged_chunk_list_is_refused_and_deleted(store: &Store) {
    let (_, digest, path) = store.blob_file(1, 5 * CHUNK as usize + 123);
    assert_eq!(store.open().put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    let ckey = SharedTier::tree_key(&digest);
    let mut text = store.raw.read(&ckey).await.unwrap().to_vec();
    let at = text.len() / 2;
    text[at] ^= 0x01;
    store.raw.write(&ckey, text).await.unwrap();

    let fresh = store.open();
    assert!(matches!(fresh.lookup(&digest).await, Err(SharedError::Corrupt { .. })));
    assert!(fresh.lookup(&digest).await.unwrap().is_none());
}

/// A blob without its chunk list (a torn write-back) is invisible, and the next write-back
/// overwrites it.
async fn blob_without_chunk_list_is_invisible(store: &Store) {
    let len = 5 * CHUNK as usize + 123;
    let (data, digest, path) = store.blob_file(1, len);
    store.raw.write(&SharedTier::blob_key(&digest), data.clone()).await.unwrap();
    let tier = store.open();
    assert!(tier.lookup(&digest).await.unwrap().is_none());
    assert_eq!(tier.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    assert_eq!(read_all(&tier, &digest, 0, len as u64).await.unwrap(), data);
}

/// A local copy that no longer matches its digest is never uploaded.
async fn rotted_local_copy_is_never_uploaded(store: &Store) {
    let tier = store.open();
    let (_, other, other_path) = store.blob_file(3, 1000);
    std::fs::write(&other_path, b"rotted").unwrap();
    assert!(matches!(tier.put_file(&other, &other_path).await, Err(SharedError::Local(_))));
    assert!(tier.lookup(&other).await.unwrap().is_none());
    assert!(!store.raw.exists(&SharedTier::blob_key(&other)).await.unwrap(), "the rotted upload was removed");
}

/// The write-back queue holds `capacity` blobs and drops (and counts) the rest; a dropped
/// write-back writes nothing.
async fn write_back_queue_is_bounded_and_drops_when_full(store: &Store) {
    let tier = store.open();
    let wb = WriteBack::spawn(Arc::clone(&tier), 2, 1);
    let blobs: Vec<_> = (0..6).map(|i| store.blob_file(10 + i, 1000)).collect();
    // No await between the calls: the worker cannot take anything off the queue meanwhile.
    let queued: Vec<bool> = blobs.iter().map(|(_, d, p)| wb.queue(*d, p.clone())).collect();
    assert_eq!(queued, [true, true, false, false, false, false]);
    assert!(!wb.queue(blobs[0].1, blobs[0].2.clone()), "a queued blob is not queued twice");
    // A write-back is counted before it leaves the pending set.
    wait_until("the write-back queue is empty", || wb.n_pending() == 0).await;
    let s = tier.stats();
    let got = (s.get(Counter::WriteBacksQueued), s.get(Counter::WriteBacksDone), s.get(Counter::WriteBacksDropped));
    assert_eq!(got, (2, 2, 4));
    assert!(tier.lookup(&blobs[1].1).await.unwrap().is_some());
    assert!(tier.lookup(&blobs[2].1).await.unwrap().is_none(), "a dropped write-back wrote nothing");
}

/// A watched write-back answers once the blob is readable (uploaded, or there already), and a
/// second watcher of a write-back under way joins it.
async fn watched_write_back(store: &Store) {
    let tier = store.open();
    let wb = WriteBack::spawn(Arc::clone(&tier), 4, 1);
    let (_, digest, path) = store.blob_file(20, 3 * CHUNK as usize);
    let (first, second) = (wb.queue_watched(digest, path.clone()), wb.queue_watched(digest, path.clone()));
    assert_eq!((first.await, second.await), (true, true));
    assert!(tier.lookup(&digest).await.unwrap().is_some(), "readable once the watch says so");
    assert!(wb.queue_watched(digest, path).await, "a blob already there is there");
    let s = tier.stats();
    assert_eq!((s.get(Counter::WriteBacksDone), s.get(Counter::WriteBacksSkipped)), (1, 1));
    let missing = store.local.path().join("no such file");
    assert!(!wb.queue_watched(Digest::of(b"gone"), missing).await, "a failed write-back says so");
}

fn record(source: &str, key: &str, seed: u8) -> EntryRecord {
    EntryRecord {
        source: source.into(),
        key: key.into(),
        digest: Digest::of(&[seed]),
        size_bytes: 1,
        md5: format!("{seed:032x}"),
        validated_at: 1_700_000_000_000 + i64::from(seed),
        content_type: Some("application/octet-stream".into()),
        content_encoding: None,
        etag: Some(format!("\"v{seed}\"")),
        last_modified: None,
    }
}

/// Records are found by source and key: the same key of two sources never collides, a key with
/// any characters is a safe object name, and a rewrite replaces the record.
async fn records_round_trip(store: &Store) {
    let tier = store.open();
    let (a, b) = ("http://a.example/base/", "http://b.example/base/");
    let key = "img/layer.tar";
    assert_eq!(tier.read_record(a, key).await.unwrap(), RecordLookup::Missing);
    tier.write_record(&record(a, key, 1)).await.unwrap();
    tier.write_record(&record(b, key, 2)).await.unwrap();
    let odd = "a b/ü/%2e%2e/..x/[]?#";
    tier.write_record(&record(a, odd, 3)).await.unwrap();
    assert_eq!(tier.read_record(a, key).await.unwrap(), RecordLookup::Found(record(a, key, 1)));
    assert_eq!(tier.read_record(b, key).await.unwrap(), RecordLookup::Found(record(b, key, 2)));
    assert_eq!(tier.read_record(a, odd).await.unwrap(), RecordLookup::Found(record(a, odd, 3)));
    tier.write_record(&record(a, key, 4)).await.unwrap();
    assert_eq!(tier.read_record(a, key).await.unwrap(), RecordLookup::Found(record(a, key, 4)));
    assert_eq!(tier.stats().get(Counter::RecordsWritten), 4);
}

/// Whatever sits at a record's name, a reader never trusts more than a well-formed record of its
/// own source and key, and never reads more than a record's largest size.
async fn malformed_records_are_misses(store: &Store) {
    let tier = store.open();
    let (src, key) = ("http://a.example/", "k");
    let object = SharedTier::record_key(src, key);
    let good = record(src, key, 1).encode().unwrap();
    let damaged = good.replacen("size 1", "size 9", 1);
    let other_key = record(src, "other", 1).encode().unwrap();
    let huge = format!("{good}{}", "x".repeat(MAX_RECORD_BYTES as usize * 4));
    for (what, bytes) in [
        ("garbage", b"\x00\xffnot a record".to_vec()),
        ("damaged", damaged.into_bytes()),
        ("another key's record", other_key.into_bytes()),
        ("oversized", huge.into_bytes()),
        ("empty", Vec::new()),
    ] {
        store.raw.write(&object, bytes).await.unwrap();
        let found = tier.read_record(src, key).await.unwrap();
        assert!(matches!(found, RecordLookup::Malformed(_)), "{what}: {found:?}");
    }
    assert_eq!(tier.stats().get(Counter::Errors), 0, "a malformed record is no store failure");
}

/// A 4 KiB range of a large blob is read and verified alone: only the leaf (or the two leaves)
/// holding it comes from the store, not its chunk.
async fn small_range_reads_and_verifies_its_leaves_only(store: &Store) {
    let len = 40 * CHUNK as usize + 999;
    let (data, digest, path) = store.blob_file(4, len);
    assert_eq!(store.open().put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    // (start, the bytes of the leaves holding start..start + 4096)
    let last_leaves = len as u64 - (len as u64 - 4096) / LEAF * LEAF;
    for (start, leaves) in
        [(17 * CHUNK + 3 * LEAF, LEAF), (25 * CHUNK + 100, 2 * LEAF), (len as u64 - 4096, last_leaves), (0, LEAF)]
    {
        let tier = store.open();
        let got = read_all(&tier, &digest, start, start + 4096).await.unwrap();
        assert_eq!(got, &data[start as usize..start as usize + 4096], "range at {start}");
        assert_eq!(tier.stats().get(Counter::ReadBytes), leaves, "blob bytes read for the range at {start}");
    }
}

/// A flipped byte anywhere (first leaf, a middle leaf, the last byte) is detected by every read
/// that covers it, whole or ranged, and the read ends with an error: no byte of a failing span is
/// returned. The blob's objects are deleted, and the next write-back repairs them.
async fn damage_anywhere_is_detected(store: &Store) {
    let len = 6 * CHUNK as usize + 777;
    let (data, digest, path) = store.blob_file(5, len);
    let mut bad = data.clone();
    for at in [0usize, 3 * CHUNK as usize + 5 * LEAF as usize + 17, len - 1] {
        let leaf_start = at as u64 / LEAF * LEAF;
        for (start, end) in
            [(at as u64, at as u64 + 1), (leaf_start, (leaf_start + LEAF).min(len as u64)), (0, len as u64)]
        {
            let what = format!("damage at {at}, read {start}..{end}");
            store.raw.write(&SharedTier::blob_key(&digest), data.clone()).await.unwrap();
            assert_eq!(store.open().put_file(&digest, &path).await.unwrap(), PutOutcome::Stored, "{what}");
            bad[at] ^= 0x08;
            store.raw.write(&SharedTier::blob_key(&digest), bad.clone()).await.unwrap();
            bad[at] ^= 0x08;

            let tier = store.open();
            let list = tier.lookup(&digest).await.unwrap().expect("found before the read");
            let mut stream = tier.read_range(list, start, end, None);
            let mut got = Vec::new();
            let err = loop {
                match stream.next().await {
                    Some(Ok(b)) => got.extend_from_slice(&b),
                    Some(Err(e)) => break Some(e),
                    None => break None,
                }
            };
            assert!(matches!(err, Some(SharedError::Corrupt { .. })), "{what}: {err:?}");
            assert!(data[start as usize..].starts_with(&got), "{what}: only verified bytes before the error");
            assert!(got.len() as u64 <= leaf_start.saturating_sub(start), "{what}: no byte of the damaged leaf");
            assert!(tier.lookup(&digest).await.unwrap().is_none(), "{what}: damaged objects are deleted");
        }
    }
}

/// Damaged leaf digests (the `.leaves` object) fail a range read, and the blob's objects are
/// deleted; a whole-chunk read does not need them.
async fn damaged_leaf_digests_are_refused(store: &Store) {
    let len = 3 * CHUNK as usize + 10;
    let (data, digest, path) = store.blob_file(6, len);
    assert_eq!(store.open().put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    let key = SharedTier::leaves_key(&digest);
    let mut leaves = store.raw.read(&key).await.unwrap().to_vec();
    leaves[(CHUNK / LEAF) as usize * 32 + 40] ^= 0x01; // chunk 1, its second leaf
    store.raw.write(&key, leaves.clone()).await.unwrap();
    let tier = store.open();
    assert_eq!(read_all(&tier, &digest, CHUNK, 2 * CHUNK).await.unwrap(), &data[CHUNK as usize..2 * CHUNK as usize]);
    let e = read_all(&tier, &digest, CHUNK + 10, CHUNK + 20).await.unwrap_err();
    assert!(matches!(e, SharedError::Corrupt { .. }), "{e}");
    assert!(tier.lookup(&digest).await.unwrap().is_none());
    // Short leaf digests too.
    assert_eq!(tier.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    store.raw.write(&key, leaves[..40].to_vec()).await.unwrap();
    let e = read_all(&store.open(), &digest, 2 * CHUNK + 1, 2 * CHUNK + 2).await.unwrap_err();
    assert!(matches!(e, SharedError::Corrupt { .. }), "{e}");
}

/// A blob written by an older node (the blob and its `.chunks` side object, as that version
/// writes them: SHA-256 per chunk, text) is still found and read, ranges by whole chunks, with
/// damage detected; a write-back of it adds the tree without uploading the bytes again.
async fn legacy_chunks_blob_is_read_and_upgraded(store: &Store) {
    let len = 4 * CHUNK as usize + 321;
    let (data, digest, path) = store.blob_file(7, len);
    store.raw.write(&SharedTier::blob_key(&digest), data.clone()).await.unwrap();
    store.raw.write(&SharedTier::chunks_key(&digest), legacy_chunks(&data, CHUNK)).await.unwrap();

    let tier = store.open();
    let list = tier.lookup(&digest).await.unwrap().expect("an older node's blob is found");
    assert_eq!((list.is_legacy(), list.n_chunks(), list.leaf_bytes()), (true, 5, CHUNK));
    assert_eq!(read_all(&tier, &digest, 0, len as u64).await.unwrap(), data);
    let tier = store.open();
    let at = 2 * CHUNK + 5;
    assert_eq!(read_all(&tier, &digest, at, at + 4096).await.unwrap(), &data[at as usize..at as usize + 4096]);
    assert_eq!(tier.stats().get(Counter::ReadBytes), CHUNK, "an older list verifies whole chunks");

    // Damage in a legacy blob is detected too.
    let mut bad = data.clone();
    bad[3 * CHUNK as usize + 1] ^= 0x10;
    store.raw.write(&SharedTier::blob_key(&digest), bad).await.unwrap();
    let e = read_all(&store.open(), &digest, 3 * CHUNK, 3 * CHUNK + 10).await.unwrap_err();
    assert!(matches!(e, SharedError::Corrupt { .. }), "{e}");

    // Written again by an older node; a write-back adds the tree and uploads no blob bytes.
    store.raw.write(&SharedTier::blob_key(&digest), data.clone()).await.unwrap();
    store.raw.write(&SharedTier::chunks_key(&digest), legacy_chunks(&data, CHUNK)).await.unwrap();
    let tier = store.open();
    assert_eq!(tier.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    assert_eq!(tier.stats().get(Counter::WriteBytes), 0);
    let fresh = store.open();
    assert!(!fresh.lookup(&digest).await.unwrap().unwrap().is_legacy(), "the tree is preferred");
    assert_eq!(read_all(&fresh, &digest, 0, len as u64).await.unwrap(), data);
    assert!(store.raw.exists(&SharedTier::chunks_key(&digest)).await.unwrap(), "older nodes still find it");
}

/// The side objects, byte for byte as docs/design.md describes them, computed here
/// independently of the tier's code: a change of format must come with a new key.
async fn side_objects_have_the_documented_format(store: &Store) {
    let len = 2 * CHUNK as usize + 5000;
    let (data, digest, path) = store.blob_file(8, len);
    assert_eq!(store.open().put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    let leaves: Vec<u8> = data.chunks(LEAF as usize).flat_map(|l| *blake3::hash(l).as_bytes()).collect();
    assert_eq!(store.raw.read(&SharedTier::leaves_key(&digest)).await.unwrap().to_vec(), leaves);
    let mut body = format!("tiercache-tree 1\nblob {digest}\nsize {len}\nhash blake3\nleaf {LEAF}\nchunk {CHUNK}\n");
    for chunk in leaves.chunks((CHUNK / LEAF * 32) as usize) {
        body.push_str(&format!("{}\n", blake3::hash(chunk).to_hex()));
    }
    let tree = format!("{body}check {}\n", Digest::of(body.as_bytes()).hex());
    let stored = store.raw.read(&SharedTier::tree_key(&digest)).await.unwrap().to_vec();
    assert_eq!(String::from_utf8(stored).unwrap(), tree);
    assert!(!store.raw.exists(&SharedTier::chunks_key(&digest)).await.unwrap(), "no .chunks is written");
}

/// A side object larger than the tier reads is refused as corrupt (and deleted), not read.
async fn oversized_side_object_is_refused_unread(store: &Store) {
    let (_, digest, path) = store.blob_file(9, 1000);
    assert_eq!(store.open().put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    let big = vec![b'x'; MAX_SIDE_OBJECT_BYTES as usize + 1];
    store.raw.write(&SharedTier::tree_key(&digest), big).await.unwrap();
    let tier = store.open();
    assert!(matches!(tier.lookup(&digest).await, Err(SharedError::Corrupt { .. })));
    assert!(tier.lookup(&digest).await.unwrap().is_none());
}

/// An older node's `.chunks` text for `data` in `chunk`-byte chunks, as that version writes it.
fn legacy_chunks(data: &[u8], chunk: u64) -> Vec<u8> {
    let mut s = format!("tiercache-chunks 1\nblob {}\nsize {}\nchunk {chunk}\n", Digest::of(data), data.len());
    for c in data.chunks(chunk as usize) {
        s.push_str(&format!("{}\n", Digest::of(c).hex()));
    }
    let check = Digest::of(s.as_bytes()).hex();
    s.push_str(&format!("check {check}\n"));
    s.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The runner: backends, their servers, and one store per behaviour.

#[derive(Debug, Clone, Copy)]
enum Backend {
    Fs,
    S3,
    Redis,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Fs => "fs",
            Backend::S3 => "s3",
            Backend::Redis => "redis",
        }
    }
}

/// Runs the behaviour `name` of [`CASES`] against a store of its own on `backend`. A failure
/// says which behaviour failed on which store, after the assertion's own message.
async fn run(backend: Backend, name: &str) {
    let (_, case) = CASES.iter().find(|(n, _)| *n == name).expect("every generated test has a row in CASES");
    let Some(store) = Store::new(backend, name) else { return };
    let _report = ReportFailure(format!("shared/{}/{name} failed on {}", backend.name(), store.display));
    case(&store).await;
}

/// Prints its message if dropped while the test panics.
struct ReportFailure(String);

impl Drop for ReportFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.0);
        }
    }
}

/// One behaviour's store: a fresh place on one backend, a plain operator on it to damage objects
/// with, and a directory for the local blob files it uploads.
struct Store {
    url: String,
    /// The URL without credentials, for failure messages.
    display: String,
    raw: opendal::Operator,
    local: tempfile::TempDir,
    /// Keeps the store's server (if any) running while the behaviour runs.
    _server: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Store {
    /// A store for behaviour `name` on `backend`, or `None` (after saying why, or panicking under
    /// `TIERCACHE_REQUIRE_SERVERS=1`) if the backend's server cannot start.
    fn new(backend: Backend, name: &str) -> Option<Store> {
        let local = tempfile::tempdir().unwrap();
        let (url, server): (String, Option<Arc<dyn std::any::Any + Send + Sync>>) = match backend {
            Backend::Fs => (format!("fs://{}", local.path().join("store").display()), None),
            Backend::S3 => {
                let s3 = servers::or_skip("S3-compatible server", S3.get())?;
                (s3_url(&s3, S3Server::BUCKET, name), Some(s3))
            }
            Backend::Redis => {
                let redis = servers::or_skip("Redis", REDIS.get())?;
                // `redis://host:port/<db>/<root>`: every key of this store sits under `<root>/`.
                (format!("{}/{name}", redis.url()), Some(redis))
            }
        };
        opendal::install_default();
        // The test's own direct reads and writes (to damage objects) retry what the store calls
        // temporary, as the tier itself does: s3s-fs, shared by the tests running at once, now
        // and then cuts a response short under that load.
        let retry = opendal::layers::RetryLayer::new().with_max_times(4).with_jitter();
        let raw = opendal::Operator::from_uri(url.as_str()).unwrap().layer(retry);
        let display = tiercache_tiers::shared::redact(&url);
        Some(Store { url, display, raw, local, _server: server })
    }

    /// A new tier on the store: nothing cached from earlier calls, counters at zero.
    fn open(&self) -> Arc<SharedTier> {
        Arc::new(SharedTier::open(&config(&self.url)).unwrap())
    }

    /// Writes `len` bytes made from `seed` to a local file named by their digest.
    fn blob_file(&self, seed: u64, len: usize) -> (Vec<u8>, Digest, std::path::PathBuf) {
        let data = tiercache_testkit::bytes(seed, len);
        let digest = Digest::of(&data);
        let path = self.local.path().join(digest.hex());
        std::fs::write(&path, &data).unwrap();
        (data, digest, path)
    }
}

/// The store's URL with the test credentials in its options (the CLI's tests pass them the usual
/// way, in `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`).
fn s3_url(s3: &S3Server, bucket: &str, prefix: &str) -> String {
    format!(
        "s3://{bucket}/{prefix}?endpoint={}&region={}&access_key_id={}&secret_access_key={}",
        s3.endpoint(),
        s3.region(),
        s3.access_key(),
        s3.secret_key()
    )
}

static S3: Running<S3Server> = Running::new(S3Server::start);
static REDIS: Running<RedisServer> = Running::new(RedisServer::start);

/// A server shared by the tests that run while it is up, stopped when the last of them ends.
///
/// Not one server for the whole test binary: the harness exits without dropping statics, so a
/// server held by one would outlive the binary. libtest starts tests in name order, several at a
/// time, so one backend's tests overlap and nearly always share one server. Only the server
/// process is shared: a client is bound to the runtime of the test that built it, and each
/// `#[tokio::test]` has its own.
struct Running<T> {
    start: fn() -> Result<T, String>,
    state: Mutex<State<T>>,
}

enum State<T> {
    /// The server, if a test holds it.
    Up(Weak<T>),
    /// It could not start: every later test gets the same reason without trying again.
    Failed(String),
}

impl<T> Running<T> {
    const fn new(start: fn() -> Result<T, String>) -> Running<T> {
        Running { start, state: Mutex::new(State::Up(Weak::new())) }
    }

    /// The running server, started if no test holds one. Blocks while another test starts it
    /// (at most `servers::READY_TIMEOUT`), which is fine on a test's own runtime thread.
    fn get(&self) -> Result<Arc<T>, String> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &*state {
            State::Failed(err) => return Err(err.clone()),
            State::Up(weak) => {
                if let Some(server) = weak.upgrade() {
                    return Ok(server);
                }
            }
        }
        match (self.start)() {
            Ok(server) => {
                let server = Arc::new(server);
                *state = State::Up(Arc::downgrade(&server));
                Ok(server)
            }
            Err(err) => {
                *state = State::Failed(err.clone());
                Err(err)
            }
        }
    }
}

async fn read_all(tier: &Arc<SharedTier>, digest: &Digest, start: u64, end: u64) -> Result<Vec<u8>, SharedError> {
    let list = tier.lookup(digest).await?.expect("blob is in the shared tier");
    let chunks: Vec<bytes::Bytes> = tier.read_range(list, start, end, None).try_collect().await?;
    Ok(chunks.concat())
}

/// Polls `done` until it holds; fails the test if it does not within [`WAIT`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {WAIT:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Stores that fail: no backend needed.

#[tokio::test(start_paused = true)]
async fn a_dead_store_is_a_miss_and_the_breaker_opens() {
    let mut c =
        config("s3://bucket/x?endpoint=http://127.0.0.1:1&region=us-east-1&access_key_id=a&secret_access_key=b");
    c.limits.retries = 0;
    c.breaker_failures = 3;
    c.breaker_cooldown = Duration::from_secs(30);
    let tier = SharedTier::open(&c).unwrap();
    let d = Digest::of(b"x");
    for _ in 0..3 {
        assert!(matches!(tier.lookup(&d).await, Err(SharedError::Unavailable(_))));
    }
    let s = tier.stats();
    let got = (s.breaker, s.get(Counter::BreakerTrips), s.get(Counter::Errors), s.get(Counter::Misses));
    assert_eq!(got, (BreakerState::Open, 1, 3, 3));
    let e = tier.lookup(&d).await.unwrap_err();
    assert!(e.to_string().contains("circuit breaker open"), "{e}");
    assert_eq!(tier.stats().get(Counter::Errors), 3, "refused calls do not reach the store");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(tier.lookup(&d).await.is_err(), "the probe fails");
    assert_eq!(tier.stats().get(Counter::BreakerTrips), 2);
}

/// A store that accepts connections and never answers: every call times out, is a miss, and the
/// breaker opens after three, so later calls do not wait at all.
#[tokio::test]
async fn a_store_that_hangs_times_out_as_a_miss() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let mut c = config(&format!(
        "s3://bucket/x?endpoint=http://127.0.0.1:{port}&region=us-east-1&access_key_id=a&secret_access_key=b"
    ));
    c.limits.timeout = Duration::from_millis(200);
    c.limits.io_timeout = Duration::from_millis(200);
    c.limits.retries = 0;
    let tier = SharedTier::open(&c).unwrap();
    let d = Digest::of(b"x");
    for _ in 0..3 {
        let e = tier.lookup(&d).await.unwrap_err();
        assert!(matches!(e, SharedError::Unavailable(_)), "{e}");
    }
    assert_eq!(tier.stats().breaker, BreakerState::Open);
    let e = tier.lookup(&d).await.unwrap_err();
    assert!(e.to_string().contains("circuit breaker open"), "{e}");
    held.abort();
}
