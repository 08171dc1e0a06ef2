//! `tiercache df`: disk use per tier and, with `--verbose`, per namespace, from the index.
//!
//! It only prints; the usage figures (shared blobs counted once) are the engine's. The quota is the
//! one the server enforces (`served.rs`), unless `--disk-quota` names another.

use anyhow::Result;
use tiercache_engine::Cache;

use crate::{human_bytes, print_json};

/// Prints disk use per tier and, with `verbose`, per namespace. The quota shown is `flag` if
/// given, else the one the last `serve` on this data directory started with, else the config
/// file's; the output says which.
pub(crate) async fn df(cache: Cache, verbose: bool, json: bool, flag: Option<u64>) -> Result<u8> {
    let usage = cache.disk_usage().await?;
    let served = crate::served::read(cache.data_dir())?;
    let (quota_bytes, quota_from) = match (flag, &served) {
        (Some(q), _) => (Some(q), "the --disk-quota flag".to_owned()),
        (None, Some(s)) => (
            s.disk_quota_bytes,
            format!(
                "the server started at {} (pid {}), recorded in {}",
                s.started_at,
                s.pid,
                crate::served::path(cache.data_dir()).display()
            ),
        ),
        (None, None) => {
            (cache.quota_stats().quota_bytes, "this command's settings (no server recorded its own)".into())
        }
    };
    if json {
        let source = match (flag, &served) {
            (Some(_), _) => "flag",
            (None, Some(_)) => "server",
            (None, None) => "config",
        };
        let body = serde_json::json!({
            "disk": usage,
            "quota_bytes": quota_bytes,
            "quota_source": source,
            "quota_from": quota_from,
            "server": served,
        });
        return print_json(&body).map(|()| 0);
    }
    let (managed, elsewhere): (Vec<_>, Vec<_>) = usage.namespaces.iter().partition(|n| n.storage.is_none());
    let referenced: u64 = managed.iter().map(|n| n.attributed_bytes).sum();
    println!("{:<12} {:>8} {:>10} {:>12} {:>12}", "TIER", "BLOBS", "SIZE", "QUOTA", "RECLAIMABLE");
    println!(
        "{:<12} {:>8} {:>10} {:>12} {:>12}",
        "disk",
        usage.n_blobs,
        human_bytes(usage.blob_bytes),
        quota_bytes.map_or_else(|| "-".to_owned(), human_bytes),
        format!("{} ({} orphans)", human_bytes(usage.orphan_bytes), usage.n_orphans),
    );
    println!(
        "uploads: {} ({}), never evicted; pinned: {}; referenced by namespaces: {}",
        usage.n_uploads,
        human_bytes(usage.upload_bytes),
        human_bytes(usage.pinned_bytes),
        human_bytes(referenced)
    );
    println!("quota: {}, from {quota_from}", quota_bytes.map_or_else(|| "none".to_owned(), human_bytes));
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
