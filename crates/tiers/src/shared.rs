//! The shared tier: one store for the whole cluster, on an existing distributed store reached
//! through Apache OpenDAL (S3-compatible object storage, Redis, a directory, …).
//!
//! Keys are content addresses only, so nodes never coordinate:
//! - `blobs/sha256/<hex>`: the blob's bytes;
//! - `blobs/sha256/<hex>.chunks`: its [`ChunkList`], written after the bytes, so its presence
//!   means the bytes are complete (it is the commit marker);
//! - `entries/<source hash>/<key hash>`: an [`EntryRecord`] (`shared/records.rs`), what an entry of
//!   a source resolves to, written by the caller after the blob's write-back.
//!
//! Derivations will live under `derived/<recipe>/sha256/<hex>` with the same pair of objects.
//!
//! Invariant: every byte this module returns was checked against the chunk list's digest of its
//! chunk, and the chunk list against its own check line and blob digest. Anything that fails a
//! check is a miss, counted and logged, and both objects are deleted so that the next write-back
//! repairs them. Bytes are only ever uploaded from a local blob whose whole digest is verified
//! during the upload.
//!
//! Invariant: a failure of the store is never an error for a reader: it is a miss, counted and
//! logged, and the circuit breaker stops calls to a store that keeps failing.
//!
//! This module knows digests and bytes, and a record's fields as strings: no namespaces or index.

mod breaker;
mod chunks;
mod operator;
mod records;
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
pub use operator::{StoreLimits, redact};
pub use records::{EntryRecord, MAX_RECORD_BYTES, RecordLookup};
pub use write_back::WriteBack;

use breaker::{Breaker, Transition};
use chunks::ChunkHasher;

