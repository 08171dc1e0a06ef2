//! The memory tier as the engine uses it (layer 1): one bounded [`MemoryTier`] (moka) with a TTL, holding
//! three kinds of values under one byte bound and one eviction policy:
//! - small hot blobs by digest (reads by digest);
//! - namespace rows by name;
//! - entries by namespace and key: the entry's row with its namespace's row and, once its blob was
//!   read and is small, the blob's bytes with the headers' facts of a read of them. A hot entry is
//!   answered by one lookup.
//! - a directory namespace's files by namespace and path, under the same keys as entries: the
//!   file's row (markers and hashes) with the headers' facts of a read of it ([`HotFile`]). A read
//!   of a held file needs no index: it opens the file and compares its markers with the row.
//!
//! Blobs are immutable, so a blob held here is never wrong. Lookups (namespaces, entries) can go
//! stale: every write and delete in this process drops what it changes (or everything, for bulk
//! deletes), and changes made by other processes sharing the data directory are seen through the
//! lookup generation (`generation.rs`), checked before every entry read.
//! A lookup read from the index just before a change and kept just after it would outlive the
//! change: every drop of lookups advances an epoch, and a lookup is kept only if no drop happened
//! since the caller took the epoch, before reading the index ([`Memory::epoch`]).
//! It owns this process's view of the lookup generation ([`Memory::check_generation`]) and tells
//! other processes when this one changed lookups ([`Memory::bump_generation`]). It does not decide
//! what is read from where: the read path asks it first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tiercache_core::Digest;
use tiercache_core::RelPath;
use tiercache_index::{Entry, FileRow, Namespace};
use tiercache_sources::DirSource;
use tiercache_tiers::{MemoryStats, MemoryTier};

use crate::generation::Generation;
use crate::meta::ReadMeta;
use crate::{CacheConfig, Error};

/// A small blob held in memory, with its file's modification time (the `Last-Modified` of a
/// blob read by digest).
#[derive(Clone)]
pub(crate) struct MemoryBlob {
    pub(crate) bytes: Bytes,
    pub(crate) last_modified: Option<crate::Text>,
}

/// An entry as the memory tier holds it.
#[derive(Debug)]
pub(crate) struct HotEntry {
    /// Its namespace's row, as it was when the entry was looked up.
    pub(crate) ns: Arc<Namespace>,
    pub(crate) entry: Arc<Entry>,
    /// The blob's bytes and the headers' facts of a memory-tier read of them, once a read found
    /// the blob small.
    pub(crate) held: Option<(Bytes, ReadMeta)>,
    /// Until when (ms since the epoch) it may be served without asking its source (`read.rs`):
    /// a hit need not look into the namespace's and the entry's rows.
    pub(crate) fresh_until_ms: i64,
}

/// A directory namespace's file as the memory tier holds it: what a read of it serves as long as
/// the file's markers are still the row's (`directory/serve.rs`, `Directories::read_held`).
#[derive(Debug)]
pub(crate) struct HotFile {
    /// Its namespace's row, as it was when the file was read.
    pub(crate) ns: Arc<Namespace>,
    pub(crate) src: Arc<DirSource>,
    pub(crate) path: RelPath,
    /// The file's row: markers and hashes (never a racy row, never one without hashes).
    pub(crate) row: FileRow,
    /// The headers' facts of a read of it (with a [`crate::Memo`]): its tier says whether the
    /// bytes come from the file or, copied to the cache, from the disk tier.
    pub(crate) meta: ReadMeta,
}

/// What the memory tier holds under an entry's name: an entry, or a directory namespace's file.
pub(crate) enum Hot {
    Entry(Arc<HotEntry>),
    File(Arc<HotFile>),
}

/// Where a value is kept.
#[derive(Clone, PartialEq, Eq, Hash)]
enum MemKey {
    Blob(Digest),
    Namespace(Box<str>),
    /// `<namespace>/<key>` (a namespace's name has no `/`), an entry's or a file's: raw bytes, as
    /// a directory's file names need not be UTF-8.
    Entry(Box<[u8]>),
}

