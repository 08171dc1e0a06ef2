//! Sources: where truth lives. A namespace is bound to at most one.
//!
//! A [`Source`] answers one question: "give me the bytes of this key (or this range of them), unless
//! they still match these validators". There are the HTTP(S) source ([`HttpSource`]), the
//! directory source ([`DirSource`]), the S3 source ([`S3Source`]) and the OCI registry source
//! ([`OciSource`]).
//! A source knows nothing of tiers or the index: the engine decides what to keep. The directory source also walks, hashes and
//! writes files, since a directory is both a source and the place its namespace's writes go.
#![warn(missing_docs)]

pub mod dir;
mod http_source;
pub mod oci;
mod s3_source;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;

use tiercache_core::{ByteRange, Digest, Key, Validators};

pub use dir::DirSource;
pub use http_source::{AddressRange, HttpSource, HttpSourceConfig, Redirects};
pub use oci::{OciKey, OciSource, Reference, RegistryCredentials};
pub use s3_source::{DEFAULT_REGION, MAX_SCANNED_PER_PAGE, S3Credentials, S3Source};

/// A source failure, as the engine and finally the client see it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source has no such key (404 or 410).
    #[error("not found at source {url}")]
    NotFound {
        /// What was asked for.
        url: String,
    },
    /// The source refuses access (a file without read permission, a 403).
    #[error("access denied by source for {url}")]
    Forbidden {
        /// What was asked for.
        url: String,
    },
    /// The source answered with an unexpected status.
    #[error("source answered {status} for {url}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// What was asked for.
        url: String,
    },
    /// Connecting, or waiting for headers or body bytes, took longer than allowed.
    #[error("source timed out after {after:?} for {url}")]
    Timeout {
        /// What was asked for.
        url: String,
        /// The limit that ran out.
        after: std::time::Duration,
    },
    /// The body ended before, or ran past, its declared length.
    #[error("source body for {url} was {got} bytes, but Content-Length said {expected}")]
    LengthMismatch {
        /// What was asked for.
        url: String,
        /// Declared length.
        expected: u64,
        /// Bytes received before the mismatch was seen.
        got: u64,
    },
    /// The connection failed or closed early.
    #[error("source transfer failed for {url}: {reason}")]
    Transport {
        /// What was asked for.
        url: String,
        /// Why.
        reason: String,
    },
    /// The object is no longer the version the request named ([`FetchRequest::if_version`]):
    /// the source answered 412, or a body under other validators.
    #[error("source object {url} changed since it was first fetched")]
    Changed {
        /// What was asked for.
        url: String,
    },
    /// The source redirected where its redirect policy does not follow (out of its origin, by
    /// default), or too many times; nothing was fetched from there.
    #[error("source redirect refused for {url}: {reason}")]
    Redirect {
        /// What was asked for.
        url: String,
        /// Why the redirect was refused (its target, credentials redacted).
        reason: String,
    },
    /// The source, or where it redirected to, is at a link-local or cloud metadata address that
    /// was not allowed (`--allow-source-address`); nothing was sent there.
    #[error("source address refused for {url}: {reason}")]
    AddressRefused {
        /// What was asked for.
        url: String,
        /// Which host and address.
        reason: String,
    },
    /// The source wants authentication that could not be given: a registry's 401 without a usable
    /// challenge, a token endpoint that failed, hung or refused, credentials missing or refused.
    #[error("source refused authorization for {url}: {reason}")]
    Unauthorized {
        /// What was asked for.
        url: String,
        /// What happened, and what to do about it.
        reason: String,
    },
    /// The key cannot name anything at this source (a registry key outside the Distribution
    /// grammar, a digest in an unsupported algorithm); nothing was sent.
    #[error("invalid key {key:?} for this source: {reason}")]
    InvalidKey {
        /// The key (at most as long as a key may be).
        key: String,
        /// Why.
        reason: String,
    },
    /// The source's answer makes no sense (a bad `Content-Range`, say).
    #[error("source sent an invalid response for {url}: {reason}")]
    Protocol {
        /// What was asked for.
        url: String,
        /// Why.
        reason: String,
    },
}

impl SourceError {
    /// Whether the failure was a timeout (the HTTP layer answers 504 rather than 502).
    pub fn is_timeout(&self) -> bool {
        matches!(self, SourceError::Timeout { .. })
    }
}

/// What a fetch asks for.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    /// Only these bytes (the answer's `range` says what came back).
    pub range: Option<ByteRange>,
    /// Answer [`Fetched::NotModified`] if the source still matches these.
    pub validators: Option<Validators>,
    /// Answer only if the object is still the version these validators name (its strong ETag,
    /// else its `Last-Modified`); otherwise fail with [`SourceError::Changed`], never with another
    /// version's bytes. For the extra requests a read makes beside a fetch under way (a range
    /// ahead of it, a resumed body), so that one response never mixes two versions.
    pub if_version: Option<Validators>,
}

/// Metadata of the object at the source.
#[derive(Debug, Clone, Default)]
pub struct SourceMeta {
    /// The whole object's size, if the source said.
    pub size_bytes: Option<u64>,
    /// Its content type, if the source said.
    pub content_type: Option<String>,
    /// Its validators.
    pub validators: Validators,
    /// The `Content-Encoding` the source sent its bytes with (`gzip`, say): the bytes are kept
    /// and served as sent, with this header. `None` for identity.
    pub content_encoding: Option<String>,
}

/// A body on its way from the source.
pub struct SourceBody {
    /// What the source said about the whole object.
    pub meta: SourceMeta,
    /// `Some` if and only if the request had a range: the range these bytes cover.
    pub range: Option<ByteRange>,
    /// The bytes. Ends with an error if the transfer fails or its length is wrong.
    pub stream: BoxStream<'static, Result<Bytes, SourceError>>,
}

