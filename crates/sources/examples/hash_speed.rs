//! Single-core throughput of what `tiercache index` pays per byte of a directory namespace: MD5 and
//! SHA-256 fed together through `tiercache_sources::dir::hash::Hashes`, over in-memory data in
//! 1 MiB chunks (the size `hash_file` reads), so no I/O is measured.
//!
//! Usage: `cargo run --release -p tiercache-sources --example hash_speed [MIB]` (default 256).
//! Prints one line: `md5+sha256 <GB/s> GB/s <seconds> s <bytes> bytes <bytes/s> bytes/s`
//! (GB = 10^9 bytes).

use std::hint::black_box;
use std::time::Instant;

use tiercache_sources::dir::hash::Hashes;

const CHUNK: usize = 1 << 20;

fn main() {
    let mib: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("usage: hash_speed [MIB]   (MIB: a positive integer, default 256)");
            std::process::exit(2);
        }),
        None => 256,
    };
    let mib = mib.max(1);
    let data = pseudo_random(mib * CHUNK);
    let bytes = data.len() as u64;

    // Warm up: fault in the pages and let the CPU reach its clock.
    let mut warm = Hashes::new();
    warm.update(&data[..(16 * CHUNK).min(data.len())]);
    black_box(warm.finish());

    let t = Instant::now();
    let mut h = Hashes::new();
    for chunk in data.chunks(CHUNK) {
        h.update(black_box(chunk));
    }
    let (md5, sha256) = black_box(h.finish());
    let secs = t.elapsed().as_secs_f64();
    let rate = bytes as f64 / secs;
    println!("md5+sha256 {:.3} GB/s {secs:.3} s {bytes} bytes {rate:.0} bytes/s", rate / 1e9);
    eprintln!("({sha256}, md5 {:x?}…)", &md5[..4]);
}

/// `n` bytes from xorshift64*, so the data is not trivially compressible or all zero.
fn pseudo_random(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}
