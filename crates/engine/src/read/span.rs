//! Spans: bytes `start..end` of a blob that a key names by digest, read without storing the
//! blob: from the disk tier, else the shared tier (verified leaf by leaf), else the key's source
//! by one ranged request, which starts no fetch of the whole blob.
//!
//! For a reader that needs a small part of a large blob and can check that part itself: a file
//! inside an image reads the compressed span of its layer that holds it, checked against the
//! layer's seek index (built from the verified whole layer). The source's bytes cannot be
//! checked here: only a whole blob has a digest.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tiercache_core::{ByteRange, Digest, Key, now_ms};
use tiercache_sources::{FetchRequest, Fetched, SourceError};

use super::Reads;
use crate::Error;
use crate::blocking::blocking;
use crate::meta::Tier;
use crate::telemetry::served;

/// A span read, and the tier it came from.
#[derive(Debug, Clone)]
pub(crate) struct Span {
    /// Exactly the bytes asked for.
    pub(crate) bytes: Bytes,
    /// Where they came from.
    pub(crate) tier: Tier,
}

/// The longest span read at once (a layer's spans are a few MiB).
pub(crate) const MAX_SPAN_BYTES: u64 = 256 << 20;

impl Reads {
    /// Bytes `range` of blob `digest`, which `key` of `namespace` names (see the module docs).
    pub(crate) async fn span(
        self: &Arc<Self>,
        namespace: &str,
        key: &str,
        digest: Digest,
        range: Range<u64>,
    ) -> Result<Span, Error> {
        let t0 = Instant::now();
        let len = range.end.saturating_sub(range.start);
        if len > MAX_SPAN_BYTES {
            return Err(Error::Invalid(format!("a span of {len} bytes is more than {MAX_SPAN_BYTES} read at once")));
        }
        if len == 0 {
            return Ok(Span { bytes: Bytes::new(), tier: Tier::Disk });
        }
        let what = || format!("{digest} bytes {}..{}", range.start, range.end);
        if let Some(bytes) = self.span_from_disk(digest, range.clone()).await? {
            served(Tier::Disk, "hit", t0, len, what);
            return Ok(Span { bytes, tier: Tier::Disk });
        }
        if let Some(bytes) = self.span_from_shared(digest, range.clone()).await {
            served(Tier::Shared, "hit", t0, len, what);
            return Ok(Span { bytes, tier: Tier::Shared });
        }
        let bytes = self.span_from_source(namespace, key, range.clone()).await?;
        served(Tier::Source, "range", t0, len, what);
        Ok(Span { bytes, tier: Tier::Source })
    }

    /// The span from the disk tier's file, if it holds the blob.
    async fn span_from_disk(&self, digest: Digest, range: Range<u64>) -> Result<Option<Bytes>, Error> {
        let disk = self.stores.managed().disk.clone();
        let read = blocking(move || {
            let Some((file, meta)) = disk.open_blob(&digest)? else { return Ok(None) };
            if range.end > meta.len() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("bytes {}..{} are past the blob's end ({} bytes)", range.start, range.end, meta.len()),
                ));
            }
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            file.read_exact_at(&mut buf, range.start)?;
            Ok(Some(Bytes::from(buf)))
        });
        let found = read.await?;
        if found.is_some() {
            self.access.note(None, digest, now_ms());
        }
        Ok(found)
    }

    /// The span from the shared tier, verified; `None` if it lacks the blob or fails (a miss).
    async fn span_from_shared(&self, digest: Digest, range: Range<u64>) -> Option<Bytes> {
        let tier = self.stores.shared()?;
        let list = match tier.lookup(&digest).await {
            Ok(Some(list)) if list.size_bytes >= range.end => list,
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(%digest, error = %e, "shared tier lookup for a span failed; reading on");
                return None;
            }
        };
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        let mut stream = tier.read_range(list, range.start, range.end, None);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(e) => {
                    tracing::debug!(%digest, error = %e, "shared tier span read failed; reading on");
                    return None;
                }
            }
        }
        (out.len() as u64 == range.end - range.start).then(|| out.freeze())
    }

    /// The span from `key`'s source, by one ranged request within the fetch limits.
    async fn span_from_source(&self, namespace: &str, key: &str, range: Range<u64>) -> Result<Bytes, Error> {
        let ns = self.namespaces.row(namespace).await?;
        let key = Key::new(key)?;
        let source = self.source_of(&ns, &key)?;
        let _slot = self.fetch_slots.take(&source.describe()).await?;
        let asked = ByteRange { start: range.start, end: range.end - 1 };
        let req = FetchRequest { range: Some(asked), ..FetchRequest::default() };
        let url = || source.describe();
        let body = match source.fetch(&key, &req).await? {
            Fetched::Body(body) => body,
            Fetched::NotModified => {
                let reason = "answered a ranged request without validators \"not modified\"".to_owned();
                return Err(Error::Source(SourceError::Protocol { url: url(), reason }));
            }
        };
        if body.range != Some(asked) {
            let reason = format!("asked for bytes {asked:?}, the answer holds {:?}", body.range);
            return Err(Error::Source(SourceError::Protocol { url: url(), reason }));
        }
        let mut out = BytesMut::with_capacity(asked.len() as usize);
        let mut stream = body.stream;
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() as u64 > asked.len() {
                break;
            }
        }
        if out.len() as u64 != asked.len() {
            let reason = format!("a range of {} bytes came back as {}", asked.len(), out.len());
            return Err(Error::Source(SourceError::Protocol { url: url(), reason }));
        }
        Ok(out.freeze())
    }
}
