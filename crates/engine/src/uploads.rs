//! Multipart uploads (layer 3): S3's CreateMultipartUpload, UploadPart, Complete, Abort,
//! ListParts and ListMultipartUploads, as storage. An upload is a row of the index and a
//! directory `<data>/uploads/<id>/`; each part is streamed into a temp file there as it arrives
//! (MD5 beside the write, disk quota reserved before each MiB), fsynced, renamed to
//! `<n>-<16 hex>` and only then recorded. Completing an upload checks the part list, assembles the
//! parts into one temp blob of the namespace's store by `copy_file_range` (in the kernel; extents
//! shared where the file system can), hashes it, and commits it by the put protocol, with the
//! entry, its multipart ETag and the upload's removal in one index transaction.
//!
//! It knows nothing of the S3 protocol (XML, signatures, the request's bucket and key): the front
//! door checks that an upload is the one its request names ([`UploadInfo`]). It does not prune
//! abandoned uploads by itself: the pruner (`jobs/pruner.rs`) calls [`Uploads::prune`] and
//! [`Uploads::sweep`].
//!
//! Invariant: a part row names a complete, fsynced file whose size and MD5 it records; a part file
//! is never rewritten (a part uploaded again is a new file, and the row is switched to it).
//! Invariant: everything that publishes a part, completes, aborts or sweeps an upload holds the
//! upload's lock (`<data>/locks/upload-<id>`, an `flock`, so across processes too): a complete
//! reads the parts it verified, and of two completes of one upload the second finds it gone.
//! Invariant: the disk quota counts every stored part's bytes as used (never evictable) from the
//! moment its row is written until its file is removed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::Digest as _;
use tiercache_core::{Digest, Key, RelPath, now_ms};
use tiercache_index::{NewEntry, PartRow, UploadRow};

use crate::blocking::{Ix, blocking, blocking_with};
use crate::directory::Directories;
use crate::namespaces::Namespaces;
use crate::quota::Reservation;
use crate::spool::RESERVE_STEP_BYTES;
use crate::store::Stores;
use crate::{Error, telemetry};

/// The smallest a part other than the last may be (S3's 5 MiB).
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// The largest a part may be (S3's 5 GiB).
pub const MAX_PART_BYTES: u64 = 5 << 30;
/// The highest part number (S3's 10 000).
pub const MAX_PART_NUMBER: u32 = 10_000;
/// The most uploads or parts one listing returns.
pub const MAX_UPLOAD_LIST: usize = 10_000;

/// A multipart upload's id: 128 random bits, as 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UploadId(String);

impl UploadId {
    /// A new random id.
    fn random() -> UploadId {
        UploadId(format!("{:032x}", rand::random::<u128>()))
    }

    /// Parses an id a client sent. Anything but 32 lowercase hex digits is
    /// [`Error::NoSuchUpload`]: no upload has such an id.
    pub fn parse(s: &str) -> Result<UploadId, Error> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(UploadId(s.to_owned()))
        } else {
            Err(Error::NoSuchUpload { upload_id: s.to_owned() })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an upload keeps until it completes: the entry's content type and attributes, and
/// whatever else the front door wants back at completion, named as it likes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadMeta {
    /// The content type the entry gets.
    pub content_type: Option<String>,
    /// The attributes the entry gets ([`crate::PutOptions::attrs`]), written with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attrs: Option<String>,
    /// Anything else, by name, handed back in [`CompletedUpload::meta`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// An upload under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    /// Its id.
    pub upload_id: UploadId,
    /// The namespace it writes into.
    pub namespace: String,
    /// The key it writes.
    pub key: String,
    /// What it keeps until it completes.
    pub meta: UploadMeta,
    /// When it was created, ms since the epoch.
    pub created_at_ms: i64,
}

/// A part stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// 1 to [`MAX_PART_NUMBER`].
    pub part_number: u32,
    /// The MD5 of its bytes, lowercase hex: its ETag (quoted in answers).
    pub md5: String,
    /// Its size.
    pub size_bytes: u64,
    /// When it was stored, ms since the epoch.
    pub last_modified_ms: i64,
}

/// One page of an upload's parts.
#[derive(Debug, Clone)]
pub struct PartsPage {
    /// The upload.
    pub upload: UploadInfo,
    /// Its parts numbered above the marker, in order.
    pub parts: Vec<PartInfo>,
    /// Whether more parts follow the last one here.
    pub is_truncated: bool,
}

