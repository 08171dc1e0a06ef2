//! `layer-seek`: random access into a container image layer (gzip, zstd or plain tar) without
//! decompressing it whole for every read, and with every compressed byte it reads checkable. The
//! recipe reads a gzip (one or more members), zstd (one or more frames) or plain tar layer once
//! and writes a *seek index*: points where decompression can resume, each with the uncompressed
//! offset it resumes at, and the SHA-256 of each *segment* of compressed bytes between two
//! points. [`SeekIndex::read_range`] then decompresses `[start, end)` from the last point at or
//! before `start`, reading only the compressed bytes from that point to where `end` is
//! produced, through a [`RangeSource`] (a local file, or the engine's ranged fetches through its
//! tiers).
//!
//! - gzip: a point at a DEFLATE block boundary every [`SPACING_BYTES`] of output (the first
//!   boundary past it), holding the compressed *bit* offset and the 32 KiB of output before it
//!   (the most a DEFLATE back-reference reaches), zstd-compressed to keep the index small: the
//!   approach of zlib's `examples/zran.c`, SOCI's zTOC and nydus's zran. A member start is a
//!   point needing no window.
//! - zstd: frames are independent, so a point is a frame start. A layer of one frame (what most
//!   encoders write) has one point.
//! - plain: a point every [`SPACING_BYTES`] (offsets 0, 4 MiB, …), there only to cut the layer
//!   into segments; a read is a copy of the range.
//!
//! # Verified spans
//!
//! A layer's bytes fetched by HTTP Range cannot be checked against the layer's digest (only the
//! whole layer can), but the index was made from verified whole-layer bytes, so it checks any
//! span of whole segments. Segment `i` holds the compressed bytes of the bits from point `i` to
//! point `i + 1` (the last one, to the layer's end): bytes `[bit_i / 8, ceil(bit_{i+1} / 8))`.
//! When a gzip point sits inside a byte, that byte holds the end of one segment and the start of
//! the next, so it belongs to both (neighbouring segments overlap by that one byte; elsewhere
//! they meet). The first point is always the layer's start, so the segments cover the layer.
//! A read of an uncompressed range needs exactly the segments from its starting point to the
//! first point at or past its end. The engine's flow:
//!
//! ```text
//! let span = index.segment_span(range.clone())?;            // whole segments, compressed bytes
//! let bytes = fetch(span.clone()).await?;                   // one HTTP Range request
//! let (out, cost) = index.read_range_verified(span.start, &bytes, range)?; // checks, then reads
//! ```
//!
//! (or [`SeekIndex::verify_span`] alone, then reads through [`Verified`]). A span whose bytes
//! differ from the layer's anywhere is [`SeekError::SegmentMismatch`], before anything is
//! decompressed.
//!
//! When points end up more than [`PREFER_DECOMPRESS_BYTES`] apart (one large zstd frame; a gzip
//! encoder that writes very long DEFLATE blocks, as points sit only at block ends) the index says
//! so ([`SeekIndex::prefers_full_decompression`]) and the engine reads that layer from its
//! `decompress` output (made once) instead.
//!
//! An index keeps at most [`MAX_POINTS`] points: a huge layer's spacing is doubled until they fit.
//! It is also capped by [`Limits::max_output_bytes`], and indexing checks the deadline as it goes.
//! This module knows nothing of the cache, and of tar only how to recognise a plain layer by its
//! first header's checksum.
//!
//! # The index's bytes (version 2)
//!
//! All integers little-endian.
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `tcseekix` |
//! | 2 | layout version, `2` |
//! | 1 | layer format: `1` gzip, `2` zstd, `3` plain |
//! | 1 | flags: bit 0 = prefer the full `decompress` output; other bits zero |
//! | 4 | reserved, zero |
//! | 8 | the layer's compressed size |
//! | 8 | the layer's uncompressed size |
//! | 8 | the spacing the points were placed at (uncompressed bytes) |
//! | 4 | `n`, the number of points (1 to [`MAX_POINTS`]) |
//! | 4 | `w`, the size of the window area |
//! | 64 × `n` | points, in increasing order of both offsets |
//! | `w` | window area: each point's window, compressed as one zstd frame |
//! | 4 | CRC-32C of every byte before it |
//!
//! A point: compressed offset in *bits* from the layer's first byte (8), uncompressed offset (8),
//! its window's offset in the window area (4) and stored length (4), the window's length once
//! decompressed (2, at most 32 768), kind (1: `0` a gzip member or zstd frame start, or a plain
//! layer's offset, byte aligned, no window; `1` a DEFLATE block boundary inside a gzip member),
//! five zero bytes, the SHA-256 of its segment (32). The first point is the layer's start,
//! `(0, 0)`, of kind `0`; the byte holding each point's first bit comes after the previous
//! point's; a plain layer's points have equal offsets.
//!
//! A block point resumes as zran does: the `8 - bit % 8` high bits of byte `bit / 8` begin the
//! next block's header, and the window is the history back-references reach into. Reading from an
//! interior point does not check the member's CRC-32 (its prefix is not read); indexing checked
//! every member's CRC-32 and length, and a read's compressed bytes are checked by their segments'
//! digests (through [`Verified`]) or by the layer's digest in the tiers.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;

