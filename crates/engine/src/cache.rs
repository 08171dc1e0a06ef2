//! [`Cache`]: opening a data directory, and the plumbing every operation shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tiercache_core::{Digest, Key, now_ms};
use tiercache_index::{Index, IndexError, NewEntry};
use tiercache_sources::Source;
use tiercache_tiers::shared::{SharedTier, WriteBack};
use tiercache_tiers::{DiskTier, FinishedBlob, TempBlob};
use tokio::sync::{Semaphore, watch};

use crate::access::AccessLog;
use crate::flight::Phase;
use crate::memory::Memory;
use crate::quota::{DiskQuota, NoRoom, Reservation};
use crate::{CacheConfig, Error, maintenance, telemetry};

/// Where a blob stored in the disk tier came from.
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
    Migrate,
}

impl Origin {
    /// Its `origin` label in metrics.
    fn as_str(self) -> &'static str {
        match self {
            Origin::Fetch => "fetch",
            Origin::Upload => "upload",
            Origin::Copy => "copy",
            Origin::Shared => "shared",
            Origin::Migrate => "migrate",
        }
    }
}

/// Names of the shared tier's counters in the index start with this.
const SHARED_PREFIX: &str = "shared.";

/// A tiercache instance over one data directory. Cheap to clone; clones share everything.
///
/// Several processes may open the same data directory at once (a server and CLI commands): the
/// index is shared through SQLite's locking and the disk tier through atomic renames.
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("data_dir", &self.inner.config.data_dir).finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) config: CacheConfig,
    pub(crate) index: Arc<Index>,
    pub(crate) disk: DiskTier,
    /// The disk tier's quota, eviction policy, and reads in progress.
    pub(crate) quota: Arc<DiskQuota>,
    /// The memory tier: small blobs and index lookups.
    pub(crate) memory: Memory,
    /// The shared cluster tier and its write-back queue, if configured.
    pub(crate) shared: Option<(Arc<SharedTier>, WriteBack)>,
    /// Disk-tier fills from the shared tier under way, by digest (single flight, like `flights`).
    pub(crate) fills: Mutex<HashMap<Digest, watch::Receiver<Phase>>>,
    /// Shared-tier counters already added to the index (what the next flush adds is the rest).
    /// `None` before the first flush.
    pub(crate) shared_flushed: Mutex<Option<tiercache_tiers::shared::SharedStats>>,
    /// Fetches under way, by `(namespace id, key)`. Only flights still waiting or streaming are
    /// joined; a finished one is removed (or replaced by the next miss).
    pub(crate) flights: Mutex<HashMap<(i64, Key), watch::Receiver<Phase>>>,
    pub(crate) fetch_permits: Semaphore,
    /// Every flight task, so that shutdown can let them finish storing what they fetched.
    pub(crate) flight_tasks: tokio_util::task::TaskTracker,
    md5_permits: Semaphore,
    /// MD5 computations under way, so that readers racing the background pass share one.
    md5_flights: Mutex<HashMap<Digest, Arc<tokio::sync::OnceCell<String>>>>,
    pub(crate) access: AccessLog,
    /// Whether another process replaced the lookup-generation file (see `generation.rs`).
    lookup_generation: crate::generation::Generation,
    /// Held by each [`Cache::flush`] from drain to commit.
    flush_lock: tokio::sync::Mutex<()>,
    sources: Mutex<HashMap<String, Arc<dyn Source>>>,
    pub(crate) dir_sources: Mutex<HashMap<String, Arc<tiercache_sources::DirSource>>>,
    /// Files of directory namespaces being hashed on a read, so concurrent readers share one pass.
    pub(crate) dir_flights: Mutex<HashMap<(i64, Vec<u8>), crate::directory::HashFlight>>,
    /// Directory stores of namespaces kept outside the disk tier, by directory, opened once.
    pub(crate) dir_stores: Mutex<HashMap<String, Arc<crate::storage::Store>>>,
    /// The disk tier and its quota, as the store of managed namespaces.
    pub(crate) managed: Arc<crate::storage::Store>,
    /// Blobs being copied into the disk tier from a directory (copy-to-cache).
    pub(crate) copies: Mutex<std::collections::HashSet<Digest>>,
    /// What opening found and did (index moved aside or reset, read caches reset).
    pub(crate) open_notes: Mutex<Vec<String>>,
}

