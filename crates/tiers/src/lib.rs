//! tiercache's tiers: places blobs are kept, fastest first.
//!
//! Today this is the disk tier ([`DiskTier`]): a flat, content-addressed directory on this node.
//! The memory tier and the shared cluster tier arrive with their own issues and will sit beside it
//! here. A tier knows digests and bytes only: no namespaces, no keys, no index.
#![warn(missing_docs)]

mod disk;

pub use disk::{DiskTier, FinishedBlob, SweepReport, TempBlob};
