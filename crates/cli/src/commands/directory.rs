//! `tiercache index`, `update`, `watch` and `migrate`: directory namespaces' read caches built,
//! brought up to date, kept current from file events, and their missing hashes filled in; with
//! progress on standard error while they run.
//!
//! The walk, the hashing and the watching are the engine's; this shows progress and prints reports.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tiercache_engine::{Cache, NamespaceOptions, ScanProgress, UpdateReport};

use crate::args::IndexArgs;
use crate::{human_bytes, print_json};

/// Binds a namespace to a directory and builds its read cache.
pub(crate) async fn index(cache: Cache, args: &IndexArgs) -> Result<u8> {
    let options = NamespaceOptions {
        copy_to_cache: args.options.copy_to_cache,
        ignore: args.options.ignore.clone(),
        ..Default::default()
    };
    let progress = Arc::new(ScanProgress::default());
    let fut = cache.index_directory(&args.ns, &args.dir, &options, !args.no_hash, Arc::clone(&progress));
    let report = with_progress(progress, args.json, fut).await?;
    print_update_reports(&[report], args.json)?;
    Ok(0)
}

/// Brings one directory namespace, or every one, up to date.
pub(crate) async fn update(cache: Cache, ns: Option<&str>, force: bool, json: bool) -> Result<u8> {
    let names = match ns {
        Some(n) => vec![n.to_owned()],
        None => cache.directory_namespaces().await?.into_iter().map(|n| n.name).collect(),
    };
    if names.is_empty() {
        bail!("no directory namespace to update; create one with `tiercache index DIR --ns NAME`");
    }
    let mut reports = Vec::new();
    for name in names {
        let progress = Arc::new(ScanProgress::default());
        let fut = cache.update_directory(&name, force, Arc::clone(&progress));
        reports.push(with_progress(progress, json, fut).await.with_context(|| format!("cannot update {name}"))?);
    }
    print_update_reports(&reports, json)?;
    Ok(0)
}

/// Follows file events in one directory namespace, or every one, until Ctrl-C or SIGTERM.
pub(crate) async fn watch(cache: Cache, ns: Option<&str>) -> Result<u8> {
    let names: Vec<String> = ns.map(str::to_owned).into_iter().collect();
    cache.watch_directories(&names, crate::shutdown_signal()).await?;
    cache.settle().await?;
    Ok(0)
}

/// Fills in the hashes of one namespace not computed yet.
pub(crate) async fn migrate(cache: Cache, ns: &str, dry_run: bool, json: bool) -> Result<u8> {
    let progress = Arc::new(ScanProgress::default());
    let report = with_progress(Arc::clone(&progress), json, cache.hash_missing(ns, dry_run, progress)).await?;
    if json {
        print_json(&report)?;
    } else if dry_run {
        println!(
            "{}: {} files ({}) would be hashed",
            report.namespace,
            report.n_unhashed,
            human_bytes(report.bytes_hashed)
        );
    } else {
        println!(
            "{}: hashed {} files ({}); {} could not be hashed",
            report.namespace,
            report.n_hashed,
            human_bytes(report.bytes_hashed),
            report.n_unhashed
        );
        print_problems(&report);
    }
    Ok(0)
}

/// Runs `work`, showing `progress`: a bar on a terminal, a plain line every few seconds otherwise.
async fn with_progress<T>(
    progress: Arc<ScanProgress>,
    quiet: bool,
    work: impl std::future::Future<Output = Result<T, tiercache_engine::Error>>,
) -> Result<T> {
    use std::sync::atomic::Ordering::Relaxed;
    let tty = std::io::stderr().is_terminal();
    let bar = (tty && !quiet).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}")
                .expect("valid template"),
        );
        bar
    });
    let p = Arc::clone(&progress);
    let b = bar.clone();
    let ticker = tokio::spawn(async move {
        let t0 = std::time::Instant::now();
        let mut every = tokio::time::interval(if tty {
            std::time::Duration::from_millis(200)
        } else {
            std::time::Duration::from_secs(5)
        });
        every.tick().await;
        loop {
            every.tick().await;
            let (walked, hashed, to_hash) =
                (p.n_walked.load(Relaxed), p.n_hashed.load(Relaxed), p.n_to_hash.load(Relaxed));
            let (bytes, total) = (p.bytes_hashed.load(Relaxed), p.bytes_to_hash.load(Relaxed));
            let walking = if p.walk_done.load(Relaxed) { "" } else { " (still walking)" };
            match &b {
                Some(b) => {
                    b.set_length(total);
                    b.set_position(bytes);
                    b.set_message(format!("{hashed}/{to_hash} files hashed, {walked} seen{walking}"));
                }
                None if !quiet => {
                    let secs = t0.elapsed().as_secs_f64().max(0.001);
                    eprintln!(
                        "progress: {walked} files seen{walking}, {hashed}/{to_hash} hashed, {}/{} at {}/s",
                        human_bytes(bytes),
                        human_bytes(total),
                        human_bytes((bytes as f64 / secs) as u64)
                    );
                }
                None => {}
            }
        }
    });
    let result = work.await;
    ticker.abort();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(result?)
}

fn print_problems(report: &UpdateReport) {
    for p in report.problems.iter().take(20) {
        eprintln!("  {p}");
    }
    if report.problems.len() > 20 {
        eprintln!("  … and more (use --json to see up to 100)");
    }
}

fn print_update_reports(reports: &[UpdateReport], json: bool) -> Result<()> {
    if json {
        return if reports.len() == 1 { print_json(&reports[0]) } else { print_json(&reports) };
    }
    for r in reports {
        if let Some(why) = &r.reset {
            println!("{}: read cache was reset because {why}", r.namespace);
        }
        println!(
            "{} ({}): {} added, {} changed, {} removed, {} unchanged; hashed {} files ({}) in {:.2}s",
            r.namespace,
            r.root,
            r.n_added,
            r.n_changed,
            r.n_removed,
            r.n_unchanged,
            r.n_hashed,
            human_bytes(r.bytes_hashed),
            r.elapsed_ms as f64 / 1000.0
        );
        if r.n_unhashed + r.n_skipped + r.n_unreadable_dirs > 0 {
            println!(
                "  {} files left unhashed (unreadable or changing), {} skipped, {} unreadable directories:",
                r.n_unhashed, r.n_skipped, r.n_unreadable_dirs
            );
            print_problems(r);
        }
    }
    Ok(())
}
