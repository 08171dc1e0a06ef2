//! The write path (layer 3): uploads of blobs by digest, and writes, deletes and listings of
//! entries in any namespace. A directory namespace's files are written in place
//! (`directory/serve.rs`); every other write lands in a store before the index names it.
//!
//! Invariant: a write reaches a durable place first (the directory, or a published blob file),
//! then the index; never the reverse. A namespace mirroring a source is read-only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tiercache_core::{Digest, Key, RelPath};
use tiercache_index::{ListPage, ListRequest, ListedItem, NewEntry};
use tiercache_sources::{ListQuery, Source};

use crate::blocking::Ix;
use crate::directory::Directories;
use crate::memory::Memory;
use crate::namespaces::Namespaces;
use crate::spool::{SpoolError, spool};
use crate::store::{Origin, Stores};
use crate::{Error, telemetry};

/// An upload of at most this many bytes is held in memory and stored in one step
/// ([`Stores::commit_small`]) rather than streamed.
const SMALL_BODY_BYTES: u64 = 64 * 1024;

/// Largest page a listing returns.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// What a PUT stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The MD5 of the bytes (the entry's ETag), lowercase hex.
    pub md5: String,
    /// Their SHA-256.
    pub digest: Digest,
    /// Their size.
    pub size_bytes: u64,
}

/// How an entry is written, besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Recorded with the entry and served back with it (a directory namespace's file keeps none:
    /// its type is guessed from its name).
    pub content_type: Option<String>,
    /// The attributes a front door stores with the entry (opaque text), written in the
    /// transaction that writes the entry: a reader never sees the entry without them. A
    /// directory namespace's file keeps none.
    pub attrs: Option<String>,
    /// Written only if the key has no entry (S3's `If-None-Match: *`), checked in the index
    /// transaction that writes it, so that of writers racing for one key exactly one succeeds;
    /// [`Error::Exists`] for the others (their bytes become an orphan blob, for the pruner). A
    /// directory namespace's file is checked before it is written: not atomic against another
    /// writer of the directory.
    pub is_create_only: bool,
}

/// The write path of one cache.
pub(crate) struct Writes {
    pub(crate) ix: Ix,
    pub(crate) memory: Memory,
    pub(crate) namespaces: Arc<Namespaces>,
    pub(crate) stores: Arc<Stores>,
    pub(crate) directories: Arc<Directories>,
}

impl Writes {
    /// [`Error::TooLarge`] if an upload declaring `declared_bytes` is larger than the maximum
    /// object size: a front door that knows the length asks before it reads the body.
    pub(crate) fn check_object_size(&self, declared_bytes: u64) -> Result<(), Error> {
        let max_bytes = self.stores.max_object_bytes;
        if declared_bytes > max_bytes {
            return Err(Error::TooLarge { declared_bytes: Some(declared_bytes), max_bytes });
        }
        Ok(())
    }

