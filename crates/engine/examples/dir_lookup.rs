//! Lookup of one file of a directory namespace by its path, in a read cache of ROWS files (default
//! 1,000,000), without a real tree: the rows are written straight through `tiercache_index::Index`
//! (realistic 40–55-byte paths, random markers and hashes), then `Index::get_file` is timed for
//! LOOKUPS random existing paths and LOOKUPS/10 missing ones from one thread. That call is what
//! every read of a directory namespace makes; the engine makes it through `spawn_blocking`, so the
//! same lookups are timed once more with that hop. (`tiercache_engine::Cache` has no public
//! per-file lookup, and its reads open the real file first, so the index call is measured here.)
//!
//! Usage: `cargo run --release -p tiercache-engine --example dir_lookup [DIR] [ROWS] [LOOKUPS]`
//! (defaults `/var/tmp/tiercache-bench-dir/lookup-ROWS`, 1000000, 100000). The database is
//! `DIR/index.db`; a later run with the same ROWS reuses it. Prints `key value` lines (µs, bytes).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use tiercache_core::{Digest, FileMarkers, NamespaceName, NamespaceOptions};
use tiercache_index::{FileRow, Index};

const NS: &str = "bench";
const BATCH: usize = 10_000;
/// Bumped when the generated rows change, so an older database is rebuilt rather than reused.
const GENERATION: u32 = 1;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from);
    let rows: u64 =
        args.next().map(|a| a.parse()).transpose().context("ROWS: a positive integer")?.unwrap_or(1_000_000);
    let lookups: usize =
        args.next().map(|a| a.parse()).transpose().context("LOOKUPS: a positive integer")?.unwrap_or(100_000);
    ensure!(rows > 0 && lookups > 0, "usage: dir_lookup [DIR] [ROWS] [LOOKUPS]  (ROWS, LOOKUPS > 0)");
    let dir = dir.unwrap_or_else(|| PathBuf::from(format!("/var/tmp/tiercache-bench-dir/lookup-{rows}")));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let (index, ns_id) = open_or_build(&dir, rows)?;
    let db_bytes = index.file_bytes();
    println!("index_bytes {db_bytes} bytes_per_entry {:.1}", db_bytes as f64 / rows as f64);

    // Keys: random existing rows, and a tenth as many missing paths shaped like them (rows past the end).
    let mut rng = XorShift(0x5EED_D1A1_1007_0F0F);
    let hits: Vec<Vec<u8>> = (0..lookups).map(|_| path_of(rng.below(rows))).collect();
    let misses: Vec<Vec<u8>> = (0..(lookups / 10).max(1)).map(|_| path_of(rows + rng.below(rows))).collect();
    let avg_path = hits.iter().map(Vec::len).sum::<usize>() as f64 / hits.len() as f64;
    println!("avg_path_bytes {avg_path:.1}");

    // Warm the page cache with the whole file, then the connection and SQLite's own cache.
    let t = Instant::now();
    let mut f = std::fs::File::open(index.path())?;
    std::io::copy(&mut f, &mut std::io::sink())?;
    for key in hits.iter().take(10_000) {
        std::hint::black_box(index.get_file(ns_id, key)?);
    }
    println!("warmup_s {:.3}", t.elapsed().as_secs_f64());

    let mut hit_ns = Vec::with_capacity(hits.len());
    let t = Instant::now();
    for key in &hits {
        let t0 = Instant::now();
        let row = index.get_file(ns_id, key)?;
        hit_ns.push(t0.elapsed().as_nanos() as u64);
        match row {
            Some(r) if r.path == *key && r.sha256.is_some() => {}
            other => bail!("lookup of {} found {other:?}", String::from_utf8_lossy(key)),
        }
    }
    let hit_rate = hits.len() as f64 / t.elapsed().as_secs_f64();
    let mut miss_ns = Vec::with_capacity(misses.len());
    for key in &misses {
        let t0 = Instant::now();
        let row = index.get_file(ns_id, key)?;
        miss_ns.push(t0.elapsed().as_nanos() as u64);
        ensure!(row.is_none(), "{} should be missing", String::from_utf8_lossy(key));
    }
    report("lookup_hit", &mut hit_ns, Some(hit_rate));
    report("lookup_miss", &mut miss_ns, None);

    // The engine's hop: each lookup on a blocking thread, awaited from a runtime worker.
    let index = Arc::new(index);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut hop_ns = rt.block_on(async {
        let mut out = Vec::with_capacity(hits.len());
        for key in hits.iter().take(1000) {
            let (ix, k) = (Arc::clone(&index), key.clone());
            tokio::task::spawn_blocking(move || ix.get_file(ns_id, &k)).await??;
        }
        for key in &hits {
            let (ix, k) = (Arc::clone(&index), key.clone());
            let t0 = Instant::now();
            let row = tokio::task::spawn_blocking(move || ix.get_file(ns_id, &k)).await??;
            out.push(t0.elapsed().as_nanos() as u64);
            ensure!(row.is_some(), "{} went missing", String::from_utf8_lossy(key));
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    report("lookup_spawn_blocking", &mut hop_ns, None);
    println!(
        "note the engine path is Index::get_file inside spawn_blocking (lookup_spawn_blocking); Cache has no public per-file lookup"
    );
    Ok(())
}

/// Opens the database in `dir` if a previous run left one with `rows` rows of this generation,
/// else builds it afresh. Returns the index and the namespace id.
fn open_or_build(dir: &Path, rows: u64) -> Result<(Index, i64)> {
    let db = dir.join("index.db");
    let marker = dir.join("built");
    let want = format!("rows={rows} generation={GENERATION}\n");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        let (index, opened) = Index::open(&db)?;
        if !opened.needs_rebuild
            && let Some(ns) = index.get_namespace(NS)?
            && index.dir_stats(ns.id)?.n_files == rows
        {
            println!("rows {rows} reused {}", db.display());
            return Ok((index, ns.id));
        }
        println!("note {} did not hold the expected rows; rebuilding", db.display());
    }
    let _ = std::fs::remove_file(&marker);
    for suffix in ["", "-wal", "-shm"] {
        match std::fs::remove_file(format!("{}{suffix}", db.display())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }

    let t = Instant::now();
    let (index, _) = Index::open(&db)?;
    let now_ms = tiercache_core::now_ms();
    let (ns, _) =
        index.put_namespace(&NamespaceName::new(NS)?, Some("file:///bench"), &NamespaceOptions::default(), now_ms)?;
    // The walk hands rows over in path order; so does this.
    let mut paths: Vec<(Vec<u8>, u64)> = (0..rows).map(|i| (path_of(i), i)).collect();
    paths.sort_unstable();
    let now_ns = now_ms * 1_000_000;
    let mut batch = Vec::with_capacity(BATCH);
    for chunk in paths.chunks(BATCH) {
        batch.clear();
        batch.extend(chunk.iter().map(|(p, i)| row_of(p.clone(), *i, now_ns)));
        index.apply_files(ns.id, &batch, &[], &[])?;
    }
    let insert_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    index.vacuum()?;
    let vacuum_s = t.elapsed().as_secs_f64();
    let n = index.dir_stats(ns.id)?.n_files;
    ensure!(n == rows, "built {n} rows, expected {rows}");
    std::fs::write(&marker, want)?;
    println!(
        "rows {rows} built {} insert_s {insert_s:.2} rows_per_s {:.0} vacuum_s {vacuum_s:.2}",
        db.display(),
        rows as f64 / insert_s
    );
    Ok((index, ns.id))
}

/// Row `i`'s file: a size from 1 KiB to 64 MiB, times in the last few years, random hashes.
fn row_of(path: Vec<u8>, i: u64, now_ns: i64) -> FileRow {
    let mut r = XorShift(mix(i ^ 0xF11E));
    let size_bytes = 1024 + r.below(if i.is_multiple_of(100) { 64 << 20 } else { 64 << 10 });
    let mtime_ns = now_ns - r.below(3 * 365 * 86_400 * 1_000_000_000) as i64;
    let mut md5 = [0u8; 16];
    let mut sha = [0u8; 32];
    for c in md5.chunks_mut(8).chain(sha.chunks_mut(8)) {
        c.copy_from_slice(&r.next().to_le_bytes());
    }
    FileRow {
        path,
        markers: FileMarkers {
            size_bytes,
            mtime_ns,
            ctime_ns: mtime_ns + r.below(1_000_000_000) as i64,
            inode: 1_000_000 + i * 7 + r.below(7),
        },
        md5: Some(md5),
        sha256: Some(Digest::from_bytes(sha)),
        hashed_at_ns: Some(now_ns - r.below(86_400 * 1_000_000_000) as i64),
        is_copied: false,
    }
}

/// Row `i`'s path: one of four shapes of real trees, 40–55 bytes, unique because it ends in `i`.
fn path_of(i: u64) -> Vec<u8> {
    const PROJECTS: [&str; 4] = ["tiercache", "webapp", "pipeline", "firmware"];
    const MODULES: [&str; 5] = ["net", "storage", "util", "codec", "api"];
    const NAMES: [&str; 4] = ["handler", "parser", "worker", "config"];
    const DATASETS: [&str; 3] = ["imagenet-mini", "clickstream", "sensor-logs"];
    const HOSTS: [&str; 4] = ["db-west-3", "web-east-1", "build-02", "nas"];
    const DIRS: [&str; 3] = ["var-lib", "etc", "home"];
    let mut r = XorShift(mix(i));
    let (y, m, d) = (2005 + r.below(20), 1 + r.below(12), 1 + r.below(28));
    let pick = |r: &mut XorShift, list: &[&'static str]| list[r.below(list.len() as u64) as usize];
    let s = match r.below(4) {
        0 => format!("photos/{y}/{m:02}/{d:02}/IMG_{y}{m:02}{d:02}_{i:07}.jpg"),
        1 => {
            let (p, md, n) = (pick(&mut r, &PROJECTS), pick(&mut r, &MODULES), pick(&mut r, &NAMES));
            format!("projects/{p}/src/{md}/{n}_{i:07}.rs")
        }
        2 => format!("datasets/{}/shard-{:04}/part-{i:07}.parquet", pick(&mut r, &DATASETS), r.below(512)),
        _ => {
            let (h, dd) = (pick(&mut r, &HOSTS), pick(&mut r, &DIRS));
            format!("backups/{h}/{y}-{m:02}-{d:02}/{dd}/{i:07}.tar.zst")
        }
    };
    s.into_bytes()
}

fn report(label: &str, ns: &mut [u64], per_s: Option<f64>) {
    ns.sort_unstable();
    let q = |p: f64| ns[((p * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1] as f64 / 1000.0;
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64 / 1000.0;
    print!(
        "{label} n {} p50_us {:.2} p99_us {:.2} p999_us {:.2} max_us {:.2} mean_us {mean:.2}",
        ns.len(),
        q(0.50),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    match per_s {
        Some(r) => println!(" per_s {r:.0}"),
        None => println!(),
    }
}

/// splitmix64's finalizer: spreads consecutive integers over all 64 bits.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64*: deterministic, fast, good enough for picking keys.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let x = &mut self.0;
        if *x == 0 {
            *x = 0x9E37_79B9_7F4A_7C15;
        }
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` for `n` far below 2^64.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}
