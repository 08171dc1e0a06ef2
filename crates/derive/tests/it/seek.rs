//! `layer-seek`: layers generated here (mixed incompressible, text-like and zero runs; several
//! gzip members, an empty one included; zstd in many frames, a skippable one among them, and in
//! one; plain tars), indexed by the recipe, then read back through [`SeekIndex`] range by range
//! and compared with the same range of the whole decompressed stream, counting the compressed
//! bytes each read fetched, and read again from only the span of whole segments it needs,
//! verified. Then the inputs, spans and indexes a hostile or careless world sends.

use std::cell::Cell;
use std::io::{self, Write};
use std::ops::Range;
use std::time::{Duration, Instant};

use tiercache_derive::seek::{
    IndexOptions, LayerFormat, MEDIA_TYPE, Prefetched, RangeSource, SeekError, SeekIndex, Verified, build_index,
};
use tiercache_derive::{DeriveError, Limits};

use crate::{limits, run, run_with};

/// A small deterministic generator (xorshift64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `len` bytes of layer-like content: runs of 4 KiB to 1 MiB of random bytes (incompressible,
/// half of them), words (compressible, like text), or zeros.
fn content(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&[u8]; 8] = [b"layer ", b"cache ", b"tier ", b"blob\n", b"zran ", b"seek ", b"usr/lib/", b"0x1f8b "];
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(len + (1 << 20));
    while out.len() < len {
        let run = 4096 + rng.below(1 << 20) as usize;
        let end = out.len() + run;
        match rng.below(4) {
            0 | 1 => {
                while out.len() < end {
                    out.extend_from_slice(&rng.next().to_le_bytes());
                }
            }
            2 => {
                while out.len() < end {
                    out.extend_from_slice(WORDS[rng.below(8) as usize]);
                }
            }
            _ => out.resize(end, 0),
        }
    }
    out.truncate(len);
    out
}

/// One gzip member of `bytes` at the default level (6), whose DEFLATE blocks end every few
/// dozen KiB, as GNU gzip's, Go's and pigz's do.
fn gzip_member(bytes: &[u8]) -> Vec<u8> {
    gzip_member_at(bytes, flate2::Compression::default())
}

fn gzip_member_at(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A source that counts the compressed bytes read from it.
struct Counting<'a> {
    bytes: &'a [u8],
    read: Cell<u64>,
}