/// One page of a namespace's uploads under way.
#[derive(Debug, Clone, Default)]
pub struct UploadsPage {
    /// In (key, upload id) order.
    pub uploads: Vec<UploadInfo>,
    /// Whether more follow the last one here.
    pub is_truncated: bool,
}

/// What completing an upload stored.
#[derive(Debug, Clone)]
pub struct CompletedUpload {
    /// The namespace written.
    pub namespace: String,
    /// The key written.
    pub key: String,
    /// The entry's ETag, unquoted: `hex(md5(part MD5s))-<number of parts>` (for a directory
    /// namespace, whose files are answered with their MD5: the file's MD5).
    pub etag: String,
    /// The SHA-256 of the object.
    pub digest: Digest,
    /// Its size.
    pub size_bytes: u64,
    /// What the upload kept.
    pub meta: UploadMeta,
}

/// The multipart uploads of one cache.
pub(crate) struct Uploads {
    pub(crate) ix: Ix,
    pub(crate) namespaces: Arc<Namespaces>,
    pub(crate) stores: Arc<Stores>,
    pub(crate) directories: Arc<Directories>,
    /// `<data>/uploads`.
    pub(crate) dir: PathBuf,
}

/// A file removed when dropped, unless kept.
struct Doomed(Option<PathBuf>);

