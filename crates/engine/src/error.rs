//! The engine's one error type (layer 0). Front doors map each variant to a status or exit code;
//! this module chooses none.
//!
//! Every variant a caller acts on is typed, and a failure caused by another error keeps it as its
//! [`std::error::Error::source`]. `Error` is `Clone` (causes are shared behind `Arc`), so that one
//! failure of a shared fetch reaches every waiting reader as the same variant.

use std::sync::Arc;

use tiercache_core::{Digest, DigestError, KeyError, RangeError};
use tiercache_index::IndexError;
use tiercache_sources::SourceError;

/// A cause shared by the clones of one error.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a derivation was refused before any work ([`Error::Recipe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeFault {
    /// An unknown recipe, or a parameter unknown, repeated or out of bounds.
    BadRequest,
    /// The input is not something the recipe takes (a text file asked for a thumbnail).
    Unsupported,
    /// The recipe cannot run on this machine, or this process runs no workers.
    NotAvailable,
}

/// What can go wrong in the engine.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// A namespace to be deleted only while empty still holds entries or files.
    #[error("namespace {namespace:?} is not empty")]
    NotEmpty {
        /// The namespace.
        namespace: String,
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
    /// The request conflicts with what exists: a namespace defined otherwise, a storage directory
    /// that is another's or not empty, a key that names a directory.
    #[error("{what}")]
    Conflict {
        /// What conflicts, in a sentence.
        what: String,
        /// The failure that revealed it, if any.
        #[source]
        cause: Option<Cause>,
    },
    /// What was read kept changing under the read; the same request a moment later is expected
    /// to succeed.
    #[error("{what} kept changing while it was read; try again")]
    Busy {
        /// What was being read.
        what: String,
    },
    /// No fetch slot came free (of the source's share of the fetch limit, or of the global
    /// limit) within the source's own timeouts: that source is slow or hung (other sources are
    /// not held up by it), or every slot is taken. Worth retrying later.
    #[error(
        "no fetch slot came free within {waited:?} (the source is slow or hung, or every slot is taken); try again later"
    )]
    SourceBusy {
        /// How long the fetch waited for a slot.
        waited: std::time::Duration,
    },
    /// The namespace mirrors a source: its entries are read-only here.
    #[error("namespace {namespace} mirrors {}; its entries are read-only", tiercache_core::redact_url(mirrors))]
    ReadOnly {
        /// The namespace.
        namespace: String,
        /// Its source.
        mirrors: String,
    },
    /// A directory would let a namespace reach what it must not (`contain.rs`): a directory
    /// source over `/`, over or inside the data directory or another namespace's storage
    /// directory; a storage directory over the data directory or a directory source. Also what a
    /// namespace defined so by an older version answers: it is refused, not served.
    #[error("{what}")]
    Containment {
        /// What was refused and why, in a sentence.
        what: String,
    },
    /// A name in a key is longer than the file system allows (a path segment over 255 bytes of a
    /// directory namespace): the client can fix it by naming another key.
    #[error("{what}")]
    NameTooLong {
        /// Which name, and the limit.
        what: String,
    },
    /// A derivation cannot be asked for so: an unknown recipe or parameter, an input the recipe
    /// does not take, or a recipe this machine cannot run (`fault` says which).
    #[error("{reason}")]
    Recipe {
        /// Which kind of refusal.
        fault: RecipeFault,
        /// Why, in a sentence.
        reason: String,
    },
    /// An argument is invalid (a bad source URL, say); the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// No file at that path of the image (nothing there, a component that is not a directory).
    #[error("no file {path:?} in image {image}: {why}")]
    NoImageFile {
        /// The image, as asked for.
        image: String,
        /// The path, as asked for (invalid UTF-8 shown replaced).
        path: String,
        /// Why, in a few words.
        why: String,
    },
    /// An image cannot be read as one: a manifest that is not an image's, no manifest for the
    /// platform, a layer that is not a tar archive (plain, gzip or zstd) or is damaged.
    #[error("{what}")]
    BadImage {
        /// What is wrong, in a sentence.
        what: String,
    },
    /// The source failed; nothing was stored.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// No room: the file system holding the data (or a namespace's storage directory) is full,
    /// or the disk quota cannot make room for an upload.
    #[error("no space left: {what}")]
    StorageFull {
        /// Where, and how much was needed.
        what: String,
        /// The I/O failure that said so, if one did.
        #[source]
        cause: Option<Arc<std::io::Error>>,
    },
    /// An upload larger than the maximum object size: refused before its body was read when it
    /// declared its length, else cut at the limit. Nothing was stored.
    #[error("{}", too_large_message(*declared_bytes, *max_bytes))]
    TooLarge {
        /// The length the upload declared, if it did.
        declared_bytes: Option<u64>,
        /// The maximum object size.
        max_bytes: u64,
    },
    /// An upload's body failed on the client's side (the client went away, stalled past the
    /// server's body timeout, or sent a broken body). Nothing was stored.
    #[error("the upload body failed: {why}")]
    UploadBody {
        /// What the body's stream said.
        why: String,
    },
    /// No multipart upload of that id is under way (never created, aborted, completed, or pruned
    /// as abandoned), or it belongs to another namespace or key.
    #[error("no multipart upload {upload_id:?} is under way")]
    NoSuchUpload {
        /// The id asked for.
        upload_id: String,
    },
    /// A part named by a multipart complete was not uploaded, or its ETag is not the part's.
    #[error("part {part_number} {why}")]
    InvalidPart {
        /// The part's number.
        part_number: u32,
        /// What is wrong with it, as the rest of the sentence.
        why: String,
    },
    /// The parts named by a multipart complete are not in ascending order of part number.
    #[error("the parts must be listed in ascending order of part number: {part_number} follows {after}")]
    InvalidPartOrder {
        /// The part out of order.
        part_number: u32,
        /// The part it follows.
        after: u32,
    },
    /// A part other than the last of a multipart complete is smaller than the minimum part size.
    #[error("part {part_number} has {size_bytes} bytes; every part but the last needs at least {min_bytes}")]
    EntityTooSmall {
        /// The part's number.
        part_number: u32,
        /// Its size.
        size_bytes: u64,
        /// The minimum part size.
        min_bytes: u64,
    },
    /// An upload's body does not have the MD5 the client declared (`Content-MD5`): nothing was
    /// stored.
    #[error("the body's MD5 is {actual}, not the {expected} declared")]
    BadDigest {
        /// The MD5 declared, lowercase hex.
        expected: String,
        /// The body's MD5, lowercase hex.
        actual: String,
    },
    /// A write asked to create an entry (S3's `If-None-Match: *`) and the key has one: nothing
    /// was written.
    #[error("entry {key:?} of namespace {namespace:?} exists")]
    Exists {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
    },
    /// Local I/O failed.
    #[error("{what}: {cause}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        cause: Arc<std::io::Error>,
    },
    /// The index failed.
    #[error(transparent)]
    Index(Arc<IndexError>),
}

