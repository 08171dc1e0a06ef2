//! Where blobs are kept on this node (layer 2): a [`Store`] is one content-addressed directory
//! with its quota (the data directory's disk tier, or a namespace's own directory, `place.rs`),
//! and [`Stores`] is every store of one cache with the steps every stored blob takes: reserve,
//! spool into a temp file, [`Stores::commit`] (publish, index, write-back), MD5 beside the fetch
//! or after the store (`store/md5.rs`).
//!
//! It does not decide what to store or when (the read and write paths do), and knows nothing of
//! namespaces' definitions, sources or HTTP.
//!
//! Invariant: only managed entries reference the disk tier's blobs (eviction, orphans, pins and
//! `df` count those); a blob row named only by entries kept elsewhere is *absent* (state 2).
//! Invariant: MD5 is never on a client's critical path: it is computed on a thread of its own at
//! the lowest CPU priority (one pass hashing at a time), beside the fetch (tailing its temp file)
//! or after the blob is published; a read never waits for it (an entry is served without its MD5
//! until it is known).

mod md5;
pub(crate) mod place;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tiercache_core::{Digest, Hasher, now_ms};
use tiercache_index::{Index, IndexError, Namespace, NewEntry};
use tiercache_tiers::shared::{SharedTier, WriteBack};
use tiercache_tiers::{DiskTier, FinishedBlob, TempBlob};

use crate::blocking::{Ix, blocking, blocking_with};
use crate::config::DiskLimits;
use crate::memory::Memory;
use crate::quota::{DiskQuota, NoRoom, Reservation};
use crate::spool::{Phase, RESERVE_STEP_BYTES};
use crate::tasks::Tasks;
use crate::{Error, telemetry};
use md5::{Md5Passes, Urgency};
pub(crate) use md5::{Md5Pause, Md5Tail};

/// Where a blob stored in a store came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A source fetch.
    Fetch,
    /// An upload (`PUT /blobs/…`, or `PUT` of an entry).
    Upload,
    /// A directory namespace's copy-to-cache.
    Copy,
    /// A fill from the shared tier: the one origin never written back to it.
    Shared,
    /// A copy made by moving a namespace to another storage place.
    Move,
    /// A derivation's output, made by a worker.
    Derived,
}

impl Origin {
    /// Its `origin` label in metrics.
    fn as_str(self) -> &'static str {
        match self {
            Origin::Fetch => "fetch",
            Origin::Upload => "upload",
            Origin::Copy => "copy",
            Origin::Shared => "shared",
            Origin::Move => "move",
            Origin::Derived => "derived",
        }
    }
}

/// What deleting blobs removed (`cleanup`, namespace deletion).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CleanupReport {
    /// Entries removed.
    pub n_entries: u64,
    /// Blob files removed (no namespace referenced them any more).
    pub n_blobs: u64,
    /// Bytes those blobs held.
    pub bytes: u64,
}

/// What [`Stores::publish_and_record`] does besides publishing and recording.
struct Steps<'a> {
    /// The entry's namespace and key, forgotten by the memory tier once recorded.
    named: Option<(&'a str, String)>,
    origin: Origin,
    /// The MD5 computed beside a fetch.
    tail: Option<Md5Tail>,
    /// An upload of a blob by digest: never evictable.
    is_upload: bool,
    /// Whether the blob's MD5 is wanted (not for an entry with an ETag of its own).
    wants_md5: bool,
}

/// What [`Stores::commit_small`] hashed.
struct Small {
    digest: Digest,
    md5: [u8; 16],
    size: u64,
}

/// Steps 3 to 5 of the put protocol on a blocking thread: a pending row for the digest (managed
/// store only), `finished` published, then `record` (step 5). Returns whether the blob was there
/// already, and whether `record` wrote the entry.
fn publish_then_record(
    ix: &Index,
    is_managed: bool,
    finished: FinishedBlob,
    record: impl FnOnce(&Index, &Digest, u64) -> Result<bool, IndexError>,
) -> Result<(bool, bool), Error> {
    let (digest, size) = (finished.digest, finished.size_bytes);
    if is_managed {
        ix.mark_pending(&digest, size, now_ms())?;
    }
    let was_there = finished.publish().map_err(|e| Error::io(format!("cannot publish blob {digest}"), e))?;
    Ok((was_there, record(ix, &digest, size)?))
}