impl Doomed {
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Doomed {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Uploads {
    /// The directory of upload `id`.
    fn upload_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Takes upload `id`'s lock (waiting for it), held until the returned file is dropped.
    async fn lock(&self, id: &str) -> Result<std::fs::File, Error> {
        let disk = self.stores.managed().disk.clone();
        let name = format!("upload-{id}");
        blocking(move || disk.lock(&name).map(|(f, _)| f)).await
    }

    /// The namespace of `row`, by id; [`Error::NoSuchUpload`] if it is gone.
    async fn namespace_of(&self, row: &UploadRow) -> Result<Arc<tiercache_index::Namespace>, Error> {
        let gone = || Error::NoSuchUpload { upload_id: row.id.clone() };
        let all = self.namespaces.list().await?;
        let name = all.into_iter().find(|n| n.id == row.ns_id).ok_or_else(gone)?.name;
        let ns = self.namespaces.row(&name).await?;
        if ns.id != row.ns_id {
            return Err(gone());
        }
        Ok(ns)
    }

    /// Upload `id`'s row; [`Error::NoSuchUpload`] if it is not under way.
    async fn row(&self, id: &UploadId) -> Result<UploadRow, Error> {
        let i = id.0.clone();
        self.ix.run(move |ix| ix.get_upload(&i)).await?.ok_or_else(|| Error::NoSuchUpload { upload_id: id.0.clone() })
    }

    async fn info_of(&self, row: UploadRow) -> Result<UploadInfo, Error> {
        let ns = self.namespace_of(&row).await?;
        Ok(info(row, ns.name.clone()))
    }

    /// Starts an upload of `key` into `namespace`: the namespace must take writes (not a mirror
    /// of a source: [`Error::ReadOnly`]) and the key must be one it can hold.
    ///
    /// 1. create `<data>/uploads/<id>/` and fsync `<data>/uploads/`;
    /// 2. record the upload's row.
    ///
    /// A crash between 1 and 2 leaves an empty directory no row names, which the sweep removes.
    pub(crate) async fn create(&self, namespace: &str, key: &str, meta: UploadMeta) -> Result<UploadId, Error> {
        let ns = self.namespaces.row(namespace).await?;
        if self.namespaces.dir_source(&ns)?.is_some() {
            RelPath::new(key.as_bytes().to_vec())?;
        } else if let Some(source) = &ns.source {
            return Err(Error::ReadOnly { namespace: ns.name.clone(), mirrors: source.clone() });
        } else {
            Key::new(key)?;
        }
        let id = UploadId::random();
        let _lock = self.lock(id.as_str()).await?;
        let (root, dir) = (self.dir.clone(), self.upload_dir(id.as_str()));
        blocking(move || {
            std::fs::create_dir_all(&root)?;
            std::fs::create_dir(&dir)?;
            std::fs::File::open(&root)?.sync_all()
        })
        .await?;
        let row = UploadRow {
            id: id.0.clone(),
            ns_id: ns.id,
            key: key.to_owned(),
            content_type: meta.content_type.clone(),
            meta: Some(serde_json::to_string(&meta).map_err(|e| Error::Invalid(format!("upload metadata: {e}")))?),
            created_at: now_ms(),
        };
        if !self.ix.run(move |ix| ix.put_upload(&row)).await? {
            let dir = self.upload_dir(id.as_str());
            let _ = blocking(move || std::fs::remove_dir_all(dir)).await;
            return Err(Error::NoNamespace(namespace.to_owned()));
        }
        Ok(id)
    }

    /// Upload `id`, if it is under way.
    pub(crate) async fn info(&self, id: &UploadId) -> Result<UploadInfo, Error> {
        let row = self.row(id).await?;
        self.info_of(row).await
    }

    /// Stores part `part_number` of upload `id` from `body`, replacing a part of that number.
    /// With `expected_md5` (a `Content-MD5`), a body with another MD5 is [`Error::BadDigest`].
    /// Nothing is stored unless the whole body arrived and checked out: the earlier part, if any,
    /// stays.
    ///
    /// 1. reserve disk quota (a MiB at a time, before writing it);
    /// 2. stream the body into `uploads/<id>/<pid>-<16 hex>.part`, MD5 beside the write; fsync;
    /// 3. under the upload's lock: rename it to `<n>-<16 hex>`, fsync the directory, record the
    ///    part's row (the reserved bytes become used), remove the file of the part it replaced.
    ///
    /// A crash in 1–2 leaves a temp file of a dead process; in 3, a part file no row names (the
    /// new one before its row, or the replaced one after): the sweep removes both.
    pub(crate) async fn put_part<E: std::fmt::Display + Send + 'static>(
        &self,
        id: &UploadId,
        part_number: u32,
        body: impl Stream<Item = Result<Bytes, E>> + Send,
        expected_md5: Option<[u8; 16]>,
    ) -> Result<PartInfo, Error> {
        if !(1..=MAX_PART_NUMBER).contains(&part_number) {
            return Err(Error::Invalid(format!("part number {part_number} is not between 1 and {MAX_PART_NUMBER}")));
        }
        self.row(id).await?;
        let quota = Arc::clone(&self.stores.managed().quota);
        let reservation = self.stores.managed().reserve(RESERVE_STEP_BYTES).await.map_err(|no| {
            quota.passed_through(&no.reason);
            Error::StorageFull { what: no.reason, cause: None }
        })?;
        let tag = format!("{:016x}", rand::random::<u64>());
        let dir = self.upload_dir(id.as_str());
        let temp = dir.join(format!("{}-{tag}.part", std::process::id()));
        let ((size_bytes, md5), reservation, temp) = self.spool_part(id, temp, reservation, body).await?;
        let md5_hex = hex::encode(md5);
        if let Some(expected) = expected_md5
            && expected != md5
        {
            let e = Error::BadDigest { expected: hex::encode(expected), actual: md5_hex };
            telemetry::error(&e);
            return Err(e);
        }

        // Step 3 runs whole on a blocking thread, so that a caller that goes away meanwhile
        // cannot leave a row without its file, or a file without its row.
        let now = now_ms();
        let file = format!("{part_number}-{tag}");
        let row = PartRow { part_number, size_bytes, md5: md5_hex.clone(), file: file.clone(), created_at: now };
        let (index, disk, upload_id) = (Arc::clone(self.ix.index()), self.stores.managed().disk.clone(), id.0.clone());
        blocking_with(move || {
            let gone = || Error::NoSuchUpload { upload_id: upload_id.clone() };
            let _lock = disk.lock(&format!("upload-{upload_id}")).map_err(|e| Error::io("cannot lock an upload", e))?;
            let (from, to) = (temp.0.clone().unwrap_or_default(), dir.join(&file));
            match std::fs::rename(&from, &to) {
                Ok(()) => temp.keep(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone()),
                Err(e) => return Err(Error::io("cannot store a part", e)),
            }
            let placed = Doomed(Some(to));
            std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("cannot store a part", e))?;
            let Some(replaced) = index.put_part(&upload_id, &row)? else { return Err(gone()) };
            placed.keep();
            reservation.kept(size_bytes);
            if let Some(old) = replaced {
                quota.released(old.size_bytes);
                if old.file != file {
                    let _ = std::fs::remove_file(dir.join(old.file));
                }
            }
            Ok(())
        })
        .await?;
        Ok(PartInfo { part_number, md5: md5_hex, size_bytes, last_modified_ms: now })
    }

