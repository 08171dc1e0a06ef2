//! The read path (SPEC.md): resolve to a digest through the index, try the disk tier, and on a
//! miss fetch from the source once, streaming to every waiting reader while the bytes are hashed,
//! written, verified and published. Also blob uploads, which take the same write path.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tiercache_core::{Digest, Key, Validators, now_ms};
use tiercache_index::{Entry, NewEntry};
use tiercache_sources::{FetchRequest, Fetched, Source};
use tokio::sync::watch;

use crate::body::{Body, Memo, Read, ReadMeta, Text, Tier};
use crate::cache::Origin;
use crate::flight::{Failure, Phase, PhaseSender, SpoolError, Spooled, Started, progress, spool, spool_or_overflow};
use crate::memory::HotEntry;
use crate::quota::Hold;
use crate::shared_read::Intent;
use crate::{Cache, Error, telemetry};

impl Cache {
    /// Reads a blob by digest from the disk tier, else the shared tier.
    ///
    /// Fails with [`Error::NoBlob`] if neither holds it.
    pub async fn read_blob(&self, digest: &Digest) -> Result<Read, Error> {
        self.read_blob_with(digest, Intent::Whole).await
    }

    /// [`Cache::read_blob`] for a reader that will want `intent` of it, so that a shared-tier hit
    /// verifies those bytes before answering.
    pub async fn read_blob_with(&self, digest: &Digest, intent: Intent) -> Result<Read, Error> {
        let t0 = Instant::now();
        if let Some(blob) = self.inner.memory.blob(digest).await {
            self.inner.access.note(None, *digest, now_ms());
            let size = blob.bytes.len() as u64;
            served(Tier::Memory, "hit", t0, size, || format!("{digest}"));
            let meta = blob_meta(Tier::Memory, digest, size, blob.last_modified);
            return Ok(Read { meta, body: Body::Memory(blob.bytes), hold: None });
        }
        // Boxed, as for entries: the memory-tier hit's future stays small.
        Box::pin(self.read_blob_past_memory(digest, intent, t0)).await
    }

    /// [`Cache::read_blob_with`] once the memory tier could not answer.
    async fn read_blob_past_memory(&self, digest: &Digest, intent: Intent, t0: Instant) -> Result<Read, Error> {
        // A small, page-cached open and fstat: cheaper inline than a hop to a blocking thread.
        let opened = self.inner.disk.open_blob(digest)?;
        let Some((file, fs_meta)) = opened else {
            metrics::counter!(telemetry::READS, "tier" => "disk", "outcome" => "miss").increment(1);
            tracing::debug!(%digest, tier = "disk", outcome = "miss", "read blob");
            let Some(hit) = self.read_shared(*digest, &intent, true).await? else {
                return Err(Error::NoBlob(*digest));
            };
            return Ok(Read {
                meta: blob_meta(Tier::Shared, digest, hit.size_bytes, None),
                body: hit.body,
                hold: Some(Hold::new(&self.inner.quota, Some(*digest), None)),
            });
        };
        let (size, last_modified) = (fs_meta.len(), fs_meta.modified().ok().map(|t| http_date(t).into()));
        self.inner.access.note(None, *digest, now_ms());
        served(Tier::Disk, "hit", t0, size, || format!("{digest}"));
        let body = self.disk_body(*digest, file, size).await;
        Ok(Read {
            meta: blob_meta(Tier::Disk, digest, size, last_modified),
            body,
            hold: Some(Hold::new(&self.inner.quota, Some(*digest), None)),
        })
    }

    /// The body of a disk hit by digest: a small blob is read whole and kept in the memory tier,
    /// so the next read of it touches neither the index nor the disk.
    async fn disk_body(&self, digest: Digest, file: std::fs::File, size: u64) -> Body {
        if let Some(bytes) = self.small_blob(&file, size) {
            let last_modified = file.metadata().and_then(|m| m.modified()).ok().map(|t| http_date(t).into());
            let blob = crate::memory::MemoryBlob { bytes: bytes.clone(), last_modified };
            self.inner.memory.put_blob(digest, blob).await;
            return Body::Memory(bytes);
        }
        Body::File { file: Arc::new(file), size_bytes: size }
    }

