//! Directory namespaces (layer 3): a namespace bound to a local directory (`file:///dir`), whose read cache
//! in the index (table `files`) replicates the directory's metadata and hashes, so that listing,
//! looking up and serving its files never walks or rehashes the directory again.
//!
//! The directory is the truth; the read cache follows it and is never written first:
//! - `index` builds it, `update` re-reads what changed (`--force`: everything), `watch` follows
//!   file events, `hash_missing` (`tiercache migrate`) fills in hashes left out (`scan.rs`,
//!   `watch.rs`);
//! - a read checks the file's change markers and re-reads it if they moved (`serve.rs`); the
//!   memory tier holds the rows of files read, so that the next read of one opens the file, checks
//!   its markers against the held row, and serves it without the index or a hop to another thread;
//! - writes go to the directory first, atomically, then to the index (`serve.rs`);
//! - the read cache records the schema, tiercache version and cache-relevant configuration it was
//!   built with; a difference at open empties it (here), and the next update rebuilds it.
//!
//! Invariant: a directory namespace's file is never served with an ETag it no longer has: its
//! markers, read from the open file, are compared with the row (the index's, or the one the
//! memory tier holds) on every read, and a changed file is rehashed first (or served without an
//! ETag while a large one is rehashed).
//! Invariant: the directory is written before the index (PUT, DELETE); the index only follows.

mod scan;
mod serve;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use tiercache_core::Digest;
use tiercache_index::{DirState, FileRow, Namespace};
use tiercache_sources::dir::walk::Ignore;

pub use scan::{ScanProgress, UpdateKind, UpdateReport};

use crate::blocking::Ix;
use crate::memory::Memory;
use crate::namespaces::Namespaces;
use crate::single_flight::SingleFlight;
use crate::store::Stores;
use crate::tasks::Tasks;
use crate::telemetry::Notes;
use crate::{CacheConfig, Error};

/// A file's facts once its markers were checked (what a read serves).
pub(crate) type Current = FileRow;

/// One hashing of a file on a read, shared by the readers that need it (`None`: the file kept
/// changing while it was read).
pub(crate) type HashFlight = Arc<tokio::sync::OnceCell<Option<Current>>>;

/// The hash of what in a namespace's definition changes its read cache: the root and the ignore
/// patterns (not copy-to-cache, which changes where bytes are kept, not what is indexed).
fn config_hash(ns: &Namespace) -> String {
    let relevant = serde_json::json!({ "root": ns.dir_root(), "ignore": ns.options.ignore });
    tiercache_core::Digest::of(relevant.to_string().as_bytes()).hex()[..16].to_owned()
}

/// The settings directory namespaces use.
#[derive(Clone)]
struct Settings {
    /// The tiercache version recorded with read caches.
    version: String,
    hash_threads: usize,
    reconcile_interval: Duration,
    watch_debounce: Duration,
}

/// The directory namespaces of one cache.
pub(crate) struct Directories {
    ix: Ix,
    namespaces: Arc<Namespaces>,
    stores: Arc<Stores>,
    /// Holds the rows of files read (`serve.rs`).
    memory: Memory,
    settings: Settings,
    /// Files being hashed on a read, so concurrent readers share one pass.
    hashing: SingleFlight<(i64, Vec<u8>), HashFlight>,
    /// Blobs being copied into the disk tier from a directory (copy-to-cache).
    copies: Arc<SingleFlight<Digest, ()>>,
    tasks: Tasks,
    notes: Arc<Notes>,
}

impl Directories {
    pub(crate) fn new(
        config: &CacheConfig,
        ix: Ix,
        namespaces: Arc<Namespaces>,
        stores: Arc<Stores>,
        memory: Memory,
        tasks: Tasks,
        notes: Arc<Notes>,
    ) -> Directories {
        let settings = Settings {
            version: config.version.clone(),
            hash_threads: config.hash_threads,
            reconcile_interval: config.reconcile_interval,
            watch_debounce: config.watch_debounce,
        };
        Directories {
            ix,
            namespaces,
            stores,
            memory,
            settings,
            hashing: SingleFlight::default(),
            copies: Arc::default(),
            tasks,
            notes,
        }
    }

    fn current_state(&self, ns: &Namespace) -> DirState {
        DirState {
            schema_hash: self.ix.index().schema_hash(),
            version: self.settings.version.clone(),
            config_hash: config_hash(ns),
            last_update_ms: None,
            last_update_kind: None,
        }
    }

    /// Empties `ns`'s read cache if it was built with another schema, tiercache version or
    /// configuration. Returns why, if it did.
    pub(crate) async fn check_read_cache(&self, ns: &Namespace) -> Result<Option<String>, Error> {
        let id = ns.id;
        let Some(stored) = self.ix.run(move |ix| ix.get_dir_state(id)).await? else { return Ok(None) };
        let current = self.current_state(ns);
        let why = if stored.schema_hash != current.schema_hash {
            "the index schema changed".to_owned()
        } else if stored.version != current.version {
            format!("tiercache's version changed from {} to {}", stored.version, current.version)
        } else if stored.config_hash != current.config_hash {
            "its cache-relevant configuration (root or ignore patterns) changed".to_owned()
        } else {
            return Ok(None);
        };
        let orphans = self.ix.run(move |ix| ix.reset_files(id, &current)).await?;
        self.stores.delete_blob_files(0, orphans).await?;
        self.notes.add(format!(
            "directory namespace {}: read cache reset because {why}; the next update rebuilds it",
            ns.name
        ));
        Ok(Some(why))
    }