    /// Steps 1 and 2 of [`Uploads::put_part`]: the part's size and MD5, its reservation, and the
    /// temp file (removed when dropped, and on any failure).
    async fn spool_part<E: std::fmt::Display + Send + 'static>(
        &self,
        id: &UploadId,
        temp: PathBuf,
        reservation: Reservation,
        body: impl Stream<Item = Result<Bytes, E>> + Send,
    ) -> Result<((u64, [u8; 16]), Reservation, Doomed), Error> {
        let (path, upload_id) = (temp.clone(), id.0.clone());
        let file = blocking_with(move || {
            std::fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::NoSuchUpload { upload_id }
                } else {
                    Error::io("cannot create a part's temp file", e)
                }
            })
        })
        .await?;
        // Removes the file however this ends but well, even if the caller goes away.
        let doomed = Doomed(Some(temp));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        let writer = tokio::task::spawn_blocking(move || -> Result<((u64, [u8; 16]), Reservation), Error> {
            use std::io::Write;
            let mut reservation = reservation;
            let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
            let mut md5 = md5::Md5::new();
            let mut written: u64 = 0;
            while let Some(chunk) = rx.blocking_recv() {
                let need = written.saturating_add(chunk.len() as u64);
                if need > MAX_PART_BYTES {
                    return Err(Error::TooLarge { declared_bytes: None, max_bytes: MAX_PART_BYTES });
                }
                if need > reservation.bytes() {
                    reservation
                        .grow_to(need.next_multiple_of(RESERVE_STEP_BYTES))
                        .map_err(|no| Error::StorageFull { what: no.reason, cause: None })?;
                }
                file.write_all(&chunk).map_err(|e| Error::io("cannot write a part", e))?;
                md5.update(&chunk);
                written = need;
            }
            let file = file.into_inner().map_err(|e| Error::io("cannot write a part", e.into_error()))?;
            file.sync_all().map_err(|e| Error::io("cannot write a part", e))?;
            Ok(((written, md5.finalize().into()), reservation))
        });
        let mut body = std::pin::pin!(body);
        let mut failed = None;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // The writer stopped; its reason is below.
                    }
                }
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| Error::task("writing a part", e))?;
        if let Some(why) = failed {
            let e = Error::UploadBody { why };
            telemetry::error(&e);
            return Err(e);
        }
        let (written, reservation) = written.inspect_err(telemetry::error)?;
        Ok((written, reservation, doomed))
    }

    /// Completes upload `id` with `parts` (part number, ETag as the client sent it, quoted or
    /// not), which must be in ascending order ([`Error::InvalidPartOrder`]), name parts stored
    /// with those ETags ([`Error::InvalidPart`]), and be at least [`MIN_PART_BYTES`] each but the
    /// last ([`Error::EntityTooSmall`]). Under the upload's lock throughout:
    ///
    /// 1. check the part list against the part rows;
    /// 2. reserve the object's bytes (in the disk tier, the parts' own: they are removed after);
    /// 3. append each part to a temp blob by `copy_file_range`, hash it, fsync (put protocol 1–2);
    /// 4. publish it by the put protocol (3–4) and, in one transaction (5), mark the blob present,
    ///    write the entry with its multipart ETag and delete the upload's rows;
    /// 5. remove the upload's directory.
    ///
    /// A crash before 4's transaction leaves the upload as it was (and maybe an orphan blob or a
    /// temp file); after it, a directory no row names: the sweep removes it. A directory
    /// namespace's file is written in place from the parts, then the rows are deleted.
    ///
    /// With `is_create_only`, the entry is written only if the key has none (checked in 4's
    /// transaction; for a directory namespace, before its file is written): [`Error::Exists`]
    /// otherwise, the upload being removed all the same.
    pub(crate) async fn complete(
        &self,
        id: &UploadId,
        parts: &[(u32, String)],
        is_create_only: bool,
    ) -> Result<CompletedUpload, Error> {
        let _lock = self.lock(id.as_str()).await?;
        let row = self.row(id).await?;
        let ns = self.namespace_of(&row).await?;
        let dir_source = self.namespaces.dir_source(&ns)?;
        if dir_source.is_none()
            && let Some(source) = &ns.source
        {
            return Err(Error::ReadOnly { namespace: ns.name.clone(), mirrors: source.clone() });
        }
        let i = id.0.clone();
        let stored = self.ix.run(move |ix| ix.upload_parts(&i, 0, MAX_PART_NUMBER as usize)).await?;
        let chosen = check_parts(parts, &stored)?;
        let total: u64 = chosen.iter().map(|p| p.size_bytes).sum();
        let all_bytes: u64 = stored.iter().map(|p| p.size_bytes).sum();
        if total > self.stores.max_object_bytes {
            return Err(Error::TooLarge { declared_bytes: Some(total), max_bytes: self.stores.max_object_bytes });
        }
        let etag = multipart_etag(&chosen);
        let meta: UploadMeta = row.meta.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default();
        let files: Vec<(PathBuf, u64)> =
            chosen.iter().map(|p| (self.upload_dir(id.as_str()).join(&p.file), p.size_bytes)).collect();
        let managed_quota = Arc::clone(&self.stores.managed().quota);

        if let Some(src) = dir_source {
            let path = RelPath::new(row.key.as_bytes().to_vec())?;
            if is_create_only && let Some(root) = ns.dir_root() {
                use std::os::unix::ffi::OsStrExt;
                let file = Path::new(root).join(std::ffi::OsStr::from_bytes(path.as_bytes()));
                if tokio::fs::symlink_metadata(file).await.is_ok() {
                    return Err(Error::Exists { namespace: ns.name.clone(), key: row.key });
                }
            }
            let (digest, size_bytes, md5) = self.directories.put(&ns, src, path, read_parts(files)).await?;
            let i = id.0.clone();
            if self.ix.run(move |ix| ix.delete_upload(&i)).await?.is_some() {
                managed_quota.released(all_bytes);
            }
            self.remove_dir(id).await;
            let etag = hex::encode(md5);
            return Ok(CompletedUpload { namespace: ns.name.clone(), key: row.key, etag, digest, size_bytes, meta });
        }

        let store = self.stores.of(&ns).await?;
        let reservation = if store.is_managed() {
            let q = Arc::clone(&store.quota);
            blocking_with(move || q.adopt(total).map_err(|no| Error::StorageFull { what: no.reason, cause: None }))
                .await?
        } else {
            store.reserve(total).await.map_err(|no| Error::StorageFull { what: no.reason, cause: None })?
        };
        let mut temp = store.disk.create_temp().map_err(|e| Error::io("cannot create a temp file", e))?;
        let finished = blocking_with(move || {
            for (path, size) in &files {
                let f = std::fs::File::open(path).map_err(|e| Error::io("cannot open a part", e))?;
                temp.append_file(&f, *size).map_err(|e| Error::io("cannot assemble the parts", e))?;
            }
            temp.finish().map_err(|e| Error::io("cannot write the assembled object", e))
        })
        .await?;
        let entry = NewEntry {
            ns_id: ns.id,
            key: row.key.clone(),
            content_type: meta.content_type.clone(),
            attrs: meta.attrs.clone(),
            part_sizes: Some(chosen.iter().map(|p| p.size_bytes).collect()),
            is_create_only,
            ..NewEntry::default()
        };
        let size_bytes = finished.size_bytes;
        let (digest, recorded) = self
            .stores
            .commit_upload(&store, (finished, reservation), (&ns.name, entry), etag.clone(), id.0.clone())
            .await?;
        if !recorded {
            // Under the upload's lock, its row was there when this began: only a refused
            // create-only entry, or its namespace deleted meanwhile, leaves it unrecorded.
            let i = id.0.clone();
            let is_gone = self.ix.run(move |ix| ix.get_upload(&i)).await?.is_none();
            if !(is_create_only && is_gone && self.namespaces.row(&ns.name).await.is_ok_and(|n| n.id == ns.id)) {
                return Err(Error::NoSuchUpload { upload_id: id.0.clone() });
            }
            managed_quota.released(if store.is_managed() { all_bytes - total } else { all_bytes });
            self.remove_dir(id).await;
            let e = Error::Exists { namespace: ns.name.clone(), key: row.key };
            telemetry::error(&e);
            return Err(e);
        }
        // The listed parts' bytes became the blob's (adopted); the others go with the directory.
        managed_quota.released(if store.is_managed() { all_bytes - total } else { all_bytes });
        self.remove_dir(id).await;
        Ok(CompletedUpload { namespace: ns.name.clone(), key: row.key, etag, digest, size_bytes, meta })
    }

    /// [`Uploads::complete`] on a task of its own, so that a caller that goes away (a client
    /// disconnecting) does not stop it between its steps.
    pub(crate) async fn complete_detached(
        self: &Arc<Self>,
        id: &UploadId,
        parts: &[(u32, String)],
        is_create_only: bool,
    ) -> Result<CompletedUpload, Error> {
        let (me, id, parts) = (Arc::clone(self), id.clone(), parts.to_vec());
        tokio::spawn(async move { me.complete(&id, &parts, is_create_only).await })
            .await
            .map_err(|e| Error::task("completing an upload", e))?
    }

    /// [`Uploads::abort`] on a task of its own (see [`Uploads::complete_detached`]).
    pub(crate) async fn abort_detached(self: &Arc<Self>, id: &UploadId) -> Result<(), Error> {
        let (me, id) = (Arc::clone(self), id.clone());
        tokio::spawn(async move { me.abort(&id).await }).await.map_err(|e| Error::task("aborting an upload", e))?
    }

    /// Removes upload `id`'s directory (its rows are gone).
    async fn remove_dir(&self, id: &UploadId) {
        let dir = self.upload_dir(id.as_str());
        if let Err(e) = blocking(move || std::fs::remove_dir_all(dir)).await {
            tracing::warn!(error = %e, upload = %id, "cannot remove an upload's directory; the pruner will");
        }
    }

    /// Aborts upload `id`: its rows, then its parts' files. [`Error::NoSuchUpload`] if it is not
    /// under way.
    pub(crate) async fn abort(&self, id: &UploadId) -> Result<(), Error> {
        let _lock = self.lock(id.as_str()).await?;
        let i = id.0.clone();
        let parts = self.ix.run(move |ix| ix.delete_upload(&i)).await?;
        let parts = parts.ok_or_else(|| Error::NoSuchUpload { upload_id: id.0.clone() })?;
        self.stores.managed().quota.released(parts.iter().map(|p| p.size_bytes).sum());
        self.remove_dir(id).await;
        Ok(())
    }

    /// Upload `id`'s parts numbered above `after`, at most `limit` (1 to [`MAX_UPLOAD_LIST`]).
    pub(crate) async fn list_parts(&self, id: &UploadId, after: u32, limit: usize) -> Result<PartsPage, Error> {
        check_limit(limit)?;
        let upload = self.info(id).await?;
        let i = id.0.clone();
        let mut rows = self.ix.run(move |ix| ix.upload_parts(&i, after, limit + 1)).await?;
        let is_truncated = rows.len() > limit;
        rows.truncate(limit);
        let parts = rows
            .into_iter()
            .map(|p| PartInfo {
                part_number: p.part_number,
                md5: p.md5,
                size_bytes: p.size_bytes,
                last_modified_ms: p.created_at,
            })
            .collect();
        Ok(PartsPage { upload, parts, is_truncated })
    }

    /// Uploads under way in `namespace` whose key starts with `prefix`, after `after` (a key and
    /// upload id, in that order), at most `limit` (1 to [`MAX_UPLOAD_LIST`]).
    pub(crate) async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<(&str, &UploadId)>,
        limit: usize,
    ) -> Result<UploadsPage, Error> {
        check_limit(limit)?;
        let ns = self.namespaces.row(namespace).await?;
        let (id, prefix) = (ns.id, prefix.to_owned());
        let after = after.map(|(k, u)| (k.to_owned(), u.0.clone()));
        let mut rows = self
            .ix
            .run(move |ix| {
                ix.list_uploads(id, &prefix, after.as_ref().map(|(k, u)| (k.as_str(), u.as_str())), limit + 1)
            })
            .await?;
        let is_truncated = rows.len() > limit;
        rows.truncate(limit);
        let uploads = rows.into_iter().map(|r| info(r, ns.name.clone())).collect();
        Ok(UploadsPage { uploads, is_truncated })
    }

    /// Makes upload `id` look `age` older than it is (tests of the pruner).
    pub(crate) async fn backdate(&self, id: &UploadId, age: std::time::Duration) -> Result<(), Error> {
        let row = self.row(id).await?;
        let at = tiercache_core::units::cutoff_ms(row.created_at, age);
        self.ix.run(move |ix| ix.set_upload_created_at(&row.id, at)).await?;
        Ok(())
    }

    /// Aborts (unless `dry_run`) the uploads created longer than `max_age` ago; returns them with
    /// the bytes of their parts.
    pub(crate) async fn prune(
        &self,
        max_age: std::time::Duration,
        dry_run: bool,
    ) -> Result<Vec<(UploadInfo, u64)>, Error> {
        let cutoff = tiercache_core::units::cutoff_ms(now_ms(), max_age);
        let old = self.ix.run(move |ix| ix.uploads_created_before(cutoff)).await?;
        let names: std::collections::HashMap<i64, String> =
            self.namespaces.list().await?.into_iter().map(|n| (n.id, n.name)).collect();
        let mut out = Vec::new();
        for row in old {
            let id = UploadId(row.id.clone());
            let i = row.id.clone();
            let bytes: u64 =
                self.ix.run(move |ix| ix.upload_parts(&i, 0, usize::MAX)).await?.iter().map(|p| p.size_bytes).sum();
            let name = names.get(&row.ns_id).cloned().unwrap_or_default();
            if !dry_run {
                match self.abort(&id).await {
                    Ok(()) => {}
                    Err(Error::NoSuchUpload { .. }) => continue, // Completed or aborted meanwhile.
                    Err(e) => return Err(e),
                }
            }
            out.push((info(row, name), bytes));
        }
        Ok(out)
    }

    /// Removes (unless `dry_run`) what no upload needs under `<data>/uploads/`: directories of
    /// uploads no row names, temp files of dead processes or not written for `temp_grace`, and
    /// part files no row names. Returns the paths removed with their sizes.
    pub(crate) async fn sweep(
        &self,
        temp_grace: std::time::Duration,
        dry_run: bool,
    ) -> Result<Vec<(PathBuf, u64)>, Error> {
        let root = self.dir.clone();
        let dirs: Vec<String> = blocking(move || match std::fs::read_dir(&root) {
            Ok(rd) => Ok(rd.flatten().filter_map(|d| d.file_name().to_str().map(str::to_owned)).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        })
        .await?;
        let mut removed = Vec::new();
        for name in dirs {
            let path = self.dir.join(&name);
            let Ok(id) = UploadId::parse(&name) else {
                tracing::warn!(path = %path.display(), "not an upload's directory; left alone");
                continue;
            };
            let _lock = self.lock(id.as_str()).await?;
            let i = id.0.clone();
            let row = self.ix.run(move |ix| ix.get_upload(&i)).await?;
            let named: HashSet<String> = match row {
                Some(_) => {
                    let i = id.0.clone();
                    self.ix
                        .run(move |ix| ix.upload_parts(&i, 0, usize::MAX))
                        .await?
                        .into_iter()
                        .map(|p| p.file)
                        .collect()
                }
                None => HashSet::new(),
            };
            let is_live = row.is_some();
            let found = blocking(move || sweep_dir(&path, is_live, &named, temp_grace, dry_run)).await?;
            removed.extend(found);
        }
        Ok(removed)
    }
}

