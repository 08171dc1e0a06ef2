//! `tiercache stats` and `tiercache vacuum`: the index's totals (overall, per namespace, the shared
//! tier's counters, the S3 front door's, directory namespaces' read caches) and compacting the index database.
//!
//! Both only print what the engine reports.

use anyhow::Result;
use tiercache_engine::Cache;

use crate::{human_bytes, print_json, print_namespace_table, time_or_dash};

/// Prints the totals, of one namespace or of all.
pub(crate) async fn stats(cache: Cache, ns: Option<&str>, json: bool) -> Result<u8> {
    let report = cache.stats(ns).await?;
    if json {
        print_json(&report)?;
    } else {
        println!("data directory: {}", report.data_dir.display());
        println!("index: {}", human_bytes(report.index_bytes));
        let s = &report.stats;
        println!(
            "blobs: {} ({}), {} not referenced by any entry",
            s.n_blobs,
            human_bytes(s.blob_bytes),
            s.n_unreferenced_blobs
        );
        println!("entries: {} ({})", s.n_entries, human_bytes(s.entry_bytes));
        println!("oldest: {}", time_or_dash(s.oldest_ms));
        println!("newest: {}", time_or_dash(s.newest_ms));
        print_namespace_table(&s.namespaces);
        if !report.shared.is_empty() {
            let c = |name: &str| report.shared.get(name).copied().unwrap_or(0);
            println!(
                "shared tier: {} hits, {} misses, {} read; write-backs {} queued, {} done, {} skipped (already there), {} dropped (queue full), {} failed; {} errors, {} corrupt; breaker {} ({} trips)",
                c("hits"),
                c("misses"),
                human_bytes(c("read_bytes").max(0) as u64),
                c("write_backs_queued"),
                c("write_backs_done"),
                c("write_backs_skipped"),
                c("write_backs_dropped"),
                c("write_backs_failed"),
                c("errors"),
                c("corrupt"),
                if c("breaker_open") == 1 { "open" } else { "closed" },
                c("breaker_trips"),
            );
            println!(
                "entry records: {} hits, {} stale, {} misses, {} errors; {} written",
                c("record_hits"),
                c("record_stale"),
                c("record_misses"),
                c("record_errors"),
                c("records_written"),
            );
        }
        print_s3_counters(&report.front);
        print_oci_counters(&report.front);
        print_derivations(&report);
        for ns in &s.namespaces {
            if let Some(d) = &ns.directory {
                println!(
                    "{}: {} files ({}), {} not hashed yet; oldest file {}, newest {}; last update {} ({})",
                    ns.name,
                    d.n_files,
                    human_bytes(d.bytes),
                    d.n_unhashed,
                    time_or_dash(d.oldest_ms),
                    time_or_dash(d.newest_ms),
                    time_or_dash(d.last_update_ms),
                    d.last_update_kind.as_deref().unwrap_or("never")
                );
            }
        }
    }
    Ok(0)
}

/// The S3 front door's kept counters (`s3.requests.<Operation>`, `s3.errors.<Code>`,
/// `s3.bytes_in`, `s3.bytes_out`), if it ever counted: one line of totals, one of requests per
/// operation, one of errors per code.
fn print_s3_counters(front: &std::collections::BTreeMap<String, i64>) {
    let of = |group: &str| -> Vec<(&str, i64)> {
        front.iter().filter_map(|(k, v)| Some((k.strip_prefix(group)?, *v))).collect()
    };
    let (requests, errors) = (of("s3.requests."), of("s3.errors."));
    let bytes = |name: &str| human_bytes(front.get(name).copied().unwrap_or(0).max(0) as u64);
    if !front.keys().any(|k| k.starts_with("s3.")) {
        return;
    }
    let sum = |v: &[(&str, i64)]| v.iter().map(|(_, n)| n).sum::<i64>();
    let list = |v: &[(&str, i64)]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        }
    };
    println!(
        "S3 front door: {} requests, {} errors; {} in, {} out",
        sum(&requests),
        sum(&errors),
        bytes("s3.bytes_in"),
        bytes("s3.bytes_out")
    );
    println!("S3 requests: {}", list(&requests));
    println!("S3 errors: {}", list(&errors));
}

/// Derivation outputs by recipe, and what derivation jobs did (summed over every process).
fn print_derivations(report: &tiercache_engine::StatsReport) {
    let jobs =
        |outcome: &str, recipe: &str| report.front.get(&format!("derive.{outcome}.{recipe}")).copied().unwrap_or(0);
    let mut recipes: Vec<&str> = report.derivations.by_recipe.iter().map(|(r, _, _)| r.as_str()).collect();
    for k in report.front.keys().filter_map(|k| k.strip_prefix("derive.")) {
        if let Some((_, recipe)) = k.split_once('.')
            && !recipes.contains(&recipe)
        {
            recipes.push(recipe);
        }
    }
    for recipe in recipes {
        let (n, bytes) =
            report.derivations.by_recipe.iter().find(|(r, _, _)| r == recipe).map_or((0, 0), |(_, n, b)| (*n, *b));
        println!(
            "derivations {recipe}: {n} outputs ({}); jobs {} done, {} failed, {} skipped (already made), {} from the shared tier, {} dropped",
            human_bytes(bytes),
            jobs("done", recipe),
            jobs("failed", recipe),
            jobs("skipped", recipe),
            jobs("shared", recipe),
            jobs("dropped", recipe),
        );
    }
}

/// The registry mirror's kept counters (`oci.served.<kind>.<tier>`, `oci.bytes_out`,
/// `oci.upstream.<kind>`), if it ever counted: one line, answers per kind and tier, and requests
/// to the registries.
fn print_oci_counters(front: &std::collections::BTreeMap<String, i64>) {
    let served: Vec<(&str, i64)> =
        front.iter().filter_map(|(k, v)| Some((k.strip_prefix("oci.served.")?, *v))).collect();
    if served.is_empty() {
        return;
    }
    let list = served.iter().map(|(k, n)| format!("{} {n}", k.replace('.', " from "))).collect::<Vec<_>>();
    let bytes = human_bytes(front.get("oci.bytes_out").copied().unwrap_or(0).max(0) as u64);
    let upstream = |kind: &str| front.get(&format!("oci.upstream.{kind}")).copied().unwrap_or(0);
    println!(
        "registry mirror: {}; {bytes} out; upstream {} GET, {} HEAD, {} token requests",
        list.join(", "),
        upstream("get"),
        upstream("head"),
        upstream("token")
    );
}

/// Compacts the index and prints its size before and after.
pub(crate) async fn vacuum(cache: Cache, json: bool) -> Result<u8> {
    let report = cache.vacuum().await?;
    if json {
        print_json(&report)?;
    } else {
        println!(
            "index size before: {}, after: {}, saved: {}",
            human_bytes(report.before_bytes),
            human_bytes(report.after_bytes),
            human_bytes(report.saved_bytes)
        );
    }
    Ok(0)
}
