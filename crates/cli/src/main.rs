//! The `tiercache` binary: clap and anyhow glue over the engine and the server.
//!
//! This file starts the process (logging, the runtime), opens the cache with the resolved settings
//! and hands each command to its module under `commands/`; it also holds the printing helpers the
//! commands share. It does no command's work itself.
//!
//! Exit codes: [`EXIT_CODES`] (0 success; 1 the operation failed, the message says why; 2 bad
//! usage; 3 `verify` found damage that is still there).

mod args;
mod catalog;
mod commands;
mod config;
mod log_writer;
mod owner_hook;
mod served;
mod settings;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use tiercache_engine::Cache;

use crate::args::{Cli, Command, ConfigCommand, LogFormat, NsCommand};
use crate::config::FileConfig;
use crate::settings::EngineSettings;

/// Exit code for `verify` finding damage it did not repair.
pub(crate) const EXIT_DAMAGE: u8 = 3;

/// Every exit code the binary returns, with what it means (the man page's EXIT STATUS).
pub(crate) const EXIT_CODES: [(u8, &str); 4] = [
    (0, "Success (and --help, --version)."),
    (
        1,
        "The command failed; the message on standard error says why. Also: derive when the recipe \
         failed on some of its inputs, cleanup --all when its confirmation is refused, and config \
         check when the configuration is invalid.",
    ),
    (2, "Bad usage: an unknown command or flag, a missing or malformed argument (clap's errors)."),
    (EXIT_DAMAGE, "verify found damage that is still there (verify --repair repairs it)."),
];

fn main() -> ExitCode {
    // The matches are kept beside the parsed command line: `config check` asks them whether a
    // setting came from a flag or its variable.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let is_serve = matches!(cli.command, Command::Serve(_));
    let default_log = if is_serve { "info" } else { "warn" };
    let filter = cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| default_log.to_owned());
    // Kept to the end of `main`: dropping it writes the access-log lines not yet written.
    let _log_flush = init_logging(&filter, cli.log_format, is_serve);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, &matches)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error as `filter` says, in `format` (coloured only on a terminal, and not
/// with `NO_COLOR` set); WARN and ERROR lines are also kept for the dashboard's recent warnings
/// (`tiercache_server::RecentWarnings`).
///
/// With `is_batched` (the server, whose access log writes a line per request), access-log lines
/// are written in batches ([`log_writer`]); the returned guard writes what is left when dropped.
/// Other commands write each line as it comes.
fn init_logging(filter: &str, format: LogFormat, is_batched: bool) -> Option<log_writer::FlushGuard> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let registry = tracing_subscriber::registry().with(filter).with(tiercache_server::RecentWarnings);
    let (writer, guard) = if is_batched {
        let (writer, guard) = log_writer::Batched::start();
        (BoxMakeWriter::new(writer), Some(guard))
    } else {
        (BoxMakeWriter::new(std::io::stderr), None)
    };
    // Colours only for a person at a terminal: a file or the journal gets plain text.
    let is_colour = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(is_colour);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => {
            registry.with(fmt.json().flatten_event(true).with_current_span(true).with_span_list(false)).init()
        }
    }
    guard
}

/// Opens the cache with the engine settings resolved from `engine`, the environment and `file`.
async fn open(cli: &Cli, engine: &EngineSettings, file: &FileConfig) -> Result<Cache> {
    open_with(cli, engine, file, |_| {}).await
}

/// [`open`], with `adjust` applied to the resolved settings first (a command's own settings).
async fn open_with(
    cli: &Cli,
    engine: &EngineSettings,
    file: &FileConfig,
    adjust: impl FnOnce(&mut tiercache_engine::CacheConfig),
) -> Result<Cache> {
    let mut cfg = config::engine_config(&cli.global, engine, file)?;
    adjust(&mut cfg);
    let dir = cfg.data_dir.clone();
    let cache = Cache::open(cfg).await.with_context(|| format!("cannot open data directory {}", dir.display()))?;
    for note in cache.open_notes() {
        eprintln!("note: {note}");
    }
    Ok(cache)
}

