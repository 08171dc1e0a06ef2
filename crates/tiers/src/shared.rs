//! The shared tier: one store for the whole cluster, on an existing distributed store reached
//! through Apache OpenDAL (S3-compatible object storage, Redis, a directory, …).
//!
//! Keys are content addresses only, so nodes never coordinate:
//! - `blobs/sha256/<hex>`: the blob's bytes;
//! - `blobs/sha256/<hex>.leaves`: the BLAKE3 digest of each leaf (16 KiB) of the blob;
//! - `blobs/sha256/<hex>.tree`: its [`ChunkList`] (BLAKE3 of each chunk's leaf digests), written
//!   after the other two, so its presence means they are complete (it is the commit marker).
//!   See `shared/tree.rs` for the format.
//! - `blobs/sha256/<hex>.chunks`: the commit marker and chunk list (SHA-256 of each whole chunk)
//!   that older nodes write; still read when a blob has no `.tree`, never written.
//! - `entries/<source hash>/<key hash>`: an [`EntryRecord`] (`shared/records.rs`), what an entry of
//!   a source resolves to, written by the caller after the blob's write-back.
//!
//! Derivations will live under `derived/<recipe>/sha256/<hex>` with the same objects.
//!
//! Invariant: every byte this module returns was checked against the chunk list's digest of its
//! chunk or leaf, and the chunk list against its own check line and blob digest. Anything that
//! fails a check is a miss, counted and logged, and every object of the blob is deleted so that
//! the next write-back repairs them. Bytes are only ever uploaded from a local blob whose whole
//! digest is verified during the upload.
//!
//! Invariant: every read from the store is bounded: side objects are read as a range of at most
//! [`MAX_SIDE_OBJECT_BYTES`], blob bytes as ranges of one chunk at most (the chunk size checked
//! when the side object is parsed).
//!
//! Invariant: a failure of the store is never an error for a reader: it is a miss, counted and
//! logged, and the circuit breaker stops calls to a store that keeps failing.
//!
//! This module knows digests and bytes, and a record's fields as strings: no namespaces or index.

mod breaker;
mod chunks;
mod derived;
mod operator;
mod records;
mod tree;
mod write_back;

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::io::Read as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use opendal::{ErrorKind, Operator};
use tiercache_core::Digest;

pub use breaker::BreakerState;
pub use chunks::ChunkList;
pub use derived::DerivedRecord;
pub use operator::{StoreLimits, redact};
pub use records::{EntryRecord, MAX_RECORD_BYTES, RecordLookup};
pub use write_back::WriteBack;

use breaker::{Breaker, Transition};
use chunks::Check;
use tree::{LEAF_DIGEST_BYTES, TreeHasher};

/// Chunk lists kept in memory (a few KiB each); the map is cleared when it grows past this.
const MAX_CACHED_LISTS: usize = 4096;
/// Chunks read ahead of the one being sent, so download and verification overlap.
const READ_AHEAD_CHUNKS: usize = 4;
/// Largest side object (`.tree`, `.chunks`) read: a `.tree` of a 256 GiB blob in 1 MiB chunks.
/// A larger one is refused as corrupt rather than read.
pub const MAX_SIDE_OBJECT_BYTES: u64 = 16 << 20;
/// Bytes verified on the calling task; more are hashed on a blocking thread.
const INLINE_HASH_BYTES: usize = 64 * 1024;

