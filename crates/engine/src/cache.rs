//! [`Cache`], the facade (layer 5): opening a data directory builds the parts of the layers below,
//! and every public operation is a one-line delegation to the part that owns it. No logic lives
//! here beyond the order in which opening builds and recovers things.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use tiercache_core::{Digest, NamespaceOptions};
use tiercache_derive::image_tree::NodeId;
use tiercache_index::{DiskUsage, Index, ListPage, ListRequest, Namespace};
use tiercache_tiers::DiskTier;
use tiercache_tiers::shared::{SharedTier, WriteBack};

use crate::access::AccessLog;
use crate::blocking::{Ix, blocking_with};
use crate::derive::{Derivations, DeriveAsk, DeriveInput, DeriveStats, Derived};
use crate::directory::{Directories, ScanProgress, UpdateKind, UpdateReport};
use crate::images::{FirstRead, Image, Images};
use crate::jobs::{Jobs, MoveReport, PruneOptions, PruneReport, StatsReport, VacuumReport, VerifyReport};
use crate::memory::{Memory, MemoryReport};
use crate::namespaces::{NamespaceInfo, Namespaces};
use crate::quota::{DiskQuota, QuotaStats};
use crate::read::{Intent, Reads, ReadsParts};
use crate::sources::Sources;
use crate::store::place::Place;
use crate::store::{CleanupReport, SharedStatus, Store, Stores};
use crate::tasks::Tasks;
use crate::telemetry::Notes;
use crate::uploads::{CompletedUpload, PartInfo, PartsPage, UploadId, UploadInfo, UploadMeta, Uploads, UploadsPage};
use crate::write::{PutOptions, Stored, Writes};
use crate::{CacheConfig, Error, Read};

/// A tiercache instance over one data directory. Cheap to clone; clones share everything.
///
/// Several processes may open the same data directory at once (a server and CLI commands): the
/// index is shared through SQLite's locking and the disk tier through atomic renames.
#[derive(Clone)]
pub struct Cache {
    parts: Arc<Parts>,
}

/// The parts of the layers below, built once by [`Cache::open`].
struct Parts {
    memory: Memory,
    stores: Arc<Stores>,
    namespaces: Arc<Namespaces>,
    directories: Arc<Directories>,
    reads: Arc<Reads>,
    writes: Writes,
    uploads: Arc<Uploads>,
    jobs: Arc<Jobs>,
    derivations: Arc<Derivations>,
    images: Arc<Images>,
    tasks: Tasks,
    notes: Arc<Notes>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("data_dir", &self.data_dir()).finish_non_exhaustive()
    }
}

