//! The read path (layer 3), top-down in one file: memory tier → index → disk tier → shared tier
//! (`read/shared.rs`) → source, fetched once however many readers wait (`read/fetch.rs`),
//! streaming to every waiting reader while the bytes are hashed, written, verified and published.
//! A directory namespace's file is served in place (`directory/serve.rs`). A HEAD of an entry no
//! tier holds is answered from the source's HEAD, without fetching or storing anything.
//!
//! Every read logs (debug) and counts which tier served it, the bytes and the time
//! (`telemetry::served`). Writes are `write.rs`'s; nothing here writes an entry except a fetch
//! storing what it fetched.
//!
//! Invariant: at most one source fetch per `(namespace, key)` runs in a process, and one per
//! digest for keys that name their bytes by digest (`Source::key_policy`), whatever their key or
//! namespace; readers join it.
//! Only flights still waiting or streaming are joined; a new flight first takes the entry's fetch
//! lock and looks in the index again, so a reader that just missed a finished flight gets a hit,
//! not a second fetch.
//! Invariant: a shared-tier failure is a miss before the headers are sent; the reader never waits
//! for a write-back, and a fill from the shared tier is never written back.

mod fetch;
mod records;
mod shared;
mod span;
mod verify;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tiercache_core::{Digest, Key, RelPath, Validators, now_ms};
use tiercache_index::{Entry, Namespace, NewEntry};
use tiercache_sources::{KeyPolicy, Source, SourceError};
use tokio::sync::watch;

pub use shared::Intent;

use crate::Error;
use crate::access::AccessLog;
use crate::blocking::Ix;
use crate::body::{Body, Read, read_chunk};
use crate::directory::Directories;
use crate::memory::{Hot, HotEntry, Memory, MemoryBlob};
use crate::meta::{Memo, ReadMeta, Text, Tier, http_date};
use crate::namespaces::Namespaces;
use crate::quota::Hold;
use crate::single_flight::SingleFlight;
use crate::sources::Sources;
use crate::spool::Phase;
use crate::store::{Store, Stores};
use crate::tasks::Tasks;
use crate::telemetry::{self, served};
use fetch::{FetchSlots, FlightOutcome};

/// The read path of one cache. Its fetches and fills run as background tasks holding an `Arc`
/// of it.
pub(crate) struct Reads {
    /// An entry older than this (since the source last confirmed it) is revalidated first.
    revalidate_after: Duration,
    ix: Ix,
    memory: Memory,
    access: Arc<AccessLog>,
    namespaces: Arc<Namespaces>,
    stores: Arc<Stores>,
    sources: Arc<Sources>,
    directories: Arc<Directories>,
    /// Fetches under way, by `(namespace id, key)`.
    flights: SingleFlight<(i64, Key), watch::Receiver<Phase>>,
    /// Disk-tier fills from the shared tier under way, by digest.
    fills: SingleFlight<Digest, shared::Fill>,
    /// Lookups of entry records in the shared tier under way, by `(namespace id, key)`
    /// (`read/records.rs`): `true` if the entry was adopted.
    record_lookups: SingleFlight<(i64, Key), Arc<tokio::sync::OnceCell<bool>>>,
    /// Fetch slots: source fetches and shared-tier fills running at once, at most, globally and
    /// per source (`read/fetch.rs`, `FetchSlots`).
    fetch_slots: FetchSlots,
    tasks: Tasks,
}

/// What [`Reads`] is made of.
pub(crate) struct ReadsParts {
    pub(crate) revalidate_after: Duration,
    pub(crate) max_concurrent_fetches: usize,
    /// Fetches at once from one source (and fills from the shared tier), at most.
    pub(crate) max_fetches_per_source: usize,
    /// How long a source may take to answer headers (connect and read timeouts): a fetch queued
    /// for a slot longer than this fails with [`Error::SourceBusy`].
    pub(crate) source_timeout: Duration,
    pub(crate) ix: Ix,
    pub(crate) memory: Memory,
    pub(crate) access: Arc<AccessLog>,
    pub(crate) namespaces: Arc<Namespaces>,
    pub(crate) stores: Arc<Stores>,
    pub(crate) sources: Arc<Sources>,
    pub(crate) directories: Arc<Directories>,
    pub(crate) tasks: Tasks,
}