/// The message of [`Error::TooLarge`].
fn too_large_message(declared_bytes: Option<u64>, max_bytes: u64) -> String {
    match declared_bytes {
        Some(n) => format!("the upload of {n} bytes is larger than the maximum object size ({max_bytes} bytes)"),
        None => format!("the upload is larger than the maximum object size ({max_bytes} bytes); nothing was stored"),
    }
}

impl Error {
    /// A short machine-friendly kind, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Key(_) | Error::Digest(_) | Error::Invalid(_) => "bad_request",
            Error::Containment { .. } => "containment",
            Error::NameTooLong { .. } => "name_too_long",
            Error::Range(_) => "range",
            Error::NoNamespace(_) | Error::NoEntry { .. } | Error::NoBlob(_) => "not_found",
            Error::NoImageFile { .. } => "not_found",
            Error::BadImage { .. } => "bad_image",
            Error::DigestMismatch { .. } => "digest_mismatch",
            Error::Conflict { .. } => "conflict",
            Error::NotEmpty { .. } => "not_empty",
            Error::Busy { .. } => "busy",
            Error::SourceBusy { .. } => "source_busy",
            Error::ReadOnly { .. } => "read_only",
            Error::Source(SourceError::Forbidden { .. }) => "source_forbidden",
            Error::Source(SourceError::NotFound { .. }) => "source_not_found",
            Error::Source(e) if e.is_timeout() => "source_timeout",
            Error::Source(_) => "source_error",
            Error::StorageFull { .. } => "storage_full",
            Error::TooLarge { .. } => "too_large",
            Error::UploadBody { .. } => "upload_body",
            Error::NoSuchUpload { .. } => "no_such_upload",
            Error::InvalidPart { .. } => "invalid_part",
            Error::InvalidPartOrder { .. } => "invalid_part_order",
            Error::EntityTooSmall { .. } => "entity_too_small",
            Error::BadDigest { .. } => "bad_digest",
            Error::Exists { .. } => "exists",
            Error::Io { .. } => "io",
            Error::Index(_) => "index",
            Error::Recipe { fault: RecipeFault::BadRequest, .. } => "bad_request",
            Error::Recipe { fault: RecipeFault::Unsupported, .. } => "unsupported_input",
            Error::Recipe { fault: RecipeFault::NotAvailable, .. } => "recipe_not_available",
        }
    }

    /// `cause` while doing `what`: [`Error::StorageFull`] if the file system (or a disk quota
    /// of the operating system's) is full, else [`Error::Io`].
    pub fn io(what: impl Into<String>, cause: std::io::Error) -> Error {
        let what = what.into();
        match cause.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Error::StorageFull { what, cause: Some(Arc::new(cause)) }
            }
            _ => Error::Io { what, cause: Arc::new(cause) },
        }
    }

    /// A conflict with what exists, said in `what`.
    pub fn conflict(what: impl Into<String>) -> Error {
        Error::Conflict { what: what.into(), cause: None }
    }

    /// A task on another thread that panicked or was cancelled while doing `what`.
    pub(crate) fn task(what: &str, e: tokio::task::JoinError) -> Error {
        Error::Io { what: format!("{what}: the task failed"), cause: Arc::new(std::io::Error::other(e)) }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::io("local I/O failed", e)
    }
}

