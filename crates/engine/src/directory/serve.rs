//! Serving a directory namespace's files in place (layer 3): reading, writing and deleting them.
//!
//! A read opens the file beneath the root and compares its change markers with the read cache's
//! row. Unchanged: the file is served in place (or from the disk tier, for a copy-to-cache
//! namespace), with the indexed MD5 as its ETag: no rehash. Changed or never seen: it is hashed
//! first (up to [`INLINE_HASH_BYTES`]; a larger file is served without an ETag while it is hashed
//! in the background), so a file is never served with an ETag it no longer has.
//!
//! A file served with its hashes is then held in the memory tier ([`HotFile`]), and its next read
//! takes the short way ([`Directories::read_held`]), all on the request's own thread: one
//! `openat2` beneath the held root, one `fstat`, the markers compared with the held row, and the
//! headers' facts as they were built the first time (a small file's bytes are then one `pread`,
//! in the front door). Anything else (the markers moved, the file is gone, a symlink on its path,
//! a copy-to-cache blob missing) sends the read the long way above, which reads the index,
//! rehashes what changed and holds the new row.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tiercache_core::{Digest, RelPath};
use tiercache_index::{FileRow, Namespace};
use tiercache_sources::dir::content_type;
use tiercache_sources::{DirSource, SourceError};

use super::scan::{HashFailure, hash_one, is_racy};
use super::{Current, Directories};
use crate::blocking::blocking;
use crate::body::{Body, Read};
use crate::memory::HotFile;
use crate::meta::{Memo, ReadMeta, Tier, http_date};
use crate::spool::{SpoolError, spool};
use crate::store::Origin;
use crate::{Error, telemetry};

/// A changed file up to this size is hashed before it is served (so the answer carries its new
/// ETag); a larger one is served without an ETag and hashed in the background.
pub(crate) const INLINE_HASH_BYTES: u64 = 32 * 1024 * 1024;

/// The longest path segment of a directory key, in bytes (Linux's `NAME_MAX`).
const MAX_NAME_BYTES: usize = 255;

/// Refuses a directory key that no file of the namespace may have: a name reserved for
/// tiercache's own files (`.tiercache-*`: [`Error::Invalid`]), or a segment longer than 255
/// bytes ([`Error::NameTooLong`]; a key longer than 4096 bytes is refused as it is parsed).
pub(crate) fn check_key(path: &[u8]) -> Result<(), Error> {
    if let Some(name) = tiercache_sources::dir::reserved_segment(path) {
        return Err(Error::Invalid(format!(
            "key segment {:?} is reserved: names starting with {:?} are tiercache's own temp files",
            String::from_utf8_lossy(name),
            tiercache_sources::dir::TEMP_PREFIX
        )));
    }
    if let Some(long) = path.split(|b| *b == b'/').find(|s| s.len() > MAX_NAME_BYTES) {
        return Err(Error::NameTooLong {
            what: format!(
                "a path segment of a directory namespace's key is at most {MAX_NAME_BYTES} bytes; one is {}",
                long.len()
            ),
        });
    }
    Ok(())
}

/// `e`, from doing `what` to `path`: [`Error::NameTooLong`] if the file system found a name in it
/// too long (its limit may be below the one [`check_key`] applies), else a local failure.
fn local(e: std::io::Error, path: &RelPath, what: &str) -> Error {
    if e.kind() == std::io::ErrorKind::InvalidFilename {
        return Error::NameTooLong { what: format!("{what} {path}: a name in it is too long for the file system") };
    }
    Error::io(format!("{what} {path}"), e)
}

fn is_absent(kind: std::io::ErrorKind) -> bool {
    matches!(kind, std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory | std::io::ErrorKind::InvalidInput)
}

fn not_found(src: &DirSource, path: &RelPath) -> Error {
    Error::Source(SourceError::NotFound { url: format!("{}/{path}", src.url().trim_end_matches('/')) })
}

