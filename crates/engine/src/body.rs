//! What a read returns (layer 2): its headers' facts ([`ReadMeta`], `meta.rs`) first, then a
//! body stream over the requested range, from whichever place holds the bytes: a blob file, the
//! memory tier, a flight's temp file as it fills, the shared tier's verified chunks, or the source.
//!
//! The metadata comes before the body so the front door can answer conditional and range headers
//! (which need the size and the ETag) before a single body byte is read. This module decides
//! nothing about where a read goes (`read.rs` does); it only streams what it is handed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use tiercache_core::{ByteRange, Key, RangeRequest, Validators};
use tiercache_sources::{FetchRequest, Fetched, Source};
use tokio::sync::watch;

use tiercache_tiers::shared::{ChunkList, SharedTier};

use crate::meta::ReadMeta;
use crate::spool::{BodyStream, Phase, Recent};
use crate::telemetry;

/// Reads at most this many bytes inline on the async worker (page-cache reads of small blobs cost
/// less than a hand-off to a blocking thread); larger ranges stream from a blocking thread.
const INLINE_READ_BYTES: u64 = 64 * 1024;
/// Chunk size for streamed reads.
const CHUNK_BYTES: u64 = 256 * 1024;
/// A cold range starting more than this far beyond the bytes already fetched is asked of the
/// source directly rather than waiting for the whole-blob fetch to get there (only as the
/// flight's own version: see [`range_ahead_stream`]).
const TAIL_WINDOW_BYTES: u64 = 4 * 1024 * 1024;

/// A read in progress: answer headers from [`Read::meta`], then call [`Read::into_stream`].
pub struct Read {
    /// Headers' worth of facts.
    pub meta: ReadMeta,
    pub(crate) body: Body,
    /// Marks the blob and namespace in use (safe from eviction and owner pruning) until the body
    /// is dropped.
    pub(crate) hold: Option<crate::quota::Hold>,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Read").field("meta", &self.meta).finish_non_exhaustive()
    }
}

pub(crate) enum Body {
    /// A published blob.
    File { file: Arc<File>, size_bytes: u64 },
    /// A small blob held by the memory tier.
    Memory(Bytes),
    /// A blob served from its source without being stored (the disk quota had no room): the
    /// flight's own body if this reader took it, else a request of its own.
    PassThrough { source: Arc<dyn Source>, key: Key, body: Option<BodyStream> },
    /// A fetch under way (or just finished).
    Flight { rx: watch::Receiver<Phase>, source: Arc<dyn Source>, key: Key },
    /// A blob in the shared tier, with the disk-tier fill `rx` under way (and `recent`, the
    /// verified bytes it holds in memory, unless no fill is) and the first span the reader wants
    /// already read and verified (`primed`: its start offset and bytes).
    Shared {
        rx: watch::Receiver<Phase>,
        recent: Option<Arc<Recent>>,
        tier: Arc<SharedTier>,
        list: Arc<ChunkList>,
        primed: Option<(u64, Bytes)>,
    },
}

type ByteStream = BoxStream<'static, io::Result<Bytes>>;

impl Read {
    /// For a small read of a blob already in the disk tier, the bytes themselves, read now (a
    /// response with a whole body in hand is cheaper to send than a stream). `None` for a large
    /// read or a fetch under way: use [`Read::into_stream`].
    pub fn read_small(&self, range: Option<ByteRange>) -> Option<io::Result<Bytes>> {
        if let Body::Shared { primed: Some((cs, bytes)), list, .. } = &self.body {
            // The verified chunk in hand may hold the whole range.
            let (start, end) = range.map(|r| (r.start, r.end + 1)).unwrap_or((0, list.size_bytes));
            let fits = start >= *cs && end <= cs + bytes.len() as u64 && end - start <= INLINE_READ_BYTES;
            return fits.then(|| {
                telemetry::read_bytes(self.meta.tier, end - start);
                Ok(bytes.slice((start - cs) as usize..(end - cs) as usize))
            });
        }
        if let Body::Memory(bytes) = &self.body {
            let (start, end) = range.map(|r| (r.start as usize, r.end as usize + 1)).unwrap_or((0, bytes.len()));
            telemetry::read_bytes(self.meta.tier, (end - start) as u64);
            return Some(Ok(bytes.slice(start..end)));
        }
        let Body::File { file, size_bytes } = &self.body else { return None };
        let (start, end) = range.map(|r| (r.start, r.end + 1)).unwrap_or((0, *size_bytes));
        if end.saturating_sub(start) > INLINE_READ_BYTES {
            return None;
        }
        let bytes = if end <= start { Ok(Bytes::new()) } else { read_chunk(file, start, end - start) };
        if let Ok(b) = &bytes {
            telemetry::read_bytes(self.meta.tier, b.len() as u64);
        }
        Some(bytes)
    }

