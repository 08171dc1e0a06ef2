//! Directory namespaces: a namespace bound to a local directory (`file:///dir`), whose read cache
//! in the index (table `files`) replicates the directory's metadata and hashes, so that listing,
//! looking up and serving its files never walks or rehashes the directory again.
//!
//! The directory is the truth; the read cache follows it and is never written first:
//! - `index` builds it, `update` re-reads what changed (`--force`: everything), `watch` follows
//!   file events, `migrate` fills in hashes left out (`scan.rs`, `watch.rs`);
//! - a read checks the file's change markers and re-reads it if they moved (`read.rs`);
//! - writes go to the directory first, atomically, then to the index (`read.rs`);
//! - the read cache records the schema, tiercache version and cache-relevant configuration it was
//!   built with; a difference at open empties it (here), and the next update rebuilds it.

mod read;
mod scan;
mod watch;

use std::sync::Arc;

use tiercache_index::{DirState, FileRow, Namespace};
use tiercache_sources::DirSource;
use tiercache_sources::dir::walk::Ignore;

pub use read::{MAX_LIST_LIMIT, Stored};
pub use scan::{ScanProgress, UpdateKind, UpdateReport};

use crate::{Cache, Error};

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

impl Cache {
    /// The directory source of `ns`, if it has one.
    pub(crate) fn dir_source(&self, ns: &Namespace) -> Option<Arc<DirSource>> {
        let url = ns.source.as_deref()?;
        let root = ns.dir_root()?;
        let mut map = self.inner.dir_sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(url) {
            return Some(Arc::clone(s));
        }
        let src = Arc::new(DirSource::new(root).ok()?);
        map.insert(url.to_owned(), Arc::clone(&src));
        Some(src)
    }

    /// Namespace `name` and its directory source; [`Error::Invalid`] if it is not a directory
    /// namespace.
    pub(crate) async fn dir_namespace(&self, name: &str) -> Result<(Arc<Namespace>, Arc<DirSource>), Error> {
        let ns = self.namespace_row(name).await?;
        let src = self.dir_source(&ns).ok_or_else(|| {
            Error::Invalid(format!(
                "namespace {name} is not bound to a directory (source: {})",
                ns.source.as_deref().unwrap_or("none")
            ))
        })?;
        Ok((ns, src))
    }

    /// Every namespace bound to a directory.
    pub async fn directory_namespaces(&self) -> Result<Vec<Namespace>, Error> {
        Ok(self.ix(|ix| ix.list_namespaces()).await?.into_iter().filter(|n| n.dir_root().is_some()).collect())
    }

    fn current_state(&self, ns: &Namespace) -> DirState {
        DirState {
            schema_hash: self.inner.index.schema_hash(),
            version: self.inner.config.version.clone(),
            config_hash: config_hash(ns),
            last_update_ms: None,
            last_update_kind: None,
        }
    }

    /// Empties `ns`'s read cache if it was built with another schema, tiercache version or
    /// configuration. Returns why, if it did.
    pub(crate) async fn check_read_cache(&self, ns: &Namespace) -> Result<Option<String>, Error> {
        let id = ns.id;
        let Some(stored) = self.ix(move |ix| ix.get_dir_state(id)).await? else { return Ok(None) };
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
        let orphans = self.ix(move |ix| ix.reset_files(id, &current)).await?;
        self.delete_blob_files(0, orphans).await?;
        self.note(format!(
            "directory namespace {}: read cache reset because {why}; the next update rebuilds it",
            ns.name
        ));
        Ok(Some(why))
    }