    /// The whole of an open blob of `size` bytes, if the memory tier takes blobs that small.
    fn small_blob(&self, file: &std::fs::File, size: u64) -> Option<Bytes> {
        if !self.inner.memory.takes_blob(size) {
            return None;
        }
        crate::body::read_chunk(file, 0, size).ok()
    }

    /// Reads entry `key` of `namespace`: from the disk tier if the index has it and it is fresh,
    /// after a conditional request to the source if it is stale, and from the source (once,
    /// however many readers ask) if it is missing.
    ///
    /// For a directory namespace, the file is served in place after its change markers are
    /// checked (see `directory/read.rs`).
    pub async fn read_entry(&self, namespace: &str, key: &str) -> Result<Read, Error> {
        self.read_entry_raw(namespace, key.as_bytes()).await
    }

    /// [`Cache::read_entry`] with the key as raw bytes: a directory's file names need not be
    /// UTF-8 (other namespaces' keys must be).
    pub async fn read_entry_raw(&self, namespace: &str, key: &[u8]) -> Result<Read, Error> {
        self.read_entry_with(namespace, key, Intent::Whole).await
    }

    /// [`Cache::read_entry_raw`] for a reader that will want `intent` of it, so that a shared-tier
    /// hit verifies those bytes before answering.
    pub async fn read_entry_with(&self, namespace: &str, key: &[u8], intent: Intent) -> Result<Read, Error> {
        let t0 = Instant::now();
        self.check_lookup_generation();
        // A hot entry is answered by this one lookup; a lookup that finds the row without the
        // blob's bytes saves the namespace and index lookups.
        let epoch = self.inner.memory.epoch();
        let hot = match std::str::from_utf8(key) {
            Ok(k) => self.inner.memory.entry(namespace, k).await,
            Err(_) => None,
        };
        if let Some(read) = hot.as_ref().and_then(|h| self.read_held(h, t0)) {
            return Ok(read);
        }
        // Boxed, so that the hot path's future (which every read's future embeds and callers
        // move around) stays small.
        Box::pin(self.read_entry_past_memory(namespace, key, intent, hot, epoch, t0)).await
    }

