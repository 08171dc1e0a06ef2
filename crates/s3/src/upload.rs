//! An upload's body on its way into the engine: counted (`tiercache_s3_bytes_total{direction="in"}`),
//! and checked against what the client declared: `Content-MD5`, and the `x-amz-checksum-*`
//! values of the headers or of the aws-chunked trailers (read when the body ends, which s3s has
//! verified by then). A mismatch ends the stream with an error instead of its end, so the engine
//! stores nothing (its temp file is dropped), and [`Verdict::failure`] says which S3 error it was
//! (also for an aws-chunked chunk whose signature s3s found wrong: `SignatureDoesNotMatch`).
//!
//! It holds the bytes of one chunk at a time: memory stays flat whatever the body's size.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use md5::Digest as _;
use s3s::checksum::ChecksumHasher;
use s3s::dto::{Checksum, ChecksumAlgorithm, StreamingBlob};
use s3s::{S3Error, S3Result, TrailingHeaders, s3_error};

/// The checksums a client declared for an upload (before its trailers are read).
#[derive(Debug, Default, Clone)]
pub(crate) struct Declared {
    /// `Content-MD5`, decoded.
    pub(crate) md5: Option<[u8; 16]>,
    /// `x-amz-checksum-*` headers.
    pub(crate) checksum: Checksum,
    /// `x-amz-checksum-algorithm` / `x-amz-sdk-checksum-algorithm`: the value may come in a trailer.
    pub(crate) algorithm: Option<ChecksumAlgorithm>,
}

impl Declared {
    /// Reads `Content-MD5` (base64 of 16 bytes, else `InvalidDigest`).
    pub(crate) fn content_md5(value: Option<&str>) -> S3Result<Option<[u8; 16]>> {
        let Some(value) = value else { return Ok(None) };
        let bytes = base64_simd::STANDARD
            .decode_to_vec(value.trim())
            .map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
        let md5: [u8; 16] =
            bytes.try_into().map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not the base64 of 16 bytes"))?;
        Ok(Some(md5))
    }
}

/// The checks `input` declares: a PutObject's or an UploadPart's input, which have the same
/// fields of other types. Returns early with `InvalidDigest` for a malformed `Content-MD5`.
macro_rules! declared {
    ($input:expr) => {
        $crate::upload::Declared {
            md5: $crate::upload::Declared::content_md5($input.content_md5.as_deref())?,
            checksum: s3s::dto::Checksum {
                checksum_crc32: $input.checksum_crc32.clone(),
                checksum_crc32c: $input.checksum_crc32c.clone(),
                checksum_sha1: $input.checksum_sha1.clone(),
                checksum_sha256: $input.checksum_sha256.clone(),
                checksum_crc64nvme: $input.checksum_crc64nvme.clone(),
                ..Default::default()
            },
            algorithm: $input.checksum_algorithm.clone(),
        }
    };
}
pub(crate) use declared;

/// What the engine's write of a [`Checked`] body came to: the failed check's S3 error if one
/// ended the stream, else the engine's own error, else what it stored with the checksums the
/// body was checked against (for the answer).
pub(crate) fn outcome<T>(
    stored: Result<T, tiercache_engine::Error>,
    verdict: &Mutex<Verdict>,
) -> S3Result<(T, Checksum)> {
    let verdict = std::mem::take(&mut *verdict.lock().unwrap_or_else(|p| p.into_inner()));
    match (stored, verdict.failure) {
        (Ok(stored), None) => Ok((stored, verdict.checksum)),
        (_, Some(failure)) => Err(failure),
        (Err(e), None) => Err(crate::error::s3(e)),
    }
}

/// What the stream found, read by the handler after the engine returned.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// The S3 error that ended the stream, if a check failed.
    pub(crate) failure: Option<S3Error>,
    /// The checksums computed (each requested algorithm), base64, for the answer.
    pub(crate) checksum: Checksum,
}

/// The body of an upload, checked as it goes.
pub(crate) struct Checked {
    inner: StreamingBlob,
    md5: Option<(md5::Md5, [u8; 16])>,
    hasher: Option<ChecksumHasher>,
    declared: Checksum,
    trailers: Option<TrailingHeaders>,
    verdict: Arc<Mutex<Verdict>>,
    is_done: bool,
    /// `tiercache_s3_bytes_total{direction="in"}`, looked up once.
    bytes_in: crate::counts::ByteCount,
}

