//! The seek index's bytes: [`IndexBuilder`] collects resume points while a layer is indexed
//! (keeping at most a bounded number, their spacing doubled as needed) and writes the blob with
//! each segment's SHA-256; [`SeekIndex::load`] parses one back, refusing anything out of shape
//! before it allocates. The layout and the segment rule are documented in the parent module
//! ([`crate::seek`]).

use std::ops::Range;

use super::{SeekError, WINDOW_BYTES};
use crate::DeriveError;

/// The first bytes of every seek index.
pub(crate) const MAGIC: [u8; 8] = *b"tcseekix";
/// The layout's version, bumped with any change to it.
pub(crate) const FORMAT_VERSION: u16 = 2;
/// Bytes of the fixed header.
pub(crate) const HEADER_BYTES: usize = 48;
/// Bytes of one point record (its segment's SHA-256 included).
pub(crate) const POINT_BYTES: usize = 64;
/// Bytes of a segment's digest (SHA-256).
pub(crate) const DIGEST_BYTES: usize = 32;
/// Bytes of the trailing CRC-32C.
const TRAILER_BYTES: usize = 4;
/// The most points an index may have (the builder keeps at most this many too): 8 GiB of output
/// at the default spacing before it doubles, and at most some 66 MiB of windows while indexing.
pub const MAX_POINTS: usize = 2048;
/// The most bytes a stored (compressed) window may take: zstd's bound for a 32 KiB input.
const MAX_STORED_WINDOW_BYTES: usize = WINDOW_BYTES + 1024;
/// Header flag: reads should use the layer's full `decompress` output instead (see
/// [`SeekIndex::prefers_full_decompression`]).
pub(crate) const FLAG_PREFER_DECOMPRESS: u8 = 1;
/// The zstd level windows are compressed with: the fastest, since an index is written once per
/// layer and a window is decompressed once per read.
const WINDOW_ZSTD_LEVEL: i32 = 1;

/// The compression a layer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerFormat {
    /// gzip: one or more members of DEFLATE data.
    Gzip,
    /// zstd: one or more frames (skippable frames allowed).
    Zstd,
    /// A plain (uncompressed) tar: its compressed and uncompressed bytes are the same.
    Plain,
}

impl LayerFormat {
    fn code(self) -> u8 {
        match self {
            LayerFormat::Gzip => 1,
            LayerFormat::Zstd => 2,
            LayerFormat::Plain => 3,
        }
    }

    fn from_code(code: u8) -> Option<LayerFormat> {
        match code {
            1 => Some(LayerFormat::Gzip),
            2 => Some(LayerFormat::Zstd),
            3 => Some(LayerFormat::Plain),
            _ => None,
        }
    }
}

/// Where decompression of a layer can resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PointKind {
    /// The start of a gzip member or a zstd frame, or a plain layer's byte (byte aligned, no
    /// history needed).
    Start,
    /// A DEFLATE block boundary inside a gzip member, resumed with the window before it.
    Block,
}

/// One resume point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Point {
    /// The compressed position, in bits from the layer's first byte.
    pub(crate) compressed_bit: u64,
    /// The uncompressed offset the point decompresses from.
    pub(crate) uncompressed: u64,
    pub(crate) kind: PointKind,
    /// The stored (zstd-compressed) window's bytes within the index's window area.
    pub(crate) window: Range<usize>,
    /// The window's length once decompressed (at most [`WINDOW_BYTES`]).
    pub(crate) window_len: usize,
    /// The SHA-256 of the point's segment (see [`SeekIndex::segment`]).
    pub(crate) digest: [u8; DIGEST_BYTES],
}

impl Point {
    /// The byte holding the point's first bit: where its segment starts.
    pub(crate) fn compressed_byte(&self) -> u64 {
        self.compressed_bit / 8
    }
}

/// Where the segment before a point at `next_bit` ends (the byte after the one holding the bit
/// before it), or, for the last segment, the layer's end.
pub(crate) fn segment_end(next_bit: Option<u64>, compressed_size: u64) -> u64 {
    next_bit.map_or(compressed_size, |bit| bit.div_ceil(8))
}

