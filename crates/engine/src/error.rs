//! The engine's one error type. Front doors map each variant to a status or exit code.

use tiercache_core::{Digest, DigestError, KeyError, RangeError};
use tiercache_index::IndexError;
use tiercache_sources::SourceError;

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A namespace name or key was refused.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A digest was malformed.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A Range request cannot be served.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// No namespace of that name.
    #[error("no namespace named {0:?}")]
    NoNamespace(String),
    /// The namespace exists but has no entry of that key and no source to ask.
    #[error("no entry {key:?} in namespace {namespace:?}")]
    NoEntry {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
    },
    /// The blob is not held here.
    #[error("blob {0} is not in the cache")]
    NoBlob(Digest),
    /// An upload's bytes do not hash to the digest it was sent to.
    #[error("digest mismatch: expected {expected}, the body hashes to {actual}")]
    DigestMismatch {
        /// The digest in the request.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The namespace exists with another definition.
    #[error("{0}")]
    Conflict(String),
    /// The namespace's entries cannot be written (it mirrors a read-only source).
    #[error("{0}")]
    ReadOnly(String),
    /// An argument is invalid (a bad source URL, say).
    #[error("{0}")]
    Invalid(String),
    /// The source failed; nothing was stored.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The data directory is full.
    #[error("no space left in the data directory: {0}")]
    StorageFull(String),
    /// Local I/O failed.
    #[error("local I/O error: {0}")]
    Io(String),
    /// The index failed.
    #[error(transparent)]
    Index(IndexError),
}

impl Error {
    /// A short machine-friendly kind, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Key(_) | Error::Digest(_) | Error::Invalid(_) => "bad_request",
            Error::Range(_) => "range",
            Error::NoNamespace(_) | Error::NoEntry { .. } | Error::NoBlob(_) => "not_found",
            Error::DigestMismatch { .. } => "digest_mismatch",
            Error::Conflict(_) => "conflict",
            Error::ReadOnly(_) => "read_only",
            Error::Source(SourceError::Forbidden { .. }) => "source_forbidden",
            Error::Source(SourceError::NotFound { .. }) => "source_not_found",
            Error::Source(e) if e.is_timeout() => "source_timeout",
            Error::Source(_) => "source_error",
            Error::StorageFull(_) => "storage_full",
            Error::Io(_) => "io",
            Error::Index(_) => "index",
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
            Error::StorageFull(e.to_string())
        } else {
            Error::Io(e.to_string())
        }
    }
}

impl From<IndexError> for Error {
    fn from(e: IndexError) -> Error {
        match e {
            IndexError::Conflict { .. } => Error::Conflict(e.to_string()),
            IndexError::Sqlite(sqlite)
                if sqlite.sqlite_error_code() == Some(tiercache_index::SqliteErrorCode::DiskFull) =>
            {
                Error::StorageFull(sqlite.to_string())
            }
            other => Error::Index(other),
        }
    }
}