impl Reads {
    pub(crate) fn new(p: ReadsParts) -> Reads {
        Reads {
            revalidate_after: p.revalidate_after,
            ix: p.ix,
            memory: p.memory,
            access: p.access,
            namespaces: p.namespaces,
            stores: p.stores,
            sources: p.sources,
            directories: p.directories,
            flights: SingleFlight::default(),
            fills: SingleFlight::default(),
            record_lookups: SingleFlight::default(),
            fetch_slots: FetchSlots::new(p.max_concurrent_fetches, p.max_fetches_per_source, p.source_timeout),
            tasks: p.tasks,
        }
    }

    /// Reads a blob by digest from the memory tier, the disk tier, else the shared tier, for a
    /// reader that will want `intent` of it (so that a shared-tier hit verifies those bytes
    /// before answering). [`Error::NoBlob`] if none holds it.
    pub(crate) async fn blob(self: &Arc<Self>, digest: &Digest, intent: Intent) -> Result<Read, Error> {
        let t0 = Instant::now();
        if let Some(blob) = self.memory.blob(digest).await {
            self.access.note(None, *digest, now_ms());
            let size = blob.bytes.len() as u64;
            served(Tier::Memory, "hit", t0, size, || format!("{digest}"));
            let meta = blob_meta(Tier::Memory, digest, size, blob.last_modified);
            return Ok(Read { meta, body: Body::Memory(blob.bytes), hold: None });
        }
        // Boxed, as for entries: the memory-tier hit's future stays small.
        Box::pin(self.read_blob_past_memory(digest, intent, t0)).await
    }

    /// [`Reads::blob`] once the memory tier could not answer.
    async fn read_blob_past_memory(
        self: &Arc<Self>,
        digest: &Digest,
        intent: Intent,
        t0: Instant,
    ) -> Result<Read, Error> {
        // A small, page-cached open and fstat: cheaper inline than a hop to a blocking thread.
        let opened = self.stores.open_blob(self.stores.managed(), digest)?;
        let Some((file, fs_meta)) = opened else {
            metrics::counter!(telemetry::READS, "tier" => "disk", "outcome" => "miss").increment(1);
            tracing::debug!(%digest, tier = "disk", outcome = "miss", "read blob");
            let Some(hit) = self.read_shared(*digest, &intent, true).await? else {
                return Err(Error::NoBlob(*digest));
            };
            return Ok(Read {
                meta: blob_meta(Tier::Shared, digest, hit.size_bytes, None),
                body: hit.body,
                hold: Some(Hold::new(&self.stores.managed().quota, Some(*digest), None)),
            });
        };
        let (size, last_modified) = (fs_meta.len(), fs_meta.modified().ok().map(|t| http_date(t).into()));
        self.access.note(None, *digest, now_ms());
        served(Tier::Disk, "hit", t0, size, || format!("{digest}"));
        let body = self.disk_body(*digest, file, size).await;
        Ok(Read {
            meta: blob_meta(Tier::Disk, digest, size, last_modified),
            body,
            hold: Some(Hold::new(&self.stores.managed().quota, Some(*digest), None)),
        })
    }

    /// The body of a disk hit by digest: a small blob is read whole and kept in the memory tier,
    /// so the next read of it touches neither the index nor the disk.
    async fn disk_body(self: &Arc<Self>, digest: Digest, file: std::fs::File, size: u64) -> Body {
        if let Some(bytes) = self.small_blob(&file, size) {
            let last_modified = file.metadata().and_then(|m| m.modified()).ok().map(|t| http_date(t).into());
            let blob = MemoryBlob { bytes: bytes.clone(), last_modified };
            self.memory.put_blob(digest, blob).await;
            return Body::Memory(bytes);
        }
        Body::File { file: Arc::new(file), size_bytes: size }
    }

