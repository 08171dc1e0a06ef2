//! `tiercache warm IMAGE --ns NAMESPACE`: pulls an image's manifest (every platform of an index,
//! or the one `--platform` names) and its blobs into the cache of a registry namespace, through the
//! same read path a pull through the mirror takes, with a progress bar (or `--json`).
//!
//! It knows image references and the manifest formats' JSON; fetching, verifying and storing
//! are the engine's.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tiercache_engine::{Cache, ImageRef, Read};

use crate::args::WarmArgs;

/// The largest manifest read (a manifest is a few KiB; more is not one).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Blobs fetched at once.
const PARALLEL_BLOBS: usize = 4;

/// What `warm` did.
#[derive(Debug, Default, Serialize)]
struct Warmed {
    image: String,
    namespace: String,
    /// Manifests read (an index and each platform's manifest).
    manifests: u64,
    /// Blobs read (configs and layers).
    blobs: u64,
    /// Bytes of those blobs.
    bytes: u64,
    /// Of those blobs, how many the cache already held (not fetched from the registry).
    blobs_already_cached: u64,
    /// Layers whose derivations for reading files inside the image (`tar-index`, `layer-seek`)
    /// are made or found.
    layers_indexed: u64,
}

/// A descriptor in a manifest: what it names, and how big it is.
struct Descriptor {
    digest: String,
    size: u64,
    platform: Option<String>,
}

/// The descriptors of a manifest's array field (`manifests`, `layers`).
fn descriptors(list: Option<&serde_json::Value>) -> Vec<Descriptor> {
    let Some(items) = list.and_then(|v| v.as_array()) else { return Vec::new() };
    items.iter().filter_map(descriptor).collect()
}

fn descriptor(d: &serde_json::Value) -> Option<Descriptor> {
    let platform = d.get("platform").map(|p| {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
        let variant = field("variant");
        let base = format!("{}/{}", field("os"), field("architecture"));
        if variant.is_empty() { base } else { format!("{base}/{variant}") }
    });
    Some(Descriptor {
        digest: d.get("digest")?.as_str()?.to_owned(),
        size: d.get("size").and_then(|s| s.as_u64()).unwrap_or(0),
        platform,
    })
}

/// Reads a whole manifest of `name` (at most [`MAX_MANIFEST_BYTES`]) and parses it.
async fn manifest(cache: &Cache, ns: &str, name: &str, reference: &str) -> Result<serde_json::Value> {
    let key = format!("{name}/manifests/{reference}");
    let read = cache.read_entry(ns, &key).await.with_context(|| format!("cannot read manifest {name}:{reference}"))?;
    let mut bytes = Vec::new();
    let mut body = read.into_stream(None);
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.with_context(|| format!("reading manifest {name}:{reference}"))?);
        if bytes.len() > MAX_MANIFEST_BYTES {
            bail!("manifest {name}:{reference} is larger than {MAX_MANIFEST_BYTES} bytes");
        }
    }
    serde_json::from_slice(&bytes).with_context(|| format!("manifest {name}:{reference} is not JSON"))
}

/// Reads blob `digest` of `name` whole, calling `progress` with each chunk's length; whether the
/// cache held it already.
async fn blob(cache: &Cache, ns: &str, name: &str, digest: &str, progress: &indicatif::ProgressBar) -> Result<bool> {
    let read: Read = cache
        .read_entry(ns, &format!("{name}/blobs/{digest}"))
        .await
        .with_context(|| format!("cannot read blob {digest} of {name}"))?;
    let was_cached = read.meta.tier.as_str() != "source";
    let mut body = read.into_stream(None);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.with_context(|| format!("reading blob {digest} of {name}"))?;
        progress.inc(chunk.len() as u64);
    }
    Ok(was_cached)
}

/// `tiercache warm`.
pub(crate) async fn warm(cache: Cache, args: &WarmArgs) -> Result<u8> {
    let image = ImageRef::parse(&args.image)?;
    let reference = image.reference.to_string();
    let ns = args.ns.as_str();
    let mut warmed = Warmed { image: args.image.clone(), namespace: ns.to_owned(), ..Warmed::default() };
    let top = manifest(&cache, ns, &image.name, &reference).await?;
    warmed.manifests += 1;
    // An index (or a Docker manifest list) names one manifest per platform.
    let mut manifests = Vec::new();
    // What to index for reading files: each platform's manifest.
    let mut to_index = Vec::new();
    let listed = descriptors(top.get("manifests"));
    if top.get("manifests").is_some() {
        let chosen: Vec<_> = listed
            .into_iter()
            .filter(|d| args.platform.as_deref().is_none_or(|p| d.platform.as_deref() == Some(p)))
            .collect();
        if chosen.is_empty() {
            bail!("{} has no manifest for platform {}", args.image, args.platform.as_deref().unwrap_or("(any)"));
        }
        for d in chosen {
            manifests.push(manifest(&cache, ns, &image.name, &d.digest).await?);
            to_index.push(format!("{}@{}", image.name, d.digest));
            warmed.manifests += 1;
        }
    } else {
        manifests.push(top);
        to_index.push(args.image.clone());
    }
    let mut blobs: Vec<Descriptor> = Vec::new();
    for m in &manifests {
        for d in m.get("config").and_then(descriptor).into_iter().chain(descriptors(m.get("layers"))) {
            if !blobs.iter().any(|b| b.digest == d.digest) {
                blobs.push(d);
            }
        }
    }
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let progress = if args.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("a valid template"),
    );
    let results: Vec<bool> = futures::stream::iter(&blobs)
        .map(|b| blob(&cache, ns, &image.name, &b.digest, &progress))
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect()
        .await?;
    progress.finish_and_clear();
    // The last fetches are still being stored when their bytes have been read: wait for them.
    cache.settle().await?;
    // Then the layers' indexes, so that files inside the image read lazily from here on.
    let spinner = if args.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    for (i, target) in to_index.iter().enumerate() {
        spinner.set_message(format!("indexing the layers of {target} ({}/{})", i + 1, to_index.len()));
        let opened = cache.image(ns, target, None).await.with_context(|| format!("cannot index {target}"))?;
        warmed.layers_indexed += opened.n_layers() as u64;
    }
    spinner.finish_and_clear();
    cache.settle().await?;
    warmed.blobs = blobs.len() as u64;
    warmed.bytes = total;
    warmed.blobs_already_cached = results.iter().filter(|&&c| c).count() as u64;
    if args.json {
        println!("{}", serde_json::to_string(&warmed)?);
    } else {
        println!(
            "warmed {} in namespace {}: {} manifests, {} blobs ({} bytes), {} of them already cached; {} layers indexed",
            warmed.image,
            warmed.namespace,
            warmed.manifests,
            warmed.blobs,
            warmed.bytes,
            warmed.blobs_already_cached,
            warmed.layers_indexed
        );
    }
    Ok(0)
}