/// Metric names of the shared tier.
pub mod metric {
    /// Lookups of a blob, by `outcome` (`hit`, `miss`, `error`, `corrupt`, `refused`: breaker open).
    pub const LOOKUPS: &str = "tiercache_shared_lookups_total";
    /// Verified bytes read from the shared tier.
    pub const READ_BYTES: &str = "tiercache_shared_read_bytes_total";
    /// Write-backs, by `result` (`queued`, `done`, `skipped`: already there, `dropped`: queue full,
    /// `failed`).
    pub const WRITE_BACKS: &str = "tiercache_shared_write_backs_total";
    /// Bytes written to the shared tier.
    pub const WRITE_BYTES: &str = "tiercache_shared_write_bytes_total";
    /// Calls to the store that failed, by `op`.
    pub const ERRORS: &str = "tiercache_shared_errors_total";
    /// Objects that failed verification.
    pub const CORRUPT: &str = "tiercache_shared_corrupt_total";
    /// 1 while the circuit breaker is open or probing, else 0.
    pub const BREAKER_OPEN: &str = "tiercache_shared_breaker_open";
    /// Times the breaker opened.
    pub const BREAKER_TRIPS: &str = "tiercache_shared_breaker_trips_total";
    /// Lookups of an entry record, by `outcome` (`hit`, `stale`, `miss`, `malformed`, `error`).
    pub const RECORD_LOOKUPS: &str = "tiercache_shared_record_lookups_total";
    /// Entry records written.
    pub const RECORD_WRITES: &str = "tiercache_shared_record_writes_total";
}

/// How the shared tier is reached and how it behaves.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// The store's URL (see [`operator`](self) for the forms).
    pub url: String,
    /// Timeouts and retries.
    pub limits: StoreLimits,
    /// Bytes per verified chunk: the unit of a whole read.
    pub chunk_bytes: u64,
    /// Bytes per leaf: the smallest span a range read fetches and verifies. Divides `chunk_bytes`.
    pub leaf_bytes: u64,
    /// Failures in a row that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before it lets a probe through.
    pub breaker_cooldown: Duration,
    /// Write-backs waiting at most; more are dropped and counted.
    pub write_back_queue: usize,
    /// Write-backs running at once.
    pub write_back_workers: usize,
}

impl SharedConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> SharedConfig {
        SharedConfig {
            url: url.into(),
            limits: StoreLimits::default(),
            chunk_bytes: 1 << 20,
            leaf_bytes: 16 << 10,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(5),
            write_back_queue: 256,
            write_back_workers: 2,
        }
    }
}

/// Why a shared-tier call gave no bytes. Callers treat every variant as a miss.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SharedError {
    /// The store failed or timed out.
    #[error("shared tier unavailable: {0}")]
    Unavailable(String),
    /// An object failed verification; it was deleted.
    #[error("shared tier object for {digest} is corrupt: {why}")]
    Corrupt {
        /// The blob.
        digest: Digest,
        /// What failed.
        why: String,
    },
    /// The circuit breaker is open: the store was not called.
    #[error("shared tier unavailable: circuit breaker open")]
    Refused,
    /// Reading the local blob to upload failed.
    #[error("cannot read local blob for the shared tier: {0}")]
    Local(String),
}

/// What the shared tier counts (since this process started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Lookups that found the blob.
    Hits,
    /// Lookups that did not (refused and failed ones included).
    Misses,
    /// Verified bytes read.
    ReadBytes,
    /// Failed calls to the store.
    Errors,
    /// Objects that failed verification.
    Corrupt,
    /// Write-backs queued.
    WriteBacksQueued,
    /// Write-backs that uploaded a blob.
    WriteBacksDone,
    /// Write-backs skipped because the blob was already there.
    WriteBacksSkipped,
    /// Write-backs dropped because the queue was full.
    WriteBacksDropped,
    /// Write-backs that failed.
    WriteBacksFailed,
    /// Bytes uploaded.
    WriteBytes,
    /// Times the breaker opened.
    BreakerTrips,
    /// Entry record lookups that found a fresh record whose blob is there.
    RecordHits,
    /// Entry record lookups that found a record past the freshness window.
    RecordStale,
    /// Entry record lookups that found none (or a malformed one, or one naming a missing blob).
    RecordMisses,
    /// Entry record lookups that failed (store down, breaker open).
    RecordErrors,
    /// Entry records written.
    RecordsWritten,
}

