//! Reading, writing and deleting the files of a directory namespace, and listing any namespace.
//!
//! A read opens the file beneath the root and compares its change markers with the read cache's
//! row. Unchanged: the file is served in place (or from the disk tier, for a copy-to-cache
//! namespace), with the indexed MD5 as its ETag: no rehash. Changed or never seen: it is hashed
//! first (up to [`INLINE_HASH_BYTES`]; a larger file is served without an ETag while it is hashed
//! in the background), so a file is never served with an ETag it no longer has.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tiercache_core::{Key, NamespaceName, RelPath};
use tiercache_index::{FileRow, ListPage, ListRequest, Namespace, NewEntry};
use tiercache_sources::dir::content_type;
use tiercache_sources::{DirSource, SourceError};

use super::Current;
use super::scan::{HashFailure, hash_one, is_racy};
use crate::body::{Body, Read, ReadMeta, Tier};
use crate::cache::Origin;
use crate::flight::{SpoolError, spool};
use crate::read_path::http_date;
use crate::{Cache, Error, telemetry};

/// A changed file up to this size is hashed before it is served (so the answer carries its new
/// ETag); a larger one is served without an ETag and hashed in the background.
pub(crate) const INLINE_HASH_BYTES: u64 = 32 * 1024 * 1024;

/// Largest page a listing returns.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// What a PUT stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The MD5 of the bytes (the entry's ETag), lowercase hex.
    pub md5: String,
    /// Their SHA-256.
    pub digest: tiercache_core::Digest,
    /// Their size.
    pub size_bytes: u64,
}

fn is_absent(kind: std::io::ErrorKind) -> bool {
    matches!(kind, std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory | std::io::ErrorKind::InvalidInput)
}

fn not_found(src: &DirSource, path: &RelPath) -> Error {
    Error::Source(SourceError::NotFound { url: format!("{}/{path}", src.url().trim_end_matches('/')) })
}

