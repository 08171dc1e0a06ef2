//! Where a namespace's blobs are kept, and moving a namespace from one place to another.
//!
//! A namespace is **managed** (the default: its blobs are in the shared, content-addressed disk
//! tier of the data directory, counted in the disk quota and shared with every other managed
//! namespace), or stored in a **host directory** of its own (`path:DIR`, like an orchestrator's
//! bind-mounted cache volume). A directory store has the disk tier's layout
//! (`DIR/blobs/sha256/xx/<hex>`, `DIR/tmp/`) and a marker file naming the namespace; it holds that
//! namespace's blobs alone, is bounded by the namespace's own limits and by its file system's free
//! space (not by the disk quota), and is removed with the namespace.
//!
//! `ns migrate` moves a namespace with no read failing and no byte lost:
//! 1. copy every blob its entries name into the new place (verified by digest on the way);
//! 2. switch: the definition file, then the index, then every process's lookups (the
//!    lookup-generation file);
//! 3. copy again what entries stored in the meantime name;
//! 4. release the old place: managed blobs nothing else names are deleted, a directory store is
//!    removed.
//!
//! Until step 4 both places hold every blob, so a read that resolved the namespace before the
//! switch still finds its file; a read of a directory store also falls back to the disk tier for
//! a blob it lacks, and a read that misses after the namespace moved looks again with the new
//! place (read_path.rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tiercache_core::{Digest, NamespaceOptions};
use tiercache_index::{BlobState, Namespace};
use tiercache_tiers::DiskTier;

use crate::cache::Origin;
use crate::namespaces::{Definition, write_atomically};
use crate::quota::{DiskLimits, DiskQuota, Hold};
use crate::{Cache, Error};

/// The file in a storage directory that says which namespace (of which data directory) it holds.
const MARKER: &str = ".tiercache-namespace";

/// Where a namespace's blobs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// The shared disk tier of the data directory.
    Managed,
    /// A host directory of the namespace's own (absolute).
    Path(PathBuf),
}

impl std::str::FromStr for Storage {
    type Err = Error;

    /// `managed`, or `path:DIR` with an absolute `DIR`.
    fn from_str(s: &str) -> Result<Storage, Error> {
        if s == "managed" {
            return Ok(Storage::Managed);
        }
        let Some(dir) = s.strip_prefix("path:") else {
            return Err(Error::Invalid(format!("storage {s:?} is neither `managed` nor `path:DIR`")));
        };
        let dir = Path::new(dir);
        if !dir.is_absolute() {
            return Err(Error::Invalid(format!("storage directory {} is not an absolute path", dir.display())));
        }
        Ok(Storage::Path(dir.to_owned()))
    }
}

impl std::fmt::Display for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Managed => f.write_str("managed"),
            Storage::Path(p) => write!(f, "path:{}", p.display()),
        }
    }
}

/// The place a namespace's blobs are written to and read from.
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
}

/// What `ns migrate` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    /// The namespace.
    pub namespace: String,
    /// Where its blobs were (`managed` or `path:DIR`).
    pub from: String,
    /// Where they are now.
    pub to: String,
    /// Distinct blobs its entries name.
    pub n_blobs: u64,
    /// Blobs copied into the new place, and their bytes.
    pub n_copied: u64,
    /// Bytes copied.
    pub copied_bytes: u64,
    /// Blobs found in neither place (evicted or lost before the move): their entries are fetched
    /// again from the source on their next read.
    pub n_missing: u64,
    /// Bytes freed in the old place.
    pub released_bytes: u64,
}

#[derive(Serialize, serde::Deserialize)]
struct Marker {
    namespace: String,
    data_dir: String,
}