    /// For a read of a fetch whose source did not say the body's length, waits until the bytes
    /// a `range` of one `a-b` wants are in (else, for `a-` or a suffix, the whole body) or the
    /// fetch ends, and records the size if it is known by then. A front door then answers the
    /// range exactly: a 206 with the size, a 416 if the body turned out shorter, or a 206 of
    /// `bytes a-b/*` whose bytes are all there already; never the whole body.
    pub(crate) async fn await_range(&mut self, range: &RangeRequest) {
        if self.meta.size_bytes.is_some() {
            return;
        }
        let Body::Flight { rx, .. } = &self.body else { return };
        let need = range.single_start().and_then(|(_, end)| end).map(|end| end.saturating_add(1));
        let mut rx = rx.clone();
        let phase = rx
            .wait_for(|p| match p {
                Phase::Waiting => false,
                Phase::Streaming { written, .. } => need.is_some_and(|n| *written >= n),
                _ => true,
            })
            .await
            .map(|p| p.clone());
        if let Ok(Phase::Done { written, digest, .. }) = phase {
            self.meta.size_bytes = Some(written);
            self.meta.digest = Some(digest);
        }
    }

    /// The body: the whole object, or `range` of it. `range` must lie inside
    /// [`ReadMeta::size_bytes`] when that is known.
    pub fn into_stream(self, range: Option<ByteRange>) -> ByteStream {
        let tier = self.meta.tier;
        let hold = self.hold;
        // The version this read's headers describe: any request of its own to the source asks
        // for that version only.
        let meta_validators = Validators {
            etag: self.meta.etag.as_deref().map(str::to_owned),
            last_modified: self.meta.last_modified.as_deref().map(str::to_owned),
        };
        let stream = match self.body {
            Body::Memory(bytes) => {
                let (start, end) = range.map(|r| (r.start as usize, r.end as usize + 1)).unwrap_or((0, bytes.len()));
                futures::stream::once(futures::future::ready(Ok(bytes.slice(start..end)))).boxed()
            }
            Body::PassThrough { body: Some(body), .. } if range.is_none() => {
                body.map(|r| r.map_err(io::Error::other)).boxed()
            }
            // Nothing is stored and no flight is there to wait for: without a validator this
            // request cannot be held to one version (a whole body is still one response).
            Body::PassThrough { source, key, .. } => source_stream(source, key, range, version_of(&meta_validators)),
            Body::File { file, size_bytes } => {
                let (start, end) = range.map(|r| (r.start, r.end + 1)).unwrap_or((0, size_bytes));
                file_stream(file, start, end)
            }
            Body::Shared { rx, recent, tier, list, primed } => {
                let (start, end) = range.map(|r| (r.start, r.end + 1)).unwrap_or((0, list.size_bytes));
                shared_stream(rx, recent, tier, list, primed, start, end)
            }
            Body::Flight { rx, source, key } => {
                let phase = rx.borrow().clone();
                match (range, phase) {
                    (Some(r), Phase::Streaming { written, started }) if r.start > written + TAIL_WINDOW_BYTES => {
                        match version_of(&started.meta.validators) {
                            Some(version) => range_ahead_stream(rx, source, key, r, version),
                            // Without a validator a changed object's bytes could not be told
                            // from the flight's: wait for the flight instead.
                            None => flight_stream(rx, r.start, Some(r.end + 1), None),
                        }
                    }
                    (range, _) => {
                        // With a declared size the body is complete once that many bytes are in the
                        // file (the source stream fails on any byte beyond it): the reader need not
                        // wait for the fsync, rename and index commit that follow.
                        let whole = (0, self.meta.size_bytes);
                        let (start, end) = range.map(|r| (r.start, Some(r.end + 1))).unwrap_or(whole);
                        flight_stream(rx, start, end, Some((source, key)))
                    }
                }
            }
        };
        stream
            .inspect(move |item| {
                let _in_use = &hold;
                if let Ok(chunk) = item {
                    telemetry::read_bytes(tier, chunk.len() as u64);
                }
            })
            .boxed()
    }
}

