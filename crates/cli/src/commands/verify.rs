//! `tiercache verify`: rehashes every blob and reconciles the index with the disk tier, with a
//! progress bar on a terminal; exits with `EXIT_DAMAGE` if damage remains.
//!
//! The checks and repairs are the engine's; this shows progress and prints the report.

use std::io::IsTerminal;

use anyhow::Result;
use tiercache_engine::Cache;

use crate::{EXIT_DAMAGE, human_bytes, print_json};

/// Verifies (and with `repair`, repairs) the disk tier; exits `EXIT_DAMAGE` if damage remains.
pub(crate) async fn verify(cache: Cache, repair: bool, json: bool) -> Result<u8> {
    let bar = if std::io::stderr().is_terminal() && !json {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template"),
        );
        Some(bar)
    } else {
        None
    };
    let b = bar.clone();
    let report = cache
        .verify(repair, move |done, total| {
            if let Some(b) = &b {
                b.set_length(total);
                b.set_position(done);
            }
        })
        .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if json {
        print_json(&report)?;
    } else {
        println!("checked {} blobs ({})", report.n_checked, human_bytes(report.bytes_checked));
        let lines: [(&str, usize); 7] = [
            ("corrupt (bytes do not match their digest)", report.corrupt.len()),
            ("missing (indexed, no file)", report.missing.len()),
            ("untracked (file, not indexed)", report.untracked.len()),
            ("wrong size", report.wrong_size.len()),
            ("stray files under blobs/", report.strays.len()),
            ("temp files of stopped processes", report.stale_temp.len()),
            ("index integrity problems", report.index_problems.len()),
        ];
        for (what, n) in lines {
            if n > 0 {
                println!("{what}: {n}");
            }
        }
        for d in &report.corrupt {
            println!("corrupt: {d}");
        }
        for p in &report.index_problems {
            println!("index: {p}");
        }
        match (report.is_clean(), report.repaired) {
            (true, _) => println!("clean"),
            (false, true) => println!("repaired"),
            (false, false) => println!("damage found; run `tiercache verify --repair` to fix it"),
        }
    }
    Ok(if report.is_clean() || report.repaired { 0 } else { EXIT_DAMAGE })
}
