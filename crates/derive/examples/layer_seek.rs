//! Measures the `layer-seek` recipe on a real layer (the numbers behind `seek::SPACING_BYTES`):
//!
//! ```text
//! cargo run --release -p tiercache-derive --example layer_seek -- sweep LAYER [RAW]
//! cargo run --release -p tiercache-derive --example layer_seek -- index LAYER INDEX_OUT
//! cargo run --release -p tiercache-derive --example layer_seek -- read LAYER INDEX OFFSET LEN
//! ```
//!
//! `sweep` indexes LAYER at several spacings and times 200 reads of 4 KiB at random offsets
//! (page cache warm) for each, printing the index's size per GiB of output, what a read cost
//! and the span of whole segments it needs (what a ranged fetch gets and checks); with RAW (the
//! layer decompressed) every read is compared with it. `index` writes the index at the default
//! spacing; `read` reads one range through it (run it after dropping the page cache for a cold
//! read), then again the way the cache does (its span read, verified, read from), and prints
//! the costs.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use tiercache_derive::Limits;
use tiercache_derive::seek::{IndexOptions, SeekIndex, build_index};

fn limits() -> Limits {
    Limits {
        max_input_bytes: u64::MAX,
        max_output_bytes: 1 << 30,
        max_alloc_bytes: 1 << 30,
        max_pixels: 0,
        deadline: Instant::now() + Duration::from_secs(3600),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["sweep", layer, rest @ ..] => sweep(Path::new(layer), rest.first().map(Path::new)),
        ["index", layer, out] => {
            let started = Instant::now();
            let index = build_index(Path::new(layer), &IndexOptions::default(), &limits()).expect("index");
            let took = started.elapsed();
            std::fs::write(out, &index).expect("write the index");
            let parsed = SeekIndex::load(&index).expect("load");
            println!(
                "indexed in {:.2} s ({:.0} MB/s of output), {} points, {} bytes; segments of at most {:.0} KiB",
                took.as_secs_f64(),
                parsed.uncompressed_size_bytes() as f64 / took.as_secs_f64() / 1e6,
                parsed.n_points(),
                index.len(),
                parsed.max_segment_bytes() as f64 / 1024.0,
            );
        }
        ["read", layer, index, offset, len] => {
            let started = Instant::now();
            let index = SeekIndex::load(&std::fs::read(index).expect("read the index")).expect("load");
            let file = std::fs::File::open(layer).expect("open the layer");
            let offset: u64 = offset.parse().expect("offset");
            let len: u64 = len.parse().expect("len");
            let range = offset..offset + len;
            let (bytes, cost) = index.read_range(&file, range.clone()).expect("read");
            println!(
                "read {} bytes at {offset} in {:.1} ms: {} compressed bytes fetched, {} decompressed",
                bytes.len(),
                started.elapsed().as_secs_f64() * 1e3,
                cost.compressed_bytes_read,
                cost.decompressed_bytes
            );
            let started = Instant::now();
            let span = index.segment_span(range.clone()).expect("span");
            let fetched = read_span(&file, &span);
            let fetch_took = started.elapsed();
            let (again, _) = index.read_range_verified(span.start, &fetched, range).expect("verified read");
            assert_eq!(again, bytes);
            println!(
                "verified: span {}..{} ({} bytes) read in {:.1} ms, checked and read from in {:.1} ms",
                span.start,
                span.end,
                span.end - span.start,
                fetch_took.as_secs_f64() * 1e3,
                (started.elapsed() - fetch_took).as_secs_f64() * 1e3
            );
        }
        _ => eprintln!("usage: layer_seek sweep LAYER [RAW] | index LAYER OUT | read LAYER INDEX OFFSET LEN"),
    }
}

/// The layer's compressed bytes `span`, as a ranged fetch would get them.
fn read_span(file: &std::fs::File, span: &Range<u64>) -> Vec<u8> {
    let mut bytes = vec![0u8; (span.end - span.start) as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, span.start).expect("read the span");
    bytes
}

fn sweep(layer: &Path, raw: Option<&Path>) {
    let raw = raw.map(|p| std::fs::read(p).expect("read RAW"));
    let file = std::fs::File::open(layer).expect("open the layer");
    for spacing_mib in [1u64, 2, 4, 8, 16] {
        let options = IndexOptions { spacing_bytes: spacing_mib << 20, ..IndexOptions::default() };
        let started = Instant::now();
        let bytes = build_index(layer, &options, &limits()).expect("index");
        let took = started.elapsed();
        let index = SeekIndex::load(&bytes).expect("load");
        let gib = index.uncompressed_size_bytes() as f64 / (1u64 << 30) as f64;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let (mut time, mut fetched, mut inflated) = (Duration::ZERO, 0u64, 0u64);
        let (mut verified_time, mut span_bytes) = (Duration::ZERO, 0u64);
        const READS: u64 = 200;
        for _ in 0..READS {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let offset = rng % (index.uncompressed_size_bytes() - 4096);
            let started = Instant::now();
            let (got, cost) = index.read_range(&file, offset..offset + 4096).expect("read");
            time += started.elapsed();
            fetched += cost.compressed_bytes_read;
            inflated += cost.decompressed_bytes;
            if let Some(raw) = &raw {
                assert_eq!(got, raw[offset as usize..offset as usize + 4096], "bytes at {offset}");
            }
            // The cache's way: the span of whole segments, fetched, checked, read from.
            let started = Instant::now();
            let span = index.segment_span(offset..offset + 4096).expect("span");
            let bytes = read_span(&file, &span);
            let (again, _) =
                index.read_range_verified(span.start, &bytes, offset..offset + 4096).expect("verified read");
            verified_time += started.elapsed();
            span_bytes += span.end - span.start;
            assert_eq!(again, got, "verified bytes at {offset}");
        }
        println!(
            "spacing {spacing_mib:>2} MiB: indexed at {:.0} MB/s, {} points, index {:.0} KiB ({:.0} KiB per GiB); \
             a 4 KiB read: {:.1} ms, {:.0} KiB fetched, {:.0} KiB inflated; verified from its span: {:.1} ms, \
             {:.0} KiB span (means; largest segment {:.0} KiB)",
            index.uncompressed_size_bytes() as f64 / took.as_secs_f64() / 1e6,
            index.n_points(),
            bytes.len() as f64 / 1024.0,
            bytes.len() as f64 / 1024.0 / gib,
            time.as_secs_f64() * 1e3 / READS as f64,
            fetched as f64 / 1024.0 / READS as f64,
            inflated as f64 / 1024.0 / READS as f64,
            verified_time.as_secs_f64() * 1e3 / READS as f64,
            span_bytes as f64 / 1024.0 / READS as f64,
            index.max_segment_bytes() as f64 / 1024.0,
        );
    }
}