impl Cache {
    /// Opens (creating if needed) the data directory in `config`.
    ///
    /// On every open: temp files of dead processes are removed and pending blob rows are
    /// reconciled with the disk tier (only those rows: a normal open never scans the disk). If the
    /// index file did not exist but the disk tier holds blobs, the index is rebuilt from the disk
    /// tier and the namespace definitions, with progress in the log. Directory namespaces' read
    /// caches built with another schema, version or configuration are emptied.
    pub async fn open(config: CacheConfig) -> Result<Cache, Error> {
        let dir = config.data_dir.clone();
        let (index, disk, opened) = blocking_with(move || {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("cannot create data directory {}", dir.display()), e))?;
            let disk = DiskTier::open(&dir).map_err(|e| Error::io("cannot open the disk tier", e))?;
            let (index, opened) = Index::open(&dir.join("index.db"))?;
            Ok((Arc::new(index), disk, opened))
        })
        .await?;
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
            let (limits, index, disk, dir) =
                (config.disk.clone(), Arc::clone(&index), disk.clone(), config.data_dir.clone());
            Arc::new(blocking_with(move || Ok(DiskQuota::open(limits, index, disk, dir)?)).await?)
        };

        let ix = Ix::new(index);
        let tasks = Tasks::default();
        let notes = Arc::new(Notes::default());
        let memory = Memory::new(&config);
        let access = Arc::new(AccessLog::default());
        let sources = Arc::new(Sources::new(config.http.clone()));
        let managed = Store { disk, quota: Arc::clone(&quota), dir: None };
        let stores = Stores::new(managed, ix.clone(), memory.clone(), shared, tasks.clone(), config.data_dir.clone());
        let stores = Arc::new(stores.with_max_object_bytes(config.max_object_bytes));
        let namespaces =
            Arc::new(Namespaces::new(ix.clone(), memory.clone(), Arc::clone(&sources), Arc::clone(&stores)));
        let directories = Arc::new(Directories::new(
            &config,
            ix.clone(),
            Arc::clone(&namespaces),
            Arc::clone(&stores),
            memory.clone(),
            tasks.clone(),
            Arc::clone(&notes),
        ));
        let reads = Arc::new(Reads::new(ReadsParts {
            revalidate_after: config.revalidate_after,
            max_concurrent_fetches: config.max_concurrent_fetches,
            max_fetches_per_source: config.fetches_per_source(),
            source_timeout: config.http.connect_timeout + config.http.read_timeout,
            ix: ix.clone(),
            memory: memory.clone(),
            access: Arc::clone(&access),
            namespaces: Arc::clone(&namespaces),
            stores: Arc::clone(&stores),
            sources,
            directories: Arc::clone(&directories),
            tasks: tasks.clone(),
        }));
        let writes = Writes {
            ix: ix.clone(),
            memory: memory.clone(),
            namespaces: Arc::clone(&namespaces),
            stores: Arc::clone(&stores),
            directories: Arc::clone(&directories),
        };
        let uploads = Arc::new(Uploads {
            ix: ix.clone(),
            namespaces: Arc::clone(&namespaces),
            stores: Arc::clone(&stores),
            directories: Arc::clone(&directories),
            dir: config.data_dir.join("uploads"),
        });
        let jobs = Arc::new(Jobs::new(
            config.clone(),
            ix.clone(),
            memory.clone(),
            access,
            Arc::clone(&stores),
            Arc::clone(&namespaces),
            Arc::clone(&uploads),
            tasks.clone(),
        ));
        for note in &opened.notes {
            notes.add(note.clone());
        }

        let rebuilt = opened.created || opened.needs_rebuild;
        jobs.recover(rebuilt).await?;
        for note in namespaces.refuse_uncontained().await? {
            notes.add(note);
        }
        directories.check_read_caches().await?;
        // Multipart uploads: temp files of dead writers, and files and directories no upload row
        // names (a crash mid-part, mid-complete or mid-abort).
        uploads.sweep(config.pruner.temp_grace, false).await?;
        let forget = memory.clone();
        quota.set_on_evict(Box::new(move |_| forget.forget_lookups()));
        if rebuilt {
            let quota = Arc::clone(&quota);
            ix.run(move |_| quota.resync()).await?;
        }
        jobs.spawn_flusher();
        let derivations =
            Derivations::new(config.derive.clone(), Arc::clone(&reads), Arc::clone(&stores), ix.clone(), tasks.clone());
        let images = Arc::new(Images::new(Arc::clone(&reads), Arc::clone(&derivations)));
        let parts = Parts {
            memory,
            stores,
            namespaces,
            directories,
            reads,
            writes,
            uploads,
            jobs,
            derivations,
            images,
            tasks,
            notes,
        };
        Ok(Cache { parts: Arc::new(parts) })
    }

    /// What opening the data directory found and did, in sentences: an index that was not a
    /// database moved aside, a schema reset, directory read caches reset and why. Empty on an
    /// ordinary open.
    pub fn open_notes(&self) -> Vec<String> {
        self.parts.notes.all()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.parts.stores.data_dir()
    }

    /// Waits until every background task of work has ended (source fetches storing what they
    /// fetched, fills, MD5s, copies), then writes batched access times. A reader's body can end
    /// before its fetch is committed (the fsync, rename and index commit follow the last byte),
    /// so call this (or [`Cache::shutdown`]) before exiting.
    pub async fn settle(&self) -> Result<(), Error> {
        self.parts.tasks.settle().await;
        self.flush().await
    }

    /// Holds back every MD5 pass (the entries' ETags) until the returned guard is dropped; a chunk
    /// being hashed is finished first. For tests showing that no read waits for an MD5: do not
    /// [`Cache::settle`] while holding it.
    #[doc(hidden)]
    pub async fn pause_md5(&self) -> impl Send + 'static {
        self.parts.stores.pause_md5().await
    }

    /// Stops the background loops (the access flusher, the pruner), waits for every task of work
    /// as [`Cache::settle`] does, and writes what is batched. The cache still answers afterwards,
    /// without its loops.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.parts.tasks.shutdown().await;
        self.flush().await
    }

    /// Writes batched access times (and shared-tier counters) now. Call before exiting.
    pub async fn flush(&self) -> Result<(), Error> {
        self.parts.jobs.flush().await
    }

    /// The shared-tier counters summed over every process that used this data directory (as of
    /// their last flush), by name (`hits`, `misses`, …, `breaker_open`).
    pub async fn shared_counters(&self) -> Result<BTreeMap<String, i64>, Error> {
        self.parts.jobs.shared_counters().await
    }

    /// Brings the metrics up to date: the counts kept per thread and the sizes. Runs at every
    /// flush; call it before rendering the metrics, so that they count every read that returned.
    pub fn publish_metrics(&self) {
        self.parts.jobs.publish_metrics();
        self.parts.derivations.publish_metrics();
    }

    /// Reads a blob by digest from the memory tier, the disk tier, else the shared tier.
    /// [`Error::NoBlob`] if none holds it.
    pub async fn read_blob(&self, digest: &Digest) -> Result<Read, Error> {
        self.parts.reads.blob(digest, Intent::Whole).await
    }

    /// [`Cache::read_blob`] for a reader that will want `intent` of it, so that a shared-tier hit
    /// verifies those bytes before answering.
    pub async fn read_blob_with(&self, digest: &Digest, intent: Intent) -> Result<Read, Error> {
        self.parts.reads.blob(digest, intent).await
    }

    /// Reads entry `key` of `namespace` through the tiers, from its source (once, however many
    /// readers ask) if no tier has it; a directory namespace's file is served in place.
    pub async fn read_entry(&self, namespace: &str, key: &str) -> Result<Read, Error> {
        self.parts.reads.entry(namespace, key.as_bytes(), Intent::Whole).await
    }

    /// [`Cache::read_entry`] with the key as raw bytes: a directory's file names need not be
    /// UTF-8 (other namespaces' keys must be).
    pub async fn read_entry_raw(&self, namespace: &str, key: &[u8]) -> Result<Read, Error> {
        self.parts.reads.entry(namespace, key, Intent::Whole).await
    }

    /// [`Cache::read_entry_raw`] for a reader that will want `intent` of it, so that a shared-tier
    /// hit verifies those bytes before answering.
    pub async fn read_entry_with(&self, namespace: &str, key: &[u8], intent: Intent) -> Result<Read, Error> {
        self.parts.reads.entry(namespace, key, intent).await
    }

    /// Asks for derivation `ask` of `input` (`derive.rs` has the order): the output if it is made
    /// (here or, through the shared tier, by another node), else a job queued once per key and
    /// waited for up to `ask.wait`. A refused request (unknown recipe or parameter, an input the
    /// recipe does not take, a recipe that cannot run here or no workers) is [`Error::Recipe`].
    pub async fn derive(&self, input: &DeriveInput, ask: &DeriveAsk) -> Result<Derived, Error> {
        self.parts.derivations.derive(input, ask).await
    }

    /// The derivation queue's figures and the outputs present, by recipe.
    pub async fn derive_stats(&self) -> Result<DeriveStats, Error> {
        self.parts.derivations.stats().await
    }

    /// Opens image `image` (`NAME[:TAG]` or `NAME@DIGEST`) of registry namespace `namespace` as
    /// a tree of files; `platform` (`os/arch[/variant]`) chooses from an image index, else this
    /// machine's. Indexes its layers first if no tier has their indexes (fetching them whole).
    pub async fn image(&self, namespace: &str, image: &str, platform: Option<&str>) -> Result<Arc<Image>, Error> {
        self.parts.images.open(namespace, image, platform).await
    }

    /// The file at `path` of `image` (as [`Cache::image`]) as soon as it can be read: the image
    /// opened, or, while some of its layers are indexed nowhere yet, the file itself, read from
    /// its layer's stream as it arrives (a regular file up to 1 MiB at the path itself); the
    /// image is opened meanwhile either way.
    pub async fn image_first_read(
        &self,
        namespace: &str,
        image: &str,
        platform: Option<&str>,
        path: &[u8],
    ) -> Result<FirstRead, Error> {
        self.parts.images.first_read(namespace, image, platform, path).await
    }

    /// Bytes `range` of the file `node` of `image` (clamped to its size), reading only the part
    /// of its layer that holds them.
    pub async fn image_read(&self, image: &Image, node: NodeId, range: std::ops::Range<u64>) -> Result<Bytes, Error> {
        self.parts.images.read(image, node, range).await
    }

    /// [`Error::TooLarge`] if an upload declaring `declared_bytes` is larger than the maximum
    /// object size ([`CacheConfig::max_object_bytes`]); a front door that knows an upload's length
    /// asks before reading its body (a body that grows past the limit is cut anyway).
    pub fn check_object_size(&self, declared_bytes: u64) -> Result<(), Error> {
        self.parts.writes.check_object_size(declared_bytes)
    }

    /// Stores an uploaded blob if it hashes to `expected`; `true` if it is new.
    pub async fn put_blob<E: std::fmt::Display + Send + 'static>(
        &self,
        expected: &Digest,
        body: impl Stream<Item = Result<Bytes, E>> + Send,
    ) -> Result<bool, Error> {
        self.parts.writes.put_blob(expected, body).await
    }

    /// Writes entry `key` of `namespace` (a directory namespace's file, or an entry of a
    /// namespace without a source; [`Error::ReadOnly`] for one mirroring a source).
    pub async fn put_entry<E: std::fmt::Display + Send + 'static>(
        &self,
        namespace: &str,
        key: &[u8],
        body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    ) -> Result<Stored, Error> {
        self.parts.writes.put_entry(namespace, key, body, PutOptions::default()).await
    }

    /// [`Cache::put_entry`] as `opts` say: a content type and attributes recorded with the entry,
    /// and whether it must be new ([`PutOptions`]).
    pub async fn put_entry_with<E: std::fmt::Display + Send + 'static>(
        &self,
        namespace: &str,
        key: &[u8],
        body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
        opts: PutOptions,
    ) -> Result<Stored, Error> {
        self.parts.writes.put_entry(namespace, key, body, opts).await
    }

    /// The sizes of the parts a multipart upload made entry `key` of `namespace` of, in order;
    /// `None` for an entry written whole (or a directory's file, or a source's entry).
    pub async fn entry_part_sizes(&self, namespace: &str, key: &[u8]) -> Result<Option<Vec<u64>>, Error> {
        self.parts.writes.part_sizes(namespace, key).await
    }

    /// Makes entry `dst` (namespace, key) name the same blob as entry `src`, without copying a
    /// byte, when both namespaces keep their blobs in the disk tier and the blob is there; `None`
    /// otherwise (nothing changed: copy the bytes with a read and [`Cache::put_entry`]).
    pub async fn copy_entry(&self, src: (&str, &[u8]), dst: (&str, &[u8])) -> Result<Option<Stored>, Error> {
        self.parts.writes.copy_entry(src, dst).await
    }

    /// Sets the attributes a front door stores with entry `key` of `namespace` (opaque text;
    /// `None` clears them; any other write of the entry clears them too). `false` if there is no
    /// such entry, or the namespace is a directory or mirrors a source (their entries keep none).
    pub async fn set_entry_attrs(&self, namespace: &str, key: &[u8], attrs: Option<String>) -> Result<bool, Error> {
        self.parts.writes.set_attrs(namespace, key, attrs).await
    }

    /// The attributes stored with entry `key` of `namespace` ([`Cache::set_entry_attrs`]).
    pub async fn entry_attrs(&self, namespace: &str, key: &[u8]) -> Result<Option<String>, Error> {
        self.parts.writes.attrs(namespace, key).await
    }

    /// Deletes entry `key` of `namespace`; `false` if there was nothing to delete.
    pub async fn delete_entry(&self, namespace: &str, key: &[u8]) -> Result<bool, Error> {
        self.parts.writes.delete_entry(namespace, key).await
    }

    /// One page of namespace `namespace`'s keys.
    pub async fn list(&self, namespace: &str, req: ListRequest) -> Result<ListPage, Error> {
        self.parts.writes.list(namespace, req).await
    }

    /// Starts a multipart upload of `key` into `namespace` (S3's CreateMultipartUpload), keeping
    /// `meta` until it completes. [`Error::ReadOnly`] for a namespace mirroring a source.
    pub async fn create_upload(&self, namespace: &str, key: &str, meta: UploadMeta) -> Result<UploadId, Error> {
        self.parts.uploads.create(namespace, key, meta).await
    }

    /// The multipart upload `upload_id` (its namespace and key, for a front door to check they
    /// are the request's); [`Error::NoSuchUpload`] if it is not under way.
    pub async fn upload(&self, upload_id: &UploadId) -> Result<UploadInfo, Error> {
        self.parts.uploads.info(upload_id).await
    }

    /// Stores part `part_number` (1 to 10 000) of `upload_id` from `body` as it arrives (S3's
    /// UploadPart), replacing a part of that number; with `expected_md5` (a `Content-MD5`), a body
    /// with another MD5 is [`Error::BadDigest`]. A body that fails, or does not check out, stores
    /// nothing and leaves the earlier part. The part's ETag is its MD5.
    pub async fn put_part<E: std::fmt::Display + Send + 'static>(
        &self,
        upload_id: &UploadId,
        part_number: u32,
        body: impl Stream<Item = Result<Bytes, E>> + Send,
        expected_md5: Option<[u8; 16]>,
    ) -> Result<PartInfo, Error> {
        self.parts.uploads.put_part(upload_id, part_number, body, expected_md5).await
    }

    /// Completes `upload_id` with `parts` (part number and ETag, in ascending order): the object
    /// is assembled, verified, stored as the entry with the ETag `hex(md5(part MD5s))-N`, and the
    /// upload removed. [`Error::InvalidPart`], [`Error::InvalidPartOrder`],
    /// [`Error::EntityTooSmall`] for a bad list; [`Error::NoSuchUpload`] if it is not under way
    /// (also for the second of two completes at once).
    pub async fn complete_upload(
        &self,
        upload_id: &UploadId,
        parts: &[(u32, String)],
    ) -> Result<CompletedUpload, Error> {
        self.parts.uploads.complete_detached(upload_id, parts, false).await
    }

    /// [`Cache::complete_upload`] of an object that must be new (S3's `If-None-Match: *`): the
    /// entry is written only if the key has none, checked in the transaction that writes it;
    /// [`Error::Exists`] otherwise, and the upload is gone all the same (its bytes become an
    /// orphan blob). A directory namespace's file is checked before it is written.
    pub async fn complete_new_upload(
        &self,
        upload_id: &UploadId,
        parts: &[(u32, String)],
    ) -> Result<CompletedUpload, Error> {
        self.parts.uploads.complete_detached(upload_id, parts, true).await
    }

    /// Aborts `upload_id`, removing its parts; [`Error::NoSuchUpload`] if it is not under way.
    pub async fn abort_upload(&self, upload_id: &UploadId) -> Result<(), Error> {
        self.parts.uploads.abort_detached(upload_id).await
    }

    /// The parts of `upload_id` numbered above `after`, at most `limit` (S3's ListParts).
    pub async fn list_parts(&self, upload_id: &UploadId, after: u32, limit: usize) -> Result<PartsPage, Error> {
        self.parts.uploads.list_parts(upload_id, after, limit).await
    }

    /// The uploads under way in `namespace` whose key starts with `prefix`, after `after` (key,
    /// upload id), at most `limit` (S3's ListMultipartUploads).
    pub async fn list_uploads(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<(&str, &UploadId)>,
        limit: usize,
    ) -> Result<UploadsPage, Error> {
        self.parts.uploads.list(namespace, prefix, after, limit).await
    }

    /// Makes `upload_id` look `age` older than it is, for tests of the pruner.
    #[doc(hidden)]
    pub async fn backdate_upload(&self, upload_id: &UploadId, age: std::time::Duration) -> Result<(), Error> {
        self.parts.uploads.backdate(upload_id, age).await
    }

    /// Creates namespace `name` (idempotently), optionally bound to `source`, with `options`.
    pub async fn create_namespace(
        &self,
        name: &str,
        source: Option<&str>,
        options: &NamespaceOptions,
    ) -> Result<(Namespace, bool), Error> {
        self.parts.namespaces.create(name, source, options).await
    }

    /// [`Cache::create_namespace`] with its storage place given as a [`Place`].
    pub async fn create_namespace_in(
        &self,
        name: &str,
        source: Option<&str>,
        options: &NamespaceOptions,
        place: Option<&Place>,
    ) -> Result<(Namespace, bool), Error> {
        self.parts.namespaces.create_in(name, source, options, place).await
    }

    /// Deletes namespace `name` with everything it owns; `None` if there was none.
    pub async fn delete_namespace(&self, name: &str) -> Result<Option<CleanupReport>, Error> {
        self.parts.namespaces.delete(name).await
    }

    /// Deletes namespace `name` only if it holds no entry and no file: [`Error::NotEmpty`]
    /// otherwise, with nothing changed; `false` if there was no such namespace.
    pub async fn delete_empty_namespace(&self, name: &str) -> Result<bool, Error> {
        self.parts.namespaces.delete_if_empty(name).await
    }

    /// Every namespace's definition (no totals: one index read, whatever they hold).
    pub async fn namespace_list(&self) -> Result<Vec<Namespace>, Error> {
        self.parts.namespaces.list().await
    }

    /// Namespace `name`'s definition; [`Error::NoNamespace`] if there is none.
    pub async fn namespace_row(&self, name: &str) -> Result<Arc<Namespace>, Error> {
        self.parts.namespaces.row(name).await
    }

    /// Every namespace with its totals.
    pub async fn namespaces(&self) -> Result<Vec<NamespaceInfo>, Error> {
        self.parts.namespaces.infos().await
    }

    /// Every namespace's name and source URL (`None` for one without), without their totals.
    pub async fn namespace_sources(&self) -> Result<Vec<(String, Option<String>)>, Error> {
        let rows = self.parts.writes.ix.run(|ix| ix.list_namespaces()).await?;
        Ok(rows.into_iter().map(|ns| (ns.name, ns.source)).collect())
    }

    /// One namespace with its totals, if it exists.
    pub async fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, Error> {
        self.parts.namespaces.info(name).await
    }

    /// Whether namespace `name` is public (its entries are read without a token), from the memory
    /// tier when it holds the namespace; [`Error::NoNamespace`] if there is none.
    pub async fn is_public(&self, name: &str) -> Result<bool, Error> {
        Ok(self.parts.namespaces.row(name).await?.options.is_public)
    }

    /// Pins `key` of namespace `name` (`None`: all of it); whether the pin is new.
    pub async fn pin(&self, name: &str, key: Option<&str>) -> Result<bool, Error> {
        self.parts.namespaces.pin(name, key).await
    }

    /// Removes a pin set by [`Cache::pin`]; whether there was one.
    pub async fn unpin(&self, name: &str, key: Option<&str>) -> Result<bool, Error> {
        self.parts.namespaces.unpin(name, key).await
    }

    /// The pins of namespace `name` (`""`: the whole namespace).
    pub async fn pins(&self, name: &str) -> Result<Vec<String>, Error> {
        self.parts.namespaces.pins(name).await
    }

    /// Moves namespace `name`'s blobs to `to` while it is read (`ns migrate`).
    pub async fn move_namespace(&self, name: &str, to: &Place) -> Result<MoveReport, Error> {
        self.parts.jobs.move_namespace(name, to).await
    }

    /// Every namespace bound to a directory.
    pub async fn directory_namespaces(&self) -> Result<Vec<Namespace>, Error> {
        self.parts.namespaces.directories().await
    }

    /// Binds namespace `name` to directory `root` and builds its read cache (`tiercache index`).
    pub async fn index_directory(
        &self,
        name: &str,
        root: &Path,
        options: &NamespaceOptions,
        hash: bool,
        progress: Arc<ScanProgress>,
    ) -> Result<UpdateReport, Error> {
        self.parts.directories.index(name, root, options, hash, progress).await
    }

    /// Re-reads what changed in directory namespace `name` (`force`: everything).
    pub async fn update_directory(
        &self,
        name: &str,
        force: bool,
        progress: Arc<ScanProgress>,
    ) -> Result<UpdateReport, Error> {
        let kind = if force { UpdateKind::Force } else { UpdateKind::Update };
        self.parts.directories.update(name, kind, true, progress).await
    }

    /// Fills in hashes not computed yet (`tiercache migrate`): files indexed without them, or
    /// blobs without an MD5; with `dry_run`, only counts them.
    pub async fn hash_missing(
        &self,
        name: &str,
        dry_run: bool,
        progress: Arc<ScanProgress>,
    ) -> Result<UpdateReport, Error> {
        self.parts.directories.hash_missing(name, dry_run, progress).await
    }

    /// Follows the directory namespaces `names` (all if empty) until `shutdown` completes.
    pub async fn watch_directories(&self, names: &[String], shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        self.parts.directories.watch(names, shutdown).await
    }

    /// Totals, overall and per namespace (or just `only_ns`).
    pub async fn stats(&self, only_ns: Option<&str>) -> Result<StatsReport, Error> {
        self.parts.jobs.stats(only_ns).await
    }

    /// The disk quota as this process accounts it, and what eviction did.
    pub fn quota_stats(&self) -> QuotaStats {
        self.parts.stores.managed().quota.stats()
    }

    /// The shared tier's breaker, write-back queue and counters as this process sees them now;
    /// `None` without a shared tier.
    pub fn shared_status(&self) -> Option<SharedStatus> {
        self.parts.stores.shared_status()
    }

    /// The memory tier's sizes and counters (this process's: the memory tier is not shared).
    pub fn memory_stats(&self) -> MemoryReport {
        self.parts.memory.report()
    }

    /// Disk use of the disk tier, overall and per namespace, from the index alone.
    pub async fn disk_usage(&self) -> Result<DiskUsage, Error> {
        self.parts.jobs.disk_usage().await
    }

    /// Removes entries (of `ns`, with keys starting with `prefix`), then unreferenced blobs.
    pub async fn cleanup(&self, ns: Option<&str>, prefix: Option<&str>) -> Result<CleanupReport, Error> {
        self.parts.jobs.cleanup(ns, prefix).await
    }

    /// Compacts the index file.
    pub async fn vacuum(&self) -> Result<VacuumReport, Error> {
        self.parts.jobs.vacuum().await
    }

    /// Rehashes every blob and reconciles the index with the disk tier (`repair`: fixes it).
    pub async fn verify(
        &self,
        repair: bool,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<VerifyReport, Error> {
        self.parts.jobs.verify(repair, progress).await
    }

    /// Runs one pruner pass.
    pub async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport, Error> {
        self.parts.jobs.prune(opts).await
    }

    /// Starts the background pruner (a pass every `pruner.interval`) until shutdown.
    pub fn spawn_pruner(&self) {
        self.parts.jobs.spawn_pruner()
    }
}