impl Directories {
    /// Reads `path` of directory namespace `ns` (see the module docs).
    pub(crate) async fn read(
        self: &Arc<Self>,
        ns: Arc<Namespace>,
        src: Arc<DirSource>,
        path: RelPath,
    ) -> Result<Read, Error> {
        let t0 = Instant::now();
        check_key(path.as_bytes())?;
        // Taken before the index is read: a row kept after a drop of lookups since is not kept.
        let epoch = self.memory.epoch();
        let (s, p) = (Arc::clone(&src), path.clone());
        let opened = tokio::task::spawn_blocking(move || match s.open(&p) {
            Err(e) if is_absent(e.kind()) || e.kind() == std::io::ErrorKind::PermissionDenied => Ok(Err(e.kind())),
            other => other.map(Ok),
        });
        let opened =
            opened.await.map_err(|e| Error::task("opening a file", e))?.map_err(|e| local(e, &path, "cannot open"))?;
        let (file, markers) = match opened {
            Ok(x) => x,
            Err(std::io::ErrorKind::PermissionDenied) => {
                return Err(Error::Source(SourceError::Forbidden { url: format!("{}/{path}", src.url()) }));
            }
            Err(_) => {
                // The directory is the truth: a file gone from it is gone from the read cache.
                let (id, p) = (ns.id, path.clone().into_bytes());
                self.ix.run(move |ix| ix.apply_files(id, &[], &[p], &[])).await?;
                self.memory.forget_entry(&ns.name, path.as_bytes()).await;
                return Err(not_found(&src, &path));
            }
        };
        let (id, p) = (ns.id, path.as_bytes().to_vec());
        let row = self.ix.run(move |ix| ix.get_file(id, &p)).await?;
        let fresh = row.filter(|r| r.markers == markers && r.sha256.is_some() && !is_racy(r));
        let current: Option<Current> = match fresh {
            Some(r) => Some(r),
            None if markers.size_bytes <= INLINE_HASH_BYTES => self.rehash(&ns, &src, &path, markers).await?,
            None => {
                let (dirs, ns2, src2, path2) = (Arc::clone(self), ns.clone(), Arc::clone(&src), path.clone());
                self.tasks.spawn(async move {
                    if let Err(e) = dirs.rehash(&ns2, &src2, &path2, markers).await {
                        tracing::warn!(path = %path2, error = %e, "cannot hash changed file");
                    }
                });
                None
            }
        };
        // Whatever was hashed must describe the bytes now open, or it is not used.
        let current = current.filter(|c| c.markers == markers);
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_nanos(markers.mtime_ns.max(0) as u64);
        let mut meta = ReadMeta {
            tier: Tier::Source,
            size_bytes: Some(markers.size_bytes),
            etag: current.as_ref().and_then(|c| c.md5).map(|m| format!("\"{}\"", hex::encode(m)).into()),
            content_type: Some(content_type(path.as_bytes()).into()),
            last_modified: Some(http_date(mtime).into()),
            digest: current.as_ref().and_then(|c| c.sha256),
            content_encoding: None,
            memo: None,
        };
        let mut body = Body::File { file: Arc::new(file), size_bytes: markers.size_bytes };
        if ns.options.copy_to_cache
            && let Some(c) = &current
            && let Some(digest) = c.sha256
        {
            match self.stores.open_blob(self.stores.managed(), &digest)? {
                Some((blob, m)) if m.len() == markers.size_bytes => {
                    meta.tier = Tier::Disk;
                    body = Body::File { file: Arc::new(blob), size_bytes: m.len() };
                }
                _ => self.spawn_copy(ns.id, Arc::clone(&src), path.clone(), digest),
            }
        }
        let outcome = if meta.tier == Tier::Disk { "hit" } else { "in_place" };
        metrics::counter!(telemetry::READS, "tier" => meta.tier.as_str(), "outcome" => outcome).increment(1);
        metrics::histogram!(telemetry::READ_SECONDS, "tier" => meta.tier.as_str()).record(t0.elapsed().as_secs_f64());
        tracing::debug!(tier = meta.tier.as_str(), outcome, namespace = %ns.name, %path, "read");
        // A row that describes the bytes served, with its hashes, is held for the next read
        // (copy-to-cache: once the copy is there to serve).
        if let Some(row) = current.filter(|c| c.md5.is_some() && !is_racy(c))
            && (meta.tier == Tier::Disk || !ns.options.copy_to_cache)
        {
            let held = ReadMeta { memo: Some(Memo::default()), ..meta.clone() }.with_shared_texts();
            self.memory.put_file(HotFile { ns, src, path, row, meta: held }, epoch).await;
        }
        Ok(Read { meta, body, hold: None })
    }

