//! Engine settings; the CLI fills them from flags, environment and the TOML file.

use std::path::PathBuf;
use std::time::Duration;

use tiercache_sources::HttpSourceConfig;
use tiercache_tiers::MemoryConfig;
use tiercache_tiers::shared::SharedConfig;

use crate::pruner::PrunerConfig;
use crate::quota::DiskLimits;

/// How a [`crate::Cache`] behaves.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The data directory: `index.db`, `blobs/`, `tmp/`, `namespaces/`.
    pub data_dir: PathBuf,
    /// An entry older than this (since the source last confirmed it) is revalidated before it is
    /// served. Zero revalidates on every read.
    pub revalidate_after: Duration,
    /// Timeouts for HTTP sources.
    pub http: HttpSourceConfig,
    /// Most source fetches running at once; more wait their turn.
    pub max_concurrent_fetches: usize,
    /// How often batched last-access times and hit counts are written to the index.
    pub access_flush_interval: Duration,
    /// The tiercache version recorded with directory read caches; a different one at open resets
    /// them. The build's own version, except in tests of that reset.
    pub version: String,
    /// How often a watched directory namespace is reconciled in full, to catch what events missed.
    pub reconcile_interval: Duration,
    /// How long file events are gathered before they are applied (events for one path coalesce).
    pub watch_debounce: Duration,
    /// Threads hashing files during `index`, `update` and `migrate` (default: one per core).
    pub hash_threads: usize,
    /// The shared cluster tier, if any: read after the disk tier, written back after a fetch.
    pub shared: Option<SharedConfig>,
    /// The disk tier's quota, watermarks and protection of new blobs.
    pub disk: DiskLimits,
    /// The memory tier: on or off, TTL, size bound.
    pub memory: MemoryConfig,
    /// Blobs at most this large are kept in the memory tier (index lookups always are).
    pub memory_max_blob_bytes: u64,
    /// The background pruner.
    pub pruner: PrunerConfig,
}

impl CacheConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> CacheConfig {
        CacheConfig {
            data_dir: data_dir.into(),
            revalidate_after: Duration::from_secs(60),
            http: HttpSourceConfig::default(),
            max_concurrent_fetches: 64,
            access_flush_interval: Duration::from_secs(1),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            reconcile_interval: Duration::from_secs(600),
            watch_debounce: Duration::from_millis(200),
            hash_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            shared: None,
            disk: DiskLimits::default(),
            memory: MemoryConfig::default(),
            memory_max_blob_bytes: 64 * 1024,
            pruner: PrunerConfig::default(),
        }
    }
}
