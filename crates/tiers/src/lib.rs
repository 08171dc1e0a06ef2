//! tiercache's tiers: places blobs are kept, fastest first.
//!
//! The memory tier ([`MemoryTier`]): a bounded in-process cache with a TTL per entry and single
//! flight, holding whatever keys and values its owner gives it; the disk tier ([`DiskTier`]): a
//! flat, content-addressed directory on this node; and the shared cluster tier
//! ([`shared::SharedTier`]): one store for every node, reached through OpenDAL. The disk and shared
//! tiers know digests and bytes only: no namespaces, no keys, no index.
#![warn(missing_docs)]

mod disk;
pub mod evict;
pub mod memory;
pub mod shared;
pub mod striped;

pub use disk::{DiskTier, FinishedBlob, SweepReport, TempBlob};
pub use evict::EvictionPolicy;
pub use memory::{MemoryConfig, MemoryStats, MemoryTier};
pub use striped::{STRIPES, StripedCounter, thread_stripe};
