//! The `tiercache` binary: clap and anyhow glue over the engine and the server.
//!
//! Exit codes: 0 success; 1 the operation failed (the message says why); 2 bad usage;
//! 3 `verify` found damage that is still there.

mod args;
mod config;
mod owner_hook;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use std::sync::Arc;

use tiercache_engine::{Cache, Digest, NamespaceOptions, PruneOptions, RangeRequest, Read, ScanProgress, UpdateReport};

use crate::args::{CleanupArgs, Cli, Command, EngineArgs, GetArgs, NsCommand, PruneArgs, ServeArgs};
use crate::config::FileConfig;

/// Exit code for `verify` finding damage it did not repair.
const EXIT_DAMAGE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| default_log.to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open(cli: &Cli, engine: &EngineArgs, file: &FileConfig) -> Result<Cache> {
    open_with(cli, engine, file, |_| {}).await
}

async fn open_with(
    cli: &Cli,
    engine: &EngineArgs,
    file: &FileConfig,
    adjust: impl FnOnce(&mut tiercache_engine::CacheConfig),
) -> Result<Cache> {
    let mut cfg = config::engine_config(cli.data_dir.as_deref(), engine, file)?;
    adjust(&mut cfg);
    let dir = cfg.data_dir.clone();
    let cache = Cache::open(cfg).await.with_context(|| format!("cannot open data directory {}", dir.display()))?;
    for note in cache.open_notes() {
        eprintln!("note: {note}");
    }
    Ok(cache)
}

