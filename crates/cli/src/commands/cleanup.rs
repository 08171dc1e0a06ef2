//! `tiercache cleanup`: removes a namespace's entries (or one prefix of them), or every
//! namespace's after a confirmation, and the blobs no namespace references any more.
//!
//! It asks before removing everything and prints the report; the removal is the engine's.

use std::io::IsTerminal;

use anyhow::{Result, bail};
use tiercache_engine::Cache;

use crate::args::CleanupArgs;
use crate::{human_bytes, print_json};

/// Removes the entries `args` name; exits 1 if the confirmation is refused.
pub(crate) async fn cleanup(cache: Cache, args: &CleanupArgs) -> Result<u8> {
    if args.all && !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to remove every entry without --yes (standard input is not a terminal)");
        }
        let n = cache.stats(None).await?.stats.n_entries;
        eprint!("remove all {n} entries of every namespace, and the blobs they alone reference? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing removed");
            return Ok(1);
        }
    }
    let ns = if args.all { None } else { args.ns.as_deref() };
    let report = cache.cleanup(ns, args.prefix.as_deref()).await?;
    if args.json {
        print_json(&report)?;
    } else {
        println!(
            "removed {} entries and {} blobs, {} freed",
            report.n_entries,
            report.n_blobs,
            human_bytes(report.bytes)
        );
    }
    Ok(0)
}
