//! `index`, `update` and `migrate`: bringing a directory namespace's read cache in line with the
//! directory.
//!
//! An update is a merge of two sorted streams: the walk of the directory (byte order of relative
//! paths, [`tiercache_sources::dir::walk`]) and the index's rows (`ORDER BY path`). A path only in
//! the walk is added; only in the index, removed; in both, compared by its change markers (size,
//! mtime_ns, ctime_ns, inode) and re-read only if they differ. Memory stays flat: both sides
//! stream, in batches, through bounded channels.
//!
//! ```text
//!  walker thread ──┐                        ┌─> hash worker × N ─┐
//!                  ├─> merge (this thread) ─┤                    ├─> writer thread ─> index
//!  index reader ───┘                        └────────────────────┘   (batched transactions)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tiercache_core::{FileMarkers, RelPath};
use tiercache_index::{FileRow, Index};
use tiercache_sources::DirSource;
use tiercache_sources::dir::hash::{HashError, hash_file};
use tiercache_sources::dir::walk::{Ignore, WalkItem};

/// Items per batch on the channels between threads.
const BATCH: usize = 512;
/// Files in one unit of hashing work, at most.
const UNIT_FILES: usize = 64;
/// Bytes in one unit of hashing work, about (a larger file is a unit of its own).
const UNIT_BYTES: u64 = 4 << 20;
/// Rows per index transaction, at most.
const WRITE_BATCH: usize = 4096;
/// A batch is written at least this often, so a long scan shows progress in the index.
const WRITE_EVERY: Duration = Duration::from_millis(500);
/// A file changed this close to (or after) the moment it was hashed may have changed again within
/// the same timestamp tick, unseen by its markers: it is hashed again at the next update.
pub(crate) const RACY_NS: i64 = 100_000_000;
/// Times a file that keeps changing while it is hashed is tried before it is left unhashed.
const HASH_ATTEMPTS: usize = 3;
/// Problems listed by path in a report (the counts cover all).
const MAX_LISTED: usize = 100;

/// What kind of pass updated a read cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateKind {
    /// `tiercache index`: the first build.
    Index,
    /// `tiercache update`: re-read what changed.
    Update,
    /// `tiercache update --force`: re-read everything.
    Force,
    /// A watcher's full reconcile (at start, on overflow, periodically).
    Reconcile,
}

impl UpdateKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpdateKind::Index => "index",
            UpdateKind::Update => "update",
            UpdateKind::Force => "force",
            UpdateKind::Reconcile => "reconcile",
        }
    }
}

/// Live counters of a scan, for progress bars. All counts only grow.
#[derive(Debug, Default)]
pub struct ScanProgress {
    /// Files seen by the walk.
    pub n_walked: AtomicU64,
    /// Files queued for hashing, and their bytes.
    pub n_to_hash: AtomicU64,
    /// Bytes queued for hashing.
    pub bytes_to_hash: AtomicU64,
    /// Files hashed (or given up on), and their bytes.
    pub n_hashed: AtomicU64,
    /// Bytes hashed.
    pub bytes_hashed: AtomicU64,
    /// Whether the walk is over (so `*_to_hash` are final).
    pub walk_done: AtomicBool,
}

/// What an update did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UpdateReport {
    /// The namespace.
    pub namespace: String,
    /// Its root directory.
    pub root: String,
    /// `index`, `update`, `force`, `reconcile`, `migrate`.
    pub kind: String,
    /// Why the read cache was reset before this pass, if it was.
    pub reset: Option<String>,
    /// Files new since the last pass.
    pub n_added: u64,
    /// Files whose markers changed (or, with `--force`, every file), re-read.
    pub n_changed: u64,
    /// Files gone from the directory, removed from the read cache.
    pub n_removed: u64,
    /// Files whose markers did not change (not read).
    pub n_unchanged: u64,
    /// Files read and hashed.
    pub n_hashed: u64,
    /// Bytes read and hashed.
    pub bytes_hashed: u64,
    /// Files recorded without hashes: unreadable, or changing while read (retried first).
    pub n_unhashed: u64,
    /// Symlinks and special files left out.
    pub n_skipped: u64,
    /// Directories that could not be read (what the index held under them is kept).
    pub n_unreadable_dirs: u64,
    /// Up to 100 problems, `path: why`.
    pub problems: Vec<String>,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