impl Counter {
    /// Every counter, in the order of [`SharedStats::counters`].
    pub const ALL: [Counter; 17] = [
        Counter::Hits,
        Counter::Misses,
        Counter::ReadBytes,
        Counter::Errors,
        Counter::Corrupt,
        Counter::WriteBacksQueued,
        Counter::WriteBacksDone,
        Counter::WriteBacksSkipped,
        Counter::WriteBacksDropped,
        Counter::WriteBacksFailed,
        Counter::WriteBytes,
        Counter::BreakerTrips,
        Counter::RecordHits,
        Counter::RecordStale,
        Counter::RecordMisses,
        Counter::RecordErrors,
        Counter::RecordsWritten,
    ];

    /// Its name in stats (`write_backs_done`, …).
    pub fn name(self) -> &'static str {
        match self {
            Counter::Hits => "hits",
            Counter::Misses => "misses",
            Counter::ReadBytes => "read_bytes",
            Counter::Errors => "errors",
            Counter::Corrupt => "corrupt",
            Counter::WriteBacksQueued => "write_backs_queued",
            Counter::WriteBacksDone => "write_backs_done",
            Counter::WriteBacksSkipped => "write_backs_skipped",
            Counter::WriteBacksDropped => "write_backs_dropped",
            Counter::WriteBacksFailed => "write_backs_failed",
            Counter::WriteBytes => "write_bytes",
            Counter::BreakerTrips => "breaker_trips",
            Counter::RecordHits => "record_hits",
            Counter::RecordStale => "record_stale",
            Counter::RecordMisses => "record_misses",
            Counter::RecordErrors => "record_errors",
            Counter::RecordsWritten => "records_written",
        }
    }
}

/// A snapshot of the shared tier's counters (since this process started) and breaker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedStats {
    values: [u64; Counter::ALL.len()],
    /// The breaker now.
    pub breaker: BreakerState,
}

impl SharedStats {
    /// One counter's value.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize]
    }

    /// Every counter by name, for storing and printing.
    pub fn counters(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c.name(), self.get(c)))
    }
}

/// What a write-back did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The blob was uploaded.
    Stored,
    /// The blob was already in the shared tier.
    Existed,
}

/// The shared tier. Share it in an `Arc`.
pub struct SharedTier {
    op: Operator,
    display: String,
    chunk_bytes: u64,
    leaf_bytes: u64,
    breaker: Breaker,
    /// [`StoreLimits::lookup_timeout`].
    lookup_timeout: Duration,
    lists: Mutex<HashMap<Digest, std::sync::Arc<ChunkList>>>,
    /// Blobs whose pair this process deleted as damaged and has not found whole since: reads of
    /// them still in flight then fail too, and must not count or delete the damage again.
    discarded: Mutex<HashSet<Digest>>,
    /// Indexed by [`Counter`].
    counters: [AtomicU64; Counter::ALL.len()],
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTier").field("store", &self.display).finish_non_exhaustive()
    }
}

impl SharedTier {
    /// Builds the tier for `config.url`. Does not contact the store: a store that is down at
    /// start-up only makes reads miss until it answers.
    pub fn open(config: &SharedConfig) -> Result<SharedTier, String> {
        if config.chunk_bytes == 0 || config.leaf_bytes == 0 || !config.chunk_bytes.is_multiple_of(config.leaf_bytes) {
            return Err("shared tier chunk and leaf sizes must be positive, the leaf dividing the chunk".into());
        }
        let op = operator::build(&config.url, &config.limits)?;
        metrics::gauge!(metric::BREAKER_OPEN).set(0.0);
        Ok(SharedTier {
            op,
            display: redact(&config.url),
            chunk_bytes: config.chunk_bytes,
            leaf_bytes: config.leaf_bytes,
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            lookup_timeout: config.limits.lookup_timeout,
            lists: Mutex::new(HashMap::new()),
            discarded: Mutex::new(HashSet::new()),
            counters: Default::default(),
        })
    }

    /// The store's URL with credentials removed.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The store's key of blob `digest`.
    pub fn blob_key(digest: &Digest) -> String {
        format!("blobs/sha256/{}", digest.hex())
    }