impl Cache {
    /// [`Cache::create_namespace`] with its storage place given as a [`Storage`]. `None` makes a new
    /// namespace managed and leaves an existing one where it is; another place than an existing
    /// namespace's is a [`Error::Conflict`] ([`Cache::migrate_namespace`] moves it), and nothing
    /// is changed.
    pub async fn create_namespace_in(
        &self,
        name: &str,
        source: Option<&str>,
        options: &NamespaceOptions,
        storage: Option<&Storage>,
    ) -> Result<(Namespace, bool), Error> {
        let storage_option = match storage {
            Some(Storage::Path(dir)) => Some(
                dir.to_str()
                    .ok_or_else(|| Error::Invalid(format!("storage directory {} is not UTF-8", dir.display())))?
                    .to_owned(),
            ),
            Some(Storage::Managed) => {
                let lookup = tiercache_core::NamespaceName::new(name)?.as_str().to_owned();
                if let Some(existing) = self.ix(move |ix| ix.get_namespace(&lookup)).await?
                    && let Some(dir) = existing.options.storage
                {
                    return Err(Error::Conflict(format!(
                        "namespace {name} keeps its blobs in directory {dir}; `tiercache ns migrate` moves them"
                    )));
                }
                None
            }
            None => None,
        };
        let options = NamespaceOptions { storage: storage_option, ..options.clone() };
        self.create_namespace(name, source, &options).await
    }

    /// The shared disk tier, as a store.
    pub(crate) fn managed_store(&self) -> Arc<Store> {
        Arc::clone(&self.inner.managed)
    }

    /// Where namespace `ns` keeps its blobs.
    pub(crate) async fn store_of(&self, ns: &Namespace) -> Result<Arc<Store>, Error> {
        match &ns.options.storage {
            None => Ok(self.managed_store()),
            Some(dir) => self.dir_store(dir).await,
        }
    }