impl fmt::Debug for SourceBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceBody").field("meta", &self.meta).field("range", &self.range).finish_non_exhaustive()
    }
}

/// A source's answer.
#[derive(Debug)]
pub enum Fetched {
    /// The validators still match: the cached copy is current.
    NotModified,
    /// New bytes.
    Body(SourceBody),
}

/// Where truth lives.
#[async_trait::async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// A human-readable address (a URL, credentials redacted), for logs and `ns show`.
    fn describe(&self) -> String;

    /// Fetches `key`, or a range of it, unless it still matches `req.validators`.
    async fn fetch(&self, key: &Key, req: &FetchRequest) -> Result<Fetched, SourceError>;

    /// What the source says of `key` without its bytes (an HTTP `HEAD`, a directory's `stat`),
    /// with the same limits and errors as [`Source::fetch`].
    async fn head(&self, key: &Key) -> Result<SourceMeta, SourceError>;

    /// One page of the source's own keys, or `Ok(None)` if it cannot list them (an HTTP
    /// server): its namespace then lists what it has cached. A failure is an error, never a
    /// shorter page.
    async fn list(&self, query: &ListQuery) -> Result<Option<Listing>, SourceError> {
        let _ = query;
        Ok(None)
    }

    /// How the cache may keep `key`: the default policy (the cache's own revalidation, no digest
    /// known) unless the source knows better, as a registry does of a blob named by its digest.
    fn key_policy(&self, key: &Key) -> KeyPolicy {
        let _ = key;
        KeyPolicy::default()
    }
}

/// What a source says about how the cache may keep one of its keys ([`Source::key_policy`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The SHA-256 the key's bytes must have (a registry blob or a manifest by digest): bytes that
    /// hash otherwise are never stored nor served complete, and bytes the cache holds under this
    /// digest already (from any namespace, or the shared tier) serve the key without a fetch.
    pub digest: Option<Digest>,
    /// How long an entry may be served without asking the source again: `None` for the cache's
    /// default, [`Duration::MAX`] for never (the bytes cannot change).
    pub fresh_for: Option<Duration>,
    /// Whether a stored entry is served when asking the source again fails (it is down, times
    /// out or answers 5xx), rather than the failure.
    pub stale_on_error: bool,
}

/// What a listing of a source asks for. Keys are the source's (relative to its prefix).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys that contain this after the prefix up into common prefixes.
    pub delimiter: Option<String>,
    /// Only keys after this one (or, if it is a common prefix, after every key in it).
    pub after: Option<String>,
    /// At most this many keys and common prefixes (at least 1).
    pub limit: usize,
}

/// An object in a [`Listing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Its key (a valid [`Key`]: objects no key can name are left out).
    pub key: String,
    /// Its size.
    pub size_bytes: u64,
    /// Its ETag as the source gives it, without quotes.
    pub etag: Option<String>,
    /// Its last modification, ms since the epoch.
    pub modified_ms: Option<i64>,
}

/// One page of a source's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Objects, in byte order.
    pub objects: Vec<ListedObject>,
    /// Common prefixes (with a delimiter), in byte order, interleaved with `objects`.
    pub common_prefixes: Vec<String>,
    /// Where the next page starts: the last key or common prefix looked at (possibly not on
    /// the page when a page's scan budget ran out first).
    pub last: Option<String>,
    /// Whether more keys may follow.
    pub is_truncated: bool,
}

/// The credentials a namespace gives its source, from its options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SourceCredentials {
    /// An S3 source's access key pair (`s3_access_key`, `s3_secret_key`).
    pub s3: Option<S3Credentials>,
    /// A registry source's user and password (`registry_user`, `registry_password`).
    pub registry: Option<RegistryCredentials>,
}

/// Builds the source a namespace's `source` string names.
///
/// `http://` and `https://` base URLs, `file:///absolute/path` directories,
/// `s3://bucket/prefix?endpoint=…&region=…` buckets and `oci://HOST[:PORT]` / `oci+http://HOST:PORT`
/// registries are accepted; an S3 source signs with `credentials.s3` if given, else with the AWS
/// variables; a registry source authenticates with `credentials.registry` if given, else with a
/// docker `config.json`'s.
pub fn from_url(
    url: &str,
    config: &HttpSourceConfig,
    credentials: &SourceCredentials,
) -> Result<std::sync::Arc<dyn Source>, String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("s3://") {
        return Ok(std::sync::Arc::new(S3Source::new(url, config, credentials.s3.as_ref())?));
    }
    if oci::is_registry_url(url) {
        return Ok(std::sync::Arc::new(OciSource::new(url, config, credentials.registry.as_ref())?));
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(std::sync::Arc::new(HttpSource::new(url, config)?));
    }
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(std::sync::Arc::new(DirSource::new(path)?));
    }
    Err(format!(
        "unsupported source {:?}: expected an http:// or https:// base URL, s3://bucket/prefix, oci://HOST[:PORT], \
         oci+http://HOST:PORT, or file:///path",
        tiercache_core::redact_url(url)
    ))
}

/// The identity of the source `url`, the same on every node that names it and without
/// credentials: for an HTTP source its base URL, canonical (scheme and host in lower case, a
/// default port dropped, percent-encoding normalised, a trailing `/`); for an S3 source
/// `s3://bucket/prefix/?endpoint=…`; for a registry `oci://host[:port]/` (or `oci+http://…`).
/// Used to name what a cluster shares about the source's entries, never to send a request.
pub fn identity(url: &str) -> Result<String, String> {
    if url.to_ascii_lowercase().starts_with("s3://") {
        return s3_source::identity(url);
    }
    if oci::is_registry_url(url) {
        return oci::identity(url);
    }
    http_source::identity(url)
}
