//! Writes an image of one large gzip layer as an OCI layout, for the files-inside-images
//! benchmark (`bench/images.sh`): many files of incompressible bytes, and a small known file
//! last in the tar stream (near the layer's end). Prints the small file's path, the layer's
//! digest and its size, on one line.
//!
//! ```text
//! cargo run --release -p tiercache-testkit --example build_big_layer -- OUT_DIR MIB SEED
//! skopeo copy oci:OUT_DIR:v1 docker://127.0.0.1:5000/bench/big:v1
//! ```

use std::path::Path;
use std::process::ExitCode;

use tiercache_testkit::registry::big_gzip_layer_image;

/// The largest layer accepted, in MiB.
const MAX_MIB: u64 = 4096;

fn main() -> ExitCode {
    match run(&std::env::args().skip(1).collect::<Vec<_>>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("build_big_layer: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [out, mib, seed] = args else {
        return Err("usage: build_big_layer OUT_DIR MIB SEED (e.g. /var/tmp/big 250 1)".into());
    };
    let mib: u64 = mib.parse().ok().filter(|m| (1..=MAX_MIB).contains(m)).ok_or(format!("MIB is 1 to {MAX_MIB}"))?;
    let seed: u64 = seed.parse().map_err(|_| format!("the seed must be a number, got {seed:?}"))?;
    let out = Path::new(out);
    if out.exists() {
        return Err(format!("{} exists already: give a new directory", out.display()));
    }
    let big = big_gzip_layer_image(mib << 20, seed)?;
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(big.image.dir())
        .arg(out)
        .status()
        .map_err(|e| format!("running cp: {e}"))?;
    if !status.success() {
        return Err(format!("copying the layout to {} failed", out.display()));
    }
    println!("{} {} {} {}", big.image.tag(), big.needle_path, big.layer_digest(), big.layer_size_bytes());
    Ok(())
}
