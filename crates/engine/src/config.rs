//! Engine settings (layer 0); the CLI fills them from flags, environment and the TOML file.

use std::path::PathBuf;
use std::time::Duration;

use tiercache_sources::HttpSourceConfig;
use tiercache_tiers::MemoryConfig;
use tiercache_tiers::shared::SharedConfig;

use std::sync::Arc;

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
    /// Most source fetches running at once from any one source (by base URL), so that a hung
    /// source holds only its share of `max_concurrent_fetches`. `None`: a quarter of it, at
    /// least 1 ([`CacheConfig::fetches_per_source`]).
    pub max_fetches_per_source: Option<usize>,
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
    /// The largest object kept (squid's `maximum_object_size`): an upload larger than this is
    /// refused ([`crate::Error::TooLarge`]), a source object larger than this is served
    /// pass-through and not stored. Default 64 GiB.
    pub max_object_bytes: u64,
    /// A multipart upload neither completed nor aborted this long after it was created is
    /// abandoned: the pruner removes it and its parts. Default 7 days.
    pub multipart_max_age: Duration,
    /// Derivations: the worker pool and the bounds of every job.
    pub derive: DeriveConfig,
}

/// The default of [`CacheConfig::max_object_bytes`]: 64 GiB.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 64 << 30;

impl CacheConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> CacheConfig {
        CacheConfig {
            data_dir: data_dir.into(),
            revalidate_after: Duration::from_secs(60),
            http: HttpSourceConfig::default(),
            max_concurrent_fetches: 64,
            max_fetches_per_source: None,
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
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            multipart_max_age: Duration::from_secs(7 * 24 * 3600),
            derive: DeriveConfig::default(),
        }
    }
}

impl CacheConfig {
    /// The effective limit of fetches at once from one source: `max_fetches_per_source`, else a
    /// quarter of `max_concurrent_fetches`; at least 1 and at most the global limit.
    pub fn fetches_per_source(&self) -> usize {
        let global = self.max_concurrent_fetches.max(1);
        self.max_fetches_per_source.unwrap_or(global / 4).clamp(1, global)
    }
}

/// How the pruner behaves.
#[derive(Debug, Clone)]
pub struct PrunerConfig {
    /// How often the background pruner runs a pass (in `serve`).
    pub interval: Duration,
    /// Orphan blobs younger than this are kept (a blob adopted by a rebuild waits for its entry).
    pub orphan_grace: Duration,
    /// Temp files of a live writer not written for this long are removed.
    pub temp_grace: Duration,
    /// Entries not read for this long are removed (every namespace with a source; a namespace's
    /// own max age applies to it whether or not it has one). `None`: no limit.
    pub max_age: Option<Duration>,
    /// Asked whether each namespace's owner still exists.
    pub owner_hook: Option<Arc<dyn OwnerCheck>>,
    /// A namespace whose owner is gone is deleted once the hook has said so for this long.
    pub owner_grace: Duration,
}

impl Default for PrunerConfig {
    fn default() -> PrunerConfig {
        PrunerConfig {
            interval: Duration::from_secs(300),
            orphan_grace: Duration::from_secs(3600),
            temp_grace: Duration::from_secs(3600),
            max_age: None,
            owner_hook: None,
            owner_grace: Duration::from_secs(600),
        }
    }
}

/// Asks whether a namespace's owner still exists. The engine knows no command lines or HTTP: the
/// front door that runs the pruner (the CLI) supplies the check.
pub trait OwnerCheck: Send + Sync + std::fmt::Debug {
    /// `Some(true)` alive, `Some(false)` gone, `None` unknown (the namespace is kept).
    fn is_alive<'a>(&'a self, owner: &'a str) -> futures::future::BoxFuture<'a, Option<bool>>;
}

/// Limits of the disk tier.
#[derive(Debug, Clone)]
pub struct DiskLimits {
    /// Most bytes of blobs (and temp files being written) the disk tier may hold; `None`: no limit.
    pub quota_bytes: Option<u64>,
    /// Background eviction starts above this fraction of the quota …
    pub high_watermark: f64,
    /// … and evicts down to this fraction. Eviction on the write path aims for it too.
    pub low_watermark: f64,
    /// Blobs stored this recently are evicted last: only when a write finds nothing else to
    /// evict, the least recently stored first (`quota.rs`).
    pub protect_new: Duration,
}

impl Default for DiskLimits {
    fn default() -> DiskLimits {
        DiskLimits {
            quota_bytes: None,
            high_watermark: 0.95,
            low_watermark: 0.90,
            protect_new: Duration::from_secs(10),
        }
    }
}

/// How derivations run: the worker pool's size and the bounds of every job.
#[derive(Debug, Clone)]
pub struct DeriveConfig {
    /// Jobs run at once (`--worker-threads`); 0 runs none (`--no-worker`): only outputs already
    /// made are served.
    pub workers: usize,
    /// Jobs queued at most (`--derive-queue`); one more is refused as busy.
    pub queue_jobs: usize,
    /// The longest a job may run.
    pub job_timeout: Duration,
    /// The largest input a recipe reads.
    pub max_input_bytes: u64,
    /// The largest output a recipe may write.
    pub max_output_bytes: u64,
    /// The most memory a decoder may allocate for one job.
    pub max_alloc_bytes: u64,
    /// The most pixels a decoded image may have.
    pub max_pixels: u64,
}

impl Default for DeriveConfig {
    fn default() -> Self {
        DeriveConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue_jobs: 1024,
            job_timeout: Duration::from_secs(60),
            max_input_bytes: 256 << 20,
            max_output_bytes: 64 << 30,
            max_alloc_bytes: 1 << 30,
            max_pixels: 150_000_000,
        }
    }
}