impl From<IndexError> for Error {
    fn from(e: IndexError) -> Error {
        let is_full = matches!(&e, IndexError::Sqlite(sqlite)
            if sqlite.sqlite_error_code() == Some(tiercache_index::SqliteErrorCode::DiskFull));
        match e {
            IndexError::Conflict { .. } => Error::Conflict { what: e.to_string(), cause: Some(Arc::new(e)) },
            e if is_full => Error::StorageFull { what: format!("the index cannot grow: {e}"), cause: None },
            other => Error::Index(Arc::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_full_file_system_is_storage_full_by_its_kind_with_its_cause() {
        for kind in [std::io::ErrorKind::StorageFull, std::io::ErrorKind::QuotaExceeded] {
            let e = Error::io("writing blob", std::io::Error::from(kind));
            assert!(matches!(e, Error::StorageFull { .. }), "{e:?}");
            let cause = e.source().and_then(|s| s.downcast_ref::<Arc<std::io::Error>>());
            assert_eq!(cause.map(|c| c.kind()), Some(kind));
        }
        let e = Error::io("reading blob", std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(matches!(e, Error::Io { .. }) && e.to_string().starts_with("reading blob: "), "{e}");
        assert!(e.source().is_some());
    }

    #[test]
    fn an_index_conflict_stays_a_conflict_with_its_cause_and_clones_alike() {
        let e = Error::from(IndexError::Conflict { name: "web".into(), existing: None });
        assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
        let cause = e.source().and_then(|s| s.downcast_ref::<Cause>());
        assert!(cause.is_some_and(|c| c.downcast_ref::<IndexError>().is_some()), "{e:?}");
        let shared = e.clone();
        assert_eq!((shared.kind(), shared.to_string()), (e.kind(), e.to_string()));
    }
}
