//! Fetching from the source (layer 3): one flight per missing entry, however many readers wait
//! for it, across the processes sharing a data directory too (the entry's fetch lock), and
//! pass-through when the quota has no room.
//!
//! Invariant: bytes below a flight's `written` are final; a failed flight deletes its temp file
//! and publishes `Failed`, so a reader that already streamed part of a body ends with an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tiercache_core::{Digest, Key, Validators, now_ms};
use tiercache_index::{Namespace, NewEntry};
use tiercache_sources::{FetchRequest, Fetched, Source, SourceBody, SourceError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::Reads;
use crate::Error;
use crate::blocking::blocking;
use crate::body::{Body, Read};
use crate::meta::{ReadMeta, Text, Tier};
use crate::quota::Hold;
use crate::single_flight::Joined;
use crate::spool::{
    HandOff, Phase, PhaseSender, RESERVE_STEP_BYTES, Recent, SpoolError, Spooled, Started, progress, spool_or_overflow,
};
use crate::store::{Origin, Store};
use crate::telemetry::{self, served};

impl Reads {
    /// Joins the flight for `(ns_id, key)`, starting it if there is none under way, and waits
    /// until the source has answered (headers only: the body streams afterwards).
    pub(super) async fn join_flight(
        self: &Arc<Self>,
        ns: &Namespace,
        key: &Key,
        store: &Arc<Store>,
        source: Arc<dyn Source>,
        validators: Option<Validators>,
        t0: Instant,
    ) -> Result<FlightOutcome, Error> {
        let ns_id = ns.id;
        // A key naming its bytes by digest shares one flight with every key of every namespace
        // naming the same digest (a layer shared by images): readers of the others join it, and
        // name the stored bytes on their next read.
        let flight = flight_key(ns_id, key, source.key_policy(key).digest);
        // A finished flight's entry is in the index now (or was removed since): a reader who
        // missed it starts a new flight, which looks in the index before fetching.
        let mut tx = None;
        let joined = self.flights.join(
            flight.clone(),
            |rx| is_running(&rx.borrow()),
            || {
                let (sender, rx) = watch::channel(Phase::Waiting);
                tx = Some(sender);
                rx
            },
        );
        let mut rx = match joined {
            Joined::Running(rx) => {
                metrics::counter!(telemetry::COALESCED).increment(1);
                rx
            }
            Joined::Started(rx) => {
                let tx = Arc::new(tx.expect("a started flight has its sender"));
                let reads = Arc::clone(self);
                let (key, source, store) = (key.clone(), Arc::clone(&source), Arc::clone(store));
                let namespace = ns.name.clone();
                self.tasks.spawn(async move {
                    reads.run_flight((ns_id, &namespace), key, flight, &store, source, validators, tx).await;
                });
                rx
            }
        };
        let phase = rx.wait_for(|p| !matches!(p, Phase::Waiting)).await.map(|p| p.clone());
        let phase =
            phase.map_err(|_| Error::io("fetching", std::io::Error::other("the fetch task ended without a result")))?;
        let hold = Some(Hold::new(&self.stores.managed().quota, None, Some(ns_id)));
        match phase {
            Phase::NotModified => Ok(FlightOutcome::NotModified),
            Phase::Failed(e) => Err(e),
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
    #[allow(clippy::too_many_arguments)] // One caller; a struct would only rename them.
    async fn run_flight(
        self: &Arc<Self>,
        (ns_id, namespace): (i64, &str),
        key: Key,
        flight: (i64, Key),
        store: &Store,
        source: Arc<dyn Source>,
        validators: Option<Validators>,
        tx: PhaseSender,
    ) {
        // Queued for a slot of the source's own share first, then for a global one: the slot is
        // held until the body is stored (or handed to a pass-through reader), and given back
        // when the source has not answered within its timeout.
        let outcome = match self.fetch_slots.take(&source.describe()).await {
            Ok(_slot) => {
                metrics::gauge!(telemetry::INFLIGHT).increment(1.0);
                let outcome =
                    self.fetch_into_disk((ns_id, namespace), &key, store, source.as_ref(), validators, &tx).await;
                metrics::gauge!(telemetry::INFLIGHT).decrement(1.0);
                outcome
            }
            Err(e) => Err(e),
        };
        let result = match outcome {
            Ok(FetchEnd::NotModified) => "not_modified",
            Ok(FetchEnd::PassThrough) => "pass_through",
            Ok(FetchEnd::Stored) => "ok",
            Err(_) => "error",
        };
        metrics::counter!(telemetry::SOURCE_FETCHES, "result" => result).increment(1);
        match outcome {
            Ok(_) => self.forget_flight(&flight, &tx),
            Err(e) => {
                tracing::warn!(%key, error = %e, "source fetch failed; nothing stored");
                telemetry::error(&e);
                self.forget_flight(&flight, &tx);
                tx.send_replace(Phase::Failed(e));
            }
        }
    }

    fn forget_flight(&self, flight: &(i64, Key), tx: &PhaseSender) {
        self.flights.finish(flight, |rx| rx.same_channel(&tx.subscribe()));
    }

    async fn fetch_into_disk(
        self: &Arc<Self>,
        (ns_id, namespace): (i64, &str),
        key: &Key,
        store: &Store,
        source: &dyn Source,
        validators: Option<Validators>,
        tx: &PhaseSender,
    ) -> Result<FetchEnd, Error> {
        // One unconditional fetch per entry at a time, across processes sharing the data directory
        // too. Under the lock, look in the index once more: a flight that finished after this
        // reader looked (here, or in another process that held the lock) has stored the entry.
        let digest = source.key_policy(key).digest;
        let _lock = if validators.is_none() {
            let (lock_ns, lock_key) = flight_key(ns_id, key, digest);
            let name = Digest::of(format!("{lock_ns}/{lock_key}").as_bytes()).hex();
            let disk = self.stores.managed().disk.clone();
            let (lock, _waited) = blocking(move || disk.lock(&name)).await?;
            // Bytes named by digest that another flight stored meanwhile, for any key, are
            // named for this one; its readers look again and find them.
            let is_named = match digest {
                Some(d) if store.is_managed() => self.name_present_blob((ns_id, namespace), key, d).await?,
                _ => false,
            };
            if is_named || self.entry_on_disk(ns_id, key, store).await? {
                tx.send_replace(Phase::NotModified);
                return Ok(FetchEnd::NotModified);
            }
            Some(lock)
        } else {
            None
        };
        let req = FetchRequest { validators, ..FetchRequest::default() };
        // The source's own read timeout covers the wait for headers; this bounds it for any source.
        let wait = self.fetch_slots.wait;
        let answer = tokio::time::timeout(wait, source.fetch(key, &req)).await.map_err(|_| {
            Error::Source(SourceError::Timeout { url: format!("{}{key}", source.describe()), after: wait })
        })?;
        let body = match answer? {
            Fetched::NotModified => {
                let k = key.clone();
                self.ix.run(move |ix| ix.mark_validated(ns_id, &k, now_ms())).await?;
                self.memory.forget_entry(namespace, key.as_str().as_bytes()).await;
                self.record_revalidated(namespace, ns_id, key);
                tx.send_replace(Phase::NotModified);
                return Ok(FetchEnd::NotModified);
            }
            Fetched::Body(body) => body,
        };
        // Bytes a key names by digest are checked before their end is let through: a body that
        // does not match fails the flight, stores nothing, and no reader gets it whole.
        let checked = digest.filter(|_| body.range.is_none());
        let body = match checked {
            Some(digest) => {
                let url = format!("{}{key}", source.describe());
                SourceBody { stream: super::verify::verified(body.stream, digest, url), ..body }
            }
            None => body,
        };
        // Room in the disk quota first: for the whole body if its length is known, else for a
        // first step (the spool reserves more as it grows). No room, or an object larger than
        // the maximum object size: every reader reads from the source directly, and nothing is
        // stored.
        let max = self.stores.max_object_bytes;
        let first = body.meta.size_bytes.unwrap_or(RESERVE_STEP_BYTES.min(max));
        let reserved = match body.meta.size_bytes {
            Some(n) if n > max => Err(format!("{n} bytes is larger than the maximum object size ({max} bytes)")),
            _ => store.reserve(first).await.map_err(|no_room| no_room.reason),
        };
        let reservation = match reserved {
            Ok(r) => r,
            Err(reason) => {
                tracing::info!(%key, %reason, "served pass-through, not stored");
                store.quota.passed_through(&reason);
                let hand_off = HandOff::new(body.stream);
                tx.send_replace(Phase::PassThrough { meta: Arc::new(body.meta), body: hand_off });
                return Ok(FetchEnd::PassThrough);
            }
        };
        let temp = store.disk.create_temp().map_err(|e| Error::io("cannot create a temp file", e))?;
        // Checked on the way in: the temp file need not hash the bytes a second time.
        let temp = match checked {
            Some(digest) => temp.with_checked_digest(digest),
            None => temp,
        };
        let recent = Recent::new(RECENT_BYTES);
        let started =
            Arc::new(Started { meta: body.meta.clone(), file: temp.reader(), recent: Some(Arc::clone(&recent)) });
        tx.send_replace(Phase::Streaming { started: Arc::clone(&started), written: 0 });
        // The MD5 (the entry's ETag) is computed beside the fetch, from the bytes as they are
        // final, at the lowest priority: no reader waits for it.
        // Not for bytes checked against their digest: their entry's ETag is the digest.
        let md5 = match checked {
            Some(_) => None,
            None => self.stores.md5_tail(Arc::clone(&started.file), tx.subscribe()),
        };
        // Fused: when the body fits in the spool's queue, the spool has seen its end before the
        // writer overflows, and the rest handed on must answer that end again, not poll past it.
        // Each chunk (checked, when the key names a digest) also goes to `recent`, where readers
        // that keep up take it without reading it back from the file.
        let stream = body.stream.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                recent.push(chunk.clone());
            }
        });
        let stream = stream.fuse();
        let spooled = spool_or_overflow(temp, reservation, stream, max, progress(tx)).await.map_err(|e| match e {
            SpoolError::Body(e) => Error::Source(e),
            SpoolError::Local(e) => e,
        })?;
        let finished = match spooled {
            Spooled::Stored(finished, reservation) => (finished, reservation),
            Spooled::Overflow { reason, written, rest, body } => {
                // A body of unknown length outgrew the quota or the maximum object size: its
                // readers go on with the rest of the source's body, and nothing is stored.
                tracing::info!(%key, written, reason = %reason, "served pass-through after the body outgrew its room, not stored");
                store.quota.passed_through(&reason);
                let rest = futures::stream::iter(rest.into_iter().map(Ok)).chain(body).boxed();
                let rest = HandOff::new(rest);
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
            content_encoding: body.meta.content_encoding.clone(),
            etag: checked.map(|d| d.to_string()),
            ..NewEntry::default()
        };
        let recorded = store.is_managed().then(|| entry.clone());
        let named = Some((namespace, entry));
        let (digest, _) = self.stores.commit_with_md5(store, finished, false, named, Origin::Fetch, md5).await?;
        if let Some(entry) = recorded {
            self.record_after_fetch(namespace, entry, digest, written);
        }
        tx.send_replace(Phase::Done { started, written, digest });
        Ok(FetchEnd::Stored)
    }

    /// Whether the index has entry `(ns_id, key)` and `store` its blob.
    async fn entry_on_disk(self: &Arc<Self>, ns_id: i64, key: &Key, store: &Store) -> Result<bool, Error> {
        let k = key.clone();
        let entry = self.ix.run(move |ix| ix.get_entry(ns_id, &k)).await?;
        Ok(entry.is_some_and(|e| store.disk.contains(&e.digest)))
    }
}

/// The fetch limits: one for all fetches and fills, and one per source, so that fetches from a
/// hung source hold only that source's share and every other source still gets slots.
///
/// Invariant: a fetch holds a global slot only after it got one of its source's share, so the
/// fetches queued behind a hung source wait holding nothing; and no wait for a slot outlasts
/// `wait` (the source's timeout), so a queued reader gets [`Error::SourceBusy`], never a hang.
pub(super) struct FetchSlots {
    global: Arc<Semaphore>,
    per_source: usize,
    /// One semaphore per source, by its base URL (or [`SHARED_TIER`]), made on first use.
    by_source: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The longest wait for a slot, and for a source's headers.
    pub(super) wait: Duration,
}

/// The share of fills from the shared tier: the shared tier counts as one more source, so a slow
/// shared store cannot take every global slot either (its own timeouts end each fill).
pub(super) const SHARED_TIER: &str = "shared tier";

/// A slot taken: a permit of the source's share and a global one, both given back on drop.
pub(super) struct FetchSlot {
    _source: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl FetchSlots {
    pub(super) fn new(global: usize, per_source: usize, wait: Duration) -> FetchSlots {
        let global = global.max(1);
        FetchSlots {
            global: Arc::new(Semaphore::new(global)),
            per_source: per_source.clamp(1, global),
            by_source: Mutex::default(),
            wait,
        }
    }

    /// Takes a slot for a fetch from `source` (its base URL, or [`SHARED_TIER`]): one of the
    /// source's share, then a global one. [`Error::SourceBusy`] if none came free within `wait`.
    pub(super) async fn take(&self, source: &str) -> Result<FetchSlot, Error> {
        let share = {
            let mut by_source = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
            let share = by_source.entry(source.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.per_source)));
            Arc::clone(share)
        };
        let deadline = tokio::time::Instant::now() + self.wait;
        let busy = |_| Error::SourceBusy { waited: self.wait };
        let source = tokio::time::timeout_at(deadline, share.acquire_owned()).await.map_err(busy)?;
        let global = tokio::time::timeout_at(deadline, Arc::clone(&self.global).acquire_owned()).await.map_err(busy)?;
        let never_closed = "fetch slots are never closed";
        Ok(FetchSlot { _source: source.expect(never_closed), _global: global.expect(never_closed) })
    }
}