/// Checks the arguments, loads the config file, opens the cache and runs the command.
async fn run(cli: Cli, matches: &ArgMatches) -> Result<u8> {
    // Before the config file: these print what they print whatever the file says, and `config
    // check` reports on the file itself.
    match &cli.command {
        Command::Completions { shell } => return commands::completions(*shell),
        Command::Man => return commands::man(),
        Command::Config(ConfigCommand::Example) => return commands::config_example(),
        Command::Config(ConfigCommand::Check(args)) => {
            let config = matches.subcommand_matches("config");
            let check = config.and_then(|m| m.subcommand_matches("check"));
            let innermost_first: Vec<&ArgMatches> = check.into_iter().chain(config).chain([matches]).collect();
            return commands::config_check(&cli, args, &innermost_first);
        }
        _ => {}
    }
    check_namespace_name(&cli.command)?;
    let file = FileConfig::load(cli.config.as_deref())?;
    // Other commands take no engine flags: the file's settings (and the memory tier's variables).
    let no_engine_args = EngineSettings::default();
    match &cli.command {
        Command::Serve(args) => {
            // Every setting checked before the data directory is opened (and created).
            config::check_serve(&cli.global, args, &file)?;
            let interval = config::reconcile_interval(&args.reconcile, &file);
            let cache = open_with(&cli, &args.engine, &file, |c| {
                if let Some(i) = interval {
                    c.reconcile_interval = i;
                }
            })
            .await?;
            let disk = config::engine_config(&cli.global, &args.engine, &file)?.disk;
            commands::serve(cache, args, &file, &disk).await
        }
        Command::Get(args) => commands::get(open(&cli, &args.engine, &file).await?, args).await,
        Command::Warm(args) => commands::warm(open(&cli, &args.engine, &file).await?, args).await,
        Command::Mount(args) => commands::mount(open(&cli, &args.engine, &file).await?, args).await,
        Command::Derive(args) => commands::derive(open(&cli, &args.engine, &file).await?, args).await,
        Command::Ns(cmd) => commands::ns(open(&cli, &no_engine_args, &file).await?, cmd).await,
        Command::Stats { ns, json } => {
            commands::stats(open(&cli, &no_engine_args, &file).await?, ns.as_deref(), *json).await
        }
        Command::Cleanup(args) => commands::cleanup(open(&cli, &no_engine_args, &file).await?, args).await,
        Command::Prune(args) => commands::prune(open(&cli, &no_engine_args, &file).await?, args).await,
        Command::Df { verbose, json, disk_quota } => {
            let cache = open(&cli, &no_engine_args, &file).await?;
            commands::df(cache, *verbose, *json, disk_quota.map(|q| q.0)).await
        }
        Command::Vacuum { json } => commands::vacuum(open(&cli, &no_engine_args, &file).await?, *json).await,
        Command::Verify { repair, json } => {
            commands::verify(open(&cli, &no_engine_args, &file).await?, *repair, *json).await
        }
        Command::Index(args) => commands::index(open(&cli, &no_engine_args, &file).await?, args).await,
        Command::Update { ns, force, json } => {
            commands::update(open(&cli, &no_engine_args, &file).await?, ns.as_deref(), *force, *json).await
        }
        Command::Watch { ns, reconcile } => {
            let interval = config::reconcile_interval(reconcile, &file);
            let cache = open_with(&cli, &no_engine_args, &file, |c| {
                if let Some(i) = interval {
                    c.reconcile_interval = i;
                }
            })
            .await?;
            commands::watch(cache, ns.as_deref()).await
        }
        Command::Migrate { ns, dry_run, json } => {
            commands::migrate(open(&cli, &no_engine_args, &file).await?, ns, *dry_run, *json).await
        }
        Command::Completions { .. } | Command::Man | Command::Config(_) => unreachable!("dispatched above"),
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
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
    if let Command::Mount(args) = command {
        let Some((name, _)) = args.namespace_and_image() else {
            anyhow::bail!("{:?} names no namespace: write NAMESPACE/NAME:TAG, e.g. hub/library/alpine:3", args.image);
        };
        tiercache_core::NamespaceName::new(name)?;
    }
    Ok(())
}

/// Prints `v` as pretty JSON on standard output.
pub(crate) fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Prints namespaces with their totals, one a line, or `no namespaces`.
pub(crate) fn print_namespace_table(list: &[tiercache_engine::NamespaceInfo]) {
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
            ns.source.as_deref().map_or("-".into(), tiercache_core::redact_url)
        );
    }
}

/// A size for people: `512 B`, `1.5 KiB`, `2.0 GiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

/// A time in milliseconds since the epoch as RFC 3339 (UTC, whole seconds), or `-`.
pub(crate) fn time_or_dash(ms: Option<i64>) -> String {
    ms.map(|ms| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    })
    .unwrap_or_else(|| "-".to_owned())
}