    /// Stores an uploaded blob: streams `body` to a temp file while hashing, and publishes it only
    /// if it hashes to `expected`. Uploaded blobs are retained even when no entry references them.
    /// A body larger than the maximum object size is cut there ([`Error::TooLarge`]).
    ///
    /// Returns `true` if the blob is new, `false` if it was already held.
    pub(crate) async fn put_blob<E: std::fmt::Display + Send + 'static>(
        &self,
        expected: &Digest,
        body: impl Stream<Item = Result<Bytes, E>> + Send,
    ) -> Result<bool, Error> {
        let store = self.stores.managed();
        let existed = store.disk.contains(expected);
        let (body, limit) = capped(body, self.stores.max_object_bytes);
        let (temp, reservation) = store.create_temp(None).await?;
        let finished = spool(temp, reservation, body, |_| {}).await.map_err(upload_failed).map_err(|e| limit.or(e))?;
        if finished.0.digest != *expected {
            let e = Error::DigestMismatch { expected: *expected, actual: finished.0.digest };
            telemetry::error(&e);
            return Err(e);
        }
        self.stores.commit(store, finished, true, None, Origin::Upload).await?;
        Ok(!existed)
    }

    /// Writes entry `key` of `namespace` from `body`, as `opts` say. For a directory namespace
    /// the file is written into the directory atomically first, then recorded; for a namespace
    /// without a source the bytes become a blob and the entry names it. A namespace mirroring
    /// another source is read-only ([`Error::ReadOnly`]). A body larger than the maximum object
    /// size is cut there ([`Error::TooLarge`]), and nothing is written.
    pub(crate) async fn put_entry<E: std::fmt::Display + Send + 'static>(
        &self,
        namespace: &str,
        key: &[u8],
        body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
        opts: PutOptions,
    ) -> Result<Stored, Error> {
        let (body, limit) = capped(body, self.stores.max_object_bytes);
        self.put_capped_entry(namespace, key, body, opts).await.map_err(|e| limit.or(e))
    }

    async fn put_capped_entry<E: std::fmt::Display + Send + 'static>(
        &self,
        namespace: &str,
        key: &[u8],
        body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
        opts: PutOptions,
    ) -> Result<Stored, Error> {
        let PutOptions { content_type, attrs, is_create_only } = opts;
        let ns = self.namespaces.row(namespace).await?;
        if let Some(src) = self.namespaces.dir_source(&ns)? {
            let path = RelPath::new(key.to_vec())?;
            if is_create_only && let Some(root) = ns.dir_root() {
                use std::os::unix::ffi::OsStrExt;
                let file = std::path::Path::new(root).join(std::ffi::OsStr::from_bytes(path.as_bytes()));
                if tokio::fs::symlink_metadata(file).await.is_ok() {
                    return Err(exists(&ns.name, key));
                }
            }
            let (digest, size_bytes, md5) = self.directories.put(&ns, src, path, body).await?;
            return Ok(Stored { md5: hex::encode(md5), digest, size_bytes });
        }
        if let Some(source) = &ns.source {
            return Err(Error::ReadOnly { namespace: ns.name.clone(), mirrors: source.clone() });
        }
        let key = utf8_key(key)?;
        let store = self.stores.of(&ns).await?;
        let entry =
            NewEntry { ns_id: ns.id, key: key.to_string(), content_type, attrs, is_create_only, ..NewEntry::default() };
        let named = (ns.name.as_str(), entry);
        // A small body is gathered in memory and stored in one trip to a blocking thread; a larger
        // one streams through a temp file, its MD5 (the entry's ETag) computed beside the write.
        let mut body = Box::pin(body);
        let (head, is_whole) = gather(&mut body, SMALL_BODY_BYTES).await.map_err(upload_failed)?;
        let (digest, is_written, size_bytes, md5) = if is_whole {
            let size_bytes = head.iter().map(|c| c.len() as u64).sum();
            let (digest, is_written, md5) = self.stores.commit_small(&store, head, named).await?;
            (digest, is_written, size_bytes, Some(md5))
        } else {
            let (temp, reservation) = store.create_temp(None).await?;
            let body = futures::stream::iter(head.into_iter().map(Ok)).chain(body);
            let finished = spool(temp.with_md5(), reservation, body, |_| {}).await.map_err(upload_failed)?;
            let (size_bytes, md5) = (finished.0.size_bytes, finished.0.md5);
            let (digest, is_written) =
                self.stores.commit_with_md5(&store, finished, false, Some(named), Origin::Upload, None).await?;
            (digest, is_written, size_bytes, md5)
        };
        if !is_written {
            let e = exists(&ns.name, key.as_str().as_bytes());
            telemetry::error(&e);
            return Err(e);
        }
        let md5 = match md5 {
            Some(md5) => hex::encode(md5),
            None => self.stores.md5(digest, &store.disk).await?,
        };
        Ok(Stored { md5, digest, size_bytes })
    }

    /// Makes entry `dst_key` of `dst_namespace` name the blob entry `src_key` of `src_namespace`
    /// names, without copying a byte, when both namespaces keep their blobs in the disk tier
    /// (no source, no directory, no storage directory of their own) and the blob is there: one
    /// index transaction. `None` otherwise, with nothing changed: the caller copies the bytes
    /// (a read, then [`Writes::put_entry`]).
    pub(crate) async fn copy_entry(
        &self,
        (src_namespace, src_key): (&str, &[u8]),
        (dst_namespace, dst_key): (&str, &[u8]),
    ) -> Result<Option<Stored>, Error> {
        let src = self.namespaces.row(src_namespace).await?;
        let dst = self.namespaces.row(dst_namespace).await?;
        let kept_in_disk_tier = |ns: &tiercache_index::Namespace| {
            ns.source.is_none() && ns.dir_root().is_none() && ns.options.storage.is_none()
        };
        if !kept_in_disk_tier(&src) || !kept_in_disk_tier(&dst) {
            return Ok(None);
        }
        let (src_key, dst_key) = (utf8_key(src_key)?, utf8_key(dst_key)?);
        let entry = NewEntry { ns_id: dst.id, key: dst_key.to_string(), ..NewEntry::default() };
        let src_id = src.id;
        let now = tiercache_core::now_ms();
        let copied = self.ix.run(move |ix| ix.copy_entry(src_id, src_key.as_str(), &entry, now)).await?;
        let Some((digest, size_bytes)) = copied else { return Ok(None) };
        self.memory.forget_entry(&dst.name, dst_key.as_str().as_bytes()).await;
        let md5 = self.stores.md5(digest, &self.stores.managed().disk).await?;
        Ok(Some(Stored { md5, digest, size_bytes }))
    }

    /// Sets the attributes a front door stores with entry `key` of `namespace` (opaque text: the
    /// S3 API's JSON; `None` clears them). `false` if there is no such entry, or the namespace is
    /// a directory (its files keep none) or mirrors a source.
    pub(crate) async fn set_attrs(&self, namespace: &str, key: &[u8], attrs: Option<String>) -> Result<bool, Error> {
        let Some((id, key)) = self.own_entry(namespace, key).await? else { return Ok(false) };
        self.ix.run(move |ix| ix.set_entry_attrs(id, key.as_str(), attrs.as_deref())).await
    }

    /// The attributes stored with entry `key` of `namespace` ([`Writes::set_attrs`]), if any.
    pub(crate) async fn attrs(&self, namespace: &str, key: &[u8]) -> Result<Option<String>, Error> {
        let Some((id, key)) = self.own_entry(namespace, key).await? else { return Ok(None) };
        self.ix.run(move |ix| ix.entry_attrs(id, key.as_str())).await
    }

    /// The part sizes of entry `key` of `namespace` ([`tiercache_index::Index::entry_part_sizes`]).
    pub(crate) async fn part_sizes(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u64>>, Error> {
        let Some((id, key)) = self.own_entry(namespace, key).await? else { return Ok(None) };
        self.ix.run(move |ix| ix.entry_part_sizes(id, key.as_str())).await
    }

    /// The namespace id and key of an entry that can hold attributes: `None` for a directory's
    /// file or a source's entry.
    async fn own_entry(&self, namespace: &str, key: &[u8]) -> Result<Option<(i64, Key)>, Error> {
        let ns = self.namespaces.row(namespace).await?;
        if ns.source.is_some() || ns.dir_root().is_some() {
            return Ok(None);
        }
        Ok(Some((ns.id, utf8_key(key)?)))
    }

    /// Deletes entry `key` of `namespace`: for a directory namespace, the file first, then its
    /// row. Returns `false` if there was nothing to delete.
    pub(crate) async fn delete_entry(&self, namespace: &str, key: &[u8]) -> Result<bool, Error> {
        let ns = self.namespaces.row(namespace).await?;
        if let Some(src) = self.namespaces.dir_source(&ns)? {
            return self.directories.delete(&ns, src, RelPath::new(key.to_vec())?).await;
        }
        if let Some(source) = &ns.source {
            return Err(Error::ReadOnly { namespace: ns.name.clone(), mirrors: source.clone() });
        }
        let key = utf8_key(key)?;
        let (id, k) = (ns.id, key.clone());
        let deleted = self.ix.run(move |ix| ix.delete_entry(id, &k)).await?;
        self.memory.forget_entry(&ns.name, key.as_str().as_bytes()).await;
        Ok(deleted)
    }

    /// One page of namespace `namespace`'s keys: its files for a directory namespace, the
    /// bucket's own keys for an S3 source (passed through, cached or not), its entries
    /// otherwise. Prefix matching is byte for byte (no wildcards, case-sensitive).
    pub(crate) async fn list(&self, namespace: &str, mut req: ListRequest) -> Result<ListPage, Error> {
        if req.limit == 0 || req.limit > MAX_LIST_LIMIT {
            return Err(Error::Invalid(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
        }
        let ns = self.namespaces.row(namespace).await?;
        let id = ns.id;
        if self.namespaces.dir_source(&ns)?.is_some() || ns.dir_root().is_some() {
            if let Some(name) = tiercache_sources::dir::reserved_segment(&req.prefix) {
                return Err(Error::Invalid(format!(
                    "prefix segment {:?} is reserved: names starting with {:?} are tiercache's own temp files",
                    String::from_utf8_lossy(name),
                    tiercache_sources::dir::TEMP_PREFIX
                )));
            }
            self.ix.run(move |ix| ix.list_files(id, &req)).await
        } else {
            req.delimiter = req.delimiter.filter(|d| !d.is_empty());
            if let Some(source) = self.namespaces.remote_source(&ns)?
                && let Some(page) = list_source(source.as_ref(), &req).await?
            {
                return Ok(page);
            }
            self.ix.run(move |ix| ix.list_entries(id, &req)).await
        }
    }
}

/// [`Error::Exists`] for `key` of `namespace`.
fn exists(namespace: &str, key: &[u8]) -> Error {
    Error::Exists { namespace: namespace.to_owned(), key: String::from_utf8_lossy(key).into_owned() }
}

/// One page of `source`'s own keys, if it lists them (an S3 bucket does, an HTTP server not):
/// what is there, read or not, rather than what was cached. A failure is
/// [`Error::Source`], never a shorter page.
async fn list_source(source: &dyn Source, req: &ListRequest) -> Result<Option<ListPage>, Error> {
    let text = |b: &[u8], what: &str| {
        String::from_utf8(b.to_vec()).map_err(|_| Error::Invalid(format!("{what} is not UTF-8")))
    };
    let query = ListQuery {
        prefix: text(&req.prefix, "prefix")?,
        delimiter: req.delimiter.as_deref().map(|d| text(d, "delimiter")).transpose()?,
        after: req.after.as_deref().map(|a| text(a, "the key to list after")).transpose()?,
        limit: req.limit,
    };
    let listing = match source.list(&query).await {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(None),
        Err(e) => {
            let e = Error::Source(e);
            telemetry::error(&e);
            return Err(e);
        }
    };
    let items = listing
        .objects
        .into_iter()
        .map(|o| ListedItem {
            key: o.key.into_bytes(),
            size_bytes: o.size_bytes,
            md5: o.etag,
            digest: None,
            modified_ms: o.modified_ms.unwrap_or(0),
        })
        .collect();
    Ok(Some(ListPage {
        items,
        common_prefixes: listing.common_prefixes.into_iter().map(String::into_bytes).collect(),
        last: listing.last.map(String::into_bytes),
        is_truncated: listing.is_truncated,
    }))
}

/// The first chunks of `body`, up to `max_bytes` of them (a chunk more if it crosses), and
/// whether they are the whole body.
async fn gather<E>(
    body: &mut (impl Stream<Item = Result<Bytes, E>> + Unpin),
    max_bytes: u64,
) -> Result<(Vec<Bytes>, bool), SpoolError<E>> {
    let (mut head, mut held) = (Vec::new(), 0u64);
    while held <= max_bytes {
        match body.next().await {
            Some(Ok(chunk)) => {
                held += chunk.len() as u64;
                head.push(chunk);
            }
            Some(Err(e)) => return Err(SpoolError::Body(e)),
            None => return Ok((head, true)),
        }
    }
    Ok((head, false))
}

/// A key of a namespace that is not a directory: UTF-8, and a valid [`Key`].
fn utf8_key(key: &[u8]) -> Result<Key, Error> {
    Ok(Key::new(std::str::from_utf8(key).map_err(|_| Error::Invalid("key is not UTF-8".into()))?)?)
}

/// Whether a body from [`capped`] was cut.
struct Limit {
    max_bytes: u64,
    is_cut: Arc<AtomicBool>,
}

impl Limit {
    /// [`Error::TooLarge`] if the body was cut, else `e`.
    fn or(&self, e: Error) -> Error {
        if self.is_cut.load(Ordering::Acquire) {
            let e = Error::TooLarge { declared_bytes: None, max_bytes: self.max_bytes };
            telemetry::error(&e);
            return e;
        }
        e
    }
}

/// `body`, ending with an error instead of the chunk that would take it past `max_bytes` (the
/// maximum object size). The error travels as the body's own (through the spool, or into a
/// directory write, where it becomes an I/O error); the [`Limit`] beside it says afterwards
/// whether the cut was the cause.
fn capped<E: std::fmt::Display>(
    body: impl Stream<Item = Result<Bytes, E>> + Send,
    max_bytes: u64,
) -> (impl Stream<Item = Result<Bytes, String>> + Send, Limit) {
    let is_cut = Arc::new(AtomicBool::new(false));
    let cut = Arc::clone(&is_cut);
    let mut seen: u64 = 0;
    let body = body.map(move |item| {
        let chunk = item.map_err(|e| e.to_string())?;
        seen = seen.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        if seen > max_bytes {
            cut.store(true, Ordering::Release);
            return Err(format!("the upload is larger than the maximum object size ({max_bytes} bytes)"));
        }
        Ok(chunk)
    });
    (body, Limit { max_bytes, is_cut })
}

/// An upload whose body failed (the client went away, or sent a broken body), or whose bytes
/// could not be stored.
fn upload_failed<E: std::fmt::Display>(e: SpoolError<E>) -> Error {
    match e {
        SpoolError::Body(e) => Error::UploadBody { why: e.to_string() },
        SpoolError::Local(e) => e,
    }
}
