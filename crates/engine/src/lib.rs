//! The tiercache engine: the library facade over index, tiers and sources.
//!
//! [`Cache`] is what the server and the CLI drive. Behind it the engine is a stack of layers, each
//! module importing only from layers below its own (ARCHITECTURE.md has the map):
//!
//! - 0: `error`, `config`, `telemetry`, `kept`, `meta`, `generation`, `blocking`, `fs`, `tasks`, `contain`;
//! - 1: `memory`, `access`, `quota`, `single_flight`, `spool`, `sources`;
//! - 2: `store` (and `store/place`), `body`, `namespaces`;
//! - 3: `read` (memory → index → disk → shared → source), `write`, `directory`, `uploads`
//!   (multipart);
//! - 4: `jobs` (maintenance, pruner, moves, flush), `derive` (derivations: lookups, the queue and
//!   its workers);
//! - 5: `cache`, the facade.
//!
//! It knows nothing of HTTP status codes or command lines: it returns typed [`Error`]s and lets
//! the front doors choose how to say them.
#![warn(missing_docs)]

// Layer 0.
mod blocking;
mod config;
mod contain;
mod error;
mod fs;
mod generation;
mod meta;
mod tasks;
mod telemetry;
// Layer 1.
mod access;
mod memory;
mod quota;
mod single_flight;
mod sources;
mod spool;
// Layer 2.
mod body;
mod namespaces;
mod store;
// Layer 3.
mod directory;
mod read;
mod uploads;
mod write;
// Layer 4.
mod derive;
mod images;
mod jobs;
// Layer 5.
mod cache;

pub use body::Read;
pub use cache::Cache;
pub use config::CacheConfig;
pub use config::{DEFAULT_MAX_OBJECT_BYTES, DeriveConfig, DiskLimits, OwnerCheck, PrunerConfig};
pub use derive::{DeriveAsk, DeriveInput, DeriveStats, Derived, Priority};
pub use directory::{ScanProgress, UpdateKind, UpdateReport};
pub use error::{Cause, Error, RecipeFault};
pub use images::{FirstRead, Image, ImageRef, StreamedFile};
pub use jobs::{MoveReport, PruneOptions, PruneReport, PrunedItem};
pub use jobs::{StatsReport, VacuumReport, VerifyReport};
pub use memory::MemoryReport;
pub use meta::{Memo, ReadMeta, Text, Tier};
pub use namespaces::NamespaceInfo;
pub use quota::QuotaStats;
pub use read::Intent;
pub use store::place::Place;
pub use store::{CleanupReport, SharedStatus};
pub use tiercache_core::{ByteRange, Digest, Key, KeyError, NamespaceName, RangeRequest};
pub use tiercache_core::{KeptCounter, kept_counter};
pub use tiercache_core::{NamespaceOptions, RelPath, Secret};
pub use tiercache_derive::image_tree::{Attrs as FileAttrs, ImageTree, NodeId, ResolveError};
pub use tiercache_derive::tar_index::EntryKind as FileKind;
pub use tiercache_derive::tar_index::FoundFile;
pub use tiercache_index::{DirStats, DiskUsage, ListPage, ListRequest, ListedItem, Namespace, NamespaceUsage};
pub use tiercache_sources::{AddressRange, HttpSourceConfig, Redirects, SourceError};
pub use tiercache_tiers::shared::{SharedConfig, StoreLimits};
pub use tiercache_tiers::{MemoryConfig, MemoryTier};
pub use uploads::{CompletedUpload, PartInfo, PartsPage, UploadId, UploadInfo, UploadMeta, UploadsPage};
pub use uploads::{MAX_PART_BYTES, MAX_PART_NUMBER, MAX_UPLOAD_LIST, MIN_PART_BYTES};
pub use write::{MAX_LIST_LIMIT, PutOptions, Stored};