impl Cache {
    /// Reads `path` of directory namespace `ns` (see the module docs).
    pub(crate) async fn read_dir_entry(
        &self,
        ns: std::sync::Arc<Namespace>,
        src: Arc<DirSource>,
        path: RelPath,
    ) -> Result<Read, Error> {
        let t0 = Instant::now();
        let (s, p) = (Arc::clone(&src), path.clone());
        let opened = self.blocking(move |_| match s.open(&p) {
            Err(e) if is_absent(e.kind()) || e.kind() == std::io::ErrorKind::PermissionDenied => Ok(Err(e.kind())),
            other => other.map(Ok),
        });
        let (file, markers) = match opened.await? {
            Ok(x) => x,
            Err(std::io::ErrorKind::PermissionDenied) => {
                return Err(Error::Source(SourceError::Forbidden { url: format!("{}/{path}", src.url()) }));
            }
            Err(_) => {
                // The directory is the truth: a file gone from it is gone from the read cache.
                let (id, p) = (ns.id, path.clone().into_bytes());
                self.ix(move |ix| ix.apply_files(id, &[], &[p], &[])).await?;
                return Err(not_found(&src, &path));
            }
        };
        let (id, p) = (ns.id, path.as_bytes().to_vec());
        let row = self.ix(move |ix| ix.get_file(id, &p)).await?;
        let fresh = row.filter(|r| r.markers == markers && r.sha256.is_some() && !is_racy(r));
        let current: Option<Current> = match fresh {
            Some(r) => Some(r),
            None if markers.size_bytes <= INLINE_HASH_BYTES => self.rehash(&ns, &src, &path, markers).await?,
            None => {
                let (cache, ns2, src2, path2) = (self.clone(), ns.clone(), Arc::clone(&src), path.clone());
                tokio::spawn(async move {
                    if let Err(e) = cache.rehash(&ns2, &src2, &path2, markers).await {
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
            memo: None,
        };
        let mut body = Body::File { file: Arc::new(file), size_bytes: markers.size_bytes };
        if ns.options.copy_to_cache
            && let Some(c) = &current
            && let Some(digest) = c.sha256
        {
            match self.inner.disk.open_blob(&digest)? {
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
        Ok(Read { meta, body, hold: None })
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
        let cell = {
            let mut flights = self.inner.dir_flights.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(flights.entry(key.clone()).or_default())
        };
        let result = cell
            .get_or_try_init(|| async {
                let (s, p) = (Arc::clone(src), path.clone());
                let hashed = tokio::task::spawn_blocking(move || {
                    let root = s.open_root().map_err(|e| HashFailure::Unreadable(format!("cannot read: {e}")))?;
                    hash_one(&s, &root, p.as_bytes(), seen)
                })
                .await
                .map_err(|e| Error::Io(format!("hash task failed: {e}")))?;
                match hashed {
                    Ok(Some(row)) => {
                        let (id, r) = (ns.id, row.clone());
                        self.ix(move |ix| ix.apply_files(id, &[r], &[], &[])).await?;
                        Ok(Some(row))
                    }
                    Ok(None) => Err(not_found(src, path)),
                    Err(HashFailure::Unstable(_)) => Ok(None),
                    Err(HashFailure::Unreadable(why)) => Err(Error::Io(format!("{path}: {why}"))),
                }
            })
            .await
            .cloned();
        self.inner.dir_flights.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        result
    }

    /// Copies `path` into the disk tier as blob `digest` in the background (copy-to-cache), once
    /// per blob however many readers ask; the copy is published only if it hashes to `digest`.
    fn spawn_copy(&self, ns_id: i64, src: Arc<DirSource>, path: RelPath, digest: tiercache_core::Digest) {
        {
            let mut flights = self.inner.copies.lock().unwrap_or_else(|p| p.into_inner());
            if !flights.insert(digest) {
                return;
            }
        }
        let cache = self.clone();
        tokio::spawn(async move {
            let result = cache.copy_into_disk(ns_id, &src, &path, digest).await;
            cache.inner.copies.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
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
        digest: tiercache_core::Digest,
    ) -> Result<(), Error> {
        let (s, p) = (Arc::clone(src), path.clone());
        let (file, markers) = self.blocking(move |_| s.open(&p)).await?;
        let (temp, reservation) = self.create_temp(Some(markers.size_bytes)).await?;
        let stream = tiercache_sources::dir::file_stream(file, 0, markers.size_bytes, path.to_string());
        let finished = spool(temp, reservation, stream, |_| {}).await.map_err(|e| match e {
            SpoolError::Body(e) => Error::Source(e),
            SpoolError::Local(e) => e,
        })?;
        if finished.0.digest != digest {
            // The file changed since it was hashed; the next read re-hashes it.
            return Ok(());
        }
        self.store_finished(finished, false, None, Origin::Copy).await?;
        let p = path.as_bytes().to_vec();
        self.ix(move |ix| ix.mark_file_copied(ns_id, &p, &digest)).await?;
        Ok(())
    }

    /// Writes entry `key` of `namespace` from `body`. For a directory namespace the file is
    /// written into the directory atomically first, then recorded; for a namespace without a
    /// source the bytes become a blob and the entry names it. A namespace mirroring another source
    /// is read-only.
    pub async fn put_entry<E: std::fmt::Display + Send + 'static>(
        &self,
        namespace: &str,
        key: &[u8],
        body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    ) -> Result<Stored, Error> {
        let ns = self.namespace_row(namespace).await?;
        if let Some(src) = self.dir_source(&ns) {
            let path = RelPath::new(key.to_vec())?;
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
            let written = writer.await.map_err(|e| Error::Io(format!("write task failed: {e}")))?.map_err(|e| {
                if e.kind() == std::io::ErrorKind::IsADirectory || e.kind() == std::io::ErrorKind::NotADirectory {
                    Error::Conflict(e.to_string())
                } else {
                    Error::from(e)
                }
            })?;
            let row = FileRow {
                path: path.into_bytes(),
                markers: written.markers,
                md5: Some(written.md5),
                sha256: Some(written.sha256),
                hashed_at_ns: Some(written.hashed_at_ns),
                is_copied: false,
            };
            let id = ns.id;
            self.ix(move |ix| ix.apply_files(id, &[row], &[], &[])).await?;
            return Ok(Stored {
                md5: hex::encode(written.md5),
                digest: written.sha256,
                size_bytes: written.markers.size_bytes,
            });
        }
        if let Some(source) = &ns.source {
            return Err(Error::ReadOnly(format!(
                "namespace {} mirrors {source}; its entries cannot be written",
                ns.name
            )));
        }
        let key = Key::new(std::str::from_utf8(key).map_err(|_| Error::Invalid("key is not UTF-8".into()))?)?;
        let store = self.store_of(&ns).await?;
        let (temp, reservation) = self.create_temp_in(&store, None).await?;
        let finished = spool(temp, reservation, body, |_| {}).await.map_err(|e| match e {
            SpoolError::Body(e) => Error::Io(format!("upload body failed: {e}")),
            SpoolError::Local(e) => e,
        })?;
        let size_bytes = finished.0.size_bytes;
        let entry = NewEntry { ns_id: ns.id, key: key.to_string(), content_type: None, validators: Default::default() };
        let digest = self.store_finished_in(&store, finished, Some((&ns.name, entry)), Origin::Upload).await?;
        let md5 = self.md5_in(digest, &store.disk).await?;
        Ok(Stored { md5, digest, size_bytes })
    }

    /// Deletes entry `key` of `namespace`: for a directory namespace, the file first, then its
    /// row. Returns `false` if there was nothing to delete.
    pub async fn delete_entry(&self, namespace: &str, key: &[u8]) -> Result<bool, Error> {
        let ns = self.namespace_row(namespace).await?;
        if let Some(src) = self.dir_source(&ns) {
            let path = RelPath::new(key.to_vec())?;
            let p = path.clone();
            let removed = self.blocking(move |_| src.remove(&p)).await.map_err(|e| match e {
                Error::Io(m) if m.contains("directory") => Error::Conflict(m),
                e => e,
            })?;
            let (id, p) = (ns.id, path.into_bytes());
            self.ix(move |ix| ix.apply_files(id, &[], &[p], &[])).await?;
            return Ok(removed);
        }
        if let Some(source) = &ns.source {
            return Err(Error::ReadOnly(format!(
                "namespace {} mirrors {source}; its entries cannot be deleted",
                ns.name
            )));
        }
        let key = Key::new(std::str::from_utf8(key).map_err(|_| Error::Invalid("key is not UTF-8".into()))?)?;
        let (id, k) = (ns.id, key.clone());
        let deleted = self.ix(move |ix| ix.delete_entry(id, &k)).await?;
        self.inner.memory.forget_entry(&ns.name, key.as_str()).await;
        Ok(deleted)
    }

    /// One page of namespace `namespace`'s keys: its files for a directory namespace, its entries
    /// otherwise. Prefix matching is byte for byte (no wildcards, case-sensitive).
    pub async fn list(&self, namespace: &str, mut req: ListRequest) -> Result<ListPage, Error> {
        if req.limit == 0 || req.limit > MAX_LIST_LIMIT {
            return Err(Error::Invalid(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
        }
        let ns = self.namespace_row(namespace).await?;
        let id = ns.id;
        if ns.dir_root().is_some() {
            self.ix(move |ix| ix.list_files(id, &req)).await
        } else {
            req.delimiter = req.delimiter.filter(|d| !d.is_empty());
            self.ix(move |ix| ix.list_entries(id, &req)).await
        }
    }

    pub(crate) async fn namespace_row(&self, namespace: &str) -> Result<std::sync::Arc<Namespace>, Error> {
        if let Some(ns) = self.inner.memory.namespace(namespace).await {
            return Ok(ns);
        }
        let name = NamespaceName::new(namespace)?.as_str().to_owned();
        let epoch = self.inner.memory.epoch();
        let ns =
            self.ix(move |ix| ix.get_namespace(&name)).await?.ok_or_else(|| Error::NoNamespace(namespace.into()))?;
        let ns = std::sync::Arc::new(ns);
        self.inner.memory.put_namespace(std::sync::Arc::clone(&ns), epoch).await;
        Ok(ns)
    }
}
