//! Single-core hashing throughput: SHA-256 through `tiercache_core::Hasher` (what every write to
//! the disk tier pays), MD5 through the `md-5` crate (what the background ETag pass pays), and both
//! fed together through `tiercache_core::Hashes` (what `tiercache index` pays per byte of a
//! directory), over in-memory data fed in 1 MiB chunks, so no I/O is measured.
//!
//! Usage: `cargo run --release -p tiercache-core --example sha256_speed [MIB]` (default 1024).
//! Prints one line per algorithm: `<name> <GB/s> GB/s <seconds> s <bytes> bytes <bytes/s> bytes/s`
//! (GB = 10^9 bytes).

use std::hint::black_box;
use std::time::Instant;

use md5::Digest as _;
use tiercache_core::{Hasher, Hashes};

const CHUNK: usize = 1 << 20;

fn main() {
    let mib: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().unwrap_or_else(|_| {
            eprintln!("usage: sha256_speed [MIB]   (MIB: a positive integer, default 1024)");
            std::process::exit(2);
        }),
        None => 1024,
    };
    let mib = mib.max(1);
    let data = pseudo_random(mib * CHUNK);
    let bytes = data.len() as u64;

    // Warm up: fault in the pages and let the CPU reach its clock.
    let mut warm = Hasher::new();
    warm.update(&data[..(16 * CHUNK).min(data.len())]);
    black_box(warm.finish());

    let t = Instant::now();
    let mut h = Hasher::new();
    for chunk in data.chunks(CHUNK) {
        h.update(black_box(chunk));
    }
    let digest = black_box(h.finish());
    report("sha256", bytes, t.elapsed().as_secs_f64());

    let t = Instant::now();
    let mut m = md5::Md5::new();
    for chunk in data.chunks(CHUNK) {
        m.update(black_box(chunk));
    }
    let md5 = black_box(m.finalize());
    report("md5", bytes, t.elapsed().as_secs_f64());

    let t = Instant::now();
    let mut both = Hashes::new();
    for chunk in data.chunks(CHUNK) {
        both.update(black_box(chunk));
    }
    black_box(both.finish());
    report("md5+sha256", bytes, t.elapsed().as_secs_f64());

    eprintln!("({digest}, md5 {:x?}…)", &md5[..4]);
}

fn report(name: &str, bytes: u64, secs: f64) {
    let rate = bytes as f64 / secs;
    println!("{name} {:.3} GB/s {secs:.3} s {bytes} bytes {rate:.0} bytes/s", rate / 1e9);
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