/// A parsed seek index: where a layer's decompression can resume, and with what history.
#[derive(Debug, Clone)]
pub struct SeekIndex {
    pub(crate) format: LayerFormat,
    pub(crate) flags: u8,
    pub(crate) compressed_size: u64,
    pub(crate) uncompressed_size: u64,
    pub(crate) spacing: u64,
    // Invariant: non-empty; the first is (0, 0, Start); both offsets strictly increase, and so
    // do the segments' starts and ends (every segment holds at least one byte of its own, the
    // last one included); each window range lies inside `windows`; a plain
    // layer's points have equal offsets, and its two sizes are equal.
    pub(crate) points: Vec<Point>,
    pub(crate) windows: Vec<u8>,
}

impl SeekIndex {
    /// Parses a seek index written by the `layer-seek` recipe. Every count and length in it is
    /// checked against the blob's own size before anything is allocated for it, so a hostile
    /// index costs at most a copy of its own bytes.
    pub fn load(bytes: &[u8]) -> Result<SeekIndex, SeekError> {
        let bad = |why: &str| Err(SeekError::BadIndex(why.to_owned()));
        if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
            return bad("shorter than its header");
        }
        let mut r = Fields(bytes);
        if r.array::<8>() != MAGIC {
            return bad("not a seek index (wrong magic bytes)");
        }
        let version = r.u16();
        if version != FORMAT_VERSION {
            return Err(SeekError::BadIndex(format!(
                "layout version {version}, this build reads version {FORMAT_VERSION}: derive it again"
            )));
        }
        let Some(format) = LayerFormat::from_code(r.u8()) else { return bad("unknown layer format") };
        let flags = r.u8();
        let reserved = r.u32();
        let compressed_size = r.u64();
        let uncompressed_size = r.u64();
        let spacing = r.u64();
        let n_points = r.u32() as usize;
        let window_bytes = r.u32() as usize;
        if flags & !FLAG_PREFER_DECOMPRESS != 0 || reserved != 0 {
            return bad("unknown flags or reserved bits set");
        }
        if n_points == 0 || n_points > MAX_POINTS {
            return Err(SeekError::BadIndex(format!("{n_points} points (1 to {MAX_POINTS} allowed)")));
        }
        let expected = n_points
            .checked_mul(POINT_BYTES)
            .and_then(|p| p.checked_add(HEADER_BYTES + TRAILER_BYTES))
            .and_then(|p| p.checked_add(window_bytes));
        if expected != Some(bytes.len()) {
            return bad("its counts do not add up to its length");
        }
        let body = bytes.len() - TRAILER_BYTES;
        let crc = u32::from_le_bytes(bytes[body..].try_into().expect("four bytes"));
        if crc32c::crc32c(&bytes[..body]) != crc {
            return bad("checksum mismatch");
        }
        let mut points = Vec::with_capacity(n_points);
        for i in 0..n_points {
            let p = parse_point(&mut r, format, window_bytes)
                .map_err(|why| SeekError::BadIndex(format!("point {i}: {why}")))?;
            check_order(points.last(), &p, compressed_size, uncompressed_size)
                .and_then(|()| check_plain(format, &p, compressed_size, uncompressed_size))
                .map_err(|why| SeekError::BadIndex(format!("point {i}: {why}")))?;
            points.push(p);
        }
        let windows = bytes[HEADER_BYTES + n_points * POINT_BYTES..body].to_vec();
        Ok(SeekIndex { format, flags, compressed_size, uncompressed_size, spacing, points, windows })
    }

    /// The compression of the layer this index is for.
    pub fn format(&self) -> LayerFormat {
        self.format
    }

    /// The layer's size, compressed.
    pub fn compressed_size_bytes(&self) -> u64 {
        self.compressed_size
    }

    /// The layer's size, decompressed.
    pub fn uncompressed_size_bytes(&self) -> u64 {
        self.uncompressed_size
    }

    /// The uncompressed distance the points were spaced at (at least; a point sits at the first
    /// block or frame boundary past it).
    pub fn spacing_bytes(&self) -> u64 {
        self.spacing
    }

    /// How many resume points the index holds.
    pub fn n_points(&self) -> usize {
        self.points.len()
    }

    /// Whether reads of this layer should come from its whole `decompress` output instead: set
    /// for a zstd layer whose frames are too large to decompress from a frame start on every
    /// read (a layer of one frame, as most zstd encoders write). Reads through the index still
    /// work; they are only slow far from a frame start. Never set for a plain layer.
    pub fn prefers_full_decompression(&self) -> bool {
        self.flags & FLAG_PREFER_DECOMPRESS != 0
    }

    /// Each point's compressed byte (the one holding its first bit) and uncompressed offset, in
    /// order: where reads can start.
    pub fn points(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.points.iter().map(|p| (p.compressed_byte(), p.uncompressed))
    }

    /// The largest uncompressed distance between two neighbouring points (or the last point
    /// and the layer's end): the most a read decompresses before its first byte.
    pub fn max_gap_bytes(&self) -> u64 {
        self.points
            .iter()
            .map(|p| p.uncompressed)
            .chain([self.uncompressed_size])
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }

    /// How many segments the layer is cut into (one per point).
    pub fn n_segments(&self) -> usize {
        self.points.len()
    }

    /// Segment `i`'s compressed bytes: from the byte holding point `i`'s first bit to the byte
    /// holding the last bit before point `i + 1` (or to the layer's end), so consecutive
    /// segments share one byte when a point sits inside a byte. `None` past the last segment.
    pub fn segment(&self, i: usize) -> Option<Range<u64>> {
        let start = self.points.get(i)?.compressed_byte();
        Some(start..segment_end(self.points.get(i + 1).map(|p| p.compressed_bit), self.compressed_size))
    }

    /// The largest segment's size in compressed bytes: the most a verified read fetches per
    /// segment it needs.
    pub fn max_segment_bytes(&self) -> u64 {
        (0..self.points.len()).filter_map(|i| self.segment(i)).map(|s| s.end - s.start).max().unwrap_or(0)
    }

    /// The index of the last point at or before uncompressed offset `offset`.
    pub(crate) fn point_at_or_before(&self, offset: u64) -> usize {
        self.points.partition_point(|p| p.uncompressed <= offset).saturating_sub(1)
    }

    /// The compressed bytes up to which a read from point `k` surely has everything it needs to
    /// produce uncompressed offset `end`, and the uncompressed offset there: the end of the
    /// segment before the first later point at or past `end` (a whole number of segments from
    /// point `k`), or the layer's end.
    pub(crate) fn compressed_bound(&self, k: usize, end: u64) -> (u64, u64) {
        match self.points[k + 1..].iter().position(|p| p.uncompressed >= end) {
            Some(j) => {
                let next = &self.points[k + 1 + j];
                (segment_end(Some(next.compressed_bit), self.compressed_size), next.uncompressed)
            }
            None => (self.compressed_size, self.uncompressed_size),
        }
    }

    /// The index of the segment starting at compressed byte `start`, if one does.
    pub(crate) fn segment_starting_at(&self, start: u64) -> Option<usize> {
        self.points.binary_search_by_key(&start, Point::compressed_byte).ok()
    }

    /// The index of the segment ending at compressed byte `end`, if one does.
    pub(crate) fn segment_ending_at(&self, end: u64) -> Option<usize> {
        // Segment ends strictly increase (checked by `load`): a binary search over them.
        let ends = |i: usize| segment_end(self.points.get(i + 1).map(|p| p.compressed_bit), self.compressed_size);
        let (mut lo, mut hi) = (0, self.points.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if ends(mid) < end { lo = mid + 1 } else { hi = mid }
        }
        (lo < self.points.len() && ends(lo) == end).then_some(lo)
    }

    /// Point `k`'s window, decompressed.
    pub(crate) fn window(&self, k: usize) -> Result<Vec<u8>, SeekError> {
        let p = &self.points[k];
        if p.window_len == 0 {
            return Ok(Vec::new());
        }
        let window = zstd::bulk::decompress(&self.windows[p.window.clone()], p.window_len)
            .map_err(|e| SeekError::BadIndex(format!("the window of point {k} does not decompress: {e}")))?;
        if window.len() != p.window_len {
            return Err(SeekError::BadIndex(format!("the window of point {k} has the wrong length")));
        }
        Ok(window)
    }
}

