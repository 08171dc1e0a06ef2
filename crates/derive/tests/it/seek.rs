//! `layer-seek`: layers generated here (mixed incompressible, text-like and zero runs; several
//! gzip members, an empty one included; zstd in many frames, a skippable one among them, and in
//! one), indexed by the recipe, then read back through [`SeekIndex`] range by range and compared
//! with the same range of the whole decompressed stream, counting the compressed bytes each read
//! fetched. Then the inputs and indexes a hostile or careless world sends.

use std::cell::Cell;
use std::io::{self, Write};
use std::ops::Range;
use std::time::{Duration, Instant};

use tiercache_derive::seek::{
    IndexOptions, LayerFormat, MEDIA_TYPE, Prefetched, RangeSource, SeekError, SeekIndex, build_index,
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

/// Reads `range` through `index` and checks it against `raw`; returns the compressed bytes read.
fn check(index: &SeekIndex, layer: &[u8], raw: &[u8], range: Range<u64>) -> u64 {
    let source = Counting { bytes: layer, read: Cell::new(0) };
    let (got, cost) = index.read_range(&source, range.clone()).unwrap();
    let want = &raw[range.start as usize..range.end as usize];
    assert!(got == want, "range {range:?}: {} bytes back, {} wanted, or different bytes", got.len(), want.len());
    assert_eq!(cost.compressed_bytes_read, source.read.get());
    if range.is_empty() {
        assert_eq!(cost.compressed_bytes_read, 0);
        return 0;
    }
    let span = index.compressed_span(range.clone());
    assert_eq!(cost.compressed_start, span.start, "range {range:?}");
    assert!(cost.compressed_bytes_read <= span.end - span.start, "range {range:?} read past its span {span:?}");
    cost.compressed_bytes_read
}

/// Ranges every reader must get right: empty ones, the very start and end, ones across each
/// point, and many random ones.
fn ranges(index: &SeekIndex, seed: u64) -> Vec<Range<u64>> {
    let size = index.uncompressed_size_bytes();
    let mut out = vec![0..0, size / 2..size / 2, size..size, 0..1, 0..4096, size - 1..size, size - 4096..size, 0..size];
    for (_, at) in index.points().skip(1) {
        out.push(at - 1..at + 1);
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

/// The largest compressed distance between two neighbouring points (or the last and the end).
fn largest_compressed_span(index: &SeekIndex) -> u64 {
    let ends: Vec<u64> = index.points().map(|(c, _)| c).chain([index.compressed_size_bytes()]).collect();
    ends.windows(2).map(|w| w[1] - w[0]).max().unwrap()
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
    let span = index.compressed_span(range.clone());
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
    let (_, good) = run("layer-seek", &gzip_member(&raw), &[]).unwrap();
    assert!(SeekIndex::load(&good).is_ok());
    let bad = |bytes: &[u8]| matches!(SeekIndex::load(bytes), Err(SeekError::BadIndex(_)));
    assert!(bad(b""));
    assert!(bad(&good[..good.len() - 1]));
    assert!(bad(&[good.as_slice(), b"x"].concat()));
    let mut rng = Rng(11);
    for _ in 0..200 {
        let mut b = good.clone();
        let i = rng.below(b.len() as u64) as usize;
        b[i] ^= 1 << rng.below(8);
        assert!(bad(&b), "a flipped bit at byte {i} went unnoticed");
    }
    // Absurd counts: four billion points, a window area of four GiB.
    for (at, value) in [(40, u32::MAX), (44, u32::MAX), (40, 1 << 20)] {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        assert!(bad(&b));
    }
}