    /// The store's key of blob `digest`'s chunk list as older nodes write it (SHA-256 chunks).
    pub fn chunks_key(digest: &Digest) -> String {
        format!("blobs/sha256/{}.chunks", digest.hex())
    }

    /// The store's key of blob `digest`'s tree: its chunk list and commit marker.
    pub fn tree_key(digest: &Digest) -> String {
        format!("blobs/sha256/{}.tree", digest.hex())
    }

    /// The store's key of blob `digest`'s leaf digests.
    pub fn leaves_key(digest: &Digest) -> String {
        format!("blobs/sha256/{}.leaves", digest.hex())
    }

    /// Counters and breaker state.
    pub fn stats(&self) -> SharedStats {
        SharedStats {
            values: std::array::from_fn(|i| self.counters[i].load(Ordering::Relaxed)),
            breaker: self.breaker.state(),
        }
    }

    pub(crate) fn bump(&self, c: Counter, n: u64) {
        self.counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Looks blob `digest` up: its chunk list if the shared tier holds it whole.
    ///
    /// Returns `Ok(None)` if it is not there. An error (store down, breaker open, a corrupt chunk
    /// list) is a miss for the caller; it has been counted and logged here.
    pub async fn lookup(&self, digest: &Digest) -> Result<Option<std::sync::Arc<ChunkList>>, SharedError> {
        if let Some(list) = self.lists.lock().unwrap_or_else(|p| p.into_inner()).get(digest) {
            self.lookup_outcome("hit");
            return Ok(Some(std::sync::Arc::clone(list)));
        }
        // The tree first; an older node's `.chunks` only if there is none.
        let mut found = None;
        for (key, decode) in [
            (Self::tree_key(digest), tree::decode as fn(&Digest, &[u8]) -> Result<ChunkList, String>),
            (Self::chunks_key(digest), ChunkList::decode),
        ] {
            match self.read_side_object(&key).await {
                Ok(Some(bytes)) => {
                    found = Some(bytes.and_then(|b| decode(digest, &b)));
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    self.lookup_outcome(if matches!(e, SharedError::Refused) { "refused" } else { "error" });
                    return Err(e);
                }
            }
        }
        let Some(decoded) = found else {
            self.lookup_outcome("miss");
            return Ok(None);
        };
        match decoded {
            Ok(list) => {
                let list = std::sync::Arc::new(list);
                let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
                if lists.len() >= MAX_CACHED_LISTS {
                    lists.clear();
                }
                lists.insert(*digest, std::sync::Arc::clone(&list));
                self.discarded.lock().unwrap_or_else(|p| p.into_inner()).remove(digest);
                drop(lists);
                self.lookup_outcome("hit");
                Ok(Some(list))
            }
            Err(why) => {
                self.lookup_outcome("corrupt");
                Err(self.discard(digest, why).await)
            }
        }
    }

    fn lookup_outcome(&self, outcome: &'static str) {
        metrics::counter!(metric::LOOKUPS, "outcome" => outcome).increment(1);
        self.bump(if outcome == "hit" { Counter::Hits } else { Counter::Misses }, 1);
    }

    /// Reads side object `key` whole, refusing one larger than [`MAX_SIDE_OBJECT_BYTES`] (the
    /// inner `Err`: why, for [`SharedTier::discard`]). `Ok(None)` if it is not there.
    async fn read_side_object(&self, key: &str) -> Result<Option<Result<Bytes, String>>, SharedError> {
        // Its size first, then exactly that many bytes at most: a range past an object's end is
        // an error on some stores, and a whole read is not bounded.
        let Some(meta) = self.lookup_call("lookup", self.op.stat(key)).await? else { return Ok(None) };
        let size = meta.content_length();
        if size == 0 || size > MAX_SIDE_OBJECT_BYTES {
            return Ok(Some(Err(format!("side object {key} has {size} bytes (at most {MAX_SIDE_OBJECT_BYTES})"))));
        }
        let Some(buf) = self.lookup_call("lookup", self.op.read_with(key).range(0..size)).await? else {
            return Ok(None);
        };
        Ok(Some(Ok(buf.to_bytes())))
    }

    /// Reads and verifies chunk `i` of `list`.
    pub async fn read_chunk(&self, list: &ChunkList, i: usize) -> Result<Bytes, SharedError> {
        let (start, end) = list.chunk_range(i);
        self.read_verified(list, start, end).await.map(|(_, bytes)| bytes)
    }

    /// Reads and verifies the smallest span of `list`'s blob that holds `start..end` and can be
    /// verified alone, within the chunk holding `start` only: its leaves for a tree (whole chunks
    /// need no leaf digests), its whole chunk for an older node's `.chunks` list. Returns the
    /// span's start offset and its bytes, which may begin before `start` and end before `end`
    /// (at the chunk's end).
    pub async fn read_verified(&self, list: &ChunkList, start: u64, end: u64) -> Result<(u64, Bytes), SharedError> {
        let i = list.chunk_of(start);
        let (cs, ce) = list.chunk_range(i);
        let end = end.min(ce);
        let leaf = list.leaf_bytes();
        let (from, to) = (start / leaf * leaf, end.div_ceil(leaf).saturating_mul(leaf).min(ce));
        let whole_chunk = from <= cs && to >= ce;
        let key = Self::blob_key(&list.digest);
        let data = async {
            let read = self.call("read", self.op.read_with(&key).range(from..to)).await;
            if let Err(e) = &read
                && let Ok(Some(meta)) = self.call("stat", self.op.stat(&key)).await
                && meta.content_length() != list.size_bytes
            {
                // Some stores fail a range past a short object's end as a transfer error.
                let why = format!(
                    "the blob has {} bytes, its chunk list says {} ({e})",
                    meta.content_length(),
                    list.size_bytes
                );
                return Err(Ok(why));
            }
            match read.map_err(Err)? {
                Some(buf) => Ok(buf.to_bytes()),
                None => Err(Ok("the blob is missing or shorter than its chunk list says".to_owned())),
            }
        };
        // A leaf's check needs its chunk's leaf digests: read them beside the bytes.
        let leaves = async {
            let Check::Tree { leaf_bytes, .. } = &list.check else { return Ok(None) };
            if whole_chunk {
                return Ok(None);
            }
            let per_chunk = list.chunk_bytes / leaf_bytes;
            let (first, n) = (i as u64 * per_chunk, (ce - cs).div_ceil(*leaf_bytes));
            let range = first * LEAF_DIGEST_BYTES..(first + n) * LEAF_DIGEST_BYTES;
            let key = Self::leaves_key(&list.digest);
            match self.call("read", self.op.read_with(&key).range(range.clone())).await.map_err(Err)? {
                Some(buf) if buf.len() as u64 == range.end - range.start => Ok(Some(buf.to_bytes())),
                Some(buf) => Err(Ok(format!(
                    "chunk {i}'s leaf digests have {} bytes, expected {}",
                    buf.len(),
                    range.end - range.start
                ))),
                None => Err(Ok("the leaf digests are missing or shorter than the tree says".to_owned())),
            }
        };
        let (bytes, leaves) = match tokio::join!(data, leaves) {
            (Ok(b), Ok(l)) => (b, l),
            // Damage (`Ok(why)`) is reported before a failed call.
            (Err(Ok(why)), _) | (_, Err(Ok(why))) => return Err(self.discard(&list.digest, why).await),
            (Err(Err(e)), _) | (_, Err(Err(e))) => return Err(e),
        };
        if bytes.len() as u64 != to - from {
            let why = format!("bytes {from}..{to} came back as {} bytes", bytes.len());
            return Err(self.discard(&list.digest, why).await);
        }
        let expect = list.expect(i);
        let check = move || verify(expect, from - cs, &bytes, leaves.as_deref()).map(|()| bytes);
        let checked = if (to - from) as usize <= INLINE_HASH_BYTES {
            check()
        } else {
            tokio::task::spawn_blocking(check)
                .await
                .map_err(|e| SharedError::Local(format!("hashing task failed: {e}")))?
        };
        let bytes = match checked {
            Ok(bytes) => bytes,
            Err(why) => return Err(self.discard(&list.digest, why).await),
        };
        self.bump(Counter::ReadBytes, bytes.len() as u64);
        metrics::counter!(metric::READ_BYTES).increment(bytes.len() as u64);
        Ok((from, bytes))
    }

    /// Bytes `start..end` of the blob `list` describes, verified leaf by leaf (chunk by chunk for
    /// whole chunks), with a few chunks read ahead. The stream ends with an error (and nothing
    /// unverified) if a check fails. `known` is a span already read and verified (its start
    /// offset and bytes): it is used instead of reading those bytes again.
    pub fn read_range(
        self: &std::sync::Arc<Self>,
        list: std::sync::Arc<ChunkList>,
        start: u64,
        end: u64,
        known: Option<(u64, Bytes)>,
    ) -> BoxStream<'static, Result<Bytes, SharedError>> {
        let end = end.min(list.size_bytes);
        if start >= end {
            return futures::stream::empty().boxed();
        }
        // The known span first, if it holds `start`; then the rest, cut at chunk boundaries.
        let mut pos = start;
        let head = known.filter(|(at, b)| *at <= start && start < at + b.len() as u64).map(|(at, b)| {
            let to = end.min(at + b.len() as u64);
            pos = to;
            b.slice((start - at) as usize..(to - at) as usize)
        });
        let mut spans = Vec::new();
        while pos < end {
            let to = end.min(list.chunk_range(list.chunk_of(pos)).1);
            spans.push((pos, to));
            pos = to;
        }
        let tier = std::sync::Arc::clone(self);
        let rest = futures::stream::iter(spans)
            .map(move |(from, to)| {
                let (tier, list) = (std::sync::Arc::clone(&tier), std::sync::Arc::clone(&list));
                async move {
                    let (at, bytes) = tier.read_verified(&list, from, to).await?;
                    Ok(bytes.slice((from - at) as usize..(to - at) as usize))
                }
            })
            .buffered(READ_AHEAD_CHUNKS);
        futures::stream::iter(head.map(Ok)).chain(rest).boxed()
    }

