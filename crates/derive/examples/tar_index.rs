//! Times the `tar-index` recipe and its reader, so that they can be compared with GNU tar
//! listing the same layer:
//!
//! ```text
//! cargo run --release -p tiercache-derive --example tar_index -- make OUT [--files N] [--mib M]
//!     [--compression gzip|zstd|none]
//! cargo run --release -p tiercache-derive --example tar_index -- index LAYER [--runs 3]
//!     [--out FILE]
//! cargo run --release -p tiercache-derive --example tar_index -- load INDEX [--runs 5]
//! cargo run --release -p tiercache-derive --example tar_index -- json INDEX [--runs 5]
//! ```
//!
//! `make` writes a layer of `N` files (default 60 000) in a few hundred directories, about `M`
//! MiB of data before compression (default 400: a ~200 MiB gzip layer), file sizes skewed small
//! the way a root file system's are, contents half compressible. `index` prints the best time
//! of a few runs and the throughput over the uncompressed stream; `load` the best time to load
//! an index and to look every one of its paths up; `json` writes the same entries as JSON Lines
//! (the other format considered: a header line, then one object per entry, fields at their
//! defaults left out, byte strings that are not UTF-8 in base64) and prints its size and the best
//! time to parse it into entries and build a map from normalized path to entry.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tiercache_derive::tar_index::TarIndex;
use tiercache_derive::{Limits, recipe};

fn main() {
    let mut args = std::env::args().skip(1);
    let command = args.next().expect("a command: make, index or load");
    let path = PathBuf::from(args.next().expect("a file"));
    let mut flags = std::collections::HashMap::new();
    while let Some(flag) = args.next() {
        flags.insert(flag, args.next().expect("a value after each flag"));
    }
    let number = |name: &str, default: u64| flags.get(name).map_or(default, |v| v.parse().expect("a number"));
    match command.as_str() {
        "make" => make(&path, number("--files", 60_000), number("--mib", 400), flags.get("--compression")),
        "index" => index(&path, number("--runs", 3) as u32, flags.get("--out").map(PathBuf::from)),
        "load" => load(&path, number("--runs", 5) as u32),
        "json" => json(&path, number("--runs", 5) as u32),
        other => panic!("unknown command {other:?}"),
    }
}

fn make(out: &PathBuf, files: u64, mib: u64, compression: Option<&String>) {
    let file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    let writer: Box<dyn Write> = match compression.map_or("gzip", String::as_str) {
        "gzip" => Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::default())),
        "zstd" => Box::new(zstd::stream::write::Encoder::new(file, 3).unwrap().auto_finish()),
        "none" => Box::new(file),
        other => panic!("unknown compression {other:?}"),
    };
    let mut builder = tar::Builder::new(writer);
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Sizes: a log-uniform draw, scaled so that the total comes near `mib`.
    let draws: Vec<f64> = (0..files).map(|_| (next() % 1_000_000) as f64 / 1_000_000.0).collect();
    let raw: Vec<f64> = draws.iter().map(|d| (d * 20.0).exp2()).collect();
    let scale = (mib << 20) as f64 / raw.iter().sum::<f64>();
    let text = b"the quick brown fox jumps over the lazy dog; ".repeat(1 << 12);
    let max_file = 64 << 20;
    let mut data = vec![0u8; max_file];
    for (i, size) in raw.iter().map(|r| ((r * scale) as usize).min(max_file)).enumerate() {
        // Half random bytes, half text: about 2:1 under gzip.
        for chunk in data[..size].chunks_mut(8192) {
            if next() % 2 == 0 {
                chunk.iter_mut().for_each(|b| *b = next() as u8);
            } else {
                chunk.copy_from_slice(&text[..chunk.len()]);
            }
        }
        let mut header = tar::Header::new_ustar();
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000 + i as u64);
        let name = format!("usr/share/d{:03}/s{:02}/file-{i:06}.dat", i % 300, i % 17);
        builder.append_data(&mut header, name, &data[..size]).unwrap();
    }
    builder.into_inner().unwrap().flush().unwrap();
}

fn index(layer: &PathBuf, runs: u32, out: Option<PathBuf>) {
    let tar_index = recipe("tar-index").unwrap();
    let params = tar_index.params(&[], None).unwrap();
    let len = std::fs::metadata(layer).unwrap().len();
    let mut best = Duration::MAX;
    let mut output = Vec::new();
    for _ in 0..runs {
        output.clear();
        let limits = Limits {
            max_input_bytes: u64::MAX,
            max_output_bytes: 1 << 30,
            max_alloc_bytes: 1 << 30,
            max_pixels: 0,
            deadline: Instant::now() + Duration::from_secs(600),
        };
        let start = Instant::now();
        tar_index.run(layer, len, &params, &limits, &mut output).unwrap_or_else(|e| panic!("{e}"));
        best = best.min(start.elapsed());
    }
    let index = TarIndex::load(&output[..]).unwrap();
    let mib = index.tar_bytes() as f64 / f64::from(1 << 20);
    println!(
        "{}: {} entries, {:.0} MiB uncompressed ({}), index {} bytes; best of {runs}: {:.3} s, {:.0} MiB/s",
        layer.display(),
        index.len(),
        mib,
        index.compression().name(),
        output.len(),
        best.as_secs_f64(),
        mib / best.as_secs_f64()
    );
    if let Some(out) = out {
        std::fs::write(out, &output).unwrap();
    }
}