/// Parses one point record; its window must lie inside the window area.
fn parse_point(r: &mut Fields<'_>, format: LayerFormat, window_area: usize) -> Result<Point, String> {
    let compressed_bit = r.u64();
    let uncompressed = r.u64();
    let window_offset = r.u32() as usize;
    let window_stored = r.u32() as usize;
    let window_len = usize::from(r.u16());
    let kind = r.u8();
    let reserved = u32::from(r.u8()) | r.u32();
    let digest = r.array::<DIGEST_BYTES>();
    if reserved != 0 {
        return Err("reserved bytes set".into());
    }
    let kind = match (kind, format) {
        (0, _) => PointKind::Start,
        (1, LayerFormat::Gzip) => PointKind::Block,
        _ => return Err(format!("kind {kind} is not one a {format:?} layer has")),
    };
    let window_end = window_offset.checked_add(window_stored).filter(|&e| e <= window_area);
    let Some(window_end) = window_end else { return Err("its window lies outside the index".into()) };
    match kind {
        PointKind::Start if !compressed_bit.is_multiple_of(8) || window_len != 0 || window_stored != 0 => {
            Err("a start point is byte aligned and has no window".into())
        }
        PointKind::Block
            if window_len > WINDOW_BYTES
                || window_stored > MAX_STORED_WINDOW_BYTES
                || (window_len == 0) != (window_stored == 0) =>
        {
            Err("its window's lengths are out of bounds".into())
        }
        _ => Ok(Point { compressed_bit, uncompressed, kind, window: window_offset..window_end, window_len, digest }),
    }
}