pub(crate) fn read_chunk(file: &File, pos: u64, len: u64) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len as usize);
    let mut filled = 0usize;
    while filled < buf.len() {
        let n = file.read_at(&mut buf[filled..], pos + filled as u64)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob file is shorter than its recorded size"));
        }
        filled += n;
    }
    Ok(buf.freeze())
}

/// Bytes `start..end` of a complete file.
pub(crate) fn file_stream(file: Arc<File>, start: u64, end: u64) -> ByteStream {
    if end <= start {
        return futures::stream::empty().boxed();
    }
    if end - start <= INLINE_READ_BYTES {
        return futures::stream::once(async move { read_chunk(&file, start, end - start) }).boxed();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut pos = start;
        while pos < end {
            let chunk = read_chunk(&file, pos, (end - pos).min(CHUNK_BYTES));
            let failed = chunk.is_err();
            if let Ok(c) = &chunk {
                pos += c.len() as u64;
            }
            if tx.blocking_send(chunk).is_err() || failed {
                return; // The client went away, or the read failed and was reported.
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
}

/// Where [`flight_stream`] reads from.
enum Tail {
    /// The flight's temp file (later its blob), as bytes arrive.
    File(watch::Receiver<Phase>),
    /// The rest of the body from the source, after the flight stopped storing it.
    Source(ByteStream),
    /// Ended.
    Done,
}

/// Bytes `start..end` (to the end if `None`) of a flight's file, as they arrive. If the flight
/// stops storing the body ([`Phase::Overflow`]), the bytes past what it wrote come from the
/// source (`source`: the one the flight fetched from).
fn flight_stream(
    rx: watch::Receiver<Phase>,
    start: u64,
    end: Option<u64>,
    source: Option<(Arc<dyn Source>, Key)>,
) -> ByteStream {
    futures::stream::unfold((Tail::File(rx), start), move |(tail, pos)| {
        let source = source.clone();
        async move {
            let mut rx = match tail {
                Tail::Done => return None,
                Tail::Source(s) => return next_from_source(s, pos).await,
                Tail::File(rx) => rx,
            };
            loop {
                let phase = rx.borrow_and_update().clone();
                let (started, available, is_done) = match phase {
                    Phase::Streaming { started, written } => (started, written, false),
                    Phase::Done { started, written, .. } => (started, written, true),
                    Phase::Overflow { started, written, .. } if pos < written && end.is_none_or(|e| pos < e) => {
                        (started, written, false)
                    }
                    Phase::Overflow { started, written, rest } => {
                        let Some((source, key)) = source else {
                            let e = io::Error::other("the fetch stopped storing the body");
                            return Some((Err(e), (Tail::Done, pos)));
                        };
                        // The body from `written` on, or (taken by another reader) all of it anew,
                        // as the flight's version only: without a validator, not at all.
                        let (from, body) = match (rest.take(), version_of(&started.meta.validators)) {
                            (Some(body), _) => (written, body.map(|r| r.map_err(io::Error::other)).boxed()),
                            (None, Some(version)) => (0, source_stream(source, key, None, Some(version))),
                            (None, None) => {
                                let e = io::Error::other(
                                    "the fetch stopped storing a body its source gives no validator for, so its rest cannot be asked for again as the same version",
                                );
                                return Some((Err(e), (Tail::Done, pos)));
                            }
                        };
                        let s = skip_and_limit(body, pos - from, end.map(|e| e.saturating_sub(pos)));
                        return next_from_source(s, pos).await;
                    }
                    Phase::Failed(e) => {
                        return Some((Err(io::Error::other(e)), (Tail::Done, pos)));
                    }
                    Phase::Waiting | Phase::NotModified | Phase::PassThrough { .. } => {
                        if rx.changed().await.is_err() {
                            return Some((Err(io::Error::other("fetch ended without a result")), (Tail::Done, pos)));
                        }
                        continue;
                    }
                };
                // The flight's last chunks in memory first: a reader that keeps up reads nothing
                // back from the file. Marked seen before the look, so a chunk pushed after it
                // wakes the wait below.
                let mut received = started.recent.as_ref().map(|r| r.watch());
                if let Some(received) = received.as_mut() {
                    received.borrow_and_update();
                }
                let want = end.map_or(CHUNK_BYTES * 4, |e| e.saturating_sub(pos).min(CHUNK_BYTES * 4));
                if want > 0
                    && let Some(chunk) = started.recent.as_ref().and_then(|r| r.get(pos, want))
                {
                    let next = pos + chunk.len() as u64;
                    return Some((Ok(chunk), (Tail::File(rx), next)));
                }
                let limit = end.map_or(available, |e| e.min(available));
                if pos < limit {
                    let len = (limit - pos).min(CHUNK_BYTES);
                    let item = read_chunk(&started.file, pos, len);
                    let next = pos + item.as_ref().map(|c| c.len() as u64).unwrap_or(0);
                    let tail = if item.is_err() { Tail::Done } else { Tail::File(rx) };
                    return Some((item, (tail, next)));
                }
                if is_done || end.is_some_and(|e| pos >= e) {
                    if end.is_some_and(|e| pos < e) {
                        let e = io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "range lies beyond the end of the fetched blob",
                        );
                        return Some((Err(e), (Tail::Done, pos)));
                    }
                    return None;
                }
                let more = async {
                    match received.as_mut() {
                        Some(received) => received.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        // The sender is gone; look at the last phase once more.
                        let last = rx.borrow().clone();
                        if !matches!(last, Phase::Done { .. } | Phase::Overflow { .. }) {
                            return Some((Err(io::Error::other("fetch ended without a result")), (Tail::Done, pos)));
                        }
                    },
                    true = more => {}
                }
            }
        }
    })
    .boxed()
}

/// The next item of a [`flight_stream`] that reads from the source now; an error ends it.
async fn next_from_source(mut s: ByteStream, pos: u64) -> Option<(io::Result<Bytes>, (Tail, u64))> {
    match s.next().await? {
        Ok(c) => Some((Ok(c), (Tail::Source(s), pos))),
        Err(e) => Some((Err(e), (Tail::Done, pos))),
    }
}

/// `body` without its first `skip` bytes, and after that at most `limit` bytes (all if `None`).
fn skip_and_limit(body: ByteStream, skip: u64, limit: Option<u64>) -> ByteStream {
    futures::stream::unfold((body, skip, limit), |(mut body, mut skip, left)| async move {
        loop {
            if left == Some(0) {
                return None;
            }
            let mut chunk = match body.next().await? {
                Ok(c) => c,
                Err(e) => return Some((Err(e), (futures::stream::empty().boxed(), 0, Some(0)))),
            };
            if skip >= chunk.len() as u64 {
                skip -= chunk.len() as u64;
                continue;
            }
            chunk = chunk.slice(skip as usize..);
            skip = 0;
            if let Some(l) = left
                && chunk.len() as u64 > l
            {
                chunk.truncate(l as usize);
            }
            let left = left.map(|l| l - chunk.len() as u64);
            return Some((Ok(chunk), (body, skip, left)));
        }
    })
    .boxed()
}

/// Bytes `start..end` of a shared-tier blob: from the disk-tier fill if it is near `start` (its
/// verified chunks in memory while they are there, else its temp file), unless the primed span
/// holds the whole range; else verified spans from the shared tier, starting with the primed one.
fn shared_stream(
    rx: watch::Receiver<Phase>,
    recent: Option<Arc<Recent>>,
    tier: Arc<SharedTier>,
    list: Arc<ChunkList>,
    primed: Option<(u64, Bytes)>,
    start: u64,
    end: u64,
) -> ByteStream {
    let covered = primed.as_ref().is_some_and(|(cs, b)| start >= *cs && end <= cs + b.len() as u64);
    let fill = recent.filter(|_| !covered).filter(|recent| {
        let received = *recent.watch().borrow();
        match &*rx.borrow() {
            Phase::Waiting => start < received + TAIL_WINDOW_BYTES,
            Phase::Streaming { written, .. } | Phase::Done { written, .. } => {
                start <= received.max(*written) + TAIL_WINDOW_BYTES
            }
            Phase::NotModified | Phase::PassThrough { .. } | Phase::Overflow { .. } | Phase::Failed(_) => false,
        }
    });
    match fill {
        Some(recent) => fill_stream(rx, recent, start, end),
        None => tier.read_range(list, start, end, primed).map(|r| r.map_err(io::Error::other)).boxed(),
    }
}

/// Bytes `start..end` of a fill from the shared tier as they arrive: from its chunks in memory
/// while it holds them (verified, not yet or just written), else from its temp file (below
/// `written`). Ends with the fill's error if it fails.
fn fill_stream(rx: watch::Receiver<Phase>, recent: Arc<Recent>, start: u64, end: u64) -> ByteStream {
    let received = recent.watch();
    futures::stream::unfold(Some((rx, received, start)), move |state| {
        let recent = Arc::clone(&recent);
        async move {
            let (mut rx, mut received, pos) = state?;
            loop {
                if pos >= end {
                    return None;
                }
                // Mark both as seen before looking, so a change after the look wakes the wait.
                received.borrow_and_update();
                let phase = rx.borrow_and_update().clone();
                if let Some(chunk) = recent.get(pos, (end - pos).min(CHUNK_BYTES * 4)) {
                    let next = pos + chunk.len() as u64;
                    return Some((Ok(chunk), Some((rx, received, next))));
                }
                match phase {
                    Phase::Streaming { started, written } | Phase::Done { started, written, .. } if pos < written => {
                        let item = read_chunk(&started.file, pos, (end.min(written) - pos).min(CHUNK_BYTES));
                        let next = item.as_ref().map(|c| Some((rx, received, pos + c.len() as u64))).unwrap_or(None);
                        return Some((item, next));
                    }
                    Phase::Done { .. } => {
                        let e = io::Error::new(io::ErrorKind::UnexpectedEof, "range lies beyond the end of the blob");
                        return Some((Err(e), None));
                    }
                    Phase::Failed(e) => return Some((Err(io::Error::other(e)), None)),
                    _ => {}
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        let last = rx.borrow().clone();
                        if !matches!(last, Phase::Done { .. }) {
                            return Some((Err(io::Error::other("fill ended without a result")), None));
                        }
                    },
                    _ = received.changed() => {}
                }
            }
        }
    })
    .boxed()
}

/// The validators that name one version of an object for [`FetchRequest::if_version`]: its strong
/// ETag, else its `Last-Modified`; `None` if it has neither (a weak ETag names no exact bytes).
fn version_of(v: &Validators) -> Option<Validators> {
    if let Some(etag) = v.etag.as_ref().filter(|e| !e.starts_with("W/")) {
        return Some(Validators { etag: Some(etag.clone()), last_modified: None });
    }
    v.last_modified.clone().map(|lm| Validators { etag: None, last_modified: Some(lm) })
}

/// The object, or a range of it, asked of the source directly (a pass-through read, or the rest of
/// a body the flight stopped storing): as version `version` only when given, so that a changed
/// source ends the body with an error rather than other bytes.
fn source_stream(
    source: Arc<dyn Source>,
    key: Key,
    range: Option<ByteRange>,
    version: Option<Validators>,
) -> ByteStream {
    futures::stream::once(async move {
        let result = if range.is_some() { "range" } else { "pass_through" };
        metrics::counter!(telemetry::SOURCE_FETCHES, "result" => result).increment(1);
        let req = FetchRequest { range, if_version: version, ..FetchRequest::default() };
        match source.fetch(&key, &req).await {
            Ok(Fetched::Body(body)) => body.stream.map(|r| r.map_err(io::Error::other)).boxed(),
            Ok(Fetched::NotModified) => {
                futures::stream::once(async { Err(io::Error::other("source answered 304 to an unconditional fetch")) })
                    .boxed()
            }
            Err(e) => futures::stream::once(async move { Err(io::Error::other(e)) }).boxed(),
        }
    })
    .flatten()
    .boxed()
}

/// A range far ahead of a flight, asked of the source directly as the flight's `version` only
/// (`If-Match`/`If-Range`). If the source changed since (or the request fails), the range is
/// answered from the flight's own bytes once they get there: one version per response.
fn range_ahead_stream(
    rx: watch::Receiver<Phase>,
    source: Arc<dyn Source>,
    key: Key,
    range: ByteRange,
    version: Validators,
) -> ByteStream {
    futures::stream::once(async move {
        metrics::counter!(telemetry::SOURCE_FETCHES, "result" => "range").increment(1);
        let req = FetchRequest { range: Some(range), if_version: Some(version), ..FetchRequest::default() };
        match source.fetch(&key, &req).await {
            Ok(Fetched::Body(body)) => body.stream.map(|r| r.map_err(io::Error::other)).boxed(),
            answer => {
                let why = match answer {
                    Err(e) => e.to_string(),
                    Ok(_) => "answered 304".to_owned(),
                };
                tracing::debug!(%key, why, "a range ahead of the fetch was not served by the source; waiting for the fetch");
                flight_stream(rx, range.start, Some(range.end + 1), None)
            }
        }
    })
    .flatten()
    .boxed()
}
