//! Storage places (layer 2): where a namespace keeps its blobs, and claiming, releasing and
//! sweeping a namespace's own storage directory.
//!
//! A namespace is **managed** (the default: its blobs are in the shared, content-addressed disk
//! tier of the data directory, counted in the disk quota and shared with every other managed
//! namespace), or stored in a **host directory** of its own (`path:DIR`, like an orchestrator's
//! bind-mounted cache volume). A directory store has the disk tier's layout
//! (`DIR/blobs/sha256/xx/<hex>`, `DIR/tmp/`) and a marker file naming the namespace; it holds that
//! namespace's blobs alone, is bounded by the namespace's own limits and by its file system's free
//! space (not by the disk quota), and is removed with the namespace. Moving a namespace between
//! places is a job (`jobs/moves.rs`).
//!
//! Invariant: a directory store belongs to one namespace of one data directory (its marker file
//! says which); it never overlaps the data directory, another store or a directory source.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tiercache_core::Digest;
use tiercache_index::Namespace;
use tiercache_tiers::DiskTier;

use super::Stores;
use crate::Error;
use crate::blocking::{blocking, blocking_with};
use crate::fs::write_atomically;

#[derive(Serialize, serde::Deserialize)]
struct Marker {
    namespace: String,
    data_dir: String,
}

/// The file in a storage directory that says which namespace (of which data directory) it holds.
const MARKER: &str = ".tiercache-namespace";

/// Where a namespace's blobs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The shared disk tier of the data directory.
    Managed,
    /// A host directory of the namespace's own (absolute).
    Path(PathBuf),
}

impl std::str::FromStr for Place {
    type Err = Error;

    /// `managed`, or `path:DIR` with an absolute `DIR`.
    fn from_str(s: &str) -> Result<Place, Error> {
        if s == "managed" {
            return Ok(Place::Managed);
        }
        let Some(dir) = s.strip_prefix("path:") else {
            return Err(Error::Invalid(format!("storage {s:?} is neither `managed` nor `path:DIR`")));
        };
        let dir = Path::new(dir);
        if !dir.is_absolute() {
            return Err(Error::Invalid(format!("storage directory {} is not an absolute path", dir.display())));
        }
        Ok(Place::Path(dir.to_owned()))
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Managed => f.write_str("managed"),
            Place::Path(p) => write!(f, "path:{}", p.display()),
        }
    }
}

impl Place {
    /// The `storage` option of a namespace kept here: its directory, `None` for managed.
    pub(crate) fn option(&self) -> Result<Option<String>, Error> {
        match self {
            Place::Managed => Ok(None),
            Place::Path(dir) => dir
                .to_str()
                .map(|d| Some(d.to_owned()))
                .ok_or_else(|| Error::Invalid(format!("storage directory {} is not UTF-8", dir.display()))),
        }
    }
}

/// How a place is named in reports: `managed`, or `path:DIR`.
pub(crate) fn describe(storage: &Option<String>) -> String {
    storage.as_ref().map_or("managed".to_owned(), |d| format!("path:{d}"))
}

impl Stores {
    /// Makes `dir` the storage directory of namespace `name`: creates it, checks that it is not
    /// a non-empty directory that is not already this namespace's and that it overlaps neither the
    /// data directory, a directory source nor another namespace's storage (`contain.rs`), and
    /// marks it. Returns its canonical path.
    pub(crate) async fn claim_dir(&self, name: &str, dir: &Path) -> Result<String, Error> {
        let namespaces = self.ix.run(|ix| ix.list_namespaces()).await?;
        let (name, dir, data_dir) = (name.to_owned(), dir.to_owned(), self.data_dir.clone());
        let claimed = blocking_with(move || claim_dir(&name, &dir, &data_dir, &namespaces)).await?;
        self.dir_store(&claimed).await?;
        Ok(claimed)
    }

    /// Removes a directory store: its blobs, temp files and marker, then the directory itself if
    /// nothing else is in it. Returns the blobs removed and their bytes.
    pub(crate) async fn release_dir(&self, dir: &str) -> Result<(u64, u64), Error> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).remove(dir);
        let dir = PathBuf::from(dir);
        blocking(move || {
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
    /// `grace` ago; and temp files there not written for `temp_grace`. Removed unless `dry_run`.
    /// Returns the blobs, and the temp files, with their sizes.
    pub(crate) async fn sweep_dir_store(
        &self,
        ns: &Namespace,
        (grace, temp_grace): (Duration, Duration),
        unnamed: &HashSet<Digest>,
        dry_run: bool,
    ) -> Result<(Vec<(Digest, u64)>, Vec<(PathBuf, u64)>), Error> {
        let unnamed = unnamed.clone();
        let store = self.of(ns).await?;
        let id = ns.id;
        let named: HashSet<Digest> =
            self.ix.run(move |ix| ix.namespace_blobs(id)).await?.into_iter().map(|(d, _)| d).collect();
        let disk = store.disk.clone();
        blocking(move || {
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
}

fn claim_dir(name: &str, dir: &Path, data_dir: &Path, namespaces: &[Namespace]) -> Result<String, Error> {
    if !dir.is_absolute() {
        return Err(Error::Invalid(format!("storage directory {} is not an absolute path", dir.display())));
    }
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", dir.display()), e);
    let canonical = resolve(dir).map_err(|e| io("cannot resolve storage directory", e))?;
    let Some(text) = canonical.to_str().map(str::to_owned) else {
        return Err(Error::Invalid(format!("storage directory {} is not valid UTF-8", canonical.display())));
    };
    crate::contain::check_storage_dir(name, &canonical, data_dir, namespaces)?;
    let data = std::fs::canonicalize(data_dir).map_err(|e| io("cannot resolve data directory of", e))?;
    let marker_path = canonical.join(MARKER);
    let ours = Marker { namespace: name.to_owned(), data_dir: data.to_string_lossy().into_owned() };
    let found: Option<Marker> = std::fs::read(&marker_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    match found {
        Some(m) if m.namespace == ours.namespace && m.data_dir == ours.data_dir => {}
        Some(m) => {
            return Err(Error::conflict(format!(
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
                return Err(Error::conflict(format!(
                    "storage directory {text} is not empty; give an empty or new directory"
                )));
            }
        }
    }
    std::fs::create_dir_all(&canonical).map_err(|e| io("cannot create storage directory", e))?;
    let json = serde_json::to_vec_pretty(&ours).map_err(|e| Error::io("cannot encode the marker", e.into()))?;
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