impl Cache {
    /// Opens (creating if needed) the data directory in `config`.
    ///
    /// On every open: temp files of dead processes are removed and pending blob rows are
    /// reconciled with the disk tier (only those rows: a normal open never scans the disk). If the
    /// index file did not exist but the disk tier holds blobs, the index is rebuilt from the disk
    /// tier and the namespace definitions, with progress in the log.
    pub async fn open(config: CacheConfig) -> Result<Cache, Error> {
        let cfg = config.clone();
        let (index, disk, opened) = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            std::fs::create_dir_all(&cfg.data_dir)
                .map_err(|e| Error::Io(format!("cannot create data directory {}: {e}", cfg.data_dir.display())))?;
            let disk = DiskTier::open(&cfg.data_dir)?;
            let (index, opened) = Index::open(&cfg.data_dir.join("index.db"))?;
            Ok((Arc::new(index), disk, opened))
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        let shared = match &config.shared {
            Some(sc) => {
                let tier = Arc::new(SharedTier::open(sc).map_err(Error::Invalid)?);
                let write_back = WriteBack::spawn(Arc::clone(&tier), sc.write_back_queue, sc.write_back_workers);
                tracing::info!(store = tier.display(), "shared tier configured");
                Some((tier, write_back))
            }
            None => None,
        };
        let quota = {
            let (limits, index, disk) = (config.disk.clone(), Arc::clone(&index), disk.clone());
            let dir = config.data_dir.clone();
            let quota = tokio::task::spawn_blocking(move || DiskQuota::open(limits, index, disk, dir))
                .await
                .map_err(|e| Error::Io(e.to_string()))??;
            Arc::new(quota)
        };
        let lookup_generation = crate::generation::Generation::new(&config.data_dir);
        let cache = Cache {
            inner: Arc::new(Inner {
                fetch_permits: Semaphore::new(config.max_concurrent_fetches.max(1)),
                md5_permits: Semaphore::new(1),
                flight_tasks: tokio_util::task::TaskTracker::new(),
                md5_flights: Mutex::new(HashMap::new()),
                memory: Memory::new(&config),
                managed: Arc::new(crate::storage::Store { disk: disk.clone(), quota: Arc::clone(&quota), dir: None }),
                config,
                index,
                disk,
                quota,
                shared,
                fills: Mutex::new(HashMap::new()),
                shared_flushed: Mutex::new(None),
                flights: Mutex::new(HashMap::new()),
                access: AccessLog::default(),
                flush_lock: tokio::sync::Mutex::new(()),
                lookup_generation,
                sources: Mutex::new(HashMap::new()),
                dir_sources: Mutex::new(HashMap::new()),
                dir_flights: Mutex::new(HashMap::new()),
                dir_stores: Mutex::new(HashMap::new()),
                copies: Mutex::new(Default::default()),
                open_notes: Mutex::new(opened.notes.clone()),
            }),
        };
        maintenance::recover(&cache, opened.created || opened.needs_rebuild).await?;
        crate::directory::check_read_caches(&cache).await?;
        let memory = cache.inner.memory.clone();
        cache.inner.quota.set_on_evict(Box::new(move |_| memory.forget_lookups()));
        if opened.created || opened.needs_rebuild {
            let quota = Arc::clone(&cache.inner.quota);
            cache.ix(move |_| quota.resync()).await?;
        }
        cache.spawn_access_flusher();
        Ok(cache)
    }

