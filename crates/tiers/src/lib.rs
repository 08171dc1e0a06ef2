//! tiercache's tiers: places blobs are kept, fastest first.
//!
//! The disk tier ([`DiskTier`]): a flat, content-addressed directory on this node; and the shared
//! cluster tier ([`shared::SharedTier`]): one store for every node, reached through OpenDAL. The
//! memory tier arrives with its own issue. A tier knows digests and bytes only: no namespaces, no
//! keys, no index.
#![warn(missing_docs)]

mod disk;
pub mod shared;

pub use disk::{DiskTier, FinishedBlob, SweepReport, TempBlob};
