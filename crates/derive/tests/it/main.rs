//! Integration tests of the recipes through their public face ([`tiercache_derive::recipe`]): an
//! input file written to a temporary directory, parameters as a request gives them, the output
//! decoded again and checked. Test inputs are generated here, with encoders, never downloaded.

use std::time::{Duration, Instant};

use tiercache_derive::{DeriveError, Limits, Produced, recipe};

mod image_tree;
mod seek;
mod tar_index;
mod thumbnail;
mod video;

/// Limits roomy enough for every test input.
fn limits() -> Limits {
    Limits {
        max_input_bytes: 64 << 20,
        max_output_bytes: 64 << 20,
        max_alloc_bytes: 512 << 20,
        max_pixels: 100_000_000,
        deadline: Instant::now() + Duration::from_secs(120),
    }
}

/// Runs recipe `name` on `input` with the request's parameters `pairs` (no `Accept`).
fn run(name: &str, input: &[u8], pairs: &[(&str, &str)]) -> Result<(Produced, Vec<u8>), DeriveError> {
    run_with(name, input, pairs, &limits())
}

/// [`run`] within `limits`.
fn run_with(
    name: &str,
    input: &[u8],
    pairs: &[(&str, &str)],
    limits: &Limits,
) -> Result<(Produced, Vec<u8>), DeriveError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input");
    std::fs::write(&path, input).unwrap();
    let recipe = recipe(name).unwrap();
    let raw: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let params = recipe.params(&raw, None)?;
    let mut out = Vec::new();
    let produced = recipe.run(&path, input.len() as u64, &params, limits, &mut out)?;
    Ok((produced, out))
}