    /// The whole of an open blob of `size` bytes, if the memory tier takes blobs that small.
    fn small_blob(&self, file: &std::fs::File, size: u64) -> Option<Bytes> {
        if !self.memory.takes_blob(size) {
            return None;
        }
        read_chunk(file, 0, size).ok()
    }

    /// Reads entry `key` of `namespace` (raw bytes: a directory's file names need not be UTF-8,
    /// other namespaces' keys must be) for a reader that will want `intent` of it: from the
    /// memory tier, from the disk tier if the index has it and it is fresh, after a conditional
    /// request to the source if it is stale, and from the source (once, however many readers
    /// ask) if it is missing. A directory namespace's file is served in place after its change
    /// markers are checked.
    pub(crate) async fn entry(self: &Arc<Self>, namespace: &str, key: &[u8], intent: Intent) -> Result<Read, Error> {
        let t0 = Instant::now();
        self.memory.check_generation();
        // A hot entry is answered by this one lookup; a lookup that finds the row without the
        // blob's bytes saves the namespace and index lookups.
        let epoch = self.memory.epoch();
        let hot = match self.memory.entry(namespace, key).await {
            Some(Hot::Entry(h)) => match self.read_held(&h, t0) {
                Some(read) => return Ok(read),
                None => Some(h),
            },
            // A directory's file, unless it changed since it was read: then the index has the
            // say (and the file is read, and held, again).
            Some(Hot::File(f)) => match self.directories.read_held(&f, t0) {
                Some(read) => return Ok(read),
                None => None,
            },
            None => None,
        };
        // Boxed, so that the hot path's future (which every read's future embeds and callers
        // move around) stays small.
        Box::pin(self.read_entry_past_memory(namespace, key, intent, hot, epoch, t0)).await
    }

    /// [`Reads::entry`] once the memory tier could not answer: `hot` is the entry's
    /// row from the memory tier, if it had one (without the bytes, or due for revalidation),
    /// and `epoch` the lookup epoch taken before that lookup.
    async fn read_entry_past_memory(
        self: &Arc<Self>,
        namespace: &str,
        key: &[u8],
        intent: Intent,
        mut hot: Option<Arc<HotEntry>>,
        epoch: u64,
        t0: Instant,
    ) -> Result<Read, Error> {
        let mut ns = match &hot {
            Some(h) => Arc::clone(&h.ns),
            None => self.namespaces.row(namespace).await?,
        };
        if let Some(src) = self.namespaces.dir_source(&ns)? {
            return self.directories.read(ns, src, RelPath::new(key.to_vec())?).await;
        }
        let key =
            std::str::from_utf8(key).map_err(|_| Error::Invalid("key is not UTF-8 once percent-decoded".into()))?;
        // A pass ends without a read only when another flight stored the entry after this one
        // looked, or the namespace moved to another storage place; the next pass finds it.
        // Entries deleted again at once could repeat that, so the number of passes is bounded.
        for pass in 0..3 {
            let mut epoch = epoch;
            if pass > 0 {
                // The memory tier's row may predate a move whose generation bump is still to
                // come: the index says where the namespace is now.
                epoch = self.memory.epoch();
                self.memory.forget_namespace(&ns.name).await;
                ns = Arc::new(self.namespaces.fresh(&ns.name).await?);
            }
            let seen = Seen { hot: hot.take(), epoch, t0 };
            if let Some(read) = self.read_entry_once(&ns, key, &intent, seen).await? {
                return Ok(read);
            }
        }
        Err(Error::Busy { what: format!("entry {namespace}/{key}") })
    }

    /// A read of hot entry `hot` from the memory tier, if it holds the blob's bytes and the entry
    /// needs no revalidation.
    fn read_held(&self, hot: &Arc<HotEntry>, t0: Instant) -> Option<Read> {
        let (bytes, meta) = hot.held.as_ref()?;
        let now = now_ms();
        if now >= hot.fresh_until_ms {
            return None;
        }
        self.access.note_hot(hot, now);
        served(Tier::Memory, "hit", t0, bytes.len() as u64, || hot.entry.key.clone());
        Some(Read { meta: meta.clone(), body: Body::Memory(bytes.clone()), hold: None })
    }

