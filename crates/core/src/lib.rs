//! tiercache's vocabulary: blob digests, namespace names, entry keys and byte ranges, and the one
//! parser of durations and sizes ([`units`]); and the process's kept counters ([`kept`]), which
//! front doors and sources count into and the engine writes to the index.
//!
//! Everything else here is pure: parsing and validating what arrives from a request, with no I/O. Every
//! value that names something on disk or at a source is validated here first, so that later layers
//! can rely on the type (a [`Digest`] is always 64 lowercase hex digits; a [`Key`] never contains a
//! `..` segment) instead of re-checking strings.
#![warn(missing_docs)]

mod digest;
mod dir;
mod hashes;
pub mod kept;
mod key;
mod range;
mod redact;
mod rel_path;
pub mod units;

pub use digest::{Digest, DigestError, Hasher};
pub use dir::{FileMarkers, NamespaceOptions};
pub use hashes::Hashes;
pub use kept::{KeptCounter, kept_counter};
pub use key::{Key, KeyError, MAX_KEY_BYTES, MAX_NAMESPACE_BYTES, NamespaceName};
pub use range::{ByteRange, MAX_RANGES, RangeError, RangeRequest, Resolved};
pub use redact::{REDACTED, Secret, redact_url};
pub use rel_path::{MAX_REL_PATH_BYTES, RelPath};

/// A source's validators for an entry: what a conditional request sends back to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Validators {
    /// The source's `ETag`, verbatim (quotes included).
    pub etag: Option<String>,
    /// The source's `Last-Modified`, verbatim.
    pub last_modified: Option<String>,
}

impl Validators {
    /// Whether there is anything to validate with.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// Milliseconds since the Unix epoch, the one time unit of the index.
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