/// One content-addressed directory of blobs and its quota.
pub(crate) struct Store {
    pub(crate) disk: DiskTier,
    /// The disk quota for the managed store; for a directory store, only its free-space check.
    pub(crate) quota: Arc<DiskQuota>,
    /// The directory of a directory store; `None` for the managed one.
    pub(crate) dir: Option<String>,
}

impl Store {
    pub(crate) fn is_managed(&self) -> bool {
        self.dir.is_none()
    }

    /// Reserves `n` bytes of the quota for a write, evicting if needed (`quota.rs`).
    pub(crate) async fn reserve(&self, n: u64) -> Result<Reservation, NoRoom> {
        let quota = Arc::clone(&self.quota);
        match tokio::task::spawn_blocking(move || quota.reserve(n)).await {
            Ok(r) => r,
            Err(e) => Err(NoRoom { reason: format!("reservation task failed: {e}") }),
        }
    }

    /// A new temp file with `n` bytes reserved for it (a body of unknown length reserves more as
    /// it grows). [`Error::StorageFull`] if the quota has no room.
    pub(crate) async fn create_temp(&self, n: Option<u64>) -> Result<(TempBlob, Reservation), Error> {
        let reservation = self.reserve(n.unwrap_or(RESERVE_STEP_BYTES)).await.map_err(|no| {
            self.quota.passed_through(&no.reason);
            Error::StorageFull { what: no.reason, cause: None }
        })?;
        let temp = self.disk.create_temp().map_err(|e| Error::io("cannot create a temp file", e))?;
        Ok((temp, reservation))
    }
}

/// The shared tier's state as this process sees it: its breaker, write-back queue and counters
/// (since this process started).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SharedStatus {
    /// The store, credentials redacted.
    pub store: String,
    /// `closed` (calls go through), `open` (the store failed; calls are refused until a probe is
    /// due) or `half-open` (one probe is out).
    pub breaker: &'static str,
    /// Blobs queued for write-back or being written.
    pub n_queued: usize,
    /// The most blobs that may wait in the write-back queue.
    pub queue_capacity: usize,
    /// The counters by name (`hits`, `write_backs_dropped`, `write_backs_failed`, …).
    pub counters: std::collections::BTreeMap<&'static str, u64>,
}

/// Every store of one cache, and the steps every stored blob takes.
pub(crate) struct Stores {
    managed: Arc<Store>,
    /// Directory stores of namespaces kept outside the disk tier, by directory, opened once.
    dirs: Mutex<HashMap<String, Arc<Store>>>,
    ix: Ix,
    memory: Memory,
    /// The shared cluster tier and its write-back queue, if configured.
    shared: Option<(Arc<SharedTier>, WriteBack)>,
    /// MD5 passes.
    md5: Md5Passes,
    data_dir: PathBuf,
    /// The largest object stored ([`crate::CacheConfig::max_object_bytes`]).
    pub(crate) max_object_bytes: u64,
}

impl Stores {
    pub(crate) fn new(
        managed: Store,
        ix: Ix,
        memory: Memory,
        shared: Option<(Arc<SharedTier>, WriteBack)>,
        tasks: Tasks,
        data_dir: PathBuf,
    ) -> Stores {
        Stores {
            managed: Arc::new(managed),
            dirs: Mutex::default(),
            md5: Md5Passes::new(ix.clone(), tasks),
            ix,
            memory,
            shared,
            data_dir,
            max_object_bytes: crate::config::DEFAULT_MAX_OBJECT_BYTES,
        }
    }

    /// These stores, keeping objects of at most `max_bytes`.
    pub(crate) fn with_max_object_bytes(self, max_bytes: u64) -> Stores {
        Stores { max_object_bytes: max_bytes, ..self }
    }