/// Sweeps one upload directory (see [`Uploads::sweep`]). Blocking.
fn sweep_dir(
    dir: &Path,
    is_live: bool,
    named: &HashSet<String>,
    temp_grace: std::time::Duration,
    dry_run: bool,
) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut removed = Vec::new();
    for f in std::fs::read_dir(dir)?.flatten() {
        let path = f.path();
        let name = f.file_name().to_string_lossy().into_owned();
        let Ok(meta) = f.metadata() else { continue };
        let doomed = if !is_live {
            true
        } else if let Some(stem) = name.strip_suffix(".part") {
            let pid = stem.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let is_dead = pid.is_some_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists());
            let is_idle = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age >= temp_grace);
            is_dead || is_idle
        } else {
            !named.contains(&name)
        };
        if doomed {
            if !dry_run {
                let _ = std::fs::remove_file(&path);
            }
            removed.push((path, meta.len()));
        }
    }
    if !is_live && !dry_run {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(removed)
}

fn info(row: UploadRow, namespace: String) -> UploadInfo {
    let meta = row
        .meta
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_else(|| UploadMeta { content_type: row.content_type.clone(), ..UploadMeta::default() });
    UploadInfo { upload_id: UploadId(row.id), namespace, key: row.key, meta, created_at_ms: row.created_at }
}