    /// A read of held file `hot` the short way (see the module docs), if its file is still the
    /// one its row describes; `None` sends the caller the long way ([`Directories::read`]).
    pub(crate) fn read_held(&self, hot: &HotFile, t0: Instant) -> Option<Read> {
        let (file, markers) = hot.src.open_held(&hot.path)?;
        if markers != hot.row.markers {
            return None;
        }
        let file = match hot.meta.tier {
            Tier::Disk => {
                let (blob, m) = self.stores.open_blob(self.stores.managed(), &hot.row.sha256?).ok()??;
                (m.len() == markers.size_bytes).then_some(blob)?
            }
            _ => file,
        };
        telemetry::served_held_file(hot.meta.tier, t0, || hot.path.to_string());
        let body = Body::File { file: Arc::new(file), size_bytes: markers.size_bytes };
        Some(Read { meta: hot.meta.clone(), body, hold: None })
    }

    /// Hashes `path` now (one pass shared by concurrent readers) and records it. `None` if the
    /// file kept changing while read (it is recorded without hashes).
    async fn rehash(
        &self,
        ns: &Namespace,
        src: &Arc<DirSource>,
        path: &RelPath,
        seen: tiercache_core::FileMarkers,
    ) -> Result<Option<Current>, Error> {
        let key = (ns.id, path.as_bytes().to_vec());
        self.hashing
            .run(key, || async {
                let (s, p) = (Arc::clone(src), path.clone());
                let hashed = tokio::task::spawn_blocking(move || {
                    let root = s.open_root().map_err(|e| HashFailure::Unreadable(format!("cannot read: {e}")))?;
                    hash_one(&s, &root, p.as_bytes(), seen)
                })
                .await
                .map_err(|e| Error::task("hashing a changed file", e))?;
                match hashed {
                    Ok(Some(row)) => {
                        let (id, r) = (ns.id, row.clone());
                        self.ix.run(move |ix| ix.apply_files(id, &[r], &[], &[])).await?;
                        Ok(Some(row))
                    }
                    Ok(None) => Err(not_found(src, path)),
                    Err(HashFailure::Unstable(_)) => Ok(None),
                    Err(HashFailure::Unreadable(why)) => {
                        Err(Error::io(format!("cannot hash {path}"), std::io::Error::other(why)))
                    }
                }
            })
            .await
    }

    /// Copies `path` into the disk tier as blob `digest` in the background (copy-to-cache), once
    /// per blob however many readers ask; the copy is published only if it hashes to `digest`.
    fn spawn_copy(self: &Arc<Self>, ns_id: i64, src: Arc<DirSource>, path: RelPath, digest: Digest) {
        let Some(claim) = self.copies.claim(digest) else { return };
        let dirs = Arc::clone(self);
        self.tasks.spawn(async move {
            let result = dirs.copy_into_disk(ns_id, &src, &path, digest).await;
            drop(claim);
            if let Err(e) = result {
                tracing::warn!(%path, %digest, error = %e, "cannot copy file into the disk tier");
            }
        });
    }