/// Chunk lists kept in memory (a few KiB each); the map is cleared when it grows past this.
const MAX_CACHED_LISTS: usize = 4096;
/// Chunks read ahead of the one being sent, so download and verification overlap.
const READ_AHEAD_CHUNKS: usize = 4;

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
    /// Bytes per verified chunk.
    pub chunk_bytes: u64,
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
    breaker: Breaker,
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
        if config.chunk_bytes == 0 {
            return Err("shared tier chunk size must be positive".into());
        }
        let op = operator::build(&config.url, &config.limits)?;
        metrics::gauge!(metric::BREAKER_OPEN).set(0.0);
        Ok(SharedTier {
            op,
            display: redact(&config.url),
            chunk_bytes: config.chunk_bytes,
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
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

    /// The store's key of blob `digest`'s chunk list.
    pub fn chunks_key(digest: &Digest) -> String {
        format!("blobs/sha256/{}.chunks", digest.hex())
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
        let key = Self::chunks_key(digest);
        let found = match self.call("lookup", self.op.read(&key)).await {
            Ok(found) => found,
            Err(e) => {
                self.lookup_outcome(if matches!(e, SharedError::Refused) { "refused" } else { "error" });
                return Err(e);
            }
        };
        let Some(buf) = found else {
            self.lookup_outcome("miss");
            return Ok(None);
        };
        match ChunkList::decode(digest, &buf.to_bytes()) {
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

    /// Reads and verifies chunk `i` of `list`.
    pub async fn read_chunk(&self, list: &ChunkList, i: usize) -> Result<Bytes, SharedError> {
        let (start, end) = list.chunk_range(i);
        let key = Self::blob_key(&list.digest);
        let read = self.call("read", self.op.read_with(&key).range(start..end)).await;
        if let Err(e) = &read
            && let Ok(Some(meta)) = self.call("stat", self.op.stat(&key)).await
            && meta.content_length() != list.size_bytes
        {
            // Some stores fail a range past a short object's end as a transfer error.
            let why =
                format!("the blob has {} bytes, its chunk list says {} ({e})", meta.content_length(), list.size_bytes);
            return Err(self.discard(&list.digest, why).await);
        }
        let Some(buf) = read? else {
            return Err(self
                .discard(&list.digest, "the blob is missing or shorter than its chunk list says".into())
                .await);
        };
        let bytes = buf.to_bytes();
        if bytes.len() as u64 != end - start {
            let why = format!("chunk {i} has {} bytes, expected {}", bytes.len(), end - start);
            return Err(self.discard(&list.digest, why).await);
        }
        let expected = list.chunks[i];
        let (bytes, actual) = tokio::task::spawn_blocking(move || {
            let d = Digest::of(&bytes);
            (bytes, d)
        })
        .await
        .map_err(|e| SharedError::Local(format!("hashing task failed: {e}")))?;
        if actual != expected {
            return Err(self.discard(&list.digest, format!("chunk {i} hashes to {actual}, expected {expected}")).await);
        }
        self.bump(Counter::ReadBytes, bytes.len() as u64);
        metrics::counter!(metric::READ_BYTES).increment(bytes.len() as u64);
        Ok(bytes)
    }

    /// Bytes `start..end` of the blob `list` describes, verified chunk by chunk, with a few chunks
    /// read ahead. The stream ends with an error (and nothing unverified) if a chunk fails.
    /// `known` is a chunk already read and verified (its start offset and bytes): it is used
    /// instead of reading that chunk again.
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
        let (first, last) = (list.chunk_of(start), list.chunk_of(end - 1));
        let tier = std::sync::Arc::clone(self);
        futures::stream::iter(first..=last)
            .map(move |i| {
                let (tier, list) = (std::sync::Arc::clone(&tier), std::sync::Arc::clone(&list));
                let (cs, _) = list.chunk_range(i);
                let known = known.as_ref().filter(|(at, _)| *at == cs).map(|(_, b)| b.clone());
                async move {
                    let bytes = match known {
                        Some(b) => b,
                        None => tier.read_chunk(&list, i).await?,
                    };
                    let from = start.saturating_sub(cs) as usize;
                    let to = ((end - cs) as usize).min(bytes.len());
                    Ok(bytes.slice(from..to))
                }
            })
            .buffered(READ_AHEAD_CHUNKS)
            .boxed()
    }

    /// Uploads the local blob file at `path` as `digest`, unless the shared tier has it already.
    ///
    /// 1. stat the chunk list: if it is there, stop (`Existed`);
    /// 2. stream the file to `blobs/sha256/<hex>`, computing the chunk digests and the whole
    ///    digest on the way;
    /// 3. if the whole digest is not `digest` (the local copy rotted), delete the upload and fail;
    /// 4. write the chunk list, which makes the blob visible to readers.
    ///
    /// A crash or failure between 2 and 4 leaves a blob without a chunk list: invisible, and
    /// overwritten by the next write-back.
    pub async fn put_file(&self, digest: &Digest, path: &Path) -> Result<PutOutcome, SharedError> {
        let chunks_key = Self::chunks_key(digest);
        if self.call("stat", self.op.stat(&chunks_key)).await?.is_some() {
            return Ok(PutOutcome::Existed);
        }
        let file = std::fs::File::open(path).map_err(|e| SharedError::Local(format!("{}: {e}", path.display())))?;
        // A blocking thread reads the file and hashes it (chunks and whole); this task uploads.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
        let (chunk_bytes, expected) = (self.chunk_bytes, *digest);
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<Result<ChunkList, Digest>> {
            let mut hasher = ChunkHasher::new(chunk_bytes);
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
        let list = match hashed.map_err(|e| SharedError::Local(format!("{}: {e}", path.display())))? {
            Ok(list) => list,
            Err(actual) => {
                let _ = self.op.delete(&blob_key).await;
                return Err(SharedError::Local(format!(
                    "local blob {digest} hashes to {actual}; not uploaded (the disk tier copy is damaged)"
                )));
            }
        };
        self.call("write", self.op.write(&chunks_key, list.encode())).await?;
        self.discarded.lock().unwrap_or_else(|p| p.into_inner()).remove(digest);
        self.bump(Counter::WriteBytes, written);
        metrics::counter!(metric::WRITE_BYTES).increment(written);
        Ok(PutOutcome::Stored)
    }

    /// Counts and logs a verification failure and deletes both objects (chunk list first, so no
    /// reader trusts a half-deleted pair), so the next write-back of the blob repairs it. Also for
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
        let _ = self.call("delete", self.op.delete(&Self::chunks_key(digest))).await;
        let _ = self.call("delete", self.op.delete(&Self::blob_key(digest))).await;
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
