//! The tiercache engine: the library facade over index, tiers and sources.
//!
//! [`Cache`] is what the server and the CLI drive. It owns the read path (index → disk → source,
//! with single flight), blob uploads, namespaces and the maintenance jobs (`stats`, `cleanup`,
//! `verify`, `vacuum`, start-up recovery). It knows nothing of HTTP status codes or command lines:
//! it returns typed [`Error`]s and lets the front doors choose how to say them.
#![warn(missing_docs)]

mod access;
mod body;
mod cache;
mod config;
mod directory;
mod error;
mod flight;
mod generation;
mod maintenance;
mod memory;
mod namespaces;
mod pruner;
mod quota;
mod read_path;
mod shared_read;
mod storage;
mod telemetry;

pub use body::{Memo, Read, ReadMeta, Text, Tier};
pub use cache::Cache;
pub use config::CacheConfig;
pub use directory::{MAX_LIST_LIMIT, ScanProgress, Stored, UpdateKind, UpdateReport};
pub use error::Error;
pub use maintenance::{CleanupReport, StatsReport, VacuumReport, VerifyReport};
pub use memory::MemoryReport;
pub use namespaces::NamespaceInfo;
pub use pruner::{OwnerCheck, PruneOptions, PruneReport, PrunedItem, PrunerConfig};
pub use quota::{DiskLimits, QuotaStats};
pub use shared_read::Intent;
pub use storage::{MigrateReport, Storage};
pub use tiercache_core::{ByteRange, Digest, Key, NamespaceName, RangeRequest};
pub use tiercache_core::{NamespaceOptions, RelPath};
pub use tiercache_index::{DirStats, DiskUsage, ListPage, ListRequest, ListedItem, Namespace, NamespaceUsage};
pub use tiercache_sources::{HttpSourceConfig, SourceError};
pub use tiercache_tiers::shared::{SharedConfig, StoreLimits};
pub use tiercache_tiers::{MemoryConfig, MemoryTier};