    /// Whether `entry` of `ns` may be served without asking its source.
    fn is_fresh(&self, ns: &Namespace, entry: &Entry) -> bool {
        now_ms() < self.fresh_until(ns, entry)
    }

    /// Until when (ms since the epoch, exclusive) `entry` of `ns` may be served without asking its
    /// source: always for a namespace without one, or for a key its source says cannot change;
    /// else for as long as the source says the key stays fresh, or `revalidate_after` (zero:
    /// never), after the entry was last validated.
    pub(crate) fn fresh_until(&self, ns: &Namespace, entry: &Entry) -> i64 {
        if ns.source.is_none() {
            return i64::MAX;
        }
        let policy = Key::new(&entry.key).map(|k| self.policy(ns, &k)).unwrap_or_default();
        let after = policy.fresh_for.unwrap_or(self.revalidate_after);
        if after == Duration::MAX {
            i64::MAX
        } else if after.is_zero() {
            i64::MIN
        } else {
            entry.validated_at.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
        }
    }

    /// The digest `key` of `namespace` names its bytes by, if its source says so (a registry's
    /// blob or manifest by digest): known without reading them.
    pub(crate) async fn named_digest(&self, namespace: &str, key: &[u8]) -> Result<Option<Digest>, Error> {
        let Ok(key) = std::str::from_utf8(key).map_err(drop).and_then(|k| Key::new(k).map_err(drop)) else {
            return Ok(None);
        };
        let ns = self.namespaces.row(namespace).await?;
        Ok(self.policy(&ns, &key).digest)
    }

    /// What the source of `ns` says of `key` ([`Source::key_policy`]): the default for a
    /// namespace without a source, a directory, or a source that cannot be built.
    fn policy(&self, ns: &Namespace, key: &Key) -> KeyPolicy {
        match ns.source.as_deref() {
            Some(url) if ns.dir_root().is_none() => {
                self.sources.for_url(url, &ns.options).map(|s| s.key_policy(key)).unwrap_or_default()
            }
            _ => KeyPolicy::default(),
        }
    }