use sha2::Digest as _;

use crate::{Capped, DeriveError, Limits, Params, Produced, Recipe, no_params};

mod format;
mod gzip;
mod input;
mod plain;
mod zstd;

pub use format::{LayerFormat, MAX_POINTS, SeekIndex};
pub use input::{Prefetched, RangeSource, Verified};

use format::{DIGEST_BYTES, FLAG_PREFER_DECOMPRESS, IndexBuilder};
use input::{Input, MAX_FETCH_BYTES};

/// The uncompressed distance between two points, by default. Measured on a 700 MB layer
/// (binaries and documents, `gzip -6`, 243 MB compressed; `examples/layer_seek.rs`), a 4 KiB read
/// at a random offset (page cache warm) against the index's size:
///
/// | spacing | index per GiB of output | read time | compressed fetched | inflated |
/// | --- | --- | --- | --- | --- |
/// | 1 MiB | 12.1 MiB | 2.2 ms | 253 KiB | 0.7 MiB |
/// | 4 MiB | 3.0 MiB | 6.2 ms | 815 KiB | 2.1 MiB |
/// | 16 MiB | 0.75 MiB | 23 ms | 2.9 MiB | 7.8 MiB |
///
/// 4 MiB keeps a read near the cost of one fetch of under a MiB while the index stays under
/// 1 % of the compressed layer (SOCI's zTOC spans default to 4 MiB too).
pub const SPACING_BYTES: u64 = 4 << 20;

/// When a read may have to decompress more than this before its first byte (the largest gap
/// between two points), the index asks for the layer's full `decompress` output: decompressing
/// that much for every read costs more than reading a decompressed copy from disk. It happens to
/// a zstd layer of one large frame, and to a gzip layer whose encoder wrote very long DEFLATE
/// blocks (zlib-ng's level 1 writes one block per flush, so often one per member).
pub const PREFER_DECOMPRESS_BYTES: u64 = 64 << 20;

/// The most history a DEFLATE back-reference reaches, and so the largest window.
const WINDOW_BYTES: usize = 32 << 10;

/// Room left past a read's estimated compressed end in its first fetch: the compression ratio
/// varies within a span, and a second fetch costs a round trip.
const ESTIMATE_SLACK_BYTES: u64 = 64 << 10;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The media type of a seek index.
pub const MEDIA_TYPE: &str = "application/vnd.tiercache.layer-seek.v2";