fn check_limit(limit: usize) -> Result<(), Error> {
    if limit == 0 || limit > MAX_UPLOAD_LIST {
        return Err(Error::Invalid(format!("limit must be between 1 and {MAX_UPLOAD_LIST}")));
    }
    Ok(())
}

/// The stored parts `parts` names, in its order, after checking it (see [`Uploads::complete`]).
fn check_parts(parts: &[(u32, String)], stored: &[PartRow]) -> Result<Vec<PartRow>, Error> {
    if parts.is_empty() {
        return Err(Error::Invalid("a multipart upload is completed with at least one part".into()));
    }
    // The order first, then each part: a list out of order is that, whatever else is wrong.
    for pair in parts.windows(2) {
        if pair[1].0 <= pair[0].0 {
            return Err(Error::InvalidPartOrder { part_number: pair[1].0, after: pair[0].0 });
        }
    }
    let mut chosen: Vec<PartRow> = Vec::with_capacity(parts.len());
    for (i, (n, etag)) in parts.iter().enumerate() {
        let Some(p) = stored.iter().find(|p| p.part_number == *n) else {
            return Err(Error::InvalidPart { part_number: *n, why: "was not uploaded".into() });
        };
        let given = etag.trim().trim_start_matches("W/").trim_matches('"').to_ascii_lowercase();
        if given != p.md5 {
            return Err(Error::InvalidPart { part_number: *n, why: format!("has ETag \"{}\", not {etag:?}", p.md5) });
        }
        if i + 1 < parts.len() && p.size_bytes < MIN_PART_BYTES {
            return Err(Error::EntityTooSmall { part_number: *n, size_bytes: p.size_bytes, min_bytes: MIN_PART_BYTES });
        }
        chosen.push(p.clone());
    }
    Ok(chosen)
}