    /// One pass of the read path. Returns `Ok(None)` if and only if another flight (in this process
    /// or another) stored the entry after this pass looked in the index, or the namespace moved
    /// to another storage place; the caller looks again.
    async fn read_entry_once(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        key: &str,
        intent: &Intent,
        seen: Seen,
    ) -> Result<Option<Read>, Error> {
        let t0 = seen.t0;
        let namespace = ns.name.as_str();
        let key = Key::new(key)?;
        let ns_id = ns.id;
        let store = self.stores.of(ns).await?;
        let entry = match seen.hot.filter(|h| h.ns.id == ns_id) {
            Some(h) => Some(Arc::clone(&h.entry)),
            None => {
                let k = key.clone();
                let found = self.ix.run(move |ix| ix.get_entry(ns_id, &k)).await?.map(Arc::new);
                if let Some(e) = found.as_ref().filter(|e| e.md5.is_some()) {
                    let fresh_until_ms = self.fresh_until(ns, e);
                    let hot = HotEntry { ns: Arc::clone(ns), entry: Arc::clone(e), held: None, fresh_until_ms };
                    self.memory.put_entry(hot, seen.epoch).await;
                }
                found
            }
        };

        let mut validators = None;
        let had_entry = entry.is_some();
        if let Some(entry) = entry {
            let is_fresh = self.is_fresh(ns, &entry);
            if let Some((file, fs_meta)) = self.stores.open_blob(&store, &entry.digest)? {
                let size = fs_meta.len();
                if is_fresh {
                    let keep = Some((ns, seen.epoch));
                    return self.serve_entry_from_disk(&store, entry, file, size, t0, "hit", keep).await.map(Some);
                }
                validators = Some(entry.validators.clone()).filter(|v| !v.is_empty());
                if validators.is_some() {
                    // Stale: ask the source whether our copy is still current.
                    let source = self.source_of(ns, &key)?;
                    let stale_on_error = source.key_policy(&key).stale_on_error;
                    match self.join_flight(ns, &key, &store, source, validators.clone(), t0).await {
                        Ok(FlightOutcome::NotModified) => {
                            let read = self.serve_entry_from_disk(&store, entry, file, size, t0, "revalidated", None);
                            return read.await.map(Some);
                        }
                        Ok(FlightOutcome::Read(read)) => return Ok(Some(with_range(*read, intent).await)),
                        // The source is down: the copy it last confirmed is served, as its key's
                        // policy allows (a registry's tag).
                        Err(Error::Source(e)) if stale_on_error && is_unavailable(&e) => {
                            tracing::info!(namespace, %key, error = %e, "source unavailable; serving the stored copy");
                            metrics::counter!(telemetry::STALE_SERVED).increment(1);
                            let read = self.serve_entry_from_disk(&store, entry, file, size, t0, "stale", None);
                            return read.await.map(Some);
                        }
                        Err(e) => return Err(e),
                    }
                }
            } else if is_fresh
                && store.is_managed()
                && let Some(hit) = self.read_shared(entry.digest, intent, false).await?
            {
                return Ok(Some(self.entry_read(entry, Tier::Shared, hit.size_bytes, hit.body, true)));
            } else if !is_fresh && let Some(read) = self.revalidate_shared(ns, &key, &store, &entry, intent, t0).await?
            {
                return Ok(Some(read));
            } else if self.has_moved(ns).await? {
                return Ok(None);
            } else {
                tracing::debug!(namespace, %key, digest = %entry.digest, "entry's blob is gone from its store; refetching");
            }
        }
        // An entry this node has never seen: the shared tier's record of it, if any, becomes this
        // node's row, and the next pass serves it (`read/records.rs`).
        if !had_entry && self.adopt_record(ns, &key).await? {
            return Ok(None);
        }
        let source = self.source_of(ns, &key)?;
        // A key naming its bytes by digest is served from those bytes wherever the cache holds
        // them (stored for another key or namespace, or in the shared tier), without a fetch.
        if let Some(digest) = source.key_policy(&key).digest
            && store.is_managed()
        {
            if self.stores.managed().disk.contains(&digest)
                && self.name_present_blob((ns.id, &ns.name), &key, digest).await?
            {
                return Ok(None);
            }
            // The shared tier's copy fills the disk tier as it is read; the next read names it.
            if let Some(hit) = self.read_shared(digest, intent, false).await? {
                return Ok(Some(Read {
                    meta: blob_meta(Tier::Shared, &digest, hit.size_bytes, None),
                    body: hit.body,
                    hold: Some(Hold::new(&self.stores.managed().quota, Some(digest), Some(ns.id))),
                }));
            }
        }
        metrics::counter!(telemetry::READS, "tier" => "disk", "outcome" => "miss").increment(1);
        if *intent == Intent::Headers {
            match self.head_from_source(Arc::clone(&source), key.clone(), t0).await {
                // A source that does not answer HEAD is fetched from, as for a GET.
                Err(Error::Source(SourceError::Status { status: 405 | 501, .. })) => {}
                answer => return answer.map(Some),
            }
        }
        match self.join_flight(ns, &key, &store, source, validators, t0).await? {
            FlightOutcome::Read(read) => Ok(Some(with_range(*read, intent).await)),
            // An unconditional fetch ends "not modified" only when it found the entry stored by
            // another flight (here or in another process) after this reader looked.
            FlightOutcome::NotModified => Ok(None),
        }
    }