    /// [`Cache::read_entry_with`] once the memory tier could not answer: `hot` is the entry's
    /// row from the memory tier, if it had one (without the bytes, or due for revalidation),
    /// and `epoch` the lookup epoch taken before that lookup.
    async fn read_entry_past_memory(
        &self,
        namespace: &str,
        key: &[u8],
        intent: Intent,
        mut hot: Option<Arc<HotEntry>>,
        epoch: u64,
        t0: Instant,
    ) -> Result<Read, Error> {
        let mut ns = match &hot {
            Some(h) => Arc::clone(&h.ns),
            None => self.namespace_row(namespace).await?,
        };
        if let Some(src) = self.dir_source(&ns) {
            return self.read_dir_entry(ns, src, tiercache_core::RelPath::new(key.to_vec())?).await;
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
                epoch = self.inner.memory.epoch();
                self.inner.memory.forget_namespace(&ns.name).await;
                ns = Arc::new(self.namespace_fresh(&ns.name).await?);
            }
            let seen = Seen { hot: hot.take(), epoch, t0 };
            if let Some(read) = self.read_entry_once(&ns, key, &intent, seen).await? {
                return Ok(read);
            }
        }
        Err(Error::Io(format!("entry {namespace}/{key} kept changing while it was read; try again")))
    }

    /// A read of hot entry `hot` from the memory tier, if it holds the blob's bytes and the entry
    /// needs no revalidation.
    fn read_held(&self, hot: &Arc<HotEntry>, t0: Instant) -> Option<Read> {
        let (bytes, meta) = hot.held.as_ref()?;
        let now = now_ms();
        if now >= hot.fresh_until_ms {
            return None;
        }
        self.inner.access.note_hot(hot, now);
        served(Tier::Memory, "hit", t0, bytes.len() as u64, || hot.entry.key.clone());
        Some(Read { meta: meta.clone(), body: Body::Memory(bytes.clone()), hold: None })
    }

    /// Whether `entry` of `ns` may be served without asking its source.
    fn is_fresh(&self, ns: &tiercache_index::Namespace, entry: &Entry) -> bool {
        now_ms() < self.fresh_until(ns, entry)
    }

    /// Until when (ms since the epoch, exclusive) `entry` of `ns` may be served without asking its
    /// source: always for a namespace without one, never with a `revalidate_after` of zero, else
    /// for `revalidate_after` after the entry was last validated.
    pub(crate) fn fresh_until(&self, ns: &tiercache_index::Namespace, entry: &Entry) -> i64 {
        let after = self.inner.config.revalidate_after;
        if ns.source.is_none() {
            i64::MAX
        } else if after.is_zero() {
            i64::MIN
        } else {
            entry.validated_at.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
        }
    }

    /// One pass of the read path. Returns `Ok(None)` if and only if another flight (in this process
    /// or another) stored the entry after this pass looked in the index, or the namespace moved
    /// to another storage place; the caller looks again.
    async fn read_entry_once(
        &self,
        ns: &Arc<tiercache_index::Namespace>,
        key: &str,
        intent: &Intent,
        seen: Seen,
    ) -> Result<Option<Read>, Error> {
        let t0 = seen.t0;
        let namespace = ns.name.as_str();
        let key = Key::new(key)?;
        let ns_id = ns.id;
        let store = self.store_of(ns).await?;
        let entry = match seen.hot.filter(|h| h.ns.id == ns_id) {
            Some(h) => Some(Arc::clone(&h.entry)),
            None => {
                let k = key.clone();
                let found = self.ix(move |ix| ix.get_entry(ns_id, &k)).await?.map(Arc::new);
                if let Some(e) = found.as_ref().filter(|e| e.md5.is_some()) {
                    let fresh_until_ms = self.fresh_until(ns, e);
                    let hot = HotEntry { ns: Arc::clone(ns), entry: Arc::clone(e), held: None, fresh_until_ms };
                    self.inner.memory.put_entry(hot, seen.epoch).await;
                }
                found
            }
        };

        let mut validators = None;
        if let Some(entry) = entry {
            let is_fresh = self.is_fresh(ns, &entry);
            if let Some((file, fs_meta)) = self.open_in(&store, &entry.digest)? {
                let size = fs_meta.len();
                if is_fresh {
                    let keep = Some((ns, seen.epoch));
                    return self.serve_entry_from_disk(&store, entry, file, size, t0, "hit", keep).await.map(Some);
                }
                validators = Some(entry.validators.clone()).filter(|v| !v.is_empty());
                if validators.is_some() {
                    // Stale: ask the source whether our copy is still current.
                    let source = self.source_of(ns, &key)?;
                    match self.join_flight(ns, &key, &store, source, validators.clone(), t0).await? {
                        FlightOutcome::NotModified => {
                            let read = self.serve_entry_from_disk(&store, entry, file, size, t0, "revalidated", None);
                            return read.await.map(Some);
                        }
                        FlightOutcome::Read(read) => return Ok(Some(*read)),
                    }
                }
            } else if is_fresh
                && store.is_managed()
                && let Some(hit) = self.read_shared(entry.digest, intent, false).await?
            {
                return Ok(Some(self.entry_read(entry, Tier::Shared, hit.size_bytes, hit.body, true)));
            } else if self.has_moved(ns).await? {
                return Ok(None);
            } else {
                tracing::debug!(namespace, %key, digest = %entry.digest, "entry's blob is gone from its store; refetching");
            }
        }
        metrics::counter!(telemetry::READS, "tier" => "disk", "outcome" => "miss").increment(1);
        let source = self.source_of(ns, &key)?;
        match self.join_flight(ns, &key, &store, source, validators, t0).await? {
            FlightOutcome::Read(read) => Ok(Some(*read)),
            // An unconditional fetch ends "not modified" only when it found the entry stored by
            // another flight (here or in another process) after this reader looked.
            FlightOutcome::NotModified => Ok(None),
        }
    }

    /// Whether namespace `ns` keeps its blobs somewhere else now than when it was looked up.
    async fn has_moved(&self, ns: &tiercache_index::Namespace) -> Result<bool, Error> {
        match self.namespace_fresh(&ns.name).await {
            Ok(now) => Ok(now.id == ns.id && now.options.storage != ns.options.storage),
            Err(Error::NoNamespace(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The namespace's source, or [`Error::NoEntry`] if it has none (nothing to fetch `key` from).
    fn source_of(&self, ns: &tiercache_index::Namespace, key: &Key) -> Result<Arc<dyn Source>, Error> {
        match ns.source.as_deref() {
            Some(url) => self.source_for(url),
            None => Err(Error::NoEntry { namespace: ns.name.clone(), key: key.to_string() }),
        }
    }

    /// A read of `entry` from the disk tier (or `store`). A small blob is read whole; with `keep`
    /// (the namespace, and the lookup epoch taken before the entry was looked up), the entry is
    /// kept in the memory tier with the blob's bytes, so that its next read is one lookup.
    #[allow(clippy::too_many_arguments)] // One call per outcome; a struct would only rename them.
    async fn serve_entry_from_disk(
        &self,
        store: &crate::storage::Store,
        entry: Arc<Entry>,
        file: std::fs::File,
        size: u64,
        t0: Instant,
        outcome: &'static str,
        keep: Option<(&Arc<tiercache_index::Namespace>, u64)>,
    ) -> Result<Read, Error> {
        let entry = match entry.md5 {
            Some(_) => entry,
            // The MD5 is computed from the blob's path: a blob evicted since this reader opened
            // it is still served (from the open file), only without an ETag this once.
            None => match self.md5_in(entry.digest, &store.disk).await {
                Ok(md5) => Arc::new(Entry { md5: Some(md5), ..(*entry).clone() }),
                Err(e) => {
                    tracing::debug!(digest = %entry.digest, error = %e, "no MD5 for a blob read as it was evicted");
                    entry
                }
            },
        };
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
                    self.inner.memory.put_entry(hot, epoch).await;
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
        self.inner.access.note(Some((entry.ns_id, entry.key.clone())), entry.digest, now_ms());
        let hold = is_held.then(|| Hold::new(&self.inner.quota, Some(entry.digest), Some(entry.ns_id)));
        Read { meta: entry_meta(&entry, tier, size), body, hold }
    }

    /// Joins the flight for `(ns_id, key)`, starting it if there is none under way, and waits
    /// until the source has answered (headers only: the body streams afterwards).
    async fn join_flight(
        &self,
        ns: &tiercache_index::Namespace,
        key: &Key,
        store: &Arc<crate::storage::Store>,
        source: Arc<dyn Source>,
        validators: Option<Validators>,
        t0: Instant,
    ) -> Result<FlightOutcome, Error> {
        let ns_id = ns.id;
        let mut rx = {
            let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
            let joinable = flights.get(&(ns_id, key.clone())).filter(|rx| match &*rx.borrow() {
                Phase::Waiting | Phase::Streaming { .. } => true,
                // A finished flight's entry is in the index now (or was removed since): a reader
                // who missed it starts a new flight, which looks in the index before fetching.
                Phase::Done { .. }
                | Phase::NotModified
                | Phase::PassThrough { .. }
                | Phase::Overflow { .. }
                | Phase::Failed(_) => false,
            });
            match joinable {
                Some(rx) => {
                    metrics::counter!(telemetry::COALESCED).increment(1);
                    rx.clone()
                }
                None => {
                    let (tx, rx) = watch::channel(Phase::Waiting);
                    flights.insert((ns_id, key.clone()), rx.clone());
                    let cache = self.clone();
                    let (key, source, store) = (key.clone(), Arc::clone(&source), Arc::clone(store));
                    let namespace = ns.name.clone();
                    let tasks = &self.inner.flight_tasks;
                    tasks.spawn(async move {
                        let tx = Arc::new(tx);
                        cache.run_flight((ns_id, &namespace), key, &store, source, validators, tx).await;
                    });
                    rx
                }
            }
        };
        let phase = rx.wait_for(|p| !matches!(p, Phase::Waiting)).await.map(|p| p.clone());
        let phase = phase.map_err(|_| Error::Io("fetch task ended without a result".into()))?;
        let hold = Some(Hold::new(&self.inner.quota, None, Some(ns_id)));
        match phase {
            Phase::NotModified => Ok(FlightOutcome::NotModified),
            Phase::Failed(f) => Err(f.into()),
            Phase::PassThrough { meta: m, body } => {
                served(Tier::Source, "pass_through", t0, m.size_bytes.unwrap_or(0), || key.to_string());
                Ok(FlightOutcome::Read(Box::new(Read {
                    meta: source_read_meta(&m, None),
                    body: Body::PassThrough { source, key: key.clone(), body: body.take() },
                    hold,
                })))
            }
            Phase::Streaming { started, .. } | Phase::Done { started, .. } | Phase::Overflow { started, .. } => {
                let m = &started.meta;
                served(Tier::Source, "fetch", t0, m.size_bytes.unwrap_or(0), || key.to_string());
                let digest = match &*rx.borrow() {
                    Phase::Done { digest, .. } => Some(*digest),
                    _ => None,
                };
                Ok(FlightOutcome::Read(Box::new(Read {
                    meta: source_read_meta(m, digest),
                    body: Body::Flight { rx, source, key: key.clone() },
                    hold,
                })))
            }
            Phase::Waiting => unreachable!("waited for a phase past Waiting"),
        }
    }

    /// The fetch task of one flight: the only writer of its phase.
    async fn run_flight(
        &self,
        (ns_id, namespace): (i64, &str),
        key: Key,
        store: &crate::storage::Store,
        source: Arc<dyn Source>,
        validators: Option<Validators>,
        tx: PhaseSender,
    ) {
        let outcome = {
            let _permit = self.inner.fetch_permits.acquire().await;
            metrics::gauge!(telemetry::INFLIGHT).increment(1.0);
            let outcome = self.fetch_into_disk((ns_id, namespace), &key, store, source.as_ref(), validators, &tx).await;
            metrics::gauge!(telemetry::INFLIGHT).decrement(1.0);
            outcome
        };
        let result = match outcome {
            Ok(FetchEnd::NotModified) => "not_modified",
            Ok(FetchEnd::PassThrough) => "pass_through",
            Ok(FetchEnd::Stored) => "ok",
            Err(_) => "error",
        };
        metrics::counter!(telemetry::SOURCE_FETCHES, "result" => result).increment(1);
        match outcome {
            Ok(_) => self.forget_flight(ns_id, &key, &tx),
            Err(failure) => {
                let e = Error::from(failure.clone());
                tracing::warn!(%key, error = %e, "source fetch failed; nothing stored");
                telemetry::error(&e);
                self.forget_flight(ns_id, &key, &tx);
                tx.send_replace(Phase::Failed(failure));
            }
        }
    }

    fn forget_flight(&self, ns_id: i64, key: &Key, tx: &PhaseSender) {
        let mut flights = self.inner.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(&(ns_id, key.clone())).is_some_and(|rx| rx.same_channel(&tx.subscribe())) {
            flights.remove(&(ns_id, key.clone()));
        }
    }

    async fn fetch_into_disk(
        &self,
        (ns_id, namespace): (i64, &str),
        key: &Key,
        store: &crate::storage::Store,
        source: &dyn Source,
        validators: Option<Validators>,
        tx: &PhaseSender,
    ) -> Result<FetchEnd, Failure> {
        // One unconditional fetch per entry at a time, across processes sharing the data directory
        // too. Under the lock, look in the index once more: a flight that finished after this
        // reader looked (here, or in another process that held the lock) has stored the entry.
        let _lock = if validators.is_none() {
            let name = Digest::of(format!("{ns_id}/{key}").as_bytes()).hex();
            let (lock, _waited) = self.blocking(move |disk| disk.lock(&name)).await?;
            if self.entry_on_disk(ns_id, key, store).await? {
                tx.send_replace(Phase::NotModified);
                return Ok(FetchEnd::NotModified);
            }
            Some(lock)
        } else {
            None
        };
        let req = FetchRequest { range: None, validators };
        let body = match source.fetch(key, &req).await.map_err(Failure::Source)? {
            Fetched::NotModified => {
                let k = key.clone();
                self.ix(move |ix| ix.mark_validated(ns_id, &k, now_ms())).await?;
                self.inner.memory.forget_entry(namespace, key.as_str()).await;
                tx.send_replace(Phase::NotModified);
                return Ok(FetchEnd::NotModified);
            }
            Fetched::Body(body) => body,
        };
        // Room in the disk quota first: for the whole body if its length is known, else for a
        // first step (the spool reserves more as it grows). No room: every reader reads from the
        // source directly, and nothing is stored.
        let first = body.meta.size_bytes.unwrap_or(crate::flight::RESERVE_STEP_BYTES);
        let reservation = match self.reserve_in(store, first).await {
            Ok(r) => r,
            Err(no_room) => {
                tracing::info!(%key, reason = %no_room.reason, "served pass-through, not stored");
                store.quota.passed_through(&no_room.reason);
                let hand_off = crate::flight::HandOff::new(body.stream);
                tx.send_replace(Phase::PassThrough { meta: Arc::new(body.meta), body: hand_off });
                return Ok(FetchEnd::PassThrough);
            }
        };
        let temp = store.disk.create_temp().map_err(Error::from)?;
        let started = Arc::new(Started { meta: body.meta.clone(), file: temp.reader() });
        tx.send_replace(Phase::Streaming { started: Arc::clone(&started), written: 0 });
        let spooled = spool_or_overflow(temp, reservation, body.stream, progress(tx)).await.map_err(|e| match e {
            SpoolError::Body(e) => Failure::Source(e),
            SpoolError::Local(e) => Failure::from(e),
        })?;
        let finished = match spooled {
            Spooled::Stored(finished, reservation) => (finished, reservation),
            Spooled::Overflow { reason, written, rest, body } => {
                // A body of unknown length outgrew the quota: its readers go on with the rest of
                // the source's body, and nothing is stored.
                tracing::info!(%key, written, reason = %reason, "served pass-through after the quota filled, not stored");
                store.quota.passed_through(&reason);
                let rest = futures::stream::iter(rest.into_iter().map(Ok)).chain(body).boxed();
                let rest = crate::flight::HandOff::new(rest);
                tx.send_replace(Phase::Overflow { started, written, rest });
                return Ok(FetchEnd::PassThrough);
            }
        };
        let written = finished.0.size_bytes;
        let entry = NewEntry {
            ns_id,
            key: key.to_string(),
            content_type: body.meta.content_type.clone(),
            validators: body.meta.validators.clone(),
        };
        let digest = self.store_finished_in(store, finished, Some((namespace, entry)), Origin::Fetch).await?;
        tx.send_replace(Phase::Done { started, written, digest });
        Ok(FetchEnd::Stored)
    }

    /// Whether the index has entry `(ns_id, key)` and `store` its blob.
    async fn entry_on_disk(&self, ns_id: i64, key: &Key, store: &crate::storage::Store) -> Result<bool, Error> {
        let k = key.clone();
        let entry = self.ix(move |ix| ix.get_entry(ns_id, &k)).await?;
        Ok(entry.is_some_and(|e| store.disk.contains(&e.digest)))
    }

    /// Stores an uploaded blob: streams `body` to a temp file while hashing, and publishes it only
    /// if it hashes to `expected`. Uploaded blobs are retained even when no entry references them.
    ///
    /// Returns `true` if the blob is new, `false` if it was already held.
    pub async fn put_blob<E: std::fmt::Display + Send + 'static>(
        &self,
        expected: &Digest,
        body: impl Stream<Item = Result<Bytes, E>> + Send,
    ) -> Result<bool, Error> {
        let existed = self.inner.disk.contains(expected);
        let (temp, reservation) = self.create_temp(None).await?;
        let finished = spool(temp, reservation, body, |_| {}).await.map_err(|e| match e {
            SpoolError::Body(e) => Error::Io(format!("upload body failed: {e}")),
            SpoolError::Local(e) => e,
        })?;
        if finished.0.digest != *expected {
            let e = Error::DigestMismatch { expected: *expected, actual: finished.0.digest };
            telemetry::error(&e);
            return Err(e);
        }
        self.store_finished(finished, true, None, Origin::Upload).await?;
        Ok(!existed)
    }
}

/// What a read looked up before its pass over the index: the memory tier's entry (without the
/// blob's bytes, or stale), the lookup epoch taken before it, and when the read began.
struct Seen {
    hot: Option<Arc<HotEntry>>,
    epoch: u64,
    t0: Instant,
}

enum FlightOutcome {
    NotModified,
    Read(Box<Read>),
}

enum FetchEnd {
    NotModified,
    Stored,
    PassThrough,
}

/// Headers' facts of a read the source answers: what it said about the object.
fn source_read_meta(m: &tiercache_sources::SourceMeta, digest: Option<Digest>) -> ReadMeta {
    ReadMeta {
        tier: Tier::Source,
        size_bytes: m.size_bytes,
        etag: m.validators.etag.clone().map(Text::from),
        content_type: m.content_type.clone().map(Text::from),
        last_modified: m.validators.last_modified.clone().map(Text::from),
        digest,
        memo: None,
    }
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
        etag: entry.md5.as_ref().map(|md5| format!("\"{md5}\"").into()),
        content_type: entry.content_type.clone().map(Text::from),
        last_modified: Some(last_modified.into()),
        digest: Some(entry.digest),
        memo: None,
    }
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
        memo: None,
    }
}

/// Logs and counts one read: which tier served it, how, the bytes and the time.
pub(crate) fn served(tier: Tier, outcome: &'static str, t0: Instant, bytes: u64, what: impl FnOnce() -> String) {
    let tier_name = tier.as_str();
    if let (Some(m), "hit") = (telemetry::hit(tier), outcome) {
        telemetry::count_hit(tier, m);
        if tier != Tier::Memory || telemetry::sample_memory_hit() {
            m.seconds.record(t0.elapsed().as_secs_f64());
        }
    } else {
        metrics::counter!(telemetry::READS, "tier" => tier_name, "outcome" => outcome).increment(1);
        metrics::histogram!(telemetry::READ_SECONDS, "tier" => tier_name).record(t0.elapsed().as_secs_f64());
    }
    tracing::debug!(tier = tier_name, outcome, bytes, elapsed_us = t0.elapsed().as_micros() as u64, what = %what(), "read");
}

pub(crate) fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}
