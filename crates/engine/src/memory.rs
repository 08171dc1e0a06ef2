//! The memory tier as the engine uses it: small hot blobs by digest, and index lookups (namespace
//! rows by name, entries by `(namespace id, key)`), each a bounded [`MemoryTier`] with a TTL.
//!
//! Blobs are immutable, so a blob held here is never wrong. Lookups can go stale: every write and
//! delete in this process drops what it changes (or all lookups, for bulk deletes), and changes
//! made by other processes sharing the data directory are seen through the index's lookup
//! generation, which the access flusher checks every second.
//! A lookup read from the index just before a change and kept just after it would outlive the
//! change: every drop of lookups advances an epoch, and a lookup is kept only if no drop happened
//! since the caller took the epoch, before reading the index ([`Memory::epoch`]).
//! It does not decide what is read from where: the read path asks it first.

use std::sync::Arc;

use bytes::Bytes;
use tiercache_core::Digest;
use tiercache_index::{Entry, Namespace};
use tiercache_tiers::{MemoryConfig, MemoryStats, MemoryTier};

use crate::CacheConfig;

/// A small blob held in memory, with its file's modification time (the `Last-Modified` of a
/// blob read by digest).
#[derive(Clone)]
pub(crate) struct MemoryBlob {
    pub(crate) bytes: Bytes,
    pub(crate) last_modified: Option<std::sync::Arc<str>>,
}

fn weigh_blob(_: &Digest, b: &MemoryBlob) -> u32 {
    b.bytes.len().try_into().unwrap_or(u32::MAX)
}

/// The memory tier of one [`crate::Cache`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Memory {
    blobs: MemoryTier<Digest, MemoryBlob>,
    entries: MemoryTier<(i64, String), Arc<Entry>>,
    namespaces: MemoryTier<String, Arc<Namespace>>,
    max_blob_bytes: u64,
    is_enabled: bool,
    /// Advanced by every drop of lookups (see the module's documentation).
    epoch: Arc<std::sync::atomic::AtomicU64>,
}

/// Memory stats for reports: the blob cache, and the lookup caches together.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MemoryReport {
    /// Whether the memory tier is on.
    pub is_enabled: bool,
    /// The TTL, in seconds.
    pub ttl_seconds: u64,
    /// Small blobs held.
    pub blobs: MemoryTierReport,
    /// Index lookups held (entries and namespaces).
    pub lookups: MemoryTierReport,
}

/// One memory cache's size and counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MemoryTierReport {
    /// Entries held.
    pub entries: u64,
    /// Bytes held (by weight).
    pub bytes: u64,
    /// The bound on bytes.
    pub max_bytes: u64,
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Entries evicted for room or expired.
    pub evictions: u64,
}

impl From<MemoryStats> for MemoryTierReport {
    fn from(s: MemoryStats) -> MemoryTierReport {
        MemoryTierReport {
            entries: s.entries,
            bytes: s.bytes,
            max_bytes: s.max_bytes,
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
        }
    }
}

fn weigh_entry(k: &(i64, String), e: &Arc<Entry>) -> u32 {
    (160 + k.1.len() + e.key.len() + e.content_type.as_ref().map_or(0, String::len)) as u32
}

#[allow(clippy::ptr_arg)] // The weigher's signature is fixed by the key type.
fn weigh_namespace(k: &String, n: &Arc<Namespace>) -> u32 {
    (128 + k.len() + n.name.len() + n.source.as_ref().map_or(0, String::len)) as u32
}

impl Memory {
    pub(crate) fn new(config: &CacheConfig) -> Memory {
        let blobs = config.memory.clone();
        // Lookups are small: an eighth of the bound holds hundreds of thousands of them.
        let lookups = MemoryConfig { max_bytes: (config.memory.max_bytes / 8).max(1 << 20), ..config.memory.clone() };
        Memory {
            blobs: MemoryTier::new("blobs", &blobs, weigh_blob),
            entries: MemoryTier::new("entries", &lookups, weigh_entry),
            namespaces: MemoryTier::new("namespaces", &lookups, weigh_namespace),
            max_blob_bytes: config.memory_max_blob_bytes,
            is_enabled: config.memory.is_enabled,
            epoch: Arc::default(),
        }
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.is_enabled
    }

    /// Whether a blob of `size` bytes is kept here.
    pub(crate) fn takes_blob(&self, size: u64) -> bool {
        size <= self.max_blob_bytes && self.is_enabled()
    }

    pub(crate) async fn blob(&self, digest: &Digest) -> Option<MemoryBlob> {
        self.blobs.get(digest).await
    }

    pub(crate) async fn put_blob(&self, digest: Digest, blob: MemoryBlob) {
        self.blobs.put(digest, blob).await
    }

    pub(crate) async fn entry(&self, ns_id: i64, key: &str) -> Option<Arc<Entry>> {
        if !self.is_enabled() {
            return None;
        }
        self.entries.get(&(ns_id, key.to_owned())).await
    }

    /// The lookup epoch: take it before reading the index, and hand it to `put_entry` or
    /// `put_namespace` with what was read.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Keeps `entry`, read from the index in lookup epoch `epoch`, unless lookups were dropped
    /// since (it may be stale then). Kept first and checked after, so that a drop racing this
    /// call either clears it or is seen here.
    pub(crate) async fn put_entry(&self, entry: Arc<Entry>, epoch: u64) {
        let key = (entry.ns_id, entry.key.clone());
        self.entries.put(key.clone(), entry).await;
        if self.epoch() != epoch {
            self.entries.delete(&key).await;
        }
    }

    pub(crate) async fn forget_entry(&self, ns_id: i64, key: &str) {
        if self.is_enabled() {
            self.entries.delete(&(ns_id, key.to_owned())).await
        }
    }

    pub(crate) async fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        if !self.is_enabled() {
            return None;
        }
        self.namespaces.get(name).await
    }

    /// Keeps `ns`, read in lookup epoch `epoch` (as [`Memory::put_entry`]).
    pub(crate) async fn put_namespace(&self, ns: Arc<Namespace>, epoch: u64) {
        let name = ns.name.clone();
        self.namespaces.put(name.clone(), ns).await;
        if self.epoch() != epoch {
            self.namespaces.delete(&name).await;
        }
    }

    /// Drops the lookup of namespace `name` (found stale).
    pub(crate) async fn forget_namespace(&self, name: &str) {
        if self.is_enabled() {
            self.namespaces.delete(&name.to_owned()).await;
        }
    }

    /// Drops every lookup (after a bulk delete: a namespace, a cleanup, eviction, pruning).
    pub(crate) fn forget_lookups(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.entries.clear();
        self.namespaces.clear();
    }

    pub(crate) fn report(&self) -> MemoryReport {
        let b = self.blobs.stats();
        let (e, n) = (self.entries.stats(), self.namespaces.stats());
        let lookups = MemoryTierReport {
            entries: e.entries + n.entries,
            bytes: e.bytes + n.bytes,
            max_bytes: e.max_bytes + n.max_bytes,
            hits: e.hits + n.hits,
            misses: e.misses + n.misses,
            evictions: e.evictions + n.evictions,
        };
        MemoryReport { is_enabled: b.is_enabled, ttl_seconds: b.ttl.as_secs(), blobs: b.into(), lookups }
    }
}