#[derive(Clone)]
enum MemValue {
    Blob(MemoryBlob),
    Namespace(Arc<Namespace>),
    Entry(Arc<HotEntry>),
    File(Arc<HotFile>),
}

fn entry_key(namespace: &str, key: &[u8]) -> MemKey {
    let mut k = Vec::with_capacity(namespace.len() + 1 + key.len());
    k.extend_from_slice(namespace.as_bytes());
    k.push(b'/');
    k.extend_from_slice(key);
    MemKey::Entry(k.into_boxed_slice())
}

/// Bytes held, roughly: the key, the value's strings and bytes, and a fixed part for the rest.
fn weigh(k: &MemKey, v: &MemValue) -> u32 {
    let key = match k {
        MemKey::Blob(_) => 32,
        MemKey::Namespace(s) => s.len(),
        MemKey::Entry(s) => s.len(),
    };
    let value = match v {
        MemValue::Blob(b) => b.bytes.len() + 64,
        MemValue::Namespace(n) => 128 + n.name.len() + n.source.as_ref().map_or(0, String::len),
        MemValue::Entry(h) => {
            let e = &h.entry;
            let row = 160
                + e.key.len()
                + e.content_type.as_ref().map_or(0, String::len)
                + e.content_encoding.as_ref().map_or(0, String::len);
            row + h.held.as_ref().map_or(0, |(bytes, _)| bytes.len() + 256)
        }
        MemValue::File(f) => 512 + f.path.as_bytes().len(),
    };
    (key + value).try_into().unwrap_or(u32::MAX)
}

/// The memory tier of one [`crate::Cache`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Memory {
    tier: MemoryTier<MemKey, MemValue>,
    max_blob_bytes: u64,
    is_enabled: bool,
    /// Advanced by every drop of lookups (see the module's documentation).
    epoch: Arc<AtomicU64>,
    /// Whether another process changed lookups since this one last looked (`generation.rs`).
    generation: Arc<Generation>,
    data_dir: Arc<std::path::Path>,
}

/// The memory tier's size and counters, for reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MemoryReport {
    /// Whether the memory tier is on.
    pub is_enabled: bool,
    /// The TTL, in seconds.
    pub ttl_seconds: u64,
    /// Values held: blobs, namespaces and entries.
    pub entries: u64,
    /// Bytes held (by weight).
    pub bytes: u64,
    /// The bound on bytes.
    pub max_bytes: u64,
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Values evicted for room or expired.
    pub evictions: u64,
}

impl From<MemoryStats> for MemoryReport {
    fn from(s: MemoryStats) -> MemoryReport {
        MemoryReport {
            is_enabled: s.is_enabled,
            ttl_seconds: s.ttl.as_secs(),
            entries: s.entries,
            bytes: s.bytes,
            max_bytes: s.max_bytes,
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
        }
    }
}

impl Memory {
    pub(crate) fn new(config: &CacheConfig) -> Memory {
        Memory {
            tier: MemoryTier::new("memory", &config.memory, weigh),
            max_blob_bytes: config.memory_max_blob_bytes,
            is_enabled: config.memory.is_enabled,
            epoch: Arc::default(),
            generation: Arc::new(Generation::new(&config.data_dir)),
            data_dir: config.data_dir.as_path().into(),
        }
    }

    /// Drops the lookups if any process changed namespaces or deleted in bulk since the last look
    /// (`generation.rs`): inline, before every lookup this tier could answer.
    pub(crate) fn check_generation(&self) {
        if self.is_enabled() {
            self.generation.check(|| self.forget_lookups());
        }
    }

    /// Tells every process's memory tier that lookups may be stale (this one's are dropped too).
    /// Call it after the index commit of a change of namespaces or a bulk delete.
    pub(crate) async fn bump_generation(&self) -> Result<(), Error> {
        self.forget_lookups();
        let dir = Arc::clone(&self.data_dir);
        crate::blocking::blocking(move || crate::generation::bump(&dir)).await
    }

    pub(crate) fn is_enabled(&self) -> bool {
        self.is_enabled
    }