    /// The store in directory `dir` (already claimed by a namespace), opened once per process:
    /// the first open also removes temp files dead processes left there.
    async fn dir_store(&self, dir: &str) -> Result<Arc<Store>, Error> {
        if let Some(s) = self.inner.dir_stores.lock().unwrap_or_else(|p| p.into_inner()).get(dir) {
            return Ok(Arc::clone(s));
        }
        let (index, d) = (Arc::clone(&self.inner.index), dir.to_owned());
        let store = self
            .blocking(move |_| {
                let disk = DiskTier::open(Path::new(&d))?;
                disk.sweep_temp()?;
                let limits = DiskLimits { quota_bytes: None, ..DiskLimits::default() };
                let quota =
                    DiskQuota::open(limits, index, disk.clone(), PathBuf::from(&d)).map_err(std::io::Error::other)?;
                Ok(Arc::new(Store { disk, quota: Arc::new(quota), dir: Some(d) }))
            })
            .await?;
        let mut stores = self.inner.dir_stores.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(stores.entry(dir.to_owned()).or_insert(store)))
    }

    /// Opens blob `digest` in `store`; a directory store lacking it falls back to the disk tier
    /// (the same bytes, by digest: during a move, or shared with a managed namespace).
    pub(crate) fn open_in(
        &self,
        store: &Store,
        digest: &Digest,
    ) -> std::io::Result<Option<(std::fs::File, std::fs::Metadata)>> {
        match store.disk.open_blob(digest)? {
            None if !store.is_managed() => self.inner.disk.open_blob(digest),
            found => Ok(found),
        }
    }

    /// Makes `dir` the storage directory of namespace `name`: creates it, checks that it is not
    /// the data directory, inside it, a directory source, another namespace's storage, or a
    /// non-empty directory that is not already this namespace's, and marks it. Returns its
    /// canonical path.
    pub(crate) async fn claim_dir(&self, name: &str, dir: &Path) -> Result<String, Error> {
        let namespaces = self.ix(|ix| ix.list_namespaces()).await?;
        let (name, dir, data_dir) = (name.to_owned(), dir.to_owned(), self.data_dir().to_owned());
        let claimed = tokio::task::spawn_blocking(move || claim_dir(&name, &dir, &data_dir, &namespaces))
            .await
            .map_err(|e| Error::Io(format!("storage task failed: {e}")))??;
        self.dir_store(&claimed).await?;
        Ok(claimed)
    }

    /// Removes a directory store: its blobs, temp files and marker, then the directory itself if
    /// nothing else is in it. Returns the blobs removed and their bytes.
    pub(crate) async fn release_dir(&self, dir: &str) -> Result<(u64, u64), Error> {
        self.inner.dir_stores.lock().unwrap_or_else(|p| p.into_inner()).remove(dir);
        let dir = PathBuf::from(dir);
        self.blocking(move |_| {
            // Opening creates the store's directories: only where they still are.
            let blobs: Vec<u64> = match dir.join("blobs").is_dir().then(|| DiskTier::open(&dir)) {
                Some(Ok(disk)) => disk.list()?.into_iter().filter_map(Result::ok).map(|(_, n)| n).collect(),
                _ => Vec::new(),
            };
            for sub in ["blobs", "tmp", "locks"] {
                match std::fs::remove_dir_all(dir.join(sub)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            match std::fs::remove_file(dir.join(MARKER)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            // The directory was the user's to give: it goes only if nothing else is left in it.
            let _ = std::fs::remove_dir(&dir);
            Ok((blobs.len() as u64, blobs.iter().sum()))
        })
        .await
    }

    /// Blob files of namespace `ns`'s directory store that none of its entries names, and that
    /// are in `unnamed` (blobs whose entries were just removed) or were last written more than
    /// `grace` ago; and temp files there not written for the pruner's temp grace. Removed unless
    /// `dry_run`. Returns the blobs, and the temp files, with their sizes.
    pub(crate) async fn sweep_dir_store(
        &self,
        ns: &Namespace,
        grace: Duration,
        unnamed: &std::collections::HashSet<Digest>,
        dry_run: bool,
    ) -> Result<(Vec<(Digest, u64)>, Vec<(PathBuf, u64)>), Error> {
        let unnamed = unnamed.clone();
        let store = self.store_of(ns).await?;
        let id = ns.id;
        let named: std::collections::HashSet<Digest> =
            self.ix(move |ix| ix.namespace_blobs(id)).await?.into_iter().map(|(d, _)| d).collect();
        let temp_grace = self.inner.config.pruner.temp_grace;
        let disk = store.disk.clone();
        self.blocking(move |_| {
            let now = std::time::SystemTime::now();
            let mut blobs = Vec::new();
            for (d, len) in disk.list()?.into_iter().filter_map(Result::ok) {
                let path = disk.blob_path(&d);
                let age = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(|t| now.duration_since(t).unwrap_or_default());
                if named.contains(&d) || (!unnamed.contains(&d) && age.is_ok_and(|a| a < grace)) {
                    continue;
                }
                if dry_run || disk.delete(&d)? {
                    blobs.push((d, len));
                }
            }
            Ok((blobs, disk.prune_temp(temp_grace, dry_run)?))
        })
        .await
    }

    /// Moves namespace `name`'s blobs to `to` (see the module's documentation for the protocol).
    /// Moving a namespace where it already is does nothing.
    pub async fn migrate_namespace(&self, name: &str, to: &Storage) -> Result<MigrateReport, Error> {
        let ns = self.namespace_fresh(tiercache_core::NamespaceName::new(name)?.as_str()).await?;
        if self.dir_source(&ns).is_some() {
            return Err(Error::Invalid(format!(
                "namespace {name} is a directory served in place; only cached namespaces have a storage place"
            )));
        }
        // One move of a namespace at a time, across processes too.
        let lock_name = format!("migrate-{}", ns.id);
        let _lock = self.blocking(move |disk| disk.lock(&lock_name)).await?;
        let ns = self.namespace_fresh(&ns.name).await?;
        let target = match to {
            Storage::Managed => None,
            Storage::Path(dir) => Some(self.claim_dir(&ns.name, dir).await?),
        };
        let describe = |s: &Option<String>| s.as_ref().map_or("managed".to_owned(), |d| format!("path:{d}"));
        let mut report = MigrateReport {
            namespace: ns.name.clone(),
            from: describe(&ns.options.storage),
            to: describe(&target),
            ..MigrateReport::default()
        };
        if ns.options.storage == target {
            return Ok(report);
        }
        let from = self.store_of(&ns).await?;
        let to_store = match &target {
            None => self.managed_store(),
            Some(dir) => self.dir_store(dir).await?,
        };
        tracing::info!(namespace = ns.name, from = report.from, to = report.to, "moving namespace");

        // 1. Copy. Holds keep what is copied into the disk tier from eviction until the switch.
        let id = ns.id;
        let first = self.ix(move |ix| ix.namespace_blobs(id)).await?;
        let mut holds = Vec::new();
        self.copy_blobs(&from, &to_store, &first, &mut report, &mut holds).await?;

        // 2. Switch.
        let options = NamespaceOptions { storage: target.clone(), ..ns.options.clone() };
        let pins = self.ix(move |ix| ix.pins(id)).await?;
        let def = Definition { name: ns.name.clone(), source: ns.source.clone(), options: options.clone(), pins };
        self.write_definition(def).await?;
        let (ns_name, source) = (tiercache_core::NamespaceName::new(&ns.name)?, ns.source.clone());
        self.ix(move |ix| ix.put_namespace(&ns_name, source.as_deref(), &options, tiercache_core::now_ms())).await?;
        self.bump_lookup_generation().await?;

        // 3. Catch up with entries stored meanwhile.
        let second = self.ix(move |ix| ix.namespace_blobs(id)).await?;
        self.copy_blobs(&from, &to_store, &second, &mut report, &mut holds).await?;
        report.n_blobs = second.len() as u64;

        // 4. Release the old place.
        report.released_bytes = match &from.dir {
            None => {
                let mut digests: Vec<Digest> = first.iter().chain(&second).map(|(d, _)| *d).collect();
                digests.sort();
                digests.dedup();
                let released = self.ix(move |ix| ix.delete_orphans(&digests)).await?;
                self.delete_blob_files(0, released).await?.bytes
            }
            Some(dir) => self.release_dir(dir).await?.1,
        };
        self.bump_lookup_generation().await?;
        drop(holds);
        tracing::info!(
            namespace = ns.name,
            to = report.to,
            copied = report.n_copied,
            missing = report.n_missing,
            "namespace moved"
        );
        Ok(report)
    }

    /// The namespace as the index has it now (not the memory tier's copy).
    pub(crate) async fn namespace_fresh(&self, name: &str) -> Result<Namespace, Error> {
        let lookup = name.to_owned();
        self.ix(move |ix| ix.get_namespace(&lookup)).await?.ok_or_else(|| Error::NoNamespace(name.into()))
    }

    /// Copies each of `blobs` that `to` lacks from `from` (or, for a directory store, from the disk
    /// tier), verifying its digest on the way.
    async fn copy_blobs(
        &self,
        from: &Store,
        to: &Store,
        blobs: &[(Digest, u64)],
        report: &mut MigrateReport,
        holds: &mut Vec<Hold>,
    ) -> Result<(), Error> {
        for &(digest, size) in blobs {
            let is_there = if to.is_managed() {
                let row = self.ix(move |ix| ix.get_blob(&digest)).await?;
                row.is_some_and(|r| r.state == BlobState::Present) && to.disk.contains(&digest)
            } else {
                to.disk.contains(&digest)
            };
            if to.is_managed() {
                holds.push(Hold::new(&self.inner.quota, Some(digest), None));
            }
            if is_there {
                continue;
            }
            let Some((file, _)) = self.open_in(from, &digest)? else {
                tracing::warn!(%digest, "blob in neither place; its entries will be fetched again");
                report.n_missing += 1;
                continue;
            };
            let (temp_store, quota) = (to.disk.clone(), Arc::clone(&to.quota));
            let copied = self
                .blocking(move |_| {
                    use std::io::Read as _;
                    let reservation = quota.reserve(size).map_err(|no| std::io::Error::other(no.reason))?;
                    let mut temp = temp_store.create_temp()?;
                    let mut file = file;
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = file.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        temp.write(Bytes::copy_from_slice(&buf[..n]))?;
                    }
                    Ok((temp.finish()?, reservation))
                })
                .await
                .map_err(|e| Error::Io(format!("cannot copy blob {digest}: {e}")))?;
            if copied.0.digest != digest {
                tracing::error!(%digest, actual = %copied.0.digest, "a stored blob does not match its digest; not copied");
                report.n_missing += 1;
                continue;
            }
            self.store_finished_in(to, copied, None, Origin::Migrate).await?;
            report.n_copied += 1;
            report.copied_bytes += size;
        }
        Ok(())
    }
}

fn claim_dir(name: &str, dir: &Path, data_dir: &Path, namespaces: &[Namespace]) -> Result<String, Error> {
    if !dir.is_absolute() {
        return Err(Error::Invalid(format!("storage directory {} is not an absolute path", dir.display())));
    }
    let io = |what: &str, e: std::io::Error| Error::Io(format!("{what} {}: {e}", dir.display()));
    let canonical = resolve(dir).map_err(|e| io("cannot resolve storage directory", e))?;
    let Some(text) = canonical.to_str().map(str::to_owned) else {
        return Err(Error::Invalid(format!("storage directory {} is not valid UTF-8", canonical.display())));
    };
    let data = std::fs::canonicalize(data_dir).map_err(|e| io("cannot resolve data directory of", e))?;
    let overlaps = |other: &Path| canonical.starts_with(other) || other.starts_with(&canonical);
    if overlaps(&data) {
        return Err(Error::Invalid(format!(
            "storage directory {text} overlaps the data directory {}; give a directory outside it",
            data.display()
        )));
    }
    for ns in namespaces {
        if let Some(other) = &ns.options.storage
            && ns.name != name
            && overlaps(Path::new(other))
        {
            return Err(Error::Conflict(format!("storage directory {text} overlaps {other}, namespace {}'s", ns.name)));
        }
        if let Some(root) = ns.source.as_deref().and_then(|s| s.strip_prefix("file://"))
            && std::fs::canonicalize(root).is_ok_and(|r| overlaps(&r))
        {
            return Err(Error::Invalid(format!(
                "storage directory {text} overlaps {root}, the source directory of namespace {}",
                ns.name
            )));
        }
    }
    let marker_path = canonical.join(MARKER);
    let ours = Marker { namespace: name.to_owned(), data_dir: data.to_string_lossy().into_owned() };
    let found: Option<Marker> = std::fs::read(&marker_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    match found {
        Some(m) if m.namespace == ours.namespace && m.data_dir == ours.data_dir => {}
        Some(m) => {
            return Err(Error::Conflict(format!(
                "storage directory {text} holds namespace {} of data directory {}",
                m.namespace, m.data_dir
            )));
        }
        None => {
            let is_empty = match std::fs::read_dir(&canonical) {
                Ok(mut rd) => rd.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(e) => return Err(io("cannot list", e)),
            };
            if !is_empty {
                return Err(Error::Conflict(format!(
                    "storage directory {text} is not empty; give an empty or new directory"
                )));
            }
        }
    }
    std::fs::create_dir_all(&canonical).map_err(|e| io("cannot create storage directory", e))?;
    let json = serde_json::to_vec_pretty(&ours).map_err(|e| Error::Io(e.to_string()))?;
    write_atomically(&canonical, MARKER, &json).map_err(|e| io("cannot write the marker in", e))?;
    Ok(text)
}

/// `dir` with symbolic links resolved, whether or not it exists yet: its deepest existing ancestor
/// canonicalized, and the rest appended (which may not hold `..`).
fn resolve(dir: &Path) -> std::io::Result<PathBuf> {
    let mut existing = dir;
    let mut rest = Vec::new();
    while !existing.exists() {
        let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no existing ancestor"));
        };
        rest.push(name);
        existing = parent;
    }
    if dir.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "`..` is not allowed"));
    }
    let mut resolved = std::fs::canonicalize(existing)?;
    resolved.extend(rest.iter().rev());
    Ok(resolved)
}