/// Work for a hash worker.
struct Job {
    path: Vec<u8>,
    /// Markers the walk saw (used for the row if the file cannot be read).
    seen: FileMarkers,
}

/// A change for the writer.
pub(crate) enum Change {
    Put(FileRow),
    Delete(Vec<u8>),
    DeleteUnder(Vec<u8>),
}

/// Shared tallies of the worker threads.
#[derive(Default)]
struct Tally {
    n_hashed: AtomicU64,
    bytes_hashed: AtomicU64,
    n_unhashed: AtomicU64,
    problems: Mutex<Vec<String>>,
    n_problems: AtomicU64,
}

impl Tally {
    /// Adds what the workers counted, and the time since `t0`, to `report`.
    fn fold_into(&self, report: &mut UpdateReport, t0: Instant) {
        report.n_hashed += self.n_hashed.load(Ordering::Relaxed);
        report.bytes_hashed += self.bytes_hashed.load(Ordering::Relaxed);
        report.n_unhashed += self.n_unhashed.load(Ordering::Relaxed);
        report.problems.extend(std::mem::take(&mut *self.problems.lock().unwrap_or_else(|e| e.into_inner())));
        report.elapsed_ms += t0.elapsed().as_millis() as u64;
    }

    fn problem(&self, path: &[u8], why: impl std::fmt::Display) {
        self.n_problems.fetch_add(1, Ordering::Relaxed);
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < MAX_LISTED {
            p.push(format!("{}: {why}", String::from_utf8_lossy(path)));
        }
    }
}

/// Why a file exists but has no hashes.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum HashFailure {
    /// It cannot be opened or read (permissions, an I/O error).
    #[error("{0}")]
    Unreadable(String),
    /// It kept changing while it was read.
    #[error("{0}")]
    Unstable(String),
}

/// Whether `row`'s hashes may predate a change its markers cannot show.
pub(crate) fn is_racy(row: &FileRow) -> bool {
    row.hashed_at_ns.is_some_and(|h| row.markers.mtime_ns.max(row.markers.ctime_ns).saturating_add(RACY_NS) > h)
}

/// Hashes the file at `path` (a path the walk or an event produced: see
/// [`DirSource::open_walked`]), retrying while it changes under the read. Returns the row to
/// record, or `None` if the file is gone.
pub(crate) fn hash_one(
    src: &DirSource,
    root: &std::os::fd::OwnedFd,
    path: &[u8],
    seen: FileMarkers,
) -> Result<Option<FileRow>, HashFailure> {
    let rel = RelPath::new(path.to_vec()).map_err(|e| HashFailure::Unreadable(e.to_string()))?;
    let mut last_markers = seen;
    for _ in 0..HASH_ATTEMPTS {
        let (file, markers) = match src.open_walked(root, &rel) {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // The file exists but cannot be read: the caller keeps it in the read cache unhashed.
            Err(e) => return Err(HashFailure::Unreadable(format!("cannot read: {e}"))),
        };
        last_markers = markers;
        match hash_file(&file, markers) {
            Ok(h) => {
                return Ok(Some(FileRow {
                    path: path.to_vec(),
                    markers: h.markers,
                    md5: Some(h.md5),
                    sha256: Some(h.sha256),
                    hashed_at_ns: Some(h.hashed_at_ns),
                    is_copied: false,
                }));
            }
            Err(HashError::Changed) => continue,
            Err(HashError::Io(e)) => return Err(HashFailure::Unreadable(format!("read failed: {e}"))),
        }
    }
    Err(HashFailure::Unstable(format!("kept changing while read ({HASH_ATTEMPTS} attempts; markers {last_markers:?})")))
}