    /// Uploads the local blob file at `path` as `digest`, unless the shared tier has it already.
    ///
    /// 1. stat the tree: if it is there, stop (`Existed`); stat an older node's `.chunks`: if it
    ///    is there, the blob's bytes are too, and only the side objects are written below;
    /// 2. stream the file to `blobs/sha256/<hex>`, computing the leaf and chunk digests and the
    ///    whole SHA-256 on the way;
    /// 3. if the whole digest is not `digest` (the local copy rotted), delete the upload and fail;
    /// 4. write `.leaves`;
    /// 5. write `.tree`, which makes the blob visible to readers.
    ///
    /// A crash or failure between 2 and 5 leaves a blob without a tree: invisible (unless an
    /// older node's `.chunks` makes it visible to both), and overwritten by the next write-back.
    pub async fn put_file(&self, digest: &Digest, path: &Path) -> Result<PutOutcome, SharedError> {
        let tree_key = Self::tree_key(digest);
        if self.call("stat", self.op.stat(&tree_key)).await?.is_some() {
            return Ok(PutOutcome::Existed);
        }
        let bytes_there = self.call("stat", self.op.stat(&Self::chunks_key(digest))).await?.is_some();
        let file = std::fs::File::open(path).map_err(|e| SharedError::Local(format!("{}: {e}", path.display())))?;
        // A blocking thread reads the file and hashes it (leaves, chunks and whole); this task uploads.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let (leaf_bytes, chunk_bytes, expected) = (self.leaf_bytes, self.chunk_bytes, *digest);
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<Result<(ChunkList, Vec<u8>), Digest>> {
            let mut hasher = TreeHasher::new(leaf_bytes, chunk_bytes);
            let piece = chunk_bytes.min(8 << 20);
            loop {
                let mut buf = Vec::with_capacity(piece as usize);
                let n = (&file).take(piece).read_to_end(&mut buf)?;
                hasher.update(&buf);
                if n == 0 || tx.blocking_send(Bytes::from(buf)).is_err() {
                    break;
                }
            }
            Ok(hasher.finish(&expected))
        });
        let blob_key = Self::blob_key(digest);
        let upload = async {
            if bytes_there {
                while rx.recv().await.is_some() {}
                return Ok(0);
            }
            let mut writer = self
                .call("write", self.op.writer_with(&blob_key).chunk(8 << 20))
                .await?
                .ok_or_else(|| SharedError::Unavailable("store answered \"not found\" to a write".into()))?;
            let mut written = 0u64;
            while let Some(chunk) = rx.recv().await {
                written += chunk.len() as u64;
                if let Err(e) = writer.write(chunk).await {
                    let _ = writer.abort().await;
                    return Err(self.failed("write", e));
                }
            }
            self.call("write", writer.close()).await?;
            Ok::<u64, SharedError>(written)
        };
        let uploaded = upload.await;
        let hashed = reader.await.map_err(|e| SharedError::Local(format!("reader task failed: {e}")))?;
        let written = uploaded?;
        let (list, leaves) = match hashed.map_err(|e| SharedError::Local(format!("{}: {e}", path.display())))? {
            Ok(done) => done,
            Err(actual) => {
                if !bytes_there {
                    let _ = self.op.delete(&blob_key).await;
                }
                return Err(SharedError::Local(format!(
                    "local blob {digest} hashes to {actual}; not uploaded (the disk tier copy is damaged)"
                )));
            }
        };
        self.call("write", self.op.write(&Self::leaves_key(digest), leaves)).await?;
        self.call("write", self.op.write(&tree_key, tree::encode(&list))).await?;
        self.discarded.lock().unwrap_or_else(|p| p.into_inner()).remove(digest);
        self.bump(Counter::WriteBytes, written);
        metrics::counter!(metric::WRITE_BYTES).increment(written);
        Ok(PutOutcome::Stored)
    }

    /// Counts and logs a verification failure and deletes the blob's objects (its commit markers
    /// first, so no reader trusts a half-deleted set), so the next write-back of the blob repairs it. Also for
    /// callers that found the damage themselves (a whole digest that does not match).
    pub async fn discard(&self, digest: &Digest, why: String) -> SharedError {
        let is_new = {
            let mut discarded = self.discarded.lock().unwrap_or_else(|p| p.into_inner());
            if discarded.len() >= MAX_CACHED_LISTS {
                discarded.clear();
            }
            discarded.insert(*digest)
        };
        if !is_new {
            tracing::debug!(%digest, why, "shared tier object already discarded");
            return SharedError::Corrupt { digest: *digest, why };
        }
        tracing::warn!(%digest, store = %self.display, why, "shared tier object failed verification; treated as a miss and deleted");
        self.bump(Counter::Corrupt, 1);
        metrics::counter!(metric::CORRUPT).increment(1);
        self.lists.lock().unwrap_or_else(|p| p.into_inner()).remove(digest);
        for key in [Self::tree_key(digest), Self::chunks_key(digest), Self::leaves_key(digest), Self::blob_key(digest)]
        {
            let _ = self.call("delete", self.op.delete(&key)).await;
        }
        SharedError::Corrupt { digest: *digest, why }
    }

    /// Runs one call to the store through the breaker. "Not found" (or a range beyond the end) is
    /// `Ok(None)`.
    async fn call<T>(
        &self,
        op: &'static str,
        call: impl IntoFuture<Output = opendal::Result<T>>,
    ) -> Result<Option<T>, SharedError> {
        if !self.breaker.allow() {
            return Err(SharedError::Refused);
        }
        match call.into_future().await {
            Ok(v) => {
                self.report(true);
                Ok(Some(v))
            }
            // A range past the end is an answer too: the object is shorter than it should be.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::RangeNotSatisfied) => {
                self.report(true);
                Ok(None)
            }
            Err(e) => Err(self.failed(op, e)),
        }
    }

    /// [`Self::call`] for a lookup a reader waits on before its answer (a side object, an entry
    /// record), bounded as a whole, retries included, by [`StoreLimits::lookup_timeout`]: past it
    /// the call failed (and the breaker counts it), so a dead store costs a cold read that long.
    async fn lookup_call<T>(
        &self,
        op: &'static str,
        call: impl IntoFuture<Output = opendal::Result<T>>,
    ) -> Result<Option<T>, SharedError> {
        match tokio::time::timeout(self.lookup_timeout, self.call(op, call)).await {
            Ok(answer) => answer,
            Err(_) => {
                let why = format!("no answer within {:?}", self.lookup_timeout);
                Err(self.failed(op, opendal::Error::new(ErrorKind::Unexpected, why)))
            }
        }
    }

    fn failed(&self, op: &'static str, e: opendal::Error) -> SharedError {
        self.report(false);
        self.bump(Counter::Errors, 1);
        metrics::counter!(metric::ERRORS, "op" => op).increment(1);
        tracing::debug!(store = %self.display, op, error = %e, "shared tier call failed");
        SharedError::Unavailable(format!("{op}: {e}"))
    }

    fn report(&self, ok: bool) {
        match self.breaker.report(ok) {
            Transition::None => {}
            Transition::Opened => {
                self.bump(Counter::BreakerTrips, 1);
                metrics::counter!(metric::BREAKER_TRIPS).increment(1);
                metrics::gauge!(metric::BREAKER_OPEN).set(1.0);
                tracing::warn!(store = %self.display, "shared tier is failing; circuit breaker open, reads skip it until a probe succeeds");
            }
            Transition::Closed => {
                metrics::gauge!(metric::BREAKER_OPEN).set(0.0);
                tracing::info!(store = %self.display, "shared tier answers again; circuit breaker closed");
            }
        }
    }

    /// Counts a write-back's step (one of the `WriteBacks*` counters).
    pub(crate) fn count_write_back(&self, c: Counter) {
        self.bump(c, 1);
        let result = c.name().trim_start_matches("write_backs_");
        metrics::counter!(metric::WRITE_BACKS, "result" => result).increment(1);
    }
}