fn load(path: &PathBuf, runs: u32) {
    let bytes = std::fs::read(path).unwrap();
    let (mut best_load, mut best_lookups) = (Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        let start = Instant::now();
        let index = TarIndex::load(&bytes[..]).unwrap();
        best_load = best_load.min(start.elapsed());
        let start = Instant::now();
        let found = index.entries().filter(|e| index.get(e.path()).is_some()).count();
        best_lookups = best_lookups.min(start.elapsed());
        assert_eq!(found, index.len());
    }
    let index = TarIndex::load(&bytes[..]).unwrap();
    println!(
        "{}: {} entries, {} bytes ({:.1} per entry); load {:.2} ms; {} lookups {:.2} ms ({:.0} ns each)",
        path.display(),
        index.len(),
        bytes.len(),
        bytes.len() as f64 / index.len().max(1) as f64,
        best_load.as_secs_f64() * 1e3,
        index.len(),
        best_lookups.as_secs_f64() * 1e3,
        best_lookups.as_secs_f64() * 1e9 / index.len().max(1) as f64
    );
}

/// One entry as a JSON Lines index would hold it.
#[derive(serde::Serialize, serde::Deserialize)]
struct JsonEntry {
    path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    path_is_base64: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    normalized: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    mtime_nsec: u32,
    size: u64,
    data_offset: u64,
    header_offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    uname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    gname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dev: Option<(u32, u32)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    xattrs: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    whiteout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sparse: Vec<(u64, u64)>,
}

fn is_false(b: &bool) -> bool {
    !b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn text(bytes: &[u8]) -> String {
    use base64::Engine as _;
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

fn json(path: &PathBuf, runs: u32) {
    let bytes = std::fs::read(path).unwrap();
    let index = TarIndex::load(&bytes[..]).unwrap();
    let header = serde_json::json!({
        "format": "tiercache-tar-index",
        "version": 1,
        "compression": index.compression().name(),
        "entries": index.len(),
        "uncompressed_size": index.tar_bytes(),
    });
    let mut lines = format!("{header}\n");
    for e in index.entries() {
        let entry = JsonEntry {
            path: text(e.path()),
            path_is_base64: std::str::from_utf8(e.path()).is_err(),
            normalized: (e.normalized_path() != e.path()).then(|| text(e.normalized_path())),
            kind: format!("{:?}", e.kind()).to_lowercase(),
            mode: e.mode(),
            uid: e.uid(),
            gid: e.gid(),
            mtime: e.mtime().0,
            mtime_nsec: e.mtime().1,
            size: e.size(),
            data_offset: e.data_offset(),
            header_offset: e.header_offset(),
            start_offset: (e.start_offset() != e.header_offset()).then(|| e.start_offset()),
            uname: text(e.uname()),
            gname: text(e.gname()),
            link: e.link_target().map(text),
            dev: e.device(),
            xattrs: e.xattrs().map(|(k, v)| (text(k), text(v))).collect(),
            whiteout: e.whiteout().map(|w| format!("{w:?}").to_lowercase()),
            sparse: e.sparse().map(|s| s.map(|s| (s.file_offset, s.len)).collect()).unwrap_or_default(),
        };
        lines.push_str(&serde_json::to_string(&entry).unwrap());
        lines.push('\n');
    }
    let (mut best_parse, mut best_map) = (Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        let start = Instant::now();
        let mut rest = lines.lines();
        let _header: serde_json::Value = serde_json::from_str(rest.next().unwrap()).unwrap();
        let entries: Vec<JsonEntry> = rest.map(|l| serde_json::from_str(l).unwrap()).collect();
        best_parse = best_parse.min(start.elapsed());
        let by_path: std::collections::HashMap<&str, usize> =
            entries.iter().enumerate().map(|(i, e)| (e.normalized.as_deref().unwrap_or(&e.path), i)).collect();
        best_map = best_map.min(start.elapsed());
        assert_eq!(by_path.len(), index.len());
    }
    println!(
        "{}: JSON Lines {} bytes ({:.1} per entry) against {} binary; parse {:.2} ms, parse and map {:.2} ms",
        path.display(),
        lines.len(),
        lines.len() as f64 / index.len().max(1) as f64,
        bytes.len(),
        best_parse.as_secs_f64() * 1e3,
        best_map.as_secs_f64() * 1e3
    );
}