/// Why a seek index was refused or a range could not be read through it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeekError {
    /// The bytes given to [`SeekIndex::load`] are not a seek index this build reads (derive it
    /// again).
    #[error("not a usable seek index: {0}")]
    BadIndex(String),
    /// The range asked for is not inside the layer's uncompressed bytes.
    #[error("range {start}..{end} is outside the layer's {size} uncompressed bytes")]
    OutOfRange {
        /// The range's start.
        start: u64,
        /// The range's end.
        end: u64,
        /// The layer's uncompressed size.
        size: u64,
    },
    /// The layer's bytes do not decompress as the index says: a different or damaged layer.
    #[error("the layer does not match its seek index: {0}")]
    Corrupt(String),
    /// A span given to [`SeekIndex::verify_span`] does not start at a segment's start and end at
    /// a segment's end, or its bytes are not as long as it is (ask
    /// [`SeekIndex::segment_span`] which span to fetch).
    #[error(
        "compressed bytes {start}..{end} ({len} bytes given) are not a span of whole segments of the layer: fetch the span segment_span gives"
    )]
    NotSegmentAligned {
        /// The span's start.
        start: u64,
        /// The span's end.
        end: u64,
        /// How many bytes were given for it.
        len: u64,
    },
    /// The bytes given for segment `segment` do not have the digest the index holds for it:
    /// whoever sent them sent other bytes than the layer's (fetch them again, or from
    /// elsewhere; never use them).
    #[error(
        "compressed bytes {start}..{end} (segment {segment}) do not match the layer's digest for them: the source sent other bytes than the layer's"
    )]
    SegmentMismatch {
        /// The segment's number.
        segment: usize,
        /// Its first compressed byte.
        start: u64,
        /// The byte after its last.
        end: u64,
    },
    /// A verified read needs compressed bytes outside the verified span it was given.
    #[error("reading this range needs compressed bytes {needed:?}, outside the verified span {span:?}")]
    OutsideSpan {
        /// The span of whole segments the read needs.
        needed: Range<u64>,
        /// The span it was given.
        span: Range<u64>,
    },
    /// Reading the layer, or writing the output, failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What one range read cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeRead {
    /// The compressed byte the read started from (its point's; a plain layer's, the range's
    /// start).
    pub compressed_start: u64,
    /// How many compressed bytes it fetched from the [`RangeSource`].
    pub compressed_bytes_read: u64,
    /// How many bytes it decompressed, those before the range's start included (none for a
    /// plain layer).
    pub decompressed_bytes: u64,
}

impl SeekIndex {
    /// Writes the layer's uncompressed bytes `range` to `out`, reading the layer's compressed
    /// bytes from `source` (the layer this index was made from). Decompression starts at the
    /// last point at or before `range.start` and stops once `range.end` is produced; the
    /// compressed bytes fetched are those from that point to about where `range.end` is, never
    /// past [`SeekIndex::segment_span`]'s end. A plain layer's range is copied. An empty range
    /// reads nothing. `source`'s bytes are not checked here: pass a [`Verified`] span for that.
    pub fn read_range_into(
        &self,
        source: &dyn RangeSource,
        range: Range<u64>,
        out: &mut dyn Write,
    ) -> Result<RangeRead, SeekError> {
        let Range { start, end } = self.check_range(range)?;
        if start == end {
            return Ok(RangeRead::default());
        }
        let k = self.point_at_or_before(start);
        let from = self.points[k].compressed_byte();
        let (estimate, bound) = self.fetch_estimate(k, end);
        let mut input = Input::new(source, self.compressed_size, from, estimate, bound);
        match self.format {
            LayerFormat::Gzip => gzip::read(self, k, &mut input, start, end, out),
            LayerFormat::Zstd => zstd::read(self, k, &mut input, start, end, out),
            LayerFormat::Plain => plain::read(source, self.compressed_size, start, end, out),
        }
    }

    /// [`SeekIndex::read_range_into`] into a new vector: the bytes and what reading them cost.
    pub fn read_range(&self, source: &dyn RangeSource, range: Range<u64>) -> Result<(Vec<u8>, RangeRead), SeekError> {
        let len = range.end.saturating_sub(range.start);
        let mut out = Vec::with_capacity(usize::try_from(len.min(MAX_FETCH_BYTES as u64)).unwrap_or(0));
        let read = self.read_range_into(source, range, &mut out)?;
        Ok((out, read))
    }