impl Checked {
    /// `body` checked against `declared` (and the trailers, if the body has them).
    pub(crate) fn new(
        body: StreamingBlob,
        declared: Declared,
        trailers: Option<TrailingHeaders>,
    ) -> (Checked, Arc<Mutex<Verdict>>) {
        let mut hasher = ChecksumHasher::default();
        let mut any = false;
        let c = &declared.checksum;
        let algorithm = declared.algorithm.as_ref().map(ChecksumAlgorithm::as_str);
        if c.checksum_crc32.is_some() || algorithm == Some(ChecksumAlgorithm::CRC32) {
            hasher.crc32 = Some(Default::default());
            any = true;
        }
        if c.checksum_crc32c.is_some() || algorithm == Some(ChecksumAlgorithm::CRC32C) {
            hasher.crc32c = Some(Default::default());
            any = true;
        }
        if c.checksum_sha1.is_some() || algorithm == Some(ChecksumAlgorithm::SHA1) {
            hasher.sha1 = Some(Default::default());
            any = true;
        }
        if c.checksum_sha256.is_some() || algorithm == Some(ChecksumAlgorithm::SHA256) {
            hasher.sha256 = Some(Default::default());
            any = true;
        }
        if c.checksum_crc64nvme.is_some() || algorithm == Some(ChecksumAlgorithm::CRC64NVME) {
            hasher.crc64nvme = Some(Default::default());
            any = true;
        }
        let verdict = Arc::new(Mutex::new(Verdict::default()));
        let checked = Checked {
            inner: body,
            md5: declared.md5.map(|m| (md5::Md5::new(), m)),
            hasher: any.then_some(hasher),
            declared: declared.checksum,
            trailers,
            verdict: Arc::clone(&verdict),
            is_done: false,
            bytes_in: crate::counts::bytes_in(),
        };
        (checked, verdict)
    }

    /// The checks at the end of the body: `None` if they pass.
    fn finish(&mut self) -> Option<S3Error> {
        if let Some((md5, expected)) = self.md5.take()
            && md5.finalize().as_slice() != expected
        {
            return Some(s3_error!(BadDigest, "The Content-MD5 you specified did not match what we received."));
        }
        let mut declared = std::mem::take(&mut self.declared);
        if let Some(trailers) = self.trailers.as_ref().and_then(TrailingHeaders::take) {
            let get = |name: &str| trailers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            declared.checksum_crc32 = declared.checksum_crc32.or_else(|| get("x-amz-checksum-crc32"));
            declared.checksum_crc32c = declared.checksum_crc32c.or_else(|| get("x-amz-checksum-crc32c"));
            declared.checksum_sha1 = declared.checksum_sha1.or_else(|| get("x-amz-checksum-sha1"));
            declared.checksum_sha256 = declared.checksum_sha256.or_else(|| get("x-amz-checksum-sha256"));
            declared.checksum_crc64nvme = declared.checksum_crc64nvme.or_else(|| get("x-amz-checksum-crc64nvme"));
        }
        // No checksum asked for: nothing more to check.
        let computed = self.hasher.take()?.finalize();
        let pairs = [
            ("crc32", &declared.checksum_crc32, &computed.checksum_crc32),
            ("crc32c", &declared.checksum_crc32c, &computed.checksum_crc32c),
            ("sha1", &declared.checksum_sha1, &computed.checksum_sha1),
            ("sha256", &declared.checksum_sha256, &computed.checksum_sha256),
            ("crc64nvme", &declared.checksum_crc64nvme, &computed.checksum_crc64nvme),
        ];
        for (name, declared, computed) in pairs {
            if let Some(declared) = declared
                && Some(declared) != computed.as_ref()
            {
                return Some(s3_error!(
                    BadDigest,
                    "The x-amz-checksum-{name} you specified did not match the calculated checksum."
                ));
            }
        }
        self.verdict.lock().unwrap_or_else(|p| p.into_inner()).checksum = computed;
        None
    }
}

/// Whether `e`, a body's error, is s3s's finding that an aws-chunked chunk's signature is wrong.
/// Its error type is private to s3s, so its message tells (s3s is pinned to one release, and a
/// test sends a chunk signed wrong).
fn is_chunk_signature_mismatch(e: &(dyn std::error::Error + 'static)) -> bool {
    e.to_string() == "AwsChunkedStreamError: SignatureMismatch"
}

/// Why a checked body failed (the engine keeps this message; the handler answers from the
/// [`Verdict`]).
#[derive(Debug)]
pub(crate) struct Mismatch;

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the body does not match the checksum its request declared")
    }
}

impl std::error::Error for Mismatch {}

impl Stream for Checked {
    type Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.is_done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.bytes_in.increment(chunk.len() as u64);
                if let Some((md5, _)) = &mut this.md5 {
                    md5.update(&chunk);
                }
                if let Some(hasher) = &mut this.hasher {
                    hasher.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.is_done = true;
                if is_chunk_signature_mismatch(&*e) {
                    let failure = s3_error!(
                        SignatureDoesNotMatch,
                        "The request signature we calculated does not match the signature you provided."
                    );
                    this.verdict.lock().unwrap_or_else(|p| p.into_inner()).failure = Some(failure);
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.is_done = true;
                match this.finish() {
                    None => Poll::Ready(None),
                    Some(failure) => {
                        this.verdict.lock().unwrap_or_else(|p| p.into_inner()).failure = Some(failure);
                        Poll::Ready(Some(Err(Box::new(Mismatch))))
                    }
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