    /// What opening the data directory found and did, in sentences: an index that was not a
    /// database moved aside, a schema reset, directory read caches reset and why. Empty on an
    /// ordinary open.
    pub fn open_notes(&self) -> Vec<String> {
        self.inner.open_notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn note(&self, note: String) {
        tracing::warn!("{note}");
        self.inner.open_notes.lock().unwrap_or_else(|p| p.into_inner()).push(note);
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.config.data_dir
    }

    /// Waits until every source fetch under way has finished and stored (or dropped) its blob,
    /// then writes batched access times. A reader's body can end before its fetch is committed
    /// (the fsync, rename and index commit follow the last byte), so call this before exiting.
    pub async fn settle(&self) -> Result<(), Error> {
        let tasks = &self.inner.flight_tasks;
        tasks.close();
        tasks.wait().await;
        tasks.reopen();
        self.flush().await
    }

    /// Writes batched access times (and shared-tier counters) now. Call before exiting.
    ///
    /// Flushes run one at a time: one that finds nothing left to write still waits for the
    /// background flusher's write under way, so what was drained before it is committed when it
    /// returns (otherwise a process could exit between that drain and its commit).
    pub async fn flush(&self) -> Result<(), Error> {
        let _one_at_a_time = self.inner.flush_lock.lock().await;
        self.flush_shared_counters().await?;
        self.publish_metrics();
        let batch = self.inner.access.drain();
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.quota.touched(batch.iter().map(|r| r.digest));
        self.ix(move |ix| ix.record_access(&batch)).await
    }

    /// The shared-tier counters summed over every process that used this data directory (as of
    /// their last flush), by name (`hits`, `misses`, …, `breaker_open`).
    pub async fn shared_counters(&self) -> Result<std::collections::BTreeMap<String, i64>, Error> {
        let all = self.ix(|ix| ix.counters(SHARED_PREFIX)).await?;
        Ok(all.into_iter().map(|(k, v)| (k[SHARED_PREFIX.len()..].to_owned(), v)).collect())
    }

    /// Adds what the shared tier counted since the last flush to the index, and the breaker's
    /// state if it changed (or on the first flush). Writes nothing when nothing changed.
    async fn flush_shared_counters(&self) -> Result<(), Error> {
        let Some((tier, _)) = &self.inner.shared else { return Ok(()) };
        let now = tier.stats();
        let (deltas, latest) = {
            let mut last = self.inner.shared_flushed.lock().unwrap_or_else(|p| p.into_inner());
            let before = last.clone().unwrap_or_default();
            let deltas: Vec<(String, i64)> = now
                .counters()
                .zip(before.counters())
                .filter(|((_, n), (_, b))| n != b)
                .map(|((name, n), (_, b))| (format!("{SHARED_PREFIX}{name}"), (n - b) as i64))
                .collect();
            let mut latest = Vec::new();
            if last.is_none() || before.breaker != now.breaker {
                let open = now.breaker != tiercache_tiers::shared::BreakerState::Closed;
                latest.push((format!("{SHARED_PREFIX}breaker_open"), open as i64));
            }
            *last = Some(now);
            (deltas, latest)
        };
        self.ix(move |ix| ix.bump_counters(&deltas, &latest)).await
    }

    /// Brings the metrics up to date: the counts kept per thread (memory-tier hits, misses and
    /// bytes) and the sizes (the disk tier's use and quota, the memory tier's bytes and entries).
    /// Runs at every flush of access times; call it before rendering the metrics, so that they
    /// count every read that has returned.
    pub fn publish_metrics(&self) {
        telemetry::publish();
        self.inner.memory.publish_metrics();
        self.publish_gauges();
    }

    /// Sizes as gauges in `/metrics`: the disk tier's use and quota, the memory tier's bytes and
    /// entries.
    fn publish_gauges(&self) {
        let q = self.inner.quota.stats();
        metrics::gauge!(telemetry::DISK_USED_BYTES).set((q.used_bytes + q.reserved_bytes) as f64);
        if let Some(quota) = q.quota_bytes {
            metrics::gauge!(telemetry::DISK_QUOTA_BYTES).set(quota as f64);
        }
        let m = self.inner.memory.report();
        metrics::gauge!(telemetry::MEMORY_ENABLED).set(if m.is_enabled { 1.0 } else { 0.0 });
        metrics::gauge!(telemetry::MEMORY_TTL_SECONDS).set(m.ttl_seconds as f64);
        metrics::gauge!(telemetry::MEMORY_BYTES).set(m.bytes as f64);
        metrics::gauge!(telemetry::MEMORY_ENTRIES).set(m.entries as f64);
    }

    /// Drops the memory tier's lookups if any process changed namespaces or deleted in bulk since
    /// the last look (`generation.rs`): inline, before every lookup the memory tier could answer.
    pub(crate) fn check_lookup_generation(&self) {
        if self.inner.memory.is_enabled() {
            self.inner.lookup_generation.check(|| self.inner.memory.forget_lookups());
        }
    }

    /// Tells every process's memory tier that lookups may be stale (this one's are dropped too).
    pub(crate) async fn bump_lookup_generation(&self) -> Result<(), Error> {
        self.inner.memory.forget_lookups();
        let dir = self.data_dir().to_owned();
        self.blocking(move |_| crate::generation::bump(&dir)).await
    }

    fn spawn_access_flusher(&self) {
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.config.access_flush_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = (Cache { inner }).flush().await {
                    tracing::warn!(error = %e, "cannot record access times; will retry");
                }
            }
        });
    }

    /// Runs an index call on a blocking thread.
    pub(crate) async fn ix<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, Error> {
        let index = Arc::clone(&self.inner.index);
        tokio::task::spawn_blocking(move || f(&index))
            .await
            .map_err(|e| Error::Io(format!("index task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Runs blocking file work on a blocking thread.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&DiskTier) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let disk = self.inner.disk.clone();
        tokio::task::spawn_blocking(move || f(&disk))
            .await
            .map_err(|e| Error::Io(format!("disk task failed: {e}")))?
            .map_err(Error::from)
    }

    /// The source a namespace's URL names, built once and reused.
    pub(crate) fn source_for(&self, url: &str) -> Result<Arc<dyn Source>, Error> {
        let mut sources = self.inner.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sources.get(url) {
            return Ok(Arc::clone(s));
        }
        let s = tiercache_sources::from_url(url, &self.inner.config.http).map_err(Error::Invalid)?;
        sources.insert(url.to_owned(), Arc::clone(&s));
        Ok(s)
    }

    /// Reserves `n` bytes of the disk quota for a write, evicting if needed (see `quota.rs`).
    pub(crate) async fn reserve(&self, n: u64) -> Result<Reservation, NoRoom> {
        self.reserve_in(&self.managed_store(), n).await
    }

    /// [`Cache::reserve`] in `store` (a directory store checks its file system's free space only).
    pub(crate) async fn reserve_in(&self, store: &crate::storage::Store, n: u64) -> Result<Reservation, NoRoom> {
        let quota = Arc::clone(&store.quota);
        match tokio::task::spawn_blocking(move || quota.reserve(n)).await {
            Ok(r) => r,
            Err(e) => Err(NoRoom { reason: format!("reservation task failed: {e}") }),
        }
    }

    /// A new temp file in the disk tier with `n` bytes of quota reserved for it (a body of
    /// unknown length reserves more as it grows). [`Error::StorageFull`] if the quota has no room.
    pub(crate) async fn create_temp(&self, n: Option<u64>) -> Result<(TempBlob, Reservation), Error> {
        self.create_temp_in(&self.managed_store(), n).await
    }

    /// [`Cache::create_temp`] in `store`.
    pub(crate) async fn create_temp_in(
        &self,
        store: &crate::storage::Store,
        n: Option<u64>,
    ) -> Result<(TempBlob, Reservation), Error> {
        let reservation =
            self.reserve_in(store, n.unwrap_or(crate::flight::RESERVE_STEP_BYTES)).await.map_err(|no| {
                store.quota.passed_through(&no.reason);
                Error::StorageFull(no.reason)
            })?;
        Ok((store.disk.create_temp()?, reservation))
    }

    /// Makes a finished temp file a blob of the disk tier and records it (steps 3 to 5 of the put
    /// protocol in docs/design.md):
    /// 3. record a pending row for the digest;
    /// 4. rename the file into `blobs/` and fsync the directory;
    /// 5. commit the blob row as present, with the entry naming it, in one transaction.
    ///
    /// `reservation` covers the file's bytes in the disk quota; they count as used from now on.
    pub(crate) async fn store_finished(
        &self,
        (finished, reservation): (FinishedBlob, Reservation),
        retain: bool,
        entry: Option<(&str, NewEntry)>,
        origin: Origin,
    ) -> Result<Digest, Error> {
        let (digest, size) = (finished.digest, finished.size_bytes);
        let named = entry.as_ref().map(|(namespace, e)| (*namespace, e.key.clone()));
        let entry = entry.map(|(_, e)| e);
        self.ix(move |ix| ix.mark_pending(&digest, size, now_ms())).await?;
        let was_there = self.blocking(move |_| finished.publish()).await?;
        let flags = (retain, retain && origin == Origin::Upload);
        self.ix(move |ix| ix.commit_blob(&digest, size, flags, entry.as_ref(), now_ms())).await?;
        reservation.stored(digest, size, was_there, !flags.1);
        if let Some((namespace, key)) = named {
            self.inner.memory.forget_entry(namespace, &key).await;
        }
        metrics::counter!(telemetry::BLOBS_STORED, "origin" => origin.as_str()).increment(1);
        if let Some((_, write_back)) = &self.inner.shared
            && origin != Origin::Shared
        {
            write_back.queue(digest, self.inner.disk.blob_path(&digest));
        }
        self.spawn_md5(digest, self.inner.disk.clone());
        Ok(digest)
    }

    /// [`Cache::store_finished`] into `store`: for a namespace kept in its own directory, the file
    /// is renamed into that directory, and the entry committed with the blob row marked absent
    /// from the disk tier if the index did not know the digest.
    pub(crate) async fn store_finished_in(
        &self,
        store: &crate::storage::Store,
        (finished, reservation): (FinishedBlob, Reservation),
        entry: Option<(&str, NewEntry)>,
        origin: Origin,
    ) -> Result<Digest, Error> {
        if store.is_managed() {
            return self.store_finished((finished, reservation), false, entry, origin).await;
        }
        let (digest, size) = (finished.digest, finished.size_bytes);
        let was_there = self.blocking(move |_| finished.publish()).await?;
        if let Some((namespace, e)) = entry {
            let key = e.key.clone();
            self.ix(move |ix| ix.commit_entry_elsewhere(&digest, size, &e, now_ms())).await?;
            self.inner.memory.forget_entry(namespace, &key).await;
        }
        reservation.stored(digest, size, was_there, false);
        metrics::counter!(telemetry::BLOBS_STORED, "origin" => origin.as_str()).increment(1);
        self.spawn_md5(digest, store.disk.clone());
        Ok(digest)
    }

    /// Computes a stored blob's MD5 in the background (one at a time, so it never competes with
    /// more than one core), off every client's critical path.
    fn spawn_md5(&self, digest: Digest, tier: DiskTier) {
        let cache = self.clone();
        tokio::spawn(async move {
            let _permit = cache.inner.md5_permits.acquire().await;
            if let Err(e) = cache.md5_in(digest, &tier).await {
                tracing::warn!(%digest, error = %e, "cannot compute MD5");
            }
        });
    }

    /// The blob's MD5 (lowercase hex), computing and recording it if the index lacks it. Concurrent
    /// callers for one blob share a single computation.
    pub(crate) async fn md5_of(&self, digest: Digest) -> Result<String, Error> {
        self.md5_in(digest, &self.inner.disk.clone()).await
    }

    /// [`Cache::md5_of`] a blob kept in `tier` (the disk tier, or a namespace's own directory).
    pub(crate) async fn md5_in(&self, digest: Digest, tier: &DiskTier) -> Result<String, Error> {
        if let Some(md5) = self.ix(move |ix| ix.get_blob(&digest)).await?.and_then(|b| b.md5) {
            return Ok(md5);
        }
        let cell = {
            let mut flights = self.inner.md5_flights.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(flights.entry(digest).or_default())
        };
        let md5 = cell.get_or_try_init(|| self.compute_md5(digest, tier.clone())).await.cloned();
        if md5.is_ok() {
            self.inner.md5_flights.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
        }
        md5
    }

    async fn compute_md5(&self, digest: Digest, disk: DiskTier) -> Result<String, Error> {
        let md5 = self
            .blocking(move |_| {
                use md5::Digest as _;
                use std::io::Read as _;
                let mut f = std::fs::File::open(disk.blob_path(&digest))?;
                let mut h = md5::Md5::new();
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                Ok(hex::encode(h.finalize()))
            })
            .await?;
        let stored = md5.clone();
        self.ix(move |ix| ix.set_md5(&digest, &stored)).await?;
        Ok(md5)
    }
}