    async fn copy_into_disk(
        &self,
        ns_id: i64,
        src: &Arc<DirSource>,
        path: &RelPath,
        digest: Digest,
    ) -> Result<(), Error> {
        let (s, p) = (Arc::clone(src), path.clone());
        let (file, markers) = blocking(move || s.open(&p)).await?;
        let (temp, reservation) = self.stores.managed().create_temp(Some(markers.size_bytes)).await?;
        let stream = tiercache_sources::dir::file_stream(file, 0, markers.size_bytes, path.to_string());
        let finished = spool(temp, reservation, stream, |_| {}).await.map_err(|e| match e {
            SpoolError::Body(e) => Error::Source(e),
            SpoolError::Local(e) => e,
        })?;
        if finished.0.digest != digest {
            // The file changed since it was hashed; the next read re-hashes it.
            return Ok(());
        }
        self.stores.commit(self.stores.managed(), finished, false, None, Origin::Copy).await?;
        let p = path.as_bytes().to_vec();
        self.ix.run(move |ix| ix.mark_file_copied(ns_id, &p, &digest)).await?;
        Ok(())
    }

    /// Writes `path` of directory namespace `ns` from `body`: into the directory first,
    /// atomically (temp file, fsync, rename, fsync directory), then its row in the read cache.
    /// A path that is, or lies under, something that is not a file is an [`Error::Conflict`].
    pub(crate) async fn put<E: std::fmt::Display + Send + 'static>(
        &self,
        ns: &Namespace,
        src: Arc<DirSource>,
        path: RelPath,
        body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    ) -> Result<(Digest, u64, [u8; 16]), Error> {
        check_key(path.as_bytes())?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let (s, p) = (Arc::clone(&src), path.clone());
        let writer =
            tokio::task::spawn_blocking(move || s.write_file(&p, std::iter::from_fn(move || rx.blocking_recv())));
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| std::io::Error::other(format!("upload body failed: {e}")));
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Error::task("writing a file", e))?
            .map_err(|e| not_a_file(e, &path, "cannot write"))?;
        let row = FileRow {
            path: path.into_bytes(),
            markers: written.markers,
            md5: Some(written.md5),
            sha256: Some(written.sha256),
            hashed_at_ns: Some(written.hashed_at_ns),
            is_copied: false,
        };
        let id = ns.id;
        let forget = row.path.clone();
        self.ix.run(move |ix| ix.apply_files(id, &[row], &[], &[])).await?;
        self.memory.forget_entry(&ns.name, &forget).await;
        Ok((written.sha256, written.markers.size_bytes, written.md5))
    }

    /// Deletes `path` of directory namespace `ns`: the file first, then its row. Returns `false`
    /// if there was no such file.
    pub(crate) async fn delete(&self, ns: &Namespace, src: Arc<DirSource>, path: RelPath) -> Result<bool, Error> {
        check_key(path.as_bytes())?;
        let p = path.clone();
        let removed = tokio::task::spawn_blocking(move || src.remove(&p))
            .await
            .map_err(|e| Error::task("deleting a file", e))?
            .map_err(|e| not_a_file(e, &path, "cannot delete"))?;
        let (id, p) = (ns.id, path.into_bytes());
        let forget = p.clone();
        self.ix.run(move |ix| ix.apply_files(id, &[], &[p], &[])).await?;
        self.memory.forget_entry(&ns.name, &forget).await;
        Ok(removed)
    }
}

/// `e`, from doing `what` to `path`: a conflict if the path is (or lies under) something that is
/// not a file, as a client can fix it by naming another key; else a local failure.
fn not_a_file(e: std::io::Error, path: &RelPath, what: &str) -> Error {
    use std::io::ErrorKind::{DirectoryNotEmpty, IsADirectory, NotADirectory};
    match e.kind() {
        IsADirectory | NotADirectory | DirectoryNotEmpty => {
            Error::Conflict { what: format!("{what} {path}: {e}"), cause: Some(Arc::new(e)) }
        }
        _ => local(e, path, what),
    }
}
