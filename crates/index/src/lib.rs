//! The SQLite index: namespaces, entries and blob rows, in one WAL-mode database file.
//!
//! The index is a replica. Blob bytes live in the disk tier and entries' truth lives at their
//! sources; this crate only records what the engine has made durable elsewhere, so every write here
//! happens *after* the durable step it describes. It knows nothing of HTTP, tiers or sources: it
//! stores digests and strings.
//!
//! Calls are synchronous and short; the engine runs them on blocking threads. One connection
//! writes (behind a mutex, so a process never contends with itself), a small pool reads, and
//! other processes on the same file are handled by SQLite's own locking with a busy timeout.
//!
//! `index.rs` opens the file and holds the connections; every other module is one subject's
//! queries, an `impl Index` block of its own, so the whole API is methods of [`Index`].
#![warn(missing_docs)]

mod access;
mod blobs;
mod counters;
mod derivations;
mod entries;
mod files;
mod index;
mod lifecycle;
mod namespaces;
mod schema;
mod stats;
#[cfg(test)]
mod testing;
mod uploads;

pub use access::AccessRecord;
pub use blobs::{BlobRow, BlobState};
pub use derivations::{Derivation, DerivationKey, DerivationStats};
pub use entries::{Entry, NewEntry, Validators};
pub use files::{DirState, DirStats, FileRow, ListPage, ListRequest, ListedItem};
pub use index::{Index, IndexError, Opened};
pub use lifecycle::{DiskUsage, EntryRef, NamespaceUsage};
pub use namespaces::{EmptyDelete, Namespace};
pub use stats::{NamespaceStats, Stats};
pub use uploads::{PartRow, UploadRow};

/// SQLite's error codes, so callers can tell a full disk from a bug without naming rusqlite.
pub use rusqlite::ErrorCode as SqliteErrorCode;
