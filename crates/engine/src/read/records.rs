//! Entry records on the read path (layer 3): what a cluster shares about entries, so that a node
//! that has never seen an entry resolves it through the shared tier instead of the source.
//!
//! - An entry the index does not have, of a namespace with an HTTP or S3 source and kept in the disk
//!   tier: its record (keyed by the source's identity and the key, `tiercache_sources::identity`)
//!   is read, once however many readers ask; if it names a blob the shared tier holds, it becomes
//!   this node's own row (blob absent from the disk tier, validated when the record says), and the
//!   read looks again: fresh, the shared tier serves it (the disk fill proceeds as for any
//!   shared-tier hit); stale, it is revalidated with the record's validators.
//! - A stale entry whose blob only the shared tier holds is revalidated with a conditional request
//!   (304: served from the shared tier; 200: the new body, as a fetch), not refetched.
//! - After a fetch stored an entry, its record is written once the blob's write-back finished
//!   (never before the blob is readable in the shared tier) and its MD5 is known; after a 304,
//!   the record's validation time is brought forward.
//!
//! Invariant: a record is only ever a hint: one that is missing, malformed, unreadable (a slow or
//! dead store, the breaker open), or that names a blob the shared tier does not have is a miss,
//! and the read goes on to the source. Bytes served through a record are verified like every
//! shared-tier read.
//!
//! It does not read blobs (`read/shared.rs`) nor fetch (`read/fetch.rs`).

use std::sync::Arc;
use std::time::Instant;

use tiercache_core::{Digest, Key, Validators, now_ms};
use tiercache_index::{Entry, Namespace, NewEntry};
use tiercache_tiers::shared::{EntryRecord, RecordLookup, SharedTier};

use super::fetch::{FlightOutcome, is_running};
use super::{Intent, Reads, with_range};
use crate::Error;
use crate::body::Read;
use crate::meta::Tier;
use crate::store::Store;

/// The identity of `ns`'s source that records are keyed by: its canonical URL, if it is an HTTP
/// or S3 source (bucket, prefix and endpoint; never credentials).
fn identity_of(ns: &Namespace) -> Option<String> {
    let url = ns.source.as_deref()?;
    if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("s3://")) {
        return None;
    }
    tiercache_sources::identity(url).ok()
}

impl Reads {
    /// After the index had no entry `key` of `ns`: adopts the shared tier's record of it, if there
    /// is one naming a blob the shared tier holds. `true` if the index has an entry for `key`
    /// now (the caller looks again); `false` on every kind of miss.
    pub(super) async fn adopt_record(self: &Arc<Self>, ns: &Arc<Namespace>, key: &Key) -> Result<bool, Error> {
        let Some(tier) = self.stores.shared() else { return Ok(false) };
        if ns.options.storage.is_some() {
            return Ok(false);
        }
        let Some(source) = identity_of(ns) else { return Ok(false) };
        // Readers joining a fetch under way need no record.
        if self.flights.is_running(&(ns.id, key.clone()), |rx| is_running(&rx.borrow())) {
            return Ok(false);
        }
        let (reads, tier) = (Arc::clone(self), Arc::clone(tier));
        let (ns, k) = (Arc::clone(ns), key.clone());
        self.record_lookups
            .run((ns.id, key.clone()), || async move { reads.lookup_and_adopt(&tier, &ns, &k, &source).await })
            .await
    }

    async fn lookup_and_adopt(
        &self,
        tier: &SharedTier,
        ns: &Namespace,
        key: &Key,
        source: &str,
    ) -> Result<bool, Error> {
        // A reader that missed in the index just before an earlier lookup adopted the entry
        // finds it now, without a lookup of its own.
        let (ns_id, k) = (ns.id, key.clone());
        if self.ix.run(move |ix| ix.get_entry(ns_id, &k)).await?.is_some() {
            return Ok(true);
        }
        let record = match tier.read_record(source, key.as_str()).await {
            Ok(RecordLookup::Found(r)) => r,
            Ok(RecordLookup::Missing) => {
                tier.count_record("miss");
                return Ok(false);
            }
            Ok(RecordLookup::Malformed(_)) => {
                tier.count_record("malformed");
                return Ok(false);
            }
            Err(e) => {
                tracing::debug!(namespace = %ns.name, %key, error = %e, "entry record unreadable; a miss");
                tier.count_record("error");
                return Ok(false);
            }
        };
        // A record is written after its blob, but the blob may have gone (or been damaged) since.
        match tier.lookup(&record.digest).await {
            Ok(Some(list)) if list.size_bytes == record.size_bytes => {}
            Ok(_) => {
                tracing::debug!(namespace = %ns.name, %key, digest = %record.digest, "entry record names a blob the shared tier does not have; a miss");
                tier.count_record("miss");
                return Ok(false);
            }
            Err(e) => {
                tracing::debug!(namespace = %ns.name, %key, error = %e, "entry record's blob unreadable; a miss");
                tier.count_record("error");
                return Ok(false);
            }
        }
        let now = now_ms();
        let validated_at = record.validated_at.min(now);
        let after = i64::try_from(self.revalidate_after.as_millis()).unwrap_or(i64::MAX);
        let is_fresh = after > 0 && now < validated_at.saturating_add(after);
        tier.count_record(if is_fresh { "hit" } else { "stale" });
        tracing::debug!(namespace = %ns.name, %key, digest = %record.digest, is_fresh, "entry adopted from its shared-tier record");
        let entry = NewEntry {
            ns_id: ns.id,
            key: key.to_string(),
            content_type: record.content_type,
            validators: Validators { etag: record.etag, last_modified: record.last_modified },
            content_encoding: record.content_encoding,
            ..NewEntry::default()
        };
        let (digest, size, md5) = (record.digest, record.size_bytes, record.md5);
        self.ix.run(move |ix| ix.adopt_entry((&digest, size, &md5), &entry, validated_at, now)).await?;
        self.memory.forget_entry(&ns.name, key.as_str().as_bytes()).await;
        Ok(true)
    }