/// A pool of hash workers feeding the writer.
struct HashPool {
    jobs: Option<SyncSender<Vec<Job>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl HashPool {
    fn start(
        src: &DirSource,
        n: usize,
        changes: SyncSender<Vec<Change>>,
        tally: Arc<Tally>,
        progress: Arc<ScanProgress>,
    ) -> std::io::Result<HashPool> {
        let (tx, rx) = sync_channel::<Vec<Job>>(n * 8);
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..n.max(1) {
            let (rx, src, changes, tally, progress) =
                (Arc::clone(&rx), src.clone(), changes.clone(), Arc::clone(&tally), Arc::clone(&progress));
            let root = src.open_root()?;
            workers.push(std::thread::Builder::new().name(format!("tiercache-hash-{i}")).spawn(move || {
                loop {
                    let batch = { rx.lock().unwrap_or_else(|e| e.into_inner()).recv() };
                    let Ok(batch) = batch else { return };
                    let mut out = Vec::with_capacity(batch.len());
                    for job in batch {
                        let change = match hash_one(&src, &root, &job.path, job.seen) {
                            Ok(Some(row)) => {
                                tally.n_hashed.fetch_add(1, Ordering::Relaxed);
                                tally.bytes_hashed.fetch_add(row.markers.size_bytes, Ordering::Relaxed);
                                Change::Put(row)
                            }
                            Ok(None) => Change::Delete(job.path),
                            Err(why) => {
                                tally.n_unhashed.fetch_add(1, Ordering::Relaxed);
                                tally.problem(&job.path, &why);
                                Change::Put(FileRow {
                                    path: job.path,
                                    markers: job.seen,
                                    md5: None,
                                    sha256: None,
                                    hashed_at_ns: None,
                                    is_copied: false,
                                })
                            }
                        };
                        progress.n_hashed.fetch_add(1, Ordering::Relaxed);
                        progress.bytes_hashed.fetch_add(job.seen.size_bytes, Ordering::Relaxed);
                        out.push(change);
                    }
                    if changes.send(out).is_err() {
                        return;
                    }
                }
            })?);
        }
        Ok(HashPool { jobs: Some(tx), workers })
    }

    /// Hands `jobs` to the workers in units of at most [`UNIT_FILES`] files or about
    /// [`UNIT_BYTES`]: a unit goes to one worker, so units must be small for the work to spread
    /// evenly (a few large files in one 512-file batch would leave the other cores idle).
    fn submit(&self, jobs: Vec<Job>) {
        let Some(tx) = &self.jobs else { return };
        let mut unit = Vec::new();
        let mut unit_bytes = 0;
        for job in jobs {
            unit_bytes += job.seen.size_bytes;
            unit.push(job);
            if unit.len() >= UNIT_FILES || unit_bytes >= UNIT_BYTES {
                if tx.send(std::mem::take(&mut unit)).is_err() {
                    return;
                }
                unit_bytes = 0;
            }
        }
        if !unit.is_empty() {
            let _ = tx.send(unit);
        }
    }

    fn finish(mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The writer thread: applies changes in batched transactions. Returns the first error.
fn start_writer(
    index: Arc<Index>,
    ns_id: i64,
) -> (SyncSender<Vec<Change>>, std::thread::JoinHandle<Result<(), String>>) {
    let (tx, rx) = sync_channel::<Vec<Change>>(64);
    let handle = std::thread::Builder::new()
        .name("tiercache-scan-writer".into())
        .spawn(move || write_changes(&index, ns_id, rx))
        .expect("spawn writer thread");
    (tx, handle)
}

fn write_changes(index: &Index, ns_id: i64, rx: Receiver<Vec<Change>>) -> Result<(), String> {
    let mut pending = Changes::default();
    let mut last = Instant::now();
    loop {
        match rx.recv_timeout(WRITE_EVERY) {
            Ok(batch) => batch.into_iter().for_each(|c| pending.push(c)),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return pending.apply(index, ns_id).map_err(|e| e.to_string());
            }
        }
        if pending.len() >= WRITE_BATCH || last.elapsed() >= WRITE_EVERY {
            pending.apply(index, ns_id).map_err(|e| e.to_string())?;
            last = Instant::now();
        }
    }
}

/// Changes gathered for one transaction.
#[derive(Default)]
pub(crate) struct Changes {
    put: Vec<FileRow>,
    delete: Vec<Vec<u8>>,
    delete_under: Vec<Vec<u8>>,
}

impl Changes {
    pub(crate) fn push(&mut self, c: Change) {
        match c {
            Change::Put(r) => self.put.push(r),
            Change::Delete(p) => self.delete.push(p),
            Change::DeleteUnder(p) => self.delete_under.push(p),
        }
    }

    fn len(&self) -> usize {
        self.put.len() + self.delete.len() + self.delete_under.len()
    }

    /// Writes the changes in one transaction and empties `self`.
    pub(crate) fn apply(&mut self, index: &Index, ns_id: i64) -> Result<(), tiercache_index::IndexError> {
        let r = index.apply_files(ns_id, &self.put, &self.delete, &self.delete_under);
        *self = Changes::default();
        r
    }
}

/// Parameters of one scan.
pub(crate) struct ScanSpec {
    pub(crate) ns_id: i64,
    /// Only this subtree (a directory's path, no trailing `/`), or everything if empty.
    pub(crate) start: Vec<u8>,
    pub(crate) force: bool,
    /// Hash new and changed files (false: record markers only, `index --no-hash`).
    pub(crate) hash: bool,
    pub(crate) hash_threads: usize,
}

/// Runs one merge of the walk under `spec.start` against the index's rows there. Blocking.
pub(crate) fn scan(
    index: Arc<Index>,
    src: &DirSource,
    ignore: &Ignore,
    spec: &ScanSpec,
    progress: Arc<ScanProgress>,
    report: &mut UpdateReport,
) -> Result<(), crate::Error> {
    let t0 = Instant::now();
    let root_prefix = if spec.start.is_empty() {
        Vec::new()
    } else {
        let mut p = spec.start.clone();
        p.push(b'/');
        p
    };
    // Fail before touching anything if the root (or subtree) cannot be read: a vanished or
    // unreadable directory is never taken to mean "every file was deleted".
    src.open_dir(&spec.start).map_err(crate::Error::from)?;

    let (walk_rx, walker) = {
        let (src, ignore, start) = (src.clone(), ignore.clone(), spec.start.clone());
        produce("tiercache-walk", move |push| src.walk(&start, &ignore, push).map_err(crate::Error::from))?
    };
    let (row_rx, reader) = {
        let (index, ns_id, prefix) = (Arc::clone(&index), spec.ns_id, root_prefix.clone());
        produce("tiercache-scan-read", move |push| index.scan_files(ns_id, &prefix, push).map_err(crate::Error::from))?
    };
    let (changes, writer) = start_writer(Arc::clone(&index), spec.ns_id);
    let tally = Arc::new(Tally::default());
    let pool = HashPool::start(src, spec.hash_threads, changes.clone(), Arc::clone(&tally), Arc::clone(&progress))?;

    let mut walk_items = walk_rx.iter().flatten().peekable();
    let mut rows = row_rx.iter().flatten().peekable();
    let mut jobs = Vec::with_capacity(BATCH);
    let mut direct = Vec::with_capacity(BATCH);
    let queue = |path: Vec<u8>, seen: FileMarkers, jobs: &mut Vec<Job>, direct: &mut Vec<Change>| {
        if spec.hash {
            progress.n_to_hash.fetch_add(1, Ordering::Relaxed);
            progress.bytes_to_hash.fetch_add(seen.size_bytes, Ordering::Relaxed);
            jobs.push(Job { path, seen });
        } else {
            direct.push(Change::Put(FileRow {
                path,
                markers: seen,
                md5: None,
                sha256: None,
                hashed_at_ns: None,
                is_copied: false,
            }));
        }
    };
    // Rows under a directory that could not be read are kept as they are.
    let mut keep_under: Option<Vec<u8>> = None;
    loop {
        let next_walk_path = walk_items.peek().map(|i| match i {
            WalkItem::File { path, .. } | WalkItem::Skipped { path, .. } => path.clone(),
            WalkItem::Unreadable { prefix, .. } => prefix.clone(),
        });
        let next_row_path = rows.peek().map(|r| r.path.clone());
        match (next_walk_path, next_row_path) {
            (None, None) => break,
            (Some(w), r) if r.as_ref().is_none_or(|r| w <= *r) => {
                let item = walk_items.next().expect("peeked");
                let row = if r.as_ref() == Some(&w) { rows.next() } else { None };
                match item {
                    WalkItem::File { path, markers } => {
                        progress.n_walked.fetch_add(1, Ordering::Relaxed);
                        match row {
                            None => {
                                report.n_added += 1;
                                queue(path, markers, &mut jobs, &mut direct);
                            }
                            Some(row) => {
                                let stale = row.markers != markers || (spec.hash && is_racy(&row));
                                if spec.force || stale {
                                    report.n_changed += 1;
                                    queue(path, markers, &mut jobs, &mut direct);
                                } else {
                                    report.n_unchanged += 1;
                                }
                            }
                        }
                    }
                    WalkItem::Skipped { path, reason } => {
                        report.n_skipped += 1;
                        tally.problem(&path, reason);
                        if row.is_some() {
                            report.n_removed += 1;
                            direct.push(Change::Delete(path));
                        }
                    }
                    WalkItem::Unreadable { prefix, reason } => {
                        report.n_unreadable_dirs += 1;
                        tally.problem(&prefix, format!("cannot read directory: {reason}"));
                        keep_under = Some(prefix);
                    }
                }
            }
            (_, Some(_)) => {
                let row = rows.next().expect("peeked");
                if keep_under.as_ref().is_some_and(|p| row.path.starts_with(p)) {
                    report.n_unchanged += 1;
                } else {
                    report.n_removed += 1;
                    direct.push(Change::Delete(row.path));
                }
            }
            (Some(_), None) => unreachable!("handled by the first arm"),
        }
        if jobs.len() >= BATCH {
            pool.submit(std::mem::replace(&mut jobs, Vec::with_capacity(BATCH)));
        }
        if direct.len() >= BATCH && changes.send(std::mem::replace(&mut direct, Vec::with_capacity(BATCH))).is_err() {
            break;
        }
    }
    pool.submit(jobs);
    progress.walk_done.store(true, Ordering::Relaxed);
    let _ = changes.send(direct);
    drop(walk_items);
    drop(rows);
    let walked = walker.join().map_err(|_| thread_failed("walker thread panicked"))?;
    let read = reader.join().map_err(|_| thread_failed("index reader thread panicked"))?;
    pool.finish();
    drop(changes);
    let written = writer.join().map_err(|_| thread_failed("writer thread panicked"))?;
    walked?;
    read?;
    written.map_err(|e| crate::Error::io("cannot write the read cache", std::io::Error::other(e)))?;
    tally.fold_into(report, t0);
    Ok(())
}

/// A producer thread, joined for its result.
type Producer = std::thread::JoinHandle<Result<(), crate::Error>>;

/// Runs `f` on a thread of its own, handing it a `push` that sends items in batches over a
/// bounded channel (and returns `false` once the receiver is gone). Returns the receiving end.
fn produce<T: Send + 'static>(
    name: &str,
    f: impl FnOnce(&mut dyn FnMut(T) -> bool) -> Result<(), crate::Error> + Send + 'static,
) -> std::io::Result<(Receiver<Vec<T>>, Producer)> {
    let (tx, rx) = sync_channel::<Vec<T>>(16);
    let handle = std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut batch = Vec::with_capacity(BATCH);
        let r = f(&mut |item| {
            batch.push(item);
            if batch.len() == BATCH {
                return tx.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))).is_ok();
            }
            true
        });
        let _ = tx.send(batch);
        r
    })?;
    Ok((rx, handle))
}