    /// Whether a blob of `size` bytes is kept here.
    pub(crate) fn takes_blob(&self, size: u64) -> bool {
        size <= self.max_blob_bytes && self.is_enabled()
    }

    pub(crate) async fn blob(&self, digest: &Digest) -> Option<MemoryBlob> {
        match self.tier.get(&MemKey::Blob(*digest)).await? {
            MemValue::Blob(b) => Some(b),
            _ => None,
        }
    }

    pub(crate) async fn put_blob(&self, digest: Digest, blob: MemoryBlob) {
        self.tier.put(MemKey::Blob(digest), MemValue::Blob(blob)).await
    }

    /// Entry `key` of namespace `namespace` with its namespace, or the file at path `key` of a
    /// directory namespace.
    pub(crate) async fn entry(&self, namespace: &str, key: &[u8]) -> Option<Hot> {
        if !self.is_enabled() {
            return None;
        }
        match self.tier.get(&entry_key(namespace, key)).await? {
            MemValue::Entry(h) => Some(Hot::Entry(h)),
            MemValue::File(f) => Some(Hot::File(f)),
            _ => None,
        }
    }

    /// The lookup epoch: take it before reading the index (or this tier, for a value to be
    /// replaced), and hand it to `put_entry` or `put_namespace` with what was read.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Keeps `hot`, read in lookup epoch `epoch`, unless lookups were dropped since (it may be
    /// stale then). Kept first and checked after, so that a drop racing this call either clears
    /// it or is seen here.
    pub(crate) async fn put_entry(&self, hot: HotEntry, epoch: u64) {
        let key = entry_key(&hot.ns.name, hot.entry.key.as_bytes());
        self.put_lookup(key, MemValue::Entry(Arc::new(hot)), epoch).await
    }

    /// Keeps `hot`, a file read in lookup epoch `epoch` (as [`Memory::put_entry`]).
    pub(crate) async fn put_file(&self, hot: HotFile, epoch: u64) {
        if self.is_enabled() {
            let key = entry_key(&hot.ns.name, hot.path.as_bytes());
            self.put_lookup(key, MemValue::File(Arc::new(hot)), epoch).await
        }
    }

    /// Keeps lookup `value`, read in lookup epoch `epoch`, unless a drop came since.
    async fn put_lookup(&self, key: MemKey, value: MemValue, epoch: u64) {
        self.tier.put(key.clone(), value).await;
        if self.epoch() != epoch {
            self.tier.delete(&key).await;
        }
    }

    /// Drops entry `key` of `namespace` (changed or deleted), or the file at path `key` of a
    /// directory namespace, and any lookup of it being read from the index now.
    pub(crate) async fn forget_entry(&self, namespace: &str, key: &[u8]) {
        if self.is_enabled() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.tier.delete(&entry_key(namespace, key)).await
        }
    }

    pub(crate) async fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        if !self.is_enabled() {
            return None;
        }
        match self.tier.get(&MemKey::Namespace(name.into())).await? {
            MemValue::Namespace(n) => Some(n),
            _ => None,
        }
    }

    /// Keeps `ns`, read in lookup epoch `epoch` (as [`Memory::put_entry`]).
    pub(crate) async fn put_namespace(&self, ns: Arc<Namespace>, epoch: u64) {
        let key = MemKey::Namespace(ns.name.as_str().into());
        self.put_lookup(key, MemValue::Namespace(ns), epoch).await
    }

    /// Drops the lookup of namespace `name` (found stale).
    pub(crate) async fn forget_namespace(&self, name: &str) {
        if self.is_enabled() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.tier.delete(&MemKey::Namespace(name.into())).await;
        }
    }

    /// Drops every lookup (after a bulk delete: a namespace, a cleanup, eviction, pruning), and
    /// with them the blobs, which are cheap to read again.
    pub(crate) fn forget_lookups(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.tier.clear();
    }

    /// Brings the tier's hit and miss metrics up to its counts.
    pub(crate) fn publish_metrics(&self) {
        self.tier.publish_metrics();
    }

    pub(crate) fn report(&self) -> MemoryReport {
        self.tier.stats().into()
    }
}