pub(super) enum FlightOutcome {
    NotModified,
    Read(Box<Read>),
}

enum FetchEnd {
    NotModified,
    Stored,
    PassThrough,
}

/// The bytes a flight keeps in memory for the readers that keep up with it: enough for a reader
/// a few chunks behind, little enough for many flights at once.
const RECENT_BYTES: u64 = 4 << 20;

/// The flight a fetch of `key` of namespace `ns_id` joins: the key's own, or, for a key naming
/// its bytes by `digest`, the digest's (namespace 0, which no namespace has), shared by every key
/// naming it.
fn flight_key(ns_id: i64, key: &Key, digest: Option<Digest>) -> (i64, Key) {
    match digest.and_then(|d| Key::new(&d.to_string()).ok()) {
        Some(by_digest) => (0, by_digest),
        None => (ns_id, key.clone()),
    }
}

/// Headers' facts of a read the source answers: what it said about the object.
pub(super) fn source_read_meta(m: &tiercache_sources::SourceMeta, digest: Option<Digest>) -> ReadMeta {
    ReadMeta {
        tier: Tier::Source,
        size_bytes: m.size_bytes,
        etag: m.validators.etag.clone().map(Text::from),
        content_type: m.content_type.clone().map(Text::from),
        last_modified: m.validators.last_modified.clone().map(Text::from),
        digest,
        content_encoding: m.content_encoding.clone().map(Text::from),
        memo: None,
    }
}

/// Whether a flight can still be joined: waiting for the source or streaming.
pub(super) fn is_running(phase: &Phase) -> bool {
    matches!(phase, Phase::Waiting | Phase::Streaming { .. })
}