    /// The data directory's disk tier, as a store.
    pub(crate) fn managed(&self) -> &Arc<Store> {
        &self.managed
    }

    /// The shared cluster tier, if configured.
    pub(crate) fn shared(&self) -> Option<&Arc<SharedTier>> {
        self.shared.as_ref().map(|(tier, _)| tier)
    }

    /// The shared tier's state as this process sees it now, if one is configured.
    pub(crate) fn shared_status(&self) -> Option<SharedStatus> {
        let (tier, write_back) = self.shared.as_ref()?;
        let stats = tier.stats();
        Some(SharedStatus {
            store: tier.display().to_owned(),
            breaker: stats.breaker.as_str(),
            n_queued: write_back.n_pending(),
            queue_capacity: write_back.capacity(),
            counters: stats.counters().collect(),
        })
    }

    /// Where namespace `ns` keeps its blobs.
    pub(crate) async fn of(&self, ns: &Namespace) -> Result<Arc<Store>, Error> {
        match &ns.options.storage {
            None => Ok(Arc::clone(&self.managed)),
            Some(dir) => self.dir_store(dir).await,
        }
    }

    /// The store in directory `dir` (already claimed by a namespace), opened once per process:
    /// the first open also removes temp files dead processes left there.
    pub(crate) async fn dir_store(&self, dir: &str) -> Result<Arc<Store>, Error> {
        if let Some(s) = self.dirs.lock().unwrap_or_else(|p| p.into_inner()).get(dir) {
            return Ok(Arc::clone(s));
        }
        let (index, d) = (Arc::clone(self.ix.index()), dir.to_owned());
        let store = blocking(move || {
            let disk = DiskTier::open(Path::new(&d))?;
            disk.sweep_temp()?;
            let limits = DiskLimits { quota_bytes: None, ..DiskLimits::default() };
            let quota =
                DiskQuota::open(limits, index, disk.clone(), PathBuf::from(&d)).map_err(std::io::Error::other)?;
            Ok(Arc::new(Store { disk, quota: Arc::new(quota), dir: Some(d) }))
        })
        .await?;
        let mut stores = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(stores.entry(dir.to_owned()).or_insert(store)))
    }

    /// Opens blob `digest` in `store`; a directory store lacking it falls back to the disk tier
    /// (the same bytes, by digest: during a move, or shared with a managed namespace).
    pub(crate) fn open_blob(
        &self,
        store: &Store,
        digest: &Digest,
    ) -> Result<Option<(std::fs::File, std::fs::Metadata)>, Error> {
        let opened = match store.disk.open_blob(digest) {
            Ok(None) if !store.is_managed() => self.managed.disk.open_blob(digest),
            found => found,
        };
        opened.map_err(|e| Error::io(format!("cannot open blob {digest}"), e))
    }

    /// Makes a finished temp file a blob of `store` and records it (steps 3 to 5 of the put
    /// protocol in docs/design.md):
    /// 3. record a pending row for the digest (managed store only);
    /// 4. rename the file into `blobs/` and fsync the directory;
    /// 5. commit the blob row as present, with the entry naming it, in one transaction (for a
    ///    directory store: the entry, with the blob row marked absent from the disk tier if the
    ///    index did not know the digest).
    ///
    /// Then the bytes reserved count as used, the memory tier forgets the entry, the shared tier's
    /// write-back is offered the blob (not a blob that came from there) and its MD5 pass starts
    /// (nobody waits for it). `retain` keeps a blob no entry names (an upload or a read by digest).
    pub(crate) async fn commit(
        &self,
        store: &Store,
        finished: (FinishedBlob, Reservation),
        retain: bool,
        entry: Option<(&str, NewEntry)>,
        origin: Origin,
    ) -> Result<Digest, Error> {
        self.commit_with_md5(store, finished, retain, entry, origin, None).await.map(|(digest, _)| digest)
    }

    /// [`Stores::commit`] of a fetched blob whose MD5 `tail` computed (or is computing) beside
    /// the fetch ([`Stores::md5_tail`]). Also returns whether the entry was written: `false` only
    /// for a create-only entry whose key has one (the blob is then an orphan, for the pruner).
    pub(crate) async fn commit_with_md5(
        &self,
        store: &Store,
        finished: (FinishedBlob, Reservation),
        retain: bool,
        entry: Option<(&str, NewEntry)>,
        origin: Origin,
        tail: Option<Md5Tail>,
    ) -> Result<(Digest, bool), Error> {
        let named = entry.as_ref().map(|(namespace, e)| (*namespace, e.key.clone()));
        // An entry with an ETag of its own (a registry blob's digest) needs no MD5.
        let wants_md5 = entry.as_ref().is_none_or(|(_, e)| e.etag.is_none());
        let entry = entry.map(|(_, e)| e);
        let is_upload = retain && origin == Origin::Upload;
        let is_managed = store.is_managed();
        let md5 = finished.0.md5.map(hex::encode);
        let record = move |ix: &Index, digest: &Digest, size: u64| -> Result<bool, IndexError> {
            if is_managed {
                ix.commit_blob(digest, size, (retain, is_upload), md5.as_deref(), entry.as_ref(), now_ms())
            } else if let Some(e) = entry {
                ix.commit_entry_elsewhere(digest, size, &e, now_ms())
            } else {
                Ok(true)
            }
        };
        let steps = Steps { named, origin, tail, is_upload, wants_md5 };
        self.publish_and_record(store, finished, steps, record).await
    }

    /// [`Stores::commit`] of a multipart upload's assembled blob (`crate::uploads`): step 5 is
    /// [`Index::complete_upload`], which commits the blob row, the entry `entry` of `namespace`
    /// with its own ETag `etag`, and the removal of upload `upload_id`, in one transaction.
    /// Returns the digest and whether the entry was written: `false` if the upload was no longer
    /// under way (the blob is then an orphan, for the pruner).
    pub(crate) async fn commit_upload(
        &self,
        store: &Store,
        finished: (FinishedBlob, Reservation),
        (namespace, entry): (&str, NewEntry),
        etag: String,
        upload_id: String,
    ) -> Result<(Digest, bool), Error> {
        let named = Some((namespace, entry.key.clone()));
        let is_managed = store.is_managed();
        let record = move |ix: &Index, digest: &Digest, size: u64| {
            ix.complete_upload(&upload_id, (digest, size, is_managed), &entry, &etag, now_ms())
        };
        let steps = Steps { named, origin: Origin::Upload, tail: None, is_upload: false, wants_md5: true };
        self.publish_and_record(store, finished, steps, record).await
    }

    /// [`Stores::commit`] of a derivation's output into the managed store: step 5 is
    /// [`Index::commit_derived`], which commits the blob row (retained: no entry names it) and the
    /// derivation row `key` naming it, with media type `content_type`, in one transaction.
    pub(crate) async fn commit_derived(
        &self,
        finished: (FinishedBlob, Reservation),
        key: tiercache_index::DerivationKey,
        content_type: String,
    ) -> Result<Digest, Error> {
        let record = move |ix: &Index, digest: &Digest, size: u64| {
            ix.commit_derived(&key, digest, size, &content_type, now_ms()).map(|()| true)
        };
        let steps = Steps { named: None, origin: Origin::Derived, tail: None, is_upload: false, wants_md5: false };
        let managed = Arc::clone(&self.managed);
        self.publish_and_record(&managed, finished, steps, record).await.map(|(digest, _)| digest)
    }

    /// Stores `chunks`, a whole small body held in memory, as a blob of `store` named by `entry`,
    /// in one trip to a blocking thread: the quota reserved, a temp file written with the bytes'
    /// SHA-256 and MD5 and fsynced (none at all if the store holds the blob already), then steps
    /// 3 to 5 as [`Stores::commit`] does them. A small upload is mostly these steps; a larger one
    /// streams through [`crate::spool::spool`] and [`Stores::commit_with_md5`] instead. Returns
    /// what [`Stores::commit_with_md5`] does, and the bytes' MD5.
    pub(crate) async fn commit_small(
        &self,
        store: &Store,
        chunks: Vec<bytes::Bytes>,
        (namespace, entry): (&str, NewEntry),
    ) -> Result<(Digest, bool, [u8; 16]), Error> {
        use ::md5::Digest as _;
        let named = Some((namespace, entry.key.clone()));
        let (ix, disk, quota, is_managed) =
            (Arc::clone(self.ix.index()), store.disk.clone(), Arc::clone(&store.quota), store.is_managed());
        let (reservation, finished, (was_there, recorded)) = blocking_with(move || {
            let size: u64 = chunks.iter().map(|c| c.len() as u64).sum();
            let (mut sha256, mut md5) = (Hasher::new(), ::md5::Md5::new());
            for c in &chunks {
                sha256.update(c);
                md5.update(c);
            }
            let (digest, md5) = (sha256.finish(), <[u8; 16]>::from(md5.finalize()));
            let reservation = quota.reserve(size).map_err(|no| {
                quota.passed_through(&no.reason);
                Error::StorageFull { what: no.reason, cause: None }
            })?;
            let finished = Small { digest, md5, size };
            let record = |ix: &Index| -> Result<bool, IndexError> {
                if is_managed {
                    ix.commit_blob(&digest, size, (false, false), Some(&hex::encode(md5)), Some(&entry), now_ms())
                } else {
                    ix.commit_entry_elsewhere(&digest, size, &entry, now_ms())
                }
            };
            if disk.contains(&digest) {
                // The bytes are there already: only the index is written.
                return Ok((reservation, finished, (true, record(&ix)?)));
            }
            let mut temp = disk.create_temp().map_err(|e| Error::io("cannot create a temp file", e))?;
            for c in chunks {
                temp.write(c).map_err(|e| Error::io("cannot write a temp file", e))?;
            }
            let blob = temp.finish().map_err(|e| Error::io("cannot write a temp file", e))?;
            let done = publish_then_record(&ix, is_managed, blob, |ix, _, _| record(ix))?;
            Ok((reservation, finished, done))
        })
        .await?;
        let Small { digest, md5, size } = finished;
        let steps = Steps { named, origin: Origin::Upload, tail: None, is_upload: false, wants_md5: true };
        // The MD5 is recorded with the blob row; a namespace's own directory records none.
        let has_md5 = store.is_managed();
        self.after_store(store, (digest, size, reservation), (was_there, recorded), steps, has_md5).await;
        Ok((digest, recorded, md5))
    }

    /// Steps 3 to 5 of the put protocol, with step 5's index write given as `record` (whether
    /// it wrote the entry), then what follows every store (quota, memory tier, write-back, MD5).
    async fn publish_and_record(
        &self,
        store: &Store,
        (finished, reservation): (FinishedBlob, Reservation),
        steps: Steps<'_>,
        record: impl FnOnce(&Index, &Digest, u64) -> Result<bool, IndexError> + Send + 'static,
    ) -> Result<(Digest, bool), Error> {
        let (digest, size) = (finished.digest, finished.size_bytes);
        let has_md5 = (finished.md5.is_some() && store.is_managed()) || !steps.wants_md5;
        let (ix, is_managed) = (Arc::clone(self.ix.index()), store.is_managed());
        // Steps 3 to 5 in one trip to a blocking thread.
        let done = blocking_with(move || publish_then_record(&ix, is_managed, finished, record)).await?;
        self.after_store(store, (digest, size, reservation), done, steps, has_md5).await;
        Ok((digest, done.1))
    }

    /// What follows every store of blob `digest` of `size` bytes in `store` (`was_there`: it was
    /// there already; `recorded`: the entry was written): the bytes reserved count as used, the
    /// memory tier forgets the entry, the shared tier's write-back is offered the blob, and its
    /// MD5 pass starts unless `has_md5`.
    async fn after_store(
        &self,
        store: &Store,
        (digest, size, reservation): (Digest, u64, Reservation),
        (was_there, recorded): (bool, bool),
        steps: Steps<'_>,
        has_md5: bool,
    ) {
        let Steps { named, origin, tail, is_upload, .. } = steps;
        reservation.stored(digest, size, was_there, store.is_managed() && !is_upload);
        if let Some((namespace, key)) = named {
            self.memory.forget_entry(namespace, key.as_bytes()).await;
        }
        metrics::counter!(telemetry::BLOBS_STORED, "origin" => origin.as_str()).increment(1);
        if let Some((_, write_back)) = &self.shared
            && store.is_managed()
            && origin != Origin::Shared
            && recorded
        {
            write_back.queue(digest, store.disk.blob_path(&digest));
        }
        if !has_md5 {
            let urgency = if origin == Origin::Upload { Urgency::Waited } else { Urgency::Background };
            self.md5.start(digest, &store.disk, tail, urgency);
        }
    }

    /// Waits until blob `digest` of the disk tier is readable in the shared tier: joins its
    /// write-back (queued by [`Stores::commit`]), or queues one. `false` if there is no shared
    /// tier, or the write-back failed or was dropped. An entry record is written only after this
    /// says `true` (`read/records.rs`).
    pub(crate) async fn written_back(&self, digest: Digest) -> bool {
        let Some((_, write_back)) = &self.shared else { return false };
        write_back.queue_watched(digest, self.managed.disk.blob_path(&digest)).await
    }

    /// Starts computing the MD5 of the blob a flight is writing into `file`, as its phases (`rx`)
    /// say bytes are final; hand the result to [`Stores::commit_with_md5`]. `None` when another
    /// MD5 pass is running: the blob's MD5 is then computed after it is stored.
    pub(crate) fn md5_tail(
        &self,
        file: Arc<std::fs::File>,
        rx: tokio::sync::watch::Receiver<Phase>,
    ) -> Option<Md5Tail> {
        self.md5.tail(file, rx)
    }

    /// The blob's MD5 (lowercase hex) in `disk` (the disk tier, or a namespace's own directory):
    /// at once if the index has it, else once the pass under way (or a new one) has recorded it.
    /// Concurrent callers for one blob share a single pass.
    pub(crate) async fn md5(&self, digest: Digest, disk: &DiskTier) -> Result<String, Error> {
        self.md5.get(digest, disk).await
    }

    /// Makes sure the MD5 of blob `digest` in `disk`, missing from the index, is being computed,
    /// without waiting for it (a read serves the entry without it meanwhile).
    pub(crate) fn want_md5(&self, digest: Digest, disk: &DiskTier) {
        self.md5.start(digest, disk, None, Urgency::Background);
    }

    /// Holds back every MD5 pass until the returned guard is dropped (a pass under way finishes
    /// first). For tests that show that no read waits for an MD5.
    pub(crate) async fn pause_md5(&self) -> Md5Pause {
        self.md5.pause().await
    }

    /// Deletes the files of blobs whose rows are already gone from the disk tier, and tells every
    /// process's memory tier when anything was removed.
    pub(crate) async fn delete_blob_files(&self, n_entries: u64, orphans: Vec<Digest>) -> Result<CleanupReport, Error> {
        let disk = self.managed.disk.clone();
        let (report, deleted) = blocking(move || {
            let mut report = CleanupReport { n_entries, ..CleanupReport::default() };
            let mut deleted = Vec::new();
            for d in orphans {
                let len = std::fs::metadata(disk.blob_path(&d)).map(|m| m.len()).unwrap_or(0);
                if disk.delete(&d)? {
                    report.n_blobs += 1;
                    report.bytes += len;
                    deleted.push((d, len));
                }
            }
            Ok((report, deleted))
        })
        .await?;
        self.managed.quota.deleted(&deleted);
        if n_entries > 0 || !deleted.is_empty() {
            self.memory.bump_generation().await?;
        }
        Ok(report)
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