/// Checks `bytes`, which start `offset` bytes into their chunk, against what the chunk list
/// expects of that chunk (`leaves`: the chunk's leaf digests, needed unless `bytes` is the whole
/// chunk of a tree). Returns why not, for [`SharedTier::discard`].
fn verify(expect: chunks::Expect, offset: u64, bytes: &[u8], leaves: Option<&[u8]>) -> Result<(), String> {
    match expect {
        chunks::Expect::Sha256 { i, digest } => {
            let actual = Digest::of(bytes);
            if actual != digest {
                return Err(format!("chunk {i} hashes to {actual}, expected {digest}"));
            }
        }
        chunks::Expect::Tree { i, leaf_bytes, chunk } => match leaves {
            None => {
                if tree::chunk_digest(&tree::leaf_digests(bytes, leaf_bytes)) != chunk {
                    return Err(format!("chunk {i} fails its BLAKE3 check"));
                }
            }
            Some(leaves) => {
                if tree::chunk_digest(leaves) != chunk {
                    return Err(format!("chunk {i}'s leaf digests fail their check"));
                }
                let first = (offset / leaf_bytes) as usize;
                for (k, leaf) in bytes.chunks(leaf_bytes as usize).enumerate() {
                    let at = (first + k) * LEAF_DIGEST_BYTES as usize;
                    let expected = leaves.get(at..at + LEAF_DIGEST_BYTES as usize);
                    if expected != Some(blake3::hash(leaf).as_bytes().as_slice()) {
                        return Err(format!("leaf {} of chunk {i} fails its BLAKE3 check", first + k));
                    }
                }
            }
        },
    }
    Ok(())
}
