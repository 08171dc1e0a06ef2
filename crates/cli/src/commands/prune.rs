//! `tiercache prune`: one pruner pass, everything the configuration asks for or only the parts the
//! flags name, and a line per thing removed (or, in a dry run, to be removed).
//!
//! What a pass removes is the engine's pruner; this only chooses its options and prints its report.

use anyhow::Result;
use tiercache_engine::{Cache, PruneOptions};

use crate::args::PruneArgs;
use crate::{human_bytes, print_json};

/// Runs one pruner pass with the options the flags ask for and prints its report.
pub(crate) async fn prune(cache: Cache, args: &PruneArgs) -> Result<u8> {
    let only = args.orphans || args.older_than.is_some() || args.max_size.is_some();
    let opts = if only {
        PruneOptions {
            orphans: args.orphans,
            older_than: args.older_than,
            max_size: args.max_size,
            ..Default::default()
        }
    } else {
        PruneOptions::all()
    };
    let opts = PruneOptions { namespace: args.ns.clone(), orphan_grace: args.grace, dry_run: args.dry_run, ..opts };
    let report = cache.prune(&opts).await?;
    cache.settle().await?;
    if args.json {
        return print_json(&report).map(|()| 0);
    }
    let verb = if report.dry_run { "would remove" } else { "removed" };
    for i in &report.items {
        let what = match (i.kind, &i.namespace, &i.key, &i.digest, &i.path) {
            ("owner", Some(ns), ..) => format!("namespace {ns} (owner gone)"),
            ("upload", Some(ns), Some(key), _, Some(id)) => format!("multipart upload {id} of {ns}/{key}"),
            (_, Some(ns), Some(key), ..) => format!("entry {ns}/{key}"),
            (_, _, _, Some(d), _) => format!("blob {d}"),
            (_, _, _, _, Some(p)) => p.clone(),
            _ => String::from("?"),
        };
        println!("{verb} {:<6} {what} ({})", i.kind, human_bytes(i.bytes));
    }
    for ns in &report.skipped_in_use {
        println!("kept namespace {ns}: its owner is gone but it is being read (next pass)");
    }
    println!(
        "{}: {} namespaces, {} entries, {} blobs, {} files, {} uploads; {} {}",
        if report.dry_run { "dry run" } else { "pruned" },
        report.n_namespaces,
        report.n_entries,
        report.n_blobs,
        report.n_files,
        report.n_uploads,
        human_bytes(report.freed_bytes),
        if report.dry_run { "would be freed" } else { "freed" }
    );
    Ok(0)
}