impl RangeSource for Counting<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.bytes.read_at(offset, buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Indexes `layer` with the recipe and loads the index.
fn index(layer: &[u8]) -> SeekIndex {
    let (produced, bytes) = run("layer-seek", layer, &[]).unwrap();
    assert_eq!(produced.content_type, MEDIA_TYPE);
    SeekIndex::load(&bytes).unwrap()
}

/// Reads `range` through `index` and checks it against `raw`, then reads it again from only its
/// span of whole segments, verified; returns the compressed bytes the first read fetched.
fn check(index: &SeekIndex, layer: &[u8], raw: &[u8], range: Range<u64>) -> u64 {
    let source = Counting { bytes: layer, read: Cell::new(0) };
    let (got, cost) = index.read_range(&source, range.clone()).unwrap();
    let want = &raw[range.start as usize..range.end as usize];
    assert!(got == want, "range {range:?}: {} bytes back, {} wanted, or different bytes", got.len(), want.len());
    assert_eq!(cost.compressed_bytes_read, source.read.get());
    let span = index.segment_span(range.clone()).unwrap();
    assert_eq!(span, expected_span(index, range.clone()), "range {range:?}");
    assert_eq!(index.compressed_span(range.clone()), span);
    let (again, _) = index
        .read_range_verified(span.start, &layer[span.start as usize..span.end as usize], range.clone())
        .unwrap_or_else(|e| panic!("range {range:?} from its span {span:?}: {e}"));
    assert!(again == want, "range {range:?}: read from its verified span {span:?}, other bytes");
    if range.is_empty() {
        assert_eq!(cost.compressed_bytes_read, 0);
        assert!(span.is_empty());
        return 0;
    }
    if index.format() == LayerFormat::Plain {
        assert_eq!((cost.compressed_start, cost.compressed_bytes_read), (range.start, range.end - range.start));
    } else {
        assert_eq!(cost.compressed_start, span.start, "range {range:?}");
    }
    assert!(cost.compressed_bytes_read <= span.end - span.start, "range {range:?} read past its span {span:?}");
    cost.compressed_bytes_read
}

/// Every segment of `index`, in order.
fn segments(index: &SeekIndex) -> Vec<Range<u64>> {
    (0..index.n_segments()).map(|i| index.segment(i).unwrap()).collect()
}

/// The span of whole segments a read of `range` needs, worked out from the points: from the
/// segment of the last point at or before its start, through the one before the first later
/// point at or past its end.
fn expected_span(index: &SeekIndex, range: Range<u64>) -> Range<u64> {
    let points: Vec<u64> = index.points().map(|(_, u)| u).collect();
    let first = points.iter().rposition(|&u| u <= range.start).unwrap();
    let segments = segments(index);
    if range.is_empty() {
        return segments[first].start..segments[first].start;
    }
    let last = (first + 1..points.len()).find(|&j| points[j] >= range.end).map_or(points.len() - 1, |j| j - 1);
    segments[first].start..segments[last].end
}

/// Ranges every reader must get right: empty ones, the very start and end, ones across, ending
/// at and starting at each point, and many random ones.
fn ranges(index: &SeekIndex, seed: u64) -> Vec<Range<u64>> {
    let size = index.uncompressed_size_bytes();
    let mut out = vec![0..0, size / 2..size / 2, size..size, 0..1, 0..4096, size - 1..size, size - 4096..size, 0..size];
    for (_, at) in index.points().skip(1) {
        out.push(at - 1..at + 1);
        // Ending exactly at a point: its segment is not needed; starting at one.
        out.push(at - 100..at);
        out.push(at..at + 1);
        out.push(at - 5000..(at + 70_000).min(size));
    }
    let mut rng = Rng(seed);
    for _ in 0..120 {
        let start = rng.below(size);
        let len = match rng.below(4) {
            0 => rng.below(64),
            1 => rng.below(64 << 10),
            2 => rng.below(3 << 20),
            _ => rng.below(12 << 20),
        };
        out.push(start..(start + len).min(size));
    }
    out
}

/// The largest segment (the compressed distance between two neighbouring points, or the last
/// and the end).
fn largest_compressed_span(index: &SeekIndex) -> u64 {
    let largest = segments(index).iter().map(|s| s.end - s.start).max().unwrap();
    assert_eq!(largest, index.max_segment_bytes());
    largest
}

#[test]
fn gzip_layer_ranges_equal_the_decompressed_stream_and_a_read_near_the_end_fetches_little() {
    let raw = content(112 << 20, 21);
    // Members of very different sizes, an empty one among them, as `cat a.gz b.gz` makes.
    let cuts = [0, 1000, 1000, 30 << 20, 31 << 20, 112 << 20];
    let layer: Vec<u8> = cuts.windows(2).flat_map(|w| gzip_member(&raw[w[0]..w[1]])).collect();
    assert!(layer.len() > 50 << 20, "the layer is {} bytes", layer.len());
    let index = index(&layer);
    assert_eq!(index.format(), LayerFormat::Gzip);
    assert_eq!(index.uncompressed_size_bytes(), raw.len() as u64);
    assert_eq!(index.compressed_size_bytes(), layer.len() as u64);
    assert!((24..=32).contains(&index.n_points()), "{} points for 112 MiB every 4 MiB", index.n_points());
    assert!(!index.prefers_full_decompression());
    let mut across_members: Vec<Range<u64>> = cuts[1..5].iter().map(|&c| c as u64 - 10..c as u64 + 10).collect();
    across_members.push(900..(31 << 20) + 5);
    for range in ranges(&index, 5).into_iter().chain(across_members) {
        check(&index, &layer, &raw, range);
    }
    let size = raw.len() as u64;
    let near_end = size - 300_000..size - 300_000 + 4096;
    let read = check(&index, &layer, &raw, near_end);
    let bound = 2 * largest_compressed_span(&index) + (64 << 10);
    assert!(read <= bound, "a 4 KiB read near the end fetched {read} bytes, over {bound}");
    assert!(read * 20 < layer.len() as u64, "a 4 KiB read fetched {read} of the layer's {} bytes", layer.len());
}

#[test]
fn a_prefetched_span_serves_its_range_and_nothing_outside_it() {
    let raw = content(20 << 20, 31);
    let layer = gzip_member(&raw);
    let index = index(&layer);
    let range = 13_000_000..13_100_000;
    let span = index.segment_span(range.clone()).unwrap();
    let fetched = Prefetched { offset: span.start, bytes: &layer[span.start as usize..span.end as usize] };
    let (bytes, _) = index.read_range(&fetched, range.clone()).unwrap();
    assert!(bytes == raw[13_000_000..13_100_000]);
    // A range needing bytes before the span is an I/O error, not wrong bytes.
    let early = 1_000_000..1_000_100;
    assert!(matches!(index.read_range(&fetched, early), Err(SeekError::Io(_))));
}

#[test]
fn points_stay_under_max_points_by_spacing_them_wider() {
    let raw = content(24 << 20, 41);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.gz");
    let layer = gzip_member(&raw);
    std::fs::write(&path, &layer).unwrap();
    let options = IndexOptions { spacing_bytes: 1 << 20, max_points: 5 };
    let index = SeekIndex::load(&build_index(&path, &options, &limits()).unwrap()).unwrap();
    assert!(index.n_points() <= 5, "{} points", index.n_points());
    assert!(index.spacing_bytes() >= 4 << 20);
    for range in ranges(&index, 17) {
        check(&index, &layer, &raw, range);
    }
}

#[test]
fn zstd_layer_of_many_frames_is_read_frame_by_frame() {
    let raw = content(48 << 20, 77);
    let mut layer = Vec::new();
    let mut at = 0;
    let mut rng = Rng(3);
    while at < raw.len() {
        let end = (at + 256_000 + rng.below(3 << 20) as usize).min(raw.len());
        layer.extend(zstd::encode_all(&raw[at..end], 1).unwrap());
        at = end;
        if layer.len() < 10 << 20 && layer.len() > 5 << 20 {
            // A skippable frame (magic 0x184D2A5A, 4 bytes of data): no output.
            layer.extend_from_slice(&[0x5a, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
        }
    }
    let index = index(&layer);
    assert_eq!(index.format(), LayerFormat::Zstd);
    assert_eq!(index.uncompressed_size_bytes(), raw.len() as u64);
    assert!(index.n_points() >= 8, "{} points", index.n_points());
    assert!(!index.prefers_full_decompression());
    for range in ranges(&index, 9) {
        check(&index, &layer, &raw, range);
    }
    let size = raw.len() as u64;
    let read = check(&index, &layer, &raw, size - 10_000..size - 6000);
    let bound = 2 * largest_compressed_span(&index) + (64 << 10);
    assert!(read <= bound, "a 4 KiB read near the end fetched {read} bytes, over {bound}");
}

#[test]
fn zstd_layer_of_one_large_frame_asks_for_the_full_decompression() {
    let raw = content(70 << 20, 5).iter().map(|b| b & 0x0f).collect::<Vec<u8>>();
    let layer = zstd::encode_all(raw.as_slice(), 1).unwrap();
    let index = index(&layer);
    assert_eq!(index.n_points(), 1);
    assert!(index.prefers_full_decompression());
    // Reads still work, from the start.
    let size = raw.len() as u64;
    let read = check(&index, &layer, &raw, size - 4096..size);
    assert!(read > layer.len() as u64 / 2);
    // A small one-frame layer is read from its start without asking for more.
    let small = zstd::encode_all(&raw[..1 << 20], 3).unwrap();
    let index = self::index(&small);
    assert!(!index.prefers_full_decompression());
    check(&index, &small, &raw[..1 << 20], 500_000..600_000);
}

#[test]
fn gzip_layer_of_one_long_deflate_block_asks_for_the_full_decompression() {
    // zlib-ng's (and so flate2's zlib-rs') level 1 ends a DEFLATE block only at a flush: this
    // member is one block, with no boundary to resume at.
    let raw = content(70 << 20, 12).iter().map(|b| b & 0x0f).collect::<Vec<u8>>();
    let layer = gzip_member_at(&raw, flate2::Compression::fast());
    let index = index(&layer);
    assert!(index.max_gap_bytes() > 64 << 20, "{} points", index.n_points());
    assert!(index.prefers_full_decompression());
    let size = raw.len() as u64;
    check(&index, &layer, &raw, size - 4096..size);
}

#[test]
fn empty_layers_index_and_read_nothing() {
    for layer in [gzip_member(b""), zstd::encode_all(&b""[..], 3).unwrap()] {
        let index = index(&layer);
        assert_eq!((index.uncompressed_size_bytes(), index.n_points()), (0, 1));
        check(&index, &layer, b"", 0..0);
    }
}

#[test]
fn truncated_damaged_and_foreign_layers_are_refused() {
    let raw = content(3 << 20, 8);
    let gz = gzip_member(&raw);
    let corrupt = |layer: &[u8], what: &str| match run("layer-seek", layer, &[]) {
        Err(DeriveError::Corrupt(m)) => eprintln!("{what}: {m}"),
        other => panic!("{what}: expected Corrupt, got {:?}", other.map(|(p, _)| p)),
    };
    corrupt(&gz[..gz.len() / 2], "gzip cut in half");
    corrupt(&gz[..gz.len() - 3], "gzip cut inside its trailer");
    corrupt(&gz[..6], "gzip cut inside its header");
    let mut flipped = gz.clone();
    let n = flipped.len();
    flipped[n - 6] ^= 0xff;
    corrupt(&flipped, "gzip with a wrong CRC-32");
    let mut trailing = gz.clone();
    trailing.extend_from_slice(b"not a member");
    corrupt(&trailing, "gzip with trailing garbage");
    let mut garbled = gz.clone();
    for b in &mut garbled[1000..1100] {
        *b = !*b;
    }
    corrupt(&garbled, "gzip with a damaged stretch");
    let zst = zstd::encode_all(raw.as_slice(), 3).unwrap();
    corrupt(&zst[..zst.len() / 2], "zstd cut in half");
    corrupt(&[&zst[..], b"junk"].concat(), "zstd with trailing garbage");
    for foreign in [&b"plain text, not a layer"[..], b"", b"\x1f", &[0x50, 0x4b, 3, 4]] {
        assert!(matches!(run("layer-seek", foreign, &[]), Err(DeriveError::Unsupported(_))), "{foreign:?}");
    }
    assert!(matches!(run("layer-seek", &gz, &[("spacing", "1")]), Err(DeriveError::BadParam(_))));
}

#[test]
fn limits_bound_the_index_and_the_time() {
    let raw = content(12 << 20, 4);
    let gz = gzip_member(&raw);
    let small = Limits { max_output_bytes: 200, ..limits() };
    assert!(matches!(run_with("layer-seek", &gz, &[], &small), Err(DeriveError::TooLarge(_))));
    let late = Limits { deadline: Instant::now() - Duration::from_secs(1), ..limits() };
    assert!(matches!(run_with("layer-seek", &gz, &[], &late), Err(DeriveError::TimedOut)));
}

#[test]
fn reads_outside_the_layer_or_from_the_wrong_bytes_are_errors() {
    let raw = content(10 << 20, 6);
    let gz = gzip_member(&raw);
    let index = index(&gz);
    let size = raw.len() as u64;
    let out_of_range = |r: Range<u64>| matches!(index.read_range(&gz, r), Err(SeekError::OutOfRange { .. }));
    assert!(out_of_range(size - 10..size + 1));
    assert!(out_of_range(size + 1..size + 1));
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 10..5;
    assert!(out_of_range(backwards));
    // The layer's source is shorter than the index says.
    let short = &gz[..gz.len() / 2];
    assert!(matches!(index.read_range(&short, size - 100..size), Err(SeekError::Corrupt(_))));
    // Another layer's bytes under this index.
    let other = gzip_member(&content(10 << 20, 8));
    match index.read_range(&other, size / 2..size / 2 + 100) {
        Err(SeekError::Corrupt(_)) => {}
        Ok((bytes, _)) => assert_ne!(bytes, raw[size as usize / 2..size as usize / 2 + 100]),
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn hostile_indexes_are_refused_by_load() {
    let raw = content(10 << 20, 2);
    let layers = [("gzip", gzip_member(&raw)), ("zstd", zstd_frames(&raw, 7)), ("plain", plain_tar(&raw, 3).0)];
    for (what, layer) in layers {
        let (_, good) = run("layer-seek", &layer, &[]).unwrap();
        assert!(SeekIndex::load(&good).is_ok(), "{what}");
        let bad = |bytes: &[u8]| matches!(SeekIndex::load(bytes), Err(SeekError::BadIndex(_)));
        assert!(bad(b""));
        assert!(bad(&good[..good.len() - 1]), "{what}");
        assert!(bad(&[good.as_slice(), b"x"].concat()), "{what}");
        let mut rng = Rng(11);
        for _ in 0..200 {
            let mut b = good.clone();
            let i = rng.below(b.len() as u64) as usize;
            b[i] ^= 1 << rng.below(8);
            assert!(bad(&b), "{what}: a flipped bit at byte {i} went unnoticed");
            let cut = rng.below(good.len() as u64) as usize;
            assert!(bad(&good[..cut]), "{what}: cut to {cut} bytes, it loaded");
        }
        // Absurd counts: four billion points, a window area of four GiB.
        for (at, value) in [(40, u32::MAX), (44, u32::MAX), (40, 1 << 20)] {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&value.to_le_bytes());
            assert!(bad(&b), "{what}");
        }
    }
}

/// `raw` as a zstd layer of frames of about a MiB or more (level 1), the frame sizes drawn
/// from `seed`.
fn zstd_frames(raw: &[u8], seed: u64) -> Vec<u8> {
    let mut layer = Vec::new();
    let mut rng = Rng(seed);
    let mut at = 0;
    while at < raw.len() {
        let end = (at + (1 << 20) + rng.below(2 << 20) as usize).min(raw.len());
        layer.extend(zstd::encode_all(&raw[at..end], 1).unwrap());
        at = end;
    }
    layer
}

/// A plain tar of `raw` cut into files of random sizes (up to 3 MiB, some empty, a directory
/// among them), as a layer: the tar's bytes and the number of files.
fn plain_tar(raw: &[u8], seed: u64) -> (Vec<u8>, usize) {
    let mut rng = Rng(seed);
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    dir.set_mode(0o755);
    builder.append_data(&mut dir, "usr/lib/", io::empty()).unwrap();
    let (mut at, mut n) = (0, 0);
    while at < raw.len() {
        let len = if rng.below(8) == 0 { 0 } else { rng.below(3 << 20) as usize };
        let end = (at + len).min(raw.len());
        let mut header = tar::Header::new_gnu();
        header.set_size((end - at) as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, format!("usr/lib/file-{n}"), &raw[at..end]).unwrap();
        (at, n) = (end, n + 1);
    }
    (builder.into_inner().unwrap(), n)
}

/// A gzip layer of several members (cut at `cuts` of `raw`), a zstd layer of many frames and a
/// plain tar, each with the index the recipe made of it.
fn three_layers(raw: &[u8]) -> Vec<(&'static str, Vec<u8>, SeekIndex)> {
    let cuts = [0, raw.len() / 5, raw.len() / 5 + 1, raw.len() / 2, raw.len()];
    let gz: Vec<u8> = cuts.windows(2).flat_map(|w| gzip_member(&raw[w[0]..w[1]])).collect();
    let layers = [("gzip", gz), ("zstd", zstd_frames(raw, 5)), ("plain", plain_tar(raw, 9).0)];
    layers.into_iter().map(|(what, layer)| (what, layer.clone(), index(&layer))).collect()
}

#[test]
fn plain_tar_layer_ranges_are_copies_and_its_segments_cover_it() {
    let raw = content(41 << 20, 51);
    let (layer, n_files) = plain_tar(&raw, 1);
    assert!(n_files > 10);
    let index = index(&layer);
    assert_eq!(index.format(), LayerFormat::Plain);
    let size = layer.len() as u64;
    assert_eq!((index.compressed_size_bytes(), index.uncompressed_size_bytes()), (size, size));
    assert_eq!(index.n_points() as u64, size.div_ceil(4 << 20));
    assert!(index.points().all(|(c, u)| c == u && u % (4 << 20) == 0));
    assert_eq!(index.max_segment_bytes(), 4 << 20);
    assert!(!index.prefers_full_decompression());
    for range in ranges(&index, 23) {
        check(&index, &layer, &layer, range);
    }
    // More points than allowed: the spacing doubles, the segments grow with it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.tar");
    std::fs::write(&path, &layer).unwrap();
    let options = IndexOptions { spacing_bytes: 1 << 20, max_points: 5 };
    let thinned = SeekIndex::load(&build_index(&path, &options, &limits()).unwrap()).unwrap();
    assert!(thinned.n_points() <= 5, "{} points", thinned.n_points());
    for range in ranges(&thinned, 29) {
        check(&thinned, &layer, &layer, range);
    }
    // An empty archive (two zero blocks) is a layer of one segment.
    let empty = tar::Builder::new(Vec::new()).into_inner().unwrap();
    let index = self::index(&empty);
    assert_eq!((index.format(), index.n_points(), index.uncompressed_size_bytes()), (LayerFormat::Plain, 1, 1024));
    check(&index, &empty, &empty, 0..1024);
}

#[test]
fn spans_are_whole_segments_and_segments_cover_the_layer() {
    let raw = content(30 << 20, 61);
    for (what, layer, index) in three_layers(&raw) {
        let segments = segments(&index);
        assert!(segments.len() >= 5, "{what}: {} segments", segments.len());
        assert_eq!(segments[0].start, 0, "{what}");
        assert_eq!(segments.last().unwrap().end, layer.len() as u64, "{what}");
        for pair in segments.windows(2) {
            // Neighbours meet, or share the byte a point sits inside.
            let (a, b) = (&pair[0], &pair[1]);
            assert!(b.start == a.end || b.start + 1 == a.end, "{what}: {a:?} then {b:?}");
            assert!(a.start < b.start && a.end < b.end, "{what}: {a:?} then {b:?}");
        }
        if what == "gzip" {
            assert!(segments.windows(2).any(|p| p[1].start + 1 == p[0].end), "no gzip point inside a byte");
        }
        assert_eq!(index.verify_span(0..layer.len() as u64, &layer).ok(), Some(()), "{what}");
        for (i, s) in segments.iter().enumerate() {
            let bytes = &layer[s.start as usize..s.end as usize];
            assert!(index.verify_span(s.clone(), bytes).is_ok(), "{what}: segment {i}");
            let span = s.start..segments[(i + 2).min(segments.len() - 1)].end;
            assert!(index.verify_span(span.clone(), &layer[span.start as usize..span.end as usize]).is_ok());
        }
    }
}

#[test]
fn a_tampered_byte_in_any_segment_fails_verification() {
    let raw = content(30 << 20, 71);
    for (what, layer, index) in three_layers(&raw) {
        let segments = segments(&index);
        let mut rng = Rng(7);
        for (i, s) in segments.iter().enumerate() {
            // The span of this segment and its neighbours, fetched; then one byte of it changed:
            // the segment's first and last bytes (those shared with a neighbour included) and
            // one inside.
            let span = segments[i.saturating_sub(1)].start..segments[(i + 1).min(segments.len() - 1)].end;
            let fetched = &layer[span.start as usize..span.end as usize];
            for at in [s.start, s.end - 1, s.start + rng.below(s.end - s.start)] {
                let mut tampered = fetched.to_vec();
                tampered[(at - span.start) as usize] ^= 0x20;
                // The first segment of the span holding that byte is named.
                let first = segments.iter().position(|s| s.contains(&at)).unwrap();
                match index.verify_span(span.clone(), &tampered) {
                    Err(e @ SeekError::SegmentMismatch { segment, start, end }) => {
                        assert_eq!((segment, start..end), (first, segments[first].clone()), "{what}: byte {at}");
                        let message = e.to_string();
                        assert!(message.contains("do not match the layer's digest"), "{message}");
                        assert!(message.contains(&format!("segment {first}")), "{message}");
                    }
                    other => panic!("{what}: byte {at} of segment {i} changed, verification said {other:?}"),
                }
                assert!(Verified::new(&index, span.start, &tampered).is_err());
            }
        }
        // A read from a tampered span fails before it decompresses anything.
        let size = index.uncompressed_size_bytes();
        let range = size / 3..size / 3 + 10_000;
        let span = index.segment_span(range.clone()).unwrap();
        let mut tampered = layer[span.start as usize..span.end as usize].to_vec();
        let middle = tampered.len() / 2;
        tampered[middle] ^= 1;
        let read = index.read_range_verified(span.start, &tampered, range);
        assert!(matches!(read, Err(SeekError::SegmentMismatch { .. })), "{what}: {read:?}");
    }
}

#[test]
fn spans_that_are_not_whole_segments_or_do_not_hold_the_range_are_refused() {
    let raw = content(20 << 20, 81);
    for (what, layer, index) in three_layers(&raw) {
        let size = index.uncompressed_size_bytes();
        let range = size / 2..size / 2 + 100;
        let span = index.segment_span(range.clone()).unwrap();
        let bytes = |r: &Range<u64>| &layer[r.start as usize..r.end as usize];
        let misaligned =
            |r: Range<u64>, b: &[u8]| matches!(index.verify_span(r, b), Err(SeekError::NotSegmentAligned { .. }));
        let later = span.start + 1..span.end;
        assert!(misaligned(later.clone(), bytes(&later)), "{what}");
        let shorter = span.start..span.end - 1;
        assert!(misaligned(shorter.clone(), bytes(&shorter)), "{what}");
        assert!(misaligned(span.clone(), &bytes(&span)[1..]), "{what}: fewer bytes than the span");
        let past = span.start..layer.len() as u64 + 1;
        assert!(misaligned(past, &vec![0; (layer.len() as u64 + 1 - span.start) as usize]), "{what}");
        assert!(misaligned(span.start..u64::MAX, &[]), "{what}");
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = span.end..span.start;
        assert!(misaligned(backwards, &[]), "{what}");
        assert!(index.verify_span(span.start..span.start, &[]).is_ok(), "{what}: an empty span at a segment start");
        // A verified span that does not hold the range asked for.
        let first = index.segment(0).unwrap();
        match index.read_range_verified(first.start, bytes(&first), range.clone()) {
            Err(SeekError::OutsideSpan { needed, span: given }) => assert_eq!((needed, given), (span.clone(), first)),
            other => panic!("{what}: {other:?}"),
        }
        assert!(matches!(index.segment_span(size..size + 1), Err(SeekError::OutOfRange { .. })), "{what}");
        // A verified source answers only inside its span.
        let verified = Verified::new(&index, span.start, bytes(&span)).unwrap();
        assert_eq!(verified.span(), span);
        let mut buf = [0u8; 4];
        assert!(verified.read_at(span.end, &mut buf).is_err(), "{what}");
    }
}