async fn run(cli: Cli) -> Result<u8> {
    check_namespace_name(&cli.command)?;
    let file = FileConfig::load(cli.config.as_deref())?;
    let no_engine_args = EngineArgs::default();
    match &cli.command {
        Command::Serve(args) => serve(&cli, args, &file).await,
        Command::Get(args) => get(open(&cli, &args.engine, &file).await?, args).await,
        Command::Ns(cmd) => ns(open(&cli, &no_engine_args, &file).await?, cmd).await,
        Command::Stats { ns, json } => {
            let cache = open(&cli, &no_engine_args, &file).await?;
            let report = cache.stats(ns.as_deref()).await?;
            if *json {
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
                }
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
        Command::Cleanup(args) => cleanup(open(&cli, &no_engine_args, &file).await?, args).await,
        Command::Prune(args) => prune(open(&cli, &no_engine_args, &file).await?, args).await,
        Command::Df { verbose, json } => df(open(&cli, &no_engine_args, &file).await?, *verbose, *json).await,
        Command::Vacuum { json } => {
            let report = open(&cli, &no_engine_args, &file).await?.vacuum().await?;
            if *json {
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
        Command::Verify { repair, json } => verify(open(&cli, &no_engine_args, &file).await?, *repair, *json).await,
        Command::Index(args) => {
            let cache = open(&cli, &no_engine_args, &file).await?;
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
        Command::Update { ns, force, json } => {
            let cache = open(&cli, &no_engine_args, &file).await?;
            let names = match ns {
                Some(n) => vec![n.clone()],
                None => cache.directory_namespaces().await?.into_iter().map(|n| n.name).collect(),
            };
            if names.is_empty() {
                bail!("no directory namespace to update; create one with `tiercache index DIR --ns NAME`");
            }
            let mut reports = Vec::new();
            for name in names {
                let progress = Arc::new(ScanProgress::default());
                let fut = cache.update_directory(&name, *force, Arc::clone(&progress));
                reports
                    .push(with_progress(progress, *json, fut).await.with_context(|| format!("cannot update {name}"))?);
            }
            print_update_reports(&reports, *json)?;
            Ok(0)
        }
        Command::Watch { ns, reconcile_interval } => {
            let interval = reconcile_interval.or(file.reconcile_interval);
            let cache = open_with(&cli, &no_engine_args, &file, |c| {
                if let Some(i) = interval {
                    c.reconcile_interval = i;
                }
            })
            .await?;
            let names: Vec<String> = ns.iter().cloned().collect();
            cache.watch_directories(&names, shutdown_signal()).await?;
            cache.settle().await?;
            Ok(0)
        }
        Command::Migrate { ns, dry_run, json } => {
            let cache = open(&cli, &no_engine_args, &file).await?;
            let progress = Arc::new(ScanProgress::default());
            let report = with_progress(Arc::clone(&progress), *json, cache.migrate(ns, *dry_run, progress)).await?;
            if *json {
                print_json(&report)?;
            } else if *dry_run {
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
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
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

/// Refuses a malformed namespace name before the data directory is opened (which creates it).
fn check_namespace_name(command: &Command) -> Result<()> {
    let name = match command {
        Command::Ns(
            NsCommand::Create { name, .. }
            | NsCommand::Show { name, .. }
            | NsCommand::Delete { name, .. }
            | NsCommand::Pin { name, .. }
            | NsCommand::Unpin { name, .. }
            | NsCommand::Migrate { name, .. },
        ) => Some(name),
        Command::Prune(args) => args.ns.as_ref(),
        Command::Stats { ns, .. } | Command::Update { ns, .. } | Command::Watch { ns, .. } => ns.as_ref(),
        Command::Index(args) => Some(&args.ns),
        Command::Migrate { ns, .. } => Some(ns),
        Command::Cleanup(args) => args.ns.as_ref(),
        _ => None,
    };
    if let Some(name) = name {
        tiercache_core::NamespaceName::new(name)?;
    }
    Ok(())
}

async fn serve(cli: &Cli, args: &ServeArgs, file: &FileConfig) -> Result<u8> {
    let cache = open_with(cli, &args.engine, file, |c| {
        if let Some(i) = args.reconcile_interval.or(file.reconcile_interval) {
            c.reconcile_interval = i;
        }
    })
    .await?;
    for (name, def) in &file.namespaces {
        let options =
            NamespaceOptions { copy_to_cache: def.copy_to_cache, ignore: def.ignore.clone(), ..Default::default() };
        cache
            .create_namespace(name, def.source.as_deref(), &options)
            .await
            .with_context(|| format!("cannot create namespace {name} from the config file"))?;
    }
    let addr = config::listen(args.listen.as_deref(), file);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %cache.data_dir().display(), "tiercache serving");
    if args.watch || file.watch.unwrap_or(false) {
        let watcher = cache.clone();
        tokio::spawn(async move {
            if let Err(e) = watcher.watch_directories(&[], std::future::pending()).await {
                tracing::warn!(error = %e, "not watching directories");
            }
        });
    }
    cache.spawn_pruner();
    let admin_token = std::env::var("TIERCACHE_ADMIN_TOKEN").ok().or_else(|| file.admin_token.clone());
    let admin_token = admin_token.filter(|t| !t.is_empty());
    if let Some(t) = &admin_token {
        anyhow::ensure!(t.len() >= 16, "the admin token must be at least 16 characters");
    }
    tiercache_server::serve(listener, cache, admin_token, shutdown_signal()).await?;
    Ok(0)
}

/// What `get` was asked for.
enum Target {
    Blob(Digest),
    Entry(String, String),
}

async fn resolve_target(cache: &Cache, target: &str) -> Result<Target> {
    if target.starts_with("sha256:") || target.contains(':') && !target.contains('/') {
        return Ok(Target::Blob(target.parse::<Digest>()?));
    }
    if target.starts_with("http://") || target.starts_with("https://") {
        for ns in cache.namespaces().await? {
            let Some(base) = ns.source.as_deref() else { continue };
            let base = if base.ends_with('/') { base.to_owned() } else { format!("{base}/") };
            if let Some(rest) = target.strip_prefix(&base) {
                let key = percent_decode(rest)?;
                return Ok(Target::Entry(ns.name, key));
            }
        }
        bail!("no namespace's source covers {target}; create one with `tiercache ns create NAME --source BASE_URL`");
    }
    match target.split_once('/') {
        Some((ns, key)) => Ok(Target::Entry(ns.to_owned(), key.to_owned())),
        None => bail!("expected NAMESPACE/KEY, sha256:<hex> or a URL, got {target:?}"),
    }
}

fn percent_decode(s: &str) -> Result<String> {
    Ok(percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .context("URL path is not UTF-8 once decoded")?
        .into_owned())
}

fn parse_range(s: &str) -> Result<RangeRequest> {
    let (a, b) = s.split_once('-').context("--range takes START-END or START-")?;
    let start: u64 = a.trim().parse().context("--range START is not a number")?;
    let end =
        if b.trim().is_empty() { None } else { Some(b.trim().parse::<u64>().context("--range END is not a number")?) };
    Ok(RangeRequest::single(start, end)?)
}

async fn get(cache: Cache, args: &GetArgs) -> Result<u8> {
    let range = args.range.as_deref().map(parse_range).transpose()?;
    let read: Read = match resolve_target(&cache, &args.target).await? {
        Target::Blob(d) => cache.read_blob(&d).await?,
        Target::Entry(ns, key) => cache.read_entry(&ns, &key).await?,
    };
    let byte_range = match (&range, read.meta.size_bytes) {
        (Some(r), Some(size)) => match r.resolve(size)? {
            tiercache_core::Resolved::Partial(r) => Some(r),
            tiercache_core::Resolved::Whole => None,
        },
        (Some(_), None) => bail!("the source did not say the size, so --range cannot be applied"),
        (None, _) => None,
    };
    let mut stream = read.into_stream(byte_range);
    let mut sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let result: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            sink.write_all(&chunk.context("read failed")?)?;
        }
        sink.flush()?;
        Ok(())
    }
    .await;
    drop(sink);
    if let (Err(_), Some(path)) = (&result, &args.output) {
        let _ = std::fs::remove_file(path); // Never leave a partial file that looks complete.
    }
    cache.settle().await?;
    result.map(|()| 0)
}

async fn ns(cache: Cache, cmd: &NsCommand) -> Result<u8> {
    match cmd {
        NsCommand::Create { name, source, dir, limits, storage } => {
            let options = NamespaceOptions {
                copy_to_cache: dir.copy_to_cache,
                ignore: dir.ignore.clone(),
                owner: limits.owner.clone(),
                quota_bytes: limits.quota,
                max_age_ms: limits.max_age.map(|d| d.as_millis() as u64),
                max_entries: limits.max_entries,
                storage: None,
            };
            let (ns, created) = cache.create_namespace_in(name, source.as_deref(), &options, storage.as_ref()).await?;
            let verb = if created { "created" } else { "already exists:" };
            let place = ns.options.storage.as_deref().map_or_else(|| "managed".to_owned(), |d| format!("path:{d}"));
            println!(
                "{verb} namespace {} (source: {}; storage: {place})",
                ns.name,
                ns.source.as_deref().unwrap_or("none")
            );
        }
        NsCommand::Migrate { name, to, json } => {
            let report = cache.migrate_namespace(name, to).await?;
            if *json {
                print_json(&report)?;
            } else if report.from == report.to {
                println!("namespace {name} is already in {}; nothing to move", report.to);
            } else {
                println!(
                    "moved namespace {name} from {} to {}: {} blobs, {} copied ({}), {} freed{}",
                    report.from,
                    report.to,
                    report.n_blobs,
                    report.n_copied,
                    human_bytes(report.copied_bytes),
                    human_bytes(report.released_bytes),
                    if report.n_missing > 0 {
                        format!("; {} blobs were in neither place and will be fetched again", report.n_missing)
                    } else {
                        String::new()
                    }
                );
            }
        }
        NsCommand::List { json } => {
            let list = cache.namespaces().await?;
            if *json {
                print_json(&list)?;
            } else {
                print_namespace_table(&list);
            }
        }
        NsCommand::Show { name, json } => {
            let Some(info) = cache.namespace(name).await? else { bail!("no namespace named {name:?}") };
            if *json {
                print_json(&info)?;
            } else {
                println!("name: {}", info.name);
                println!("source: {}", info.source.as_deref().unwrap_or("none"));
                println!(
                    "storage: {}",
                    info.storage.as_deref().map_or_else(|| "managed".to_owned(), |d| format!("path:{d}"))
                );
                if let Some(owner) = &info.owner {
                    println!("owner: {owner}");
                }
                let pins = cache.pins(name).await?;
                if !pins.is_empty() {
                    let shown: Vec<&str> =
                        pins.iter().map(|p| if p.is_empty() { "(all)" } else { p.as_str() }).collect();
                    println!("pins: {}", shown.join(", "));
                }
                println!("entries: {} ({})", info.n_entries, human_bytes(info.bytes));
                println!("hits: {}", info.hits);
                println!("oldest: {}", time_or_dash(info.oldest_ms));
                println!("newest: {}", time_or_dash(info.newest_ms));
            }
        }
        NsCommand::Pin { name, key } | NsCommand::Unpin { name, key } => {
            let is_pin = matches!(cmd, NsCommand::Pin { .. });
            let keys: Vec<Option<&str>> =
                if key.is_empty() { vec![None] } else { key.iter().map(|k| Some(k.as_str())).collect() };
            for k in keys {
                let changed = if is_pin { cache.pin(name, k).await? } else { cache.unpin(name, k).await? };
                let what = k.map_or_else(|| format!("namespace {name}"), |k| format!("{name}/{k}"));
                match (is_pin, changed) {
                    (true, true) => println!("pinned {what}"),
                    (true, false) => println!("{what} was already pinned"),
                    (false, true) => println!("unpinned {what}"),
                    (false, false) => println!("{what} was not pinned"),
                }
            }
        }
        NsCommand::Delete { name, json } => {
            let report = cache.delete_namespace(name).await?;
            if *json {
                print_json(&serde_json::json!({ "name": name, "existed": report.is_some(), "removed": report }))?;
            } else {
                match report {
                    Some(r) => println!(
                        "deleted namespace {name}: {} entries, {} blobs, {} freed",
                        r.n_entries,
                        r.n_blobs,
                        human_bytes(r.bytes)
                    ),
                    None => println!("namespace {name} did not exist; nothing to delete"),
                }
            }
        }
    }
    Ok(0)
}

async fn prune(cache: Cache, args: &PruneArgs) -> Result<u8> {
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
        "{}: {} namespaces, {} entries, {} blobs, {} files; {} {}",
        if report.dry_run { "dry run" } else { "pruned" },
        report.n_namespaces,
        report.n_entries,
        report.n_blobs,
        report.n_files,
        human_bytes(report.freed_bytes),
        if report.dry_run { "would be freed" } else { "freed" }
    );
    Ok(0)
}

async fn df(cache: Cache, verbose: bool, json: bool) -> Result<u8> {
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

async fn cleanup(cache: Cache, args: &CleanupArgs) -> Result<u8> {
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

async fn verify(cache: Cache, repair: bool, json: bool) -> Result<u8> {
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

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn print_namespace_table(list: &[tiercache_engine::NamespaceInfo]) {
    if list.is_empty() {
        println!("no namespaces");
        return;
    }
    println!("{:<24} {:>10} {:>12} {:>10}  SOURCE", "NAMESPACE", "ENTRIES", "BYTES", "HITS");
    for ns in list {
        println!(
            "{:<24} {:>10} {:>12} {:>10}  {}",
            ns.name,
            ns.n_entries,
            human_bytes(ns.bytes),
            ns.hits,
            ns.source.as_deref().unwrap_or("-")
        );
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

fn time_or_dash(ms: Option<i64>) -> String {
    ms.map(|ms| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    })
    .unwrap_or_else(|| "-".to_owned())
}