/// `hex(md5(concat(part MD5s)))-N`, S3's ETag of a multipart object.
fn multipart_etag(parts: &[PartRow]) -> String {
    let mut h = md5::Md5::new();
    for p in parts {
        let mut raw = [0u8; 16];
        // The rows hold what put_part wrote: 32 hex digits.
        if hex::decode_to_slice(&p.md5, &mut raw).is_ok() {
            h.update(raw);
        }
    }
    format!("{}-{}", hex::encode(h.finalize()), parts.len())
}

/// The parts' files read in order, a MiB at a time, as a body (for a directory namespace, whose
/// file is written through user space).
fn read_parts(files: Vec<(PathBuf, u64)>) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        for (path, size) in files {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f.take(size),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

#[cfg(test)]
mod tests {
    use md5::Digest as _;

    use super::*;

    fn part(n: u32, size: u64, md5: &str) -> PartRow {
        PartRow { part_number: n, size_bytes: size, md5: md5.into(), file: String::new(), created_at: 0 }
    }

    #[test]
    fn the_multipart_etag_is_the_md5_of_the_part_md5s_and_their_count() {
        let a = hex::encode(md5::Md5::digest(b"a"));
        let b = hex::encode(md5::Md5::digest(b"b"));
        let mut raw = hex::decode(&a).unwrap();
        raw.extend(hex::decode(&b).unwrap());
        let expect = format!("{}-2", hex::encode(md5::Md5::digest(&raw)));
        assert_eq!(multipart_etag(&[part(1, 1, &a), part(2, 1, &b)]), expect);
    }

    #[test]
    fn a_part_list_is_checked_for_order_presence_etags_and_sizes() {
        let big = MIN_PART_BYTES;
        let stored = [part(1, big, "aa"), part(2, 1, "bb"), part(3, 1, "cc")];
        let check = |list: &[(u32, &str)]| {
            let list: Vec<(u32, String)> = list.iter().map(|(n, e)| (*n, e.to_string())).collect();
            check_parts(&list, &stored).map(|v| v.len())
        };
        assert_eq!(check(&[(1, "\"AA\""), (2, "bb")]).unwrap(), 2);
        assert!(matches!(check(&[(2, "bb"), (1, "aa")]), Err(Error::InvalidPartOrder { part_number: 1, after: 2 })));
        assert!(matches!(check(&[(1, "aa"), (1, "aa")]), Err(Error::InvalidPartOrder { .. })));
        assert!(matches!(check(&[(1, "aa"), (4, "dd")]), Err(Error::InvalidPart { part_number: 4, .. })));
        assert!(matches!(check(&[(1, "ab")]), Err(Error::InvalidPart { part_number: 1, .. })));
        assert!(matches!(check(&[(1, "aa"), (2, "bb"), (3, "cc")]), Err(Error::EntityTooSmall { part_number: 2, .. })));
        assert!(matches!(check(&[]), Err(Error::Invalid(_))));
        assert!(UploadId::parse("0123456789abcdef0123456789abcdef").is_ok());
        assert!(matches!(UploadId::parse("../x"), Err(Error::NoSuchUpload { .. })));
    }
}