/// Checks that `p` comes after `prev` and lies inside the layer.
fn check_order(prev: Option<&Point>, p: &Point, compressed_size: u64, uncompressed_size: u64) -> Result<(), String> {
    match prev {
        None if p.compressed_bit != 0 || p.uncompressed != 0 || p.kind != PointKind::Start => {
            Err("the first point must be the layer's start".into())
        }
        None => Ok(()),
        // Both the bytes segments start at and those they end at strictly increase.
        Some(prev)
            if p.compressed_byte() <= prev.compressed_byte()
                || p.compressed_bit.div_ceil(8) <= prev.compressed_bit.div_ceil(8)
                || p.uncompressed <= prev.uncompressed =>
        {
            Err("points are not in increasing order".into())
        }
        Some(_) if p.compressed_bit.div_ceil(8) >= compressed_size || p.uncompressed >= uncompressed_size => {
            Err("the point lies past the layer's end".into())
        }
        Some(_) => Ok(()),
    }
}

/// Checks what a plain layer's index must hold: the same bytes compressed and uncompressed.
fn check_plain(format: LayerFormat, p: &Point, compressed_size: u64, uncompressed_size: u64) -> Result<(), String> {
    if format == LayerFormat::Plain && (compressed_size != uncompressed_size || p.compressed_byte() != p.uncompressed) {
        return Err("a plain layer's compressed and uncompressed offsets differ".into());
    }
    Ok(())
}

/// Little-endian fields read in order from a slice already checked to be long enough.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split at N")
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// Collects points while a layer is indexed, then writes the index.
pub(crate) struct IndexBuilder {
    spacing: u64,
    max_points: usize,
    max_output_bytes: u64,
    /// Each point with its stored window.
    points: Vec<(Point, Vec<u8>)>,
    window_bytes: usize,
}

