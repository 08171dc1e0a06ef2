//! Writes a test image as an OCI layout, for benchmarks: one `linux/amd64` manifest whose layers
//! are gzip-compressed tar archives of one file of pseudo-random (incompressible) bytes each, so
//! that a layer's compressed size is about its file's size.
//!
//! ```text
//! cargo run --release -p tiercache-testkit --example build_image -- OUT_DIR TAG SEED LAYER_MIB...
//! skopeo copy oci:OUT_DIR:TAG docker://127.0.0.1:5000/bench/app:TAG
//! ```
//!
//! It builds with the test harness's `ImageBuilder` (in memory, about three times the image's size
//! at the peak) and copies the layout to `OUT_DIR`, which must not exist yet.

use std::path::Path;
use std::process::ExitCode;

use tiercache_testkit::registry::{Compression, ImageBuilder};

/// The largest layer accepted, in MiB: the builder holds each layer in memory several times.
const MAX_LAYER_MIB: usize = 2048;

fn main() -> ExitCode {
    match run(&std::env::args().skip(1).collect::<Vec<_>>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("build_image: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [out, tag, seed, layers @ ..] = args else {
        return Err("usage: build_image OUT_DIR TAG SEED LAYER_MIB... (e.g. /var/tmp/img v1 1 100 80 70)".into());
    };
    if layers.is_empty() {
        return Err("give at least one layer size in MiB".into());
    }
    let seed: u64 = seed.parse().map_err(|_| format!("the seed must be a number, got {seed:?}"))?;
    let layers = layers.iter().map(|l| layer(l)).collect::<Result<Vec<_>, _>>()?;
    let out = Path::new(out);
    if out.exists() {
        return Err(format!("{} exists already: give a new directory", out.display()));
    }
    let image = ImageBuilder::new(seed).tag(tag).layers(&layers).build()?;
    copy_dir(image.dir(), out)?;
    println!("{}", image.top().digest);
    Ok(())
}

/// One layer of `mib` MiB, gzip-compressed.
fn layer(mib: &str) -> Result<(Compression, usize), String> {
    match mib.parse::<usize>() {
        Ok(n) if (1..=MAX_LAYER_MIB).contains(&n) => Ok((Compression::Gzip, n * 1024 * 1024)),
        _ => Err(format!("a layer size is a number of MiB from 1 to {MAX_LAYER_MIB}, got {mib:?}")),
    }
}

/// Copies the directory tree `from` to `to` (regular files and directories only).
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("reading {}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", from.display()))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| format!("copying {} to {}: {e}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}