    /// Writes entry `key` of `ns` naming blob `digest` if the disk tier holds it; `true` if it
    /// did (the caller looks again and serves it from there).
    async fn name_present_blob(
        &self,
        (ns_id, namespace): (i64, &str),
        key: &Key,
        digest: Digest,
    ) -> Result<bool, Error> {
        let entry = NewEntry {
            ns_id,
            key: key.to_string(),
            validators: Validators { etag: Some(digest.to_string()), last_modified: None },
            etag: Some(digest.to_string()),
            ..NewEntry::default()
        };
        let named = self.ix.run(move |ix| ix.name_present_blob(&digest, &entry, now_ms())).await?;
        if named {
            self.memory.forget_entry(namespace, key.as_str().as_bytes()).await;
        }
        Ok(named)
    }

    /// A HEAD of an entry no tier holds, answered from the source's own HEAD (size, content type,
    /// validators, `Content-Encoding`): nothing is downloaded or stored. Should the body be read
    /// after all, it comes from the source by a request of its own, still not stored.
    ///
    /// The HEAD takes a fetch slot, as a fetch does: HEADs count against the source's share.
    async fn head_from_source(&self, source: Arc<dyn Source>, key: Key, t0: Instant) -> Result<Read, Error> {
        let meta = {
            let _slot = self.fetch_slots.take(&source.describe()).await?;
            source.head(&key).await?
        };
        served(Tier::Source, "head", t0, 0, || key.to_string());
        let body = Body::PassThrough { source, key, body: None };
        Ok(Read { meta: fetch::source_read_meta(&meta, None), body, hold: None })
    }