    /// Builds (or brings up to date) the read cache of namespace `name`, bound to directory
    /// `root` (created with `options` if new): `tiercache index DIR --ns NAME`.
    pub(crate) async fn index(
        &self,
        name: &str,
        root: &std::path::Path,
        options: &tiercache_core::NamespaceOptions,
        hash: bool,
        progress: Arc<ScanProgress>,
    ) -> Result<UpdateReport, Error> {
        // Creating checks the root (`contain.rs`) and records it canonical.
        let root = std::path::absolute(root)
            .map_err(|e| Error::Invalid(format!("cannot use directory {}: {e}", root.display())))?;
        let url = root
            .to_str()
            .map(|r| format!("file://{r}"))
            .ok_or_else(|| Error::Invalid(format!("directory path {} is not UTF-8", root.display())))?;
        self.namespaces.create(name, Some(&url), options).await?;
        self.update(name, UpdateKind::Index, hash, progress).await
    }

    /// Brings the read cache of directory namespace `name` up to date by `kind` of pass:
    /// re-reads the files whose change markers moved (every file for [`UpdateKind::Force`]),
    /// adds new ones and removes deleted ones.
    pub(crate) async fn update(
        &self,
        name: &str,
        kind: UpdateKind,
        hash: bool,
        progress: Arc<ScanProgress>,
    ) -> Result<UpdateReport, Error> {
        let (ns, src) = self.namespaces.dir(name).await?;
        let reset = self.check_read_cache(&ns).await?;
        let ignore = Ignore::new(&ns.options.ignore).map_err(Error::Invalid)?;
        let mut report = scan::UpdateReport {
            namespace: ns.name.clone(),
            root: src.root().display().to_string(),
            kind: kind.as_str().to_owned(),
            reset,
            ..Default::default()
        };
        let spec = scan::ScanSpec {
            ns_id: ns.id,
            start: Vec::new(),
            force: kind == UpdateKind::Force,
            hash,
            hash_threads: self.settings.hash_threads,
        };
        let index = Arc::clone(self.ix.index());
        let report = crate::blocking::blocking_with(move || {
            scan::scan(index, &src, &ignore, &spec, progress, &mut report).map(|()| report)
        })
        .await?;
        let mut state = self.current_state(&ns);
        state.last_update_ms = Some(tiercache_core::now_ms());
        state.last_update_kind = Some(kind.as_str().to_owned());
        let id = ns.id;
        self.ix.run(move |ix| ix.put_dir_state(id, &state)).await?;
        if report.n_added + report.n_changed + report.n_removed > 0 || report.reset.is_some() {
            // Held rows are checked against the files on every read anyway; this drops them (in
            // every process) so none outlives the update that changed it.
            self.memory.bump_generation().await?;
        }
        tracing::info!(
            namespace = %ns.name, kind = kind.as_str(), added = report.n_added, changed = report.n_changed,
            removed = report.n_removed, unchanged = report.n_unchanged, elapsed_ms = report.elapsed_ms,
            "read cache updated"
        );
        Ok(report)
    }

    /// Hashes the files of namespace `name` that have no hashes yet (indexed with `--no-hash`,
    /// or unreadable or changing when last seen), skipping those already hashed; with `dry_run`,
    /// only counts them. For a namespace with another source, computes the MD5 of its blobs that
    /// lack one. `tiercache migrate`.
    pub(crate) async fn hash_missing(
        &self,
        name: &str,
        dry_run: bool,
        progress: Arc<ScanProgress>,
    ) -> Result<UpdateReport, Error> {
        let ns = self.namespaces.row(name).await?;
        let mut report = UpdateReport {
            namespace: ns.name.clone(),
            root: ns.source.clone().unwrap_or_default(),
            kind: if dry_run { "migrate --dry-run" } else { "migrate" }.to_owned(),
            ..Default::default()
        };
        let id = ns.id;
        let Some(src) = self.namespaces.dir_source(&ns)? else {
            let missing = self.ix.run(move |ix| ix.blobs_without_md5(id)).await?;
            report.n_unhashed = missing.len() as u64;
            report.bytes_hashed = missing.iter().map(|(_, s)| s).sum();
            if !dry_run {
                for (d, _) in missing {
                    self.stores.md5(d, &self.stores.managed().disk).await?;
                    report.n_hashed += 1;
                }
                report.n_unhashed = 0;
            }
            return Ok(report);
        };
        if dry_run {
            let st = self.ix.run(move |ix| ix.dir_stats(id)).await?;
            report.n_unhashed = st.n_unhashed;
            report.bytes_hashed = st.unhashed_bytes;
            return Ok(report);
        }
        let index = Arc::clone(self.ix.index());
        let threads = self.settings.hash_threads;
        crate::blocking::blocking_with(move || {
            scan::hash_missing(index, &src, id, threads, progress, &mut report).map(|()| report)
        })
        .await
    }
}

impl Directories {
    /// At open: empties the read cache of every directory namespace built with another schema,
    /// version or configuration.
    pub(crate) async fn check_read_caches(&self) -> Result<(), Error> {
        for ns in self.namespaces.directories().await? {
            self.check_read_cache(&ns).await?;
        }
        Ok(())
    }
}