impl IndexBuilder {
    /// A builder placing points every `spacing` uncompressed bytes, keeping at most
    /// `max_points` (at least 2) and refusing an index larger than `max_output_bytes` (which
    /// also bounds the builder's memory).
    pub(crate) fn new(spacing: u64, max_points: usize, max_output_bytes: u64) -> IndexBuilder {
        IndexBuilder {
            spacing: spacing.max(1),
            max_points: max_points.clamp(2, MAX_POINTS),
            max_output_bytes,
            points: Vec::new(),
            window_bytes: 0,
        }
    }

    /// The spacing points are placed at now (it doubles whenever the points are thinned).
    pub(crate) fn spacing_bytes(&self) -> u64 {
        self.spacing
    }

    /// Whether a point at uncompressed offset `uncompressed` is due (the first always is).
    pub(crate) fn is_due(&self, uncompressed: u64) -> bool {
        match self.points.last() {
            None => true,
            Some((p, _)) => uncompressed >= p.uncompressed.saturating_add(self.spacing),
        }
    }

    /// Adds a member or frame start at byte `compressed_byte` if one is due there.
    pub(crate) fn offer_start(&mut self, compressed_byte: u64, uncompressed: u64) -> Result<(), DeriveError> {
        if !self.is_due(uncompressed) {
            return Ok(());
        }
        self.push(compressed_byte * 8, uncompressed, PointKind::Start, &[])
    }

    /// Adds a DEFLATE block boundary at bit `compressed_bit` with the `window` before it (the
    /// caller checked [`IndexBuilder::is_due`]).
    pub(crate) fn push_block(
        &mut self,
        compressed_bit: u64,
        uncompressed: u64,
        window: &[u8],
    ) -> Result<(), DeriveError> {
        self.push(compressed_bit, uncompressed, PointKind::Block, window)
    }

    fn push(
        &mut self,
        compressed_bit: u64,
        uncompressed: u64,
        kind: PointKind,
        window: &[u8],
    ) -> Result<(), DeriveError> {
        debug_assert!(window.len() <= WINDOW_BYTES);
        let stored = if window.is_empty() {
            Vec::new()
        } else {
            zstd::bulk::compress(window, WINDOW_ZSTD_LEVEL).map_err(DeriveError::Io)?
        };
        self.window_bytes += stored.len();
        let point = Point {
            compressed_bit,
            uncompressed,
            kind,
            window: 0..0,
            window_len: window.len(),
            digest: [0; DIGEST_BYTES],
        };
        self.points.push((point, stored));
        if self.points.len() > self.max_points {
            self.thin();
        }
        if self.encoded_len() > self.max_output_bytes {
            return Err(DeriveError::TooLarge(format!(
                "the seek index is larger than the limit of {} bytes",
                self.max_output_bytes
            )));
        }
        Ok(())
    }

    /// Keeps every other point (the first included) and doubles the spacing.
    fn thin(&mut self) {
        let mut i = 0;
        self.points.retain(|_| {
            i += 1;
            i % 2 == 1
        });
        self.window_bytes = self.points.iter().map(|(_, w)| w.len()).sum();
        self.spacing = self.spacing.saturating_mul(2);
    }

    /// The largest uncompressed distance between two points kept so far, or the last one and
    /// `uncompressed_size`.
    pub(crate) fn max_gap_bytes(&self, uncompressed_size: u64) -> u64 {
        let offsets: Vec<u64> = self.points.iter().map(|(p, _)| p.uncompressed).chain([uncompressed_size]).collect();
        offsets.windows(2).map(|w| w[1].saturating_sub(w[0])).max().unwrap_or(0)
    }

    /// The compressed bytes of each segment of a layer of `compressed_size` bytes cut at the
    /// points kept so far (see [`SeekIndex::segment`]).
    pub(crate) fn segments(&self, compressed_size: u64) -> Vec<Range<u64>> {
        let bits: Vec<u64> = self.points.iter().map(|(p, _)| p.compressed_bit).collect();
        (0..bits.len()).map(|i| bits[i] / 8..segment_end(bits.get(i + 1).copied(), compressed_size)).collect()
    }

    fn encoded_len(&self) -> u64 {
        (HEADER_BYTES + self.points.len() * POINT_BYTES + self.window_bytes + TRAILER_BYTES) as u64
    }