    /// Whether namespace `ns` keeps its blobs somewhere else now than when it was looked up.
    async fn has_moved(self: &Arc<Self>, ns: &Namespace) -> Result<bool, Error> {
        match self.namespaces.fresh(&ns.name).await {
            Ok(now) => Ok(now.id == ns.id && now.options.storage != ns.options.storage),
            Err(Error::NoNamespace(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The namespace's source, or [`Error::NoEntry`] if it has none (nothing to fetch `key` from).
    /// A source its definition accepted but these settings refuse (a metadata address allowed then
    /// and no longer) is the source's failure, not the request's: [`SourceError::AddressRefused`].
    fn source_of(&self, ns: &Namespace, key: &Key) -> Result<Arc<dyn Source>, Error> {
        match ns.source.as_deref() {
            Some(url) => self.sources.for_url(url, &ns.options).map_err(|e| match e {
                Error::Invalid(reason) => {
                    Error::Source(SourceError::AddressRefused { url: tiercache_core::redact_url(url).into(), reason })
                }
                e => e,
            }),
            None => Err(Error::NoEntry { namespace: ns.name.clone(), key: key.to_string() }),
        }
    }

    /// A read of `entry` from the disk tier (or `store`). A small blob is read whole; with `keep`
    /// (the namespace, and the lookup epoch taken before the entry was looked up), the entry is
    /// kept in the memory tier with the blob's bytes, so that its next read is one lookup.
    #[allow(clippy::too_many_arguments)] // One call per outcome; a struct would only rename them.
    async fn serve_entry_from_disk(
        self: &Arc<Self>,
        store: &Store,
        entry: Arc<Entry>,
        file: std::fs::File,
        size: u64,
        t0: Instant,
        outcome: &'static str,
        keep: Option<(&Arc<Namespace>, u64)>,
    ) -> Result<Read, Error> {
        if entry.md5.is_none() {
            // Never waited for: until its pass (started with the store, or now) records it, the
            // entry is served with its source's ETag as a weak one, or none (`entry_meta`), and
            // is not kept in the memory tier.
            self.stores.want_md5(entry.digest, &store.disk);
        }
        served(Tier::Disk, outcome, t0, size, || entry.key.clone());
        let body = match self.small_blob(&file, size) {
            Some(bytes) => {
                if let Some((ns, epoch)) = keep
                    && entry.md5.is_some()
                {
                    let meta = ReadMeta { memo: Some(Memo::default()), ..entry_meta(&entry, Tier::Memory, size) };
                    let meta = meta.with_shared_texts();
                    let held = (bytes.clone(), meta);
                    let fresh_until_ms = self.fresh_until(ns, &entry);
                    let hot =
                        HotEntry { ns: Arc::clone(ns), entry: Arc::clone(&entry), held: Some(held), fresh_until_ms };
                    self.memory.put_entry(hot, epoch).await;
                }
                Body::Memory(bytes)
            }
            None => Body::File { file: Arc::new(file), size_bytes: size },
        };
        Ok(self.entry_read(entry, Tier::Disk, size, body, true))
    }

    /// A read of `entry` whose blob `tier` serves through `body`; records the access. With
    /// `is_held`, the blob and namespace count as in use until the body is dropped.
    fn entry_read(&self, entry: Arc<Entry>, tier: Tier, size: u64, body: Body, is_held: bool) -> Read {
        self.access.note(Some((entry.ns_id, entry.key.clone())), entry.digest, now_ms());
        let hold = is_held.then(|| Hold::new(&self.stores.managed().quota, Some(entry.digest), Some(entry.ns_id)));
        Read { meta: entry_meta(&entry, tier, size), body, hold }
    }
}

/// What a read looked up before its pass over the index: the memory tier's entry (without the
/// blob's bytes, or stale), the lookup epoch taken before it, and when the read began.
struct Seen {
    hot: Option<Arc<HotEntry>>,
    epoch: u64,
    t0: Instant,
}

/// Whether `e` says the source could not answer (down, timed out, failing), rather than that it
/// answered something else: what a key's `stale_on_error` serves its stored copy through.
fn is_unavailable(e: &SourceError) -> bool {
    match e {
        SourceError::Timeout { .. } | SourceError::Transport { .. } => true,
        SourceError::Status { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

/// `read` from a fetch, for a reader that wants `intent` of it: a range of a body whose length
/// the source did not say waits for its bytes ([`Read::await_range`]), so that it is answered
/// with exactly that range.
async fn with_range(mut read: Read, intent: &Intent) -> Read {
    if let Intent::Range(range) = intent {
        read.await_range(range).await;
    }
    read
}

/// Headers' facts of a read of `entry` (whose blob has `size` bytes) from `tier`.
fn entry_meta(entry: &Entry, tier: Tier, size: u64) -> ReadMeta {
    let last_modified =
        entry.validators.last_modified.clone().unwrap_or_else(|| {
            http_date(SystemTime::UNIX_EPOCH + Duration::from_millis(entry.created_at.max(0) as u64))
        });
    ReadMeta {
        tier,
        size_bytes: Some(size),
        etag: match &entry.md5 {
            Some(md5) => Some(format!("\"{md5}\"").into()),
            None => entry.validators.etag.as_deref().and_then(weak_etag),
        },
        content_type: entry.content_type.clone().map(Text::from),
        last_modified: Some(last_modified.into()),
        digest: Some(entry.digest),
        content_encoding: entry.content_encoding.clone().map(Text::from),
        memo: None,
    }
}

/// The source's ETag `etag` as a weak one (`W/"…"`), for an entry whose MD5 is not known yet: it
/// names the same bytes (the source's, as stored), but the ETag changes to the MD5 once that is
/// known, so it is offered only for weak comparison (`If-None-Match`), never for `If-Match` or
/// `If-Range`. `None` if it is not a well-formed entity tag.
fn weak_etag(etag: &str) -> Option<Text> {
    let opaque = etag.strip_prefix("W/").unwrap_or(etag);
    let inner = opaque.strip_prefix('"')?.strip_suffix('"')?;
    // etagc (RFC 9110 §8.8.3): no quote, space or control character inside.
    let is_etagc = |b: u8| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80;
    inner.bytes().all(is_etagc).then(|| format!("W/{opaque}").into())
}

/// Headers' facts of a blob read by digest.
fn blob_meta(tier: Tier, digest: &Digest, size: u64, last_modified: Option<Text>) -> ReadMeta {
    ReadMeta {
        tier,
        size_bytes: Some(size),
        etag: Some(format!("\"{digest}\"").into()),
        content_type: Some("application/octet-stream".into()),
        last_modified,
        digest: Some(*digest),
        content_encoding: None,
        memo: None,
    }
}
