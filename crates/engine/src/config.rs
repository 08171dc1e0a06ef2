//! Engine settings; the CLI fills them from flags, environment and the TOML file.

use std::path::PathBuf;
use std::time::Duration;

use tiercache_sources::HttpSourceConfig;

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
        }
    }
}