    /// Builds (or brings up to date) the read cache of namespace `name`, bound to directory
    /// `root` (created with `options` if new): `tiercache index DIR --ns NAME`.
    pub async fn index_directory(
        &self,
        name: &str,
        root: &std::path::Path,
        options: &tiercache_core::NamespaceOptions,
        hash: bool,
        progress: Arc<ScanProgress>,
    ) -> Result<UpdateReport, Error> {
        let root = std::fs::canonicalize(root)
            .map_err(|e| Error::Invalid(format!("cannot use directory {}: {e}", root.display())))?;
        if !root.is_dir() {
            return Err(Error::Invalid(format!("{} is not a directory", root.display())));
        }
        let url = root
            .to_str()
            .map(|r| format!("file://{r}"))
            .ok_or_else(|| Error::Invalid(format!("directory path {} is not UTF-8", root.display())))?;
        self.create_namespace(name, Some(&url), options).await?;
        self.update_directory_with(name, UpdateKind::Index, hash, progress).await
    }

    /// Re-reads the files of directory namespace `name` whose change markers moved, adds new
    /// ones and removes deleted ones (`force`: re-reads every file): `tiercache update`.
    pub async fn update_directory(
        &self,
        name: &str,
        force: bool,
        progress: Arc<ScanProgress>,
    ) -> Result<UpdateReport, Error> {
        let kind = if force { UpdateKind::Force } else { UpdateKind::Update };
        self.update_directory_with(name, kind, true, progress).await
    }

    pub(crate) async fn update_directory_with(
        &self,
        name: &str,
        kind: UpdateKind,
        hash: bool,
        progress: Arc<ScanProgress>,
    ) -> Result<UpdateReport, Error> {
        let (ns, src) = self.dir_namespace(name).await?;
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
            hash_threads: self.inner.config.hash_threads,
        };
        let index = Arc::clone(&self.inner.index);
        let report = tokio::task::spawn_blocking(move || {
            scan::scan(index, &src, &ignore, &spec, progress, &mut report).map(|()| report)
        })
        .await
        .map_err(|e| Error::Io(format!("scan task failed: {e}")))??;
        let mut state = self.current_state(&ns);
        state.last_update_ms = Some(tiercache_core::now_ms());
        state.last_update_kind = Some(kind.as_str().to_owned());
        let id = ns.id;
        self.ix(move |ix| ix.put_dir_state(id, &state)).await?;
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
    pub async fn migrate(&self, name: &str, dry_run: bool, progress: Arc<ScanProgress>) -> Result<UpdateReport, Error> {
        let ns = self.namespace_row(name).await?;
        let mut report = UpdateReport {
            namespace: ns.name.clone(),
            root: ns.source.clone().unwrap_or_default(),
            kind: if dry_run { "migrate --dry-run" } else { "migrate" }.to_owned(),
            ..Default::default()
        };
        let id = ns.id;
        let Some(src) = self.dir_source(&ns) else {
            let missing = self.ix(move |ix| ix.blobs_without_md5(id)).await?;
            report.n_unhashed = missing.len() as u64;
            report.bytes_hashed = missing.iter().map(|(_, s)| s).sum();
            if !dry_run {
                for (d, _) in missing {
                    self.md5_of(d).await?;
                    report.n_hashed += 1;
                }
                report.n_unhashed = 0;
            }
            return Ok(report);
        };
        if dry_run {
            let st = self.ix(move |ix| ix.dir_stats(id)).await?;
            report.n_unhashed = st.n_unhashed;
            report.bytes_hashed = st.unhashed_bytes;
            return Ok(report);
        }
        let index = Arc::clone(&self.inner.index);
        let threads = self.inner.config.hash_threads;
        tokio::task::spawn_blocking(move || {
            scan::hash_missing(index, &src, id, threads, progress, &mut report).map(|()| report)
        })
        .await
        .map_err(|e| Error::Io(format!("migrate task failed: {e}")))?
    }
}

/// At open: empties the read cache of every directory namespace built with another schema,
/// version or configuration.
pub(crate) async fn check_read_caches(cache: &Cache) -> Result<(), Error> {
    for ns in cache.directory_namespaces().await? {
        cache.check_read_cache(&ns).await?;
    }
    Ok(())
}
