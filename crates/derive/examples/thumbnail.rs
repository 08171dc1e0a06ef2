//! Makes thumbnails of the files named on the command line with the `thumbnail` recipe on one
//! thread and prints the time each took (the best of a few runs) and the mean, so that the
//! recipe can be compared with `vipsthumbnail` on the same files:
//!
//! ```text
//! cargo run --release -p tiercache-derive --example thumbnail -- [--size 300] [--format jpeg|webp]
//!     [--fit contain|cover] [--runs 3] [--out DIR] FILE...
//! ```
//!
//! It also times the placeholder for each file's first 64 KiB.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tiercache_derive::{Limits, recipe};

fn main() {
    let mut pairs = vec![("size".to_owned(), "300".to_owned())];
    let mut runs = 3u32;
    let mut out_dir: Option<PathBuf> = None;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--size" | "--format" | "--fit" => {
                let value = args.next().expect("a value after the flag");
                pairs.retain(|(k, _)| k != &arg[2..]);
                pairs.push((arg[2..].to_owned(), value));
            }
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--out" => out_dir = Some(args.next().expect("--out DIR").into()),
            _ => files.push(PathBuf::from(arg)),
        }
    }
    let thumbnail = recipe("thumbnail").unwrap();
    let params = thumbnail.params(&pairs, None).unwrap_or_else(|e| panic!("{e}"));
    let (mut total, mut total_placeholder) = (Duration::ZERO, Duration::ZERO);
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len();
        let mut best = Duration::MAX;
        let mut out = Vec::new();
        for _ in 0..runs.max(1) {
            out.clear();
            let limits = Limits {
                max_input_bytes: 256 << 20,
                max_output_bytes: 64 << 20,
                max_alloc_bytes: 1 << 30,
                max_pixels: 200_000_000,
                deadline: Instant::now() + Duration::from_secs(60),
            };
            let start = Instant::now();
            thumbnail.run(file, len, &params, &limits, &mut out).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            best = best.min(start.elapsed());
        }
        let head = std::fs::read(file).unwrap().into_iter().take(64 << 10).collect::<Vec<_>>();
        let start = Instant::now();
        let placeholder = thumbnail.placeholder(&head, &params).unwrap();
        let placeholder_time = start.elapsed();
        println!(
            "{}: {:.2} ms, {} bytes; placeholder {:.3} ms, {} bytes",
            file.display(),
            best.as_secs_f64() * 1000.0,
            out.len(),
            placeholder_time.as_secs_f64() * 1000.0,
            placeholder.bytes.len()
        );
        if let Some(dir) = &out_dir {
            std::fs::write(dir.join(file.file_name().unwrap()).with_extension("thumb"), &out).unwrap();
        }
        total += best;
        total_placeholder += placeholder_time;
    }
    let n = files.len().max(1) as f64;
    println!(
        "{} files: mean {:.2} ms a thumbnail, {:.3} ms a placeholder ({})",
        files.len(),
        total.as_secs_f64() * 1000.0 / n,
        total_placeholder.as_secs_f64() * 1000.0 / n,
        params.canonical()
    );
}
