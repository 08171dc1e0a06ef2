//! `tiercache df`: disk use per tier and, with `--verbose`, per namespace, from the index.
//!
//! It only prints; the usage figures (shared blobs counted once) are the engine's.

use anyhow::Result;
use tiercache_engine::Cache;

use crate::{human_bytes, print_json};

/// Prints disk use per tier and, with `verbose`, per namespace.
pub(crate) async fn df(cache: Cache, verbose: bool, json: bool) -> Result<u8> {
    let usage = cache.disk_usage().await?;
    let quota = cache.quota_stats();
    if json {
        return print_json(&serde_json::json!({ "disk": usage, "quota_bytes": quota.quota_bytes })).map(|()| 0);
    }
    let (managed, elsewhere): (Vec<_>, Vec<_>) = usage.namespaces.iter().partition(|n| n.storage.is_none());
    let referenced: u64 = managed.iter().map(|n| n.attributed_bytes).sum();
    println!("{:<12} {:>8} {:>10} {:>12} {:>12}", "TIER", "BLOBS", "SIZE", "QUOTA", "RECLAIMABLE");
    println!(
        "{:<12} {:>8} {:>10} {:>12} {:>12}",
        "disk",
        usage.n_blobs,
        human_bytes(usage.blob_bytes),
        quota.quota_bytes.map_or_else(|| "-".to_owned(), human_bytes),
        format!("{} ({} orphans)", human_bytes(usage.orphan_bytes), usage.n_orphans),
    );
    println!(
        "uploads: {} ({}), never evicted; pinned: {}; referenced by namespaces: {}",
        usage.n_uploads,
        human_bytes(usage.upload_bytes),
        human_bytes(usage.pinned_bytes),
        human_bytes(referenced)
    );
    for n in &elsewhere {
        println!(
            "namespace {} in {}: {} blobs, {}",
            n.name,
            n.storage.as_deref().unwrap_or_default(),
            n.n_blobs,
            human_bytes(n.blob_bytes)
        );
    }
    if verbose {
        println!();
        println!(
            "{:<24} {:>8} {:>10} {:>10} {:>10} {:>10} {:>6}  {:<12} STORAGE",
            "NAMESPACE", "ENTRIES", "SIZE", "UNIQUE", "SHARED", "ATTRIB", "PINNED", "OWNER"
        );
        for n in &usage.namespaces {
            let pinned = if n.is_pinned { "all".to_owned() } else { n.n_pinned_keys.to_string() };
            println!(
                "{:<24} {:>8} {:>10} {:>10} {:>10} {:>10} {:>6}  {:<12} {}",
                n.name,
                n.n_entries,
                human_bytes(n.blob_bytes),
                human_bytes(n.unique_bytes),
                human_bytes(n.shared_bytes),
                human_bytes(n.attributed_bytes),
                pinned,
                n.owner.as_deref().unwrap_or("-"),
                n.storage.as_deref().map_or_else(|| "managed".to_owned(), |d| format!("path:{d}"))
            );
        }
    }
    Ok(0)
}