    /// The span of whole segments a read of uncompressed `range` needs: from the start of the
    /// segment of the last point at or before `range.start` to the end of the segment before the
    /// first point at or past `range.end` (or the layer's end). Fetch it in one request, check it
    /// with [`SeekIndex::verify_span`] and read from it ([`SeekIndex::read_range_verified`]).
    /// An empty range needs an empty span (at a segment's start); a range outside the layer's
    /// uncompressed bytes is [`SeekError::OutOfRange`].
    pub fn segment_span(&self, range: Range<u64>) -> Result<Range<u64>, SeekError> {
        let Range { start, end } = self.check_range(range)?;
        let k = self.point_at_or_before(start);
        let from = self.points[k].compressed_byte();
        if start == end {
            return Ok(from..from);
        }
        let (bound, _) = self.compressed_bound(k, end);
        Ok(from..bound)
    }

    /// [`SeekIndex::segment_span`] with `range` clamped to the layer (a range past its end reads
    /// up to its end): the compressed bytes a read may fetch, at most, in whole segments.
    pub fn compressed_span(&self, range: Range<u64>) -> Range<u64> {
        let start = range.start.min(self.uncompressed_size);
        let end = range.end.clamp(start, self.uncompressed_size);
        self.segment_span(start..end).expect("a range inside the layer")
    }

    /// Checks `bytes`, fetched for the compressed `span` of the layer, against the digests of
    /// the segments the span is made of. `Ok` if and only if `span` starts at a segment's start
    /// and ends at a segment's end ([`SeekError::NotSegmentAligned`] otherwise, or when `bytes`
    /// is not `span`'s length) and every segment in it has its recorded SHA-256
    /// ([`SeekError::SegmentMismatch`] naming the first that does not). An empty span at a
    /// segment's start is whole.
    pub fn verify_span(&self, span: Range<u64>, bytes: &[u8]) -> Result<(), SeekError> {
        let misaligned = || SeekError::NotSegmentAligned { start: span.start, end: span.end, len: bytes.len() as u64 };
        if span.start > span.end || span.end - span.start != bytes.len() as u64 {
            return Err(misaligned());
        }
        let first = self.segment_starting_at(span.start).ok_or_else(misaligned)?;
        if span.is_empty() {
            return Ok(());
        }
        let last = self.segment_ending_at(span.end).filter(|&l| l >= first).ok_or_else(misaligned)?;
        for i in first..=last {
            let segment = self.segment(i).expect("a segment of the index");
            let at = (segment.start - span.start) as usize..(segment.end - span.start) as usize;
            let digest: [u8; DIGEST_BYTES] = sha2::Sha256::digest(&bytes[at]).into();
            if digest != self.points[i].digest {
                return Err(SeekError::SegmentMismatch { segment: i, start: segment.start, end: segment.end });
            }
        }
        Ok(())
    }

    /// Reads uncompressed `range` from `bytes`, the layer's compressed bytes from
    /// `span_start` on (the span [`SeekIndex::segment_span`] gave, or any span of whole segments
    /// holding it), after checking them: the one call between fetching a span and using what it
    /// holds. Errors as [`SeekIndex::verify_span`] and [`SeekIndex::read_range`], and
    /// [`SeekError::OutsideSpan`] if the range needs segments `bytes` does not hold.
    pub fn read_range_verified(
        &self,
        span_start: u64,
        bytes: &[u8],
        range: Range<u64>,
    ) -> Result<(Vec<u8>, RangeRead), SeekError> {
        let verified = Verified::new(self, span_start, bytes)?;
        let needed = self.segment_span(range.clone())?;
        let span = verified.span();
        if !needed.is_empty() && (needed.start < span.start || needed.end > span.end) {
            return Err(SeekError::OutsideSpan { needed, span });
        }
        self.read_range(&verified, range)
    }

    /// `range` if it lies inside the layer's uncompressed bytes.
    fn check_range(&self, range: Range<u64>) -> Result<Range<u64>, SeekError> {
        if range.start > range.end || range.end > self.uncompressed_size {
            return Err(SeekError::OutOfRange { start: range.start, end: range.end, size: self.uncompressed_size });
        }
        Ok(range)
    }