    /// The index's bytes, with `digests` the SHA-256 of each of [`IndexBuilder::segments`].
    pub(crate) fn finish(
        self,
        format: LayerFormat,
        flags: u8,
        compressed_size: u64,
        uncompressed_size: u64,
        digests: &[[u8; DIGEST_BYTES]],
    ) -> Result<Vec<u8>, DeriveError> {
        assert_eq!(digests.len(), self.points.len(), "one digest per segment");
        let too_large = || DeriveError::TooLarge("the seek index's window area is over 4 GiB".into());
        let mut out = Vec::with_capacity(usize::try_from(self.encoded_len()).unwrap_or(0));
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.push(format.code());
        out.push(flags);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&compressed_size.to_le_bytes());
        out.extend_from_slice(&uncompressed_size.to_le_bytes());
        out.extend_from_slice(&self.spacing.to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.points.len()).expect("bounded by MAX_POINTS").to_le_bytes());
        out.extend_from_slice(&u32::try_from(self.window_bytes).map_err(|_| too_large())?.to_le_bytes());
        let mut offset = 0usize;
        for ((p, stored), digest) in self.points.iter().zip(digests) {
            out.extend_from_slice(&p.compressed_bit.to_le_bytes());
            out.extend_from_slice(&p.uncompressed.to_le_bytes());
            out.extend_from_slice(&u32::try_from(offset).map_err(|_| too_large())?.to_le_bytes());
            out.extend_from_slice(&u32::try_from(stored.len()).expect("a stored window is small").to_le_bytes());
            out.extend_from_slice(&u16::try_from(p.window_len).expect("a window is at most 32 KiB").to_le_bytes());
            out.push(match p.kind {
                PointKind::Start => 0,
                PointKind::Block => 1,
            });
            out.extend_from_slice(&[0u8; 5]);
            out.extend_from_slice(digest);
            offset += stored.len();
        }
        for (_, stored) in &self.points {
            out.extend_from_slice(stored);
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = IndexBuilder::new(100, 16, u64::MAX);
        b.offer_start(0, 0).unwrap();
        b.push_block(8 * 50 + 3, 150, &[7u8; 1000]).unwrap();
        b.offer_start(120, 200).unwrap(); // not due: 200 < 150 + 100
        b.offer_start(130, 260).unwrap();
        let digests: Vec<[u8; DIGEST_BYTES]> = (0..b.points.len() as u8).map(|i| [i; DIGEST_BYTES]).collect();
        b.finish(LayerFormat::Gzip, 0, 1000, 5000, &digests).unwrap()
    }

    #[test]
    fn a_written_index_loads_back() {
        let idx = SeekIndex::load(&sample()).unwrap();
        assert_eq!(idx.format(), LayerFormat::Gzip);
        assert_eq!((idx.compressed_size_bytes(), idx.uncompressed_size_bytes(), idx.n_points()), (1000, 5000, 3));
        assert_eq!(idx.points[1].compressed_bit, 403);
        assert_eq!(idx.points[2].kind, PointKind::Start);
        assert_eq!(idx.window(1).unwrap(), vec![7u8; 1000]);
        assert!(idx.window(0).unwrap().is_empty());
        assert_eq!(idx.point_at_or_before(149), 0);
        assert_eq!(idx.point_at_or_before(150), 1);
        assert_eq!(idx.point_at_or_before(4999), 2);
        assert_eq!(idx.max_gap_bytes(), 5000 - 260);
        assert!(!idx.prefers_full_decompression());
    }

    #[test]
    fn segments_tile_the_layer_sharing_the_byte_a_point_sits_inside() {
        let idx = SeekIndex::load(&sample()).unwrap();
        let segments: Vec<_> = (0..idx.n_segments()).map(|i| idx.segment(i).unwrap()).collect();
        // Point 1 is bit 403 (inside byte 50); point 2 is byte 130, aligned.
        assert_eq!(segments, [0..51, 50..130, 130..1000]);
        assert_eq!(idx.segment(3), None);
        assert_eq!(idx.max_segment_bytes(), 870);
        assert_eq!((idx.segment_starting_at(50), idx.segment_starting_at(51)), (Some(1), None));
        assert_eq!((idx.segment_ending_at(51), idx.segment_ending_at(50)), (Some(0), None));
        assert_eq!((idx.segment_ending_at(130), idx.segment_ending_at(1000)), (Some(1), Some(2)));
        assert_eq!(idx.segment_ending_at(0), None);
        assert_eq!(idx.points[2].digest, [2; DIGEST_BYTES]);
        // A read ending inside point 1's output needs segment 1 whole, the shared byte included.
        assert_eq!(idx.compressed_bound(0, 151), (130, 260));
        assert_eq!(idx.compressed_bound(0, 150), (51, 150));
    }

    #[test]
    fn thinning_keeps_the_first_point_and_doubles_the_spacing() {
        let mut b = IndexBuilder::new(10, 4, u64::MAX);
        for i in 0..5u64 {
            b.offer_start(i * 10, i * 10).unwrap();
        }
        assert_eq!(b.points.iter().map(|(p, _)| p.uncompressed).collect::<Vec<_>>(), [0, 20, 40]);
        assert!(!b.is_due(59) && b.is_due(60));
    }

    #[test]
    fn an_index_over_the_output_limit_is_refused() {
        let mut b = IndexBuilder::new(1, 100, 200);
        b.offer_start(0, 0).unwrap();
        let noise: Vec<u8> = (0..WINDOW_BYTES as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert!(matches!(b.push_block(9, 5, &noise), Err(DeriveError::TooLarge(_))));
    }

    /// `bytes` with its trailing checksum made right again.
    fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
        let body = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn hostile_indexes_are_refused() {
        let good = sample();
        let refuse = |bytes: Vec<u8>, why: &str| match SeekIndex::load(&bytes) {
            Err(SeekError::BadIndex(m)) => assert!(m.contains(why), "{m:?} should say {why:?}"),
            other => panic!("expected a refusal saying {why:?}, got {other:?}"),
        };
        refuse(good[..20].to_vec(), "shorter");
        refuse(vec![b'x'; 200], "magic");
        let mut b = good.clone();
        b[8] = 9;
        refuse(resealed(b), "version");
        // A point count of four billion in a blob of a hundred bytes.
        let mut b = good.clone();
        b[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        refuse(resealed(b), "points");
        let mut b = good.clone();
        b[40..44].copy_from_slice(&(MAX_POINTS as u32).to_le_bytes());
        refuse(resealed(b), "add up");
        let mut b = good.clone();
        b[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        refuse(resealed(b), "add up");
        let mut b = good.clone();
        b[60] ^= 1;
        refuse(b, "checksum");
        // Point 1's window offset pointed past the window area.
        let mut b = good.clone();
        let p1 = HEADER_BYTES + POINT_BYTES;
        b[p1 + 16..p1 + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        refuse(resealed(b), "outside");
        // Point 1's window said to be 60 000 bytes once decompressed.
        let mut b = good.clone();
        b[p1 + 24..p1 + 26].copy_from_slice(&60_000u16.to_le_bytes());
        refuse(resealed(b), "bounds");
        // Point 2 moved before point 1.
        let mut b = good.clone();
        let p2 = HEADER_BYTES + 2 * POINT_BYTES;
        b[p2..p2 + 8].copy_from_slice(&8u64.to_le_bytes());
        refuse(resealed(b), "order");
        // Point 2 past the layer's end.
        let mut b = good.clone();
        b[p2 + 8..p2 + 16].copy_from_slice(&6000u64.to_le_bytes());
        refuse(resealed(b), "past");
        // A first point that is not the layer's start.
        let mut b = good.clone();
        b[HEADER_BYTES + 8..HEADER_BYTES + 16].copy_from_slice(&1u64.to_le_bytes());
        refuse(resealed(b), "first point");
        // A block point in a zstd index.
        let mut b = good.clone();
        b[10] = 2;
        refuse(resealed(b), "kind");
    }
}