    /// A stale `entry` of `ns` whose blob only the shared tier holds: revalidated with the
    /// source by a conditional request with the entry's validators. `None` if the shared tier
    /// does not have the blob, the entry has no validators, or the blob went missing after a
    /// 304 (the caller fetches).
    pub(super) async fn revalidate_shared(
        self: &Arc<Self>,
        ns: &Arc<Namespace>,
        key: &Key,
        store: &Arc<Store>,
        entry: &Arc<Entry>,
        intent: &Intent,
        t0: Instant,
    ) -> Result<Option<Read>, Error> {
        let Some(tier) = self.stores.shared() else { return Ok(None) };
        if entry.validators.is_empty() || !store.is_managed() {
            return Ok(None);
        }
        match tier.lookup(&entry.digest).await {
            Ok(Some(list)) if list.size_bytes == entry.size_bytes => {}
            _ => return Ok(None),
        }
        let source = self.source_of(ns, key)?;
        match self.join_flight(ns, key, store, source, Some(entry.validators.clone()), t0).await? {
            FlightOutcome::NotModified => match self.read_shared(entry.digest, intent, false).await? {
                Some(hit) => {
                    let entry = Arc::new(Entry { validated_at: now_ms(), ..(**entry).clone() });
                    Ok(Some(self.entry_read(entry, Tier::Shared, hit.size_bytes, hit.body, true)))
                }
                None => Ok(None),
            },
            FlightOutcome::Read(read) => Ok(Some(with_range(*read, intent).await)),
        }
    }

    /// After a fetch stored `entry` of namespace `namespace` as blob `digest` of `size` bytes in
    /// the disk tier: writes its record once the blob's write-back finished (in the background,
    /// never before the blob is readable in the shared tier) and its MD5 is known.
    pub(super) fn record_after_fetch(self: &Arc<Self>, namespace: &str, entry: NewEntry, digest: Digest, size: u64) {
        let Some(tier) = self.stores.shared().cloned() else { return };
        let validated_at = now_ms();
        let (reads, namespace) = (Arc::clone(self), namespace.to_owned());
        self.tasks.spawn(async move {
            let Ok(ns) = reads.namespaces.row(&namespace).await else { return };
            let Some(source) = identity_of(&ns) else { return };
            if !reads.stores.written_back(digest).await {
                tracing::debug!(%namespace, key = entry.key, %digest, "blob not written back; no entry record");
                return;
            }
            let md5 = match reads.stores.md5(digest, &reads.stores.managed().disk).await {
                Ok(md5) => md5,
                Err(e) => {
                    tracing::debug!(%namespace, key = entry.key, %digest, error = %e, "no MD5; no entry record");
                    return;
                }
            };
            let record = record_of(source, entry, (digest, size, md5), validated_at);
            if let Err(e) = tier.write_record(&record).await {
                tracing::debug!(%namespace, key = record.key, error = %e, "entry record not written");
            }
        });
    }

    /// After the source answered 304 for entry `key` of namespace `namespace`: brings its
    /// record's validation time forward (in the background). Only a record naming the entry's
    /// blob is rewritten, or a missing one whose blob the shared tier holds.
    pub(super) fn record_revalidated(self: &Arc<Self>, namespace: &str, ns_id: i64, key: &Key) {
        let Some(tier) = self.stores.shared().cloned() else { return };
        let validated_at = now_ms();
        let (reads, namespace, key) = (Arc::clone(self), namespace.to_owned(), key.clone());
        self.tasks.spawn(async move {
            let Ok(ns) = reads.namespaces.row(&namespace).await else { return };
            let Some(source) = identity_of(&ns).filter(|_| ns.options.storage.is_none()) else { return };
            let k = key.clone();
            let Ok(Some(entry)) = reads.ix.run(move |ix| ix.get_entry(ns_id, &k)).await else { return };
            let md5 = match tier.read_record(&source, key.as_str()).await {
                Ok(RecordLookup::Found(r)) if r.digest == entry.digest => r.md5,
                Ok(RecordLookup::Missing) if matches!(tier.lookup(&entry.digest).await, Ok(Some(_))) => {
                    match entry.md5.clone() {
                        Some(md5) => md5,
                        None => return,
                    }
                }
                _ => return,
            };
            let blob = (entry.digest, entry.size_bytes, md5);
            let entry = NewEntry {
                ns_id: entry.ns_id,
                key: entry.key,
                content_type: entry.content_type,
                validators: entry.validators,
                content_encoding: entry.content_encoding,
                ..NewEntry::default()
            };
            let record = record_of(source, entry, blob, validated_at);
            if let Err(e) = tier.write_record(&record).await {
                tracing::debug!(%namespace, key = record.key, error = %e, "entry record not refreshed");
            }
        });
    }
}

/// The record of `entry` of `source`, stored as `blob` (digest, size, MD5), last confirmed by the
/// source at `validated_at`.
fn record_of(source: String, entry: NewEntry, blob: (Digest, u64, String), validated_at: i64) -> EntryRecord {
    let (digest, size_bytes, md5) = blob;
    EntryRecord {
        source,
        key: entry.key,
        digest,
        size_bytes,
        md5,
        validated_at,
        content_type: entry.content_type,
        content_encoding: entry.content_encoding,
        etag: entry.validators.etag,
        last_modified: entry.validators.last_modified,
    }
}