    /// Where the first fetch of a read from point `k` to uncompressed `end` stops (the
    /// compressed offset interpolated between the point and the next one past `end`, plus
    /// slack), and the bound no fetch needs to pass (the end of the segment before that next
    /// point, as [`SeekIndex::segment_span`] gives).
    fn fetch_estimate(&self, k: usize, end: u64) -> (u64, u64) {
        let p = &self.points[k];
        let (bound, bound_uncompressed) = self.compressed_bound(k, end);
        let compressed = u128::from(bound.saturating_sub(p.compressed_byte()));
        let uncompressed = u128::from(bound_uncompressed.saturating_sub(p.uncompressed)).max(1);
        let wanted = u128::from(end - p.uncompressed) * compressed / uncompressed;
        let estimate = p.compressed_byte().saturating_add(u64::try_from(wanted).unwrap_or(u64::MAX));
        (estimate.saturating_add(ESTIMATE_SLACK_BYTES).min(bound), bound)
    }
}

/// Writes the part of `chunk` (uncompressed bytes from offset `at`) that falls in `start..end`.
fn emit(chunk: &[u8], at: u64, start: u64, end: u64, out: &mut dyn Write) -> io::Result<()> {
    let chunk_end = at + chunk.len() as u64;
    if chunk_end <= start || at >= end {
        return Ok(());
    }
    let from = (start.saturating_sub(at)) as usize;
    let to = (end.min(chunk_end) - at) as usize;
    out.write_all(&chunk[from..to])
}

/// How a layer is indexed: the defaults are [`SPACING_BYTES`] and [`MAX_POINTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOptions {
    /// The uncompressed distance between two points, to begin with.
    pub spacing_bytes: u64,
    /// The most points kept (at most [`MAX_POINTS`]); beyond it the spacing doubles.
    pub max_points: usize,
}

impl Default for IndexOptions {
    fn default() -> IndexOptions {
        IndexOptions { spacing_bytes: SPACING_BYTES, max_points: MAX_POINTS }
    }
}

/// Indexes the gzip, zstd or plain tar layer in file `input` with `options`, within `limits`:
/// the seek index's bytes. Steps: 1. tell the format by the first bytes; 2. one pass
/// decompressing the layer, placing points; 3. one pass over the compressed bytes hashing each
/// segment (the points are final only at the end, as a huge layer's spacing doubles). Neither
/// gzip, zstd nor a tar (by its first header) is [`DeriveError::Unsupported`]; a truncated or
/// damaged layer is [`DeriveError::Corrupt`]; an index over [`Limits::max_output_bytes`] is
/// [`DeriveError::TooLarge`].
pub fn build_index(input: &Path, options: &IndexOptions, limits: &Limits) -> Result<Vec<u8>, DeriveError> {
    let file = File::open(input)?;
    let len = file.metadata()?.len();
    let mut head = [0u8; plain::TAR_BLOCK_BYTES];
    let n = read_head(&file, &mut head)?;
    let head = &head[..n];
    let format = if head.starts_with(&GZIP_MAGIC) {
        LayerFormat::Gzip
    } else if head.starts_with(&ZSTD_MAGIC) || head.get(..4).is_some_and(is_skippable_frame) {
        LayerFormat::Zstd
    } else if plain::is_tar_head(head) {
        LayerFormat::Plain
    } else {
        return Err(DeriveError::Unsupported("neither gzip, zstd nor a tar archive (by its first bytes)".into()));
    };
    // The index is held whole while it is built: the output limit and the allocation limit bound
    // it both.
    let max_index_bytes = limits.max_output_bytes.min(limits.max_alloc_bytes);
    let mut builder = IndexBuilder::new(options.spacing_bytes, options.max_points, max_index_bytes);
    // The layer's start is always a point, even for a layer with no output.
    builder.offer_start(0, 0)?;
    let mut input = Input::new(&file, len, 0, len, len);
    let uncompressed = match format {
        LayerFormat::Gzip => gzip::index(&mut input, &mut builder, limits)?,
        LayerFormat::Zstd => zstd::index(&mut input, &mut builder, limits)?,
        LayerFormat::Plain => plain::index(len, &mut builder, limits)?,
    };
    let is_far = builder.max_gap_bytes(uncompressed) > PREFER_DECOMPRESS_BYTES;
    let flags = if is_far && format != LayerFormat::Plain { FLAG_PREFER_DECOMPRESS } else { 0 };
    let digests = segment_digests(&file, &builder.segments(len), limits)?;
    builder.finish(format, flags, len, uncompressed, &digests)
}