/// Hashes the files of `ns_id` that have no hashes yet (`migrate`), paging through the index.
pub(crate) fn hash_missing(
    index: Arc<Index>,
    src: &DirSource,
    ns_id: i64,
    hash_threads: usize,
    progress: Arc<ScanProgress>,
    report: &mut UpdateReport,
) -> Result<(), crate::Error> {
    let t0 = Instant::now();
    let (changes, writer) = start_writer(Arc::clone(&index), ns_id);
    let tally = Arc::new(Tally::default());
    let pool = HashPool::start(src, hash_threads, changes.clone(), Arc::clone(&tally), Arc::clone(&progress))?;
    let mut after = Vec::new();
    let result = loop {
        let page = match index.unhashed_files(ns_id, &after, BATCH) {
            Ok(p) => p,
            Err(e) => break Err(crate::Error::from(e)),
        };
        let Some(last) = page.last() else { break Ok(()) };
        after = last.path.clone();
        let jobs: Vec<Job> = page
            .into_iter()
            .map(|r| {
                progress.n_to_hash.fetch_add(1, Ordering::Relaxed);
                progress.bytes_to_hash.fetch_add(r.markers.size_bytes, Ordering::Relaxed);
                Job { path: r.path, seen: r.markers }
            })
            .collect();
        pool.submit(jobs);
    };
    progress.walk_done.store(true, Ordering::Relaxed);
    pool.finish();
    drop(changes);
    let written = writer.join().map_err(|_| thread_failed("writer thread panicked"))?;
    result?;
    written.map_err(|e| crate::Error::io("cannot write the read cache", std::io::Error::other(e)))?;
    tally.fold_into(report, t0);
    Ok(())
}

/// A scan thread that panicked.
fn thread_failed(what: &str) -> crate::Error {
    crate::Error::io("scanning", std::io::Error::other(what.to_owned()))
}