/// The SHA-256 of each of `segments` of `file`, read in chunks of a bounded buffer, the deadline
/// checked between chunks.
fn segment_digests(
    file: &File,
    segments: &[Range<u64>],
    limits: &Limits,
) -> Result<Vec<[u8; DIGEST_BYTES]>, DeriveError> {
    let mut buf = vec![0u8; MAX_FETCH_BYTES];
    let mut digests = Vec::with_capacity(segments.len());
    for segment in segments {
        let mut hasher = sha2::Sha256::new();
        let mut at = segment.start;
        while at < segment.end {
            let want = usize::try_from(segment.end - at).unwrap_or(usize::MAX).min(buf.len());
            let n = RangeSource::read_at(file, at, &mut buf[..want])?;
            if n == 0 {
                return Err(DeriveError::Corrupt(format!("the layer shrank while it was indexed (at byte {at})")));
            }
            hasher.update(&buf[..n]);
            at += n as u64;
            limits.check_time()?;
        }
        digests.push(hasher.finalize().into());
    }
    Ok(digests)
}

/// Whether `head` starts a zstd skippable frame (magic `0x184D2A50` to `0x184D2A5F`).
fn is_skippable_frame(head: &[u8]) -> bool {
    head.len() == 4 && head[0] & 0xf0 == 0x50 && head[1..] == [0x2a, 0x4d, 0x18]
}

fn read_head(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match RangeSource::read_at(file, filled as u64, &mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The `layer-seek` recipe: a gzip, zstd or plain tar layer → its seek index ([`SeekIndex`]),
/// segment digests included. No parameters.
#[derive(Debug, Clone, Copy)]
pub struct LayerSeek;

impl Recipe for LayerSeek {
    fn name(&self) -> &'static str {
        "layer-seek"
    }

    fn version(&self) -> u32 {
        2
    }

    fn params(&self, raw: &[(String, String)], _accept: Option<&str>) -> Result<Params, DeriveError> {
        no_params(raw)
    }

    fn run(
        &self,
        input: &Path,
        _input_len: u64,
        _params: &Params,
        limits: &Limits,
        out: &mut dyn Write,
    ) -> Result<Produced, DeriveError> {
        let index = build_index(input, &IndexOptions::default(), limits)?;
        Capped::new(out, limits.max_output_bytes).put(&index)?;
        Ok(Produced::written(MEDIA_TYPE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_writes_only_the_overlap() {
        let check = |at: u64, start: u64, end: u64, want: &[u8]| {
            let mut out = Vec::new();
            emit(b"abcdef", at, start, end, &mut out).unwrap();
            assert_eq!(out, want, "chunk at {at}, range {start}..{end}");
        };
        check(10, 0, 10, b"");
        check(10, 16, 20, b"");
        check(10, 0, 100, b"abcdef");
        check(10, 12, 14, b"cd");
        check(10, 14, 100, b"ef");
        check(10, 5, 12, b"ab");
    }

    #[test]
    fn skippable_frames_are_recognised() {
        assert!(is_skippable_frame(&[0x50, 0x2a, 0x4d, 0x18]));
        assert!(is_skippable_frame(&[0x5f, 0x2a, 0x4d, 0x18]));
        assert!(!is_skippable_frame(&[0x60, 0x2a, 0x4d, 0x18]));
        assert!(!is_skippable_frame(&ZSTD_MAGIC));
    }
}
