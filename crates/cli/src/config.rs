//! Resolving settings: flag > environment (clap already merged those two) > TOML file > default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use tiercache_engine::{CacheConfig, HttpSourceConfig, SharedConfig};

use crate::args::EngineArgs;

/// The TOML config file. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) listen: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub(crate) revalidate_after: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(crate) source_connect_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(crate) source_read_timeout: Option<Duration>,
    pub(crate) max_concurrent_fetches: Option<usize>,
    /// Watch directory namespaces in `serve`.
    pub(crate) watch: Option<bool>,
    #[serde(default, with = "opt_duration")]
    pub(crate) reconcile_interval: Option<Duration>,
    /// Threads hashing files in `index`, `update`, `migrate` (default: one per core).
    pub(crate) hash_threads: Option<usize>,
    /// The shared cluster tier's URL.
    pub(crate) shared: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub(crate) shared_timeout: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(crate) shared_io_timeout: Option<Duration>,
    pub(crate) shared_retries: Option<usize>,
    /// Write-backs to the shared tier waiting at most; more are dropped and counted.
    pub(crate) shared_write_back_queue: Option<usize>,
    /// Circuit breaker: failures in a row that open it, and how long it stays open.
    pub(crate) shared_breaker_failures: Option<u32>,
    #[serde(default, with = "opt_duration")]
    pub(crate) shared_breaker_cooldown: Option<Duration>,
    /// Namespaces created (idempotently) when `serve` starts.
    #[serde(default)]
    pub(crate) namespaces: BTreeMap<String, FileNamespace>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileNamespace {
    pub(crate) source: Option<String>,
    #[serde(default)]
    pub(crate) copy_to_cache: bool,
    #[serde(default)]
    pub(crate) ignore: Vec<String>,
}

mod opt_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
    }
}

impl FileConfig {
    /// Loads the file named by `--config`, or the default location if it exists.
    pub(crate) fn load(explicit: Option<&Path>) -> Result<FileConfig> {
        let path = match explicit {
            Some(p) => p.to_owned(),
            None => match default_config_path() {
                Some(p) if p.is_file() => p,
                _ => return Ok(FileConfig::default()),
            },
        };
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("tiercache").join("config.toml"))
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("tiercache")
}

/// The engine configuration from flags/env, the file, and defaults.
pub(crate) fn engine_config(data_dir: Option<&Path>, args: &EngineArgs, file: &FileConfig) -> Result<CacheConfig> {
    let data_dir = data_dir.map(Path::to_owned).or_else(|| file.data_dir.clone()).unwrap_or_else(default_data_dir);
    let mut cfg = CacheConfig::new(data_dir);
    let http = HttpSourceConfig::default();
    cfg.revalidate_after = args.revalidate_after.or(file.revalidate_after).unwrap_or(cfg.revalidate_after);
    cfg.http.connect_timeout =
        args.source_connect_timeout.or(file.source_connect_timeout).unwrap_or(http.connect_timeout);
    cfg.http.read_timeout = args.source_read_timeout.or(file.source_read_timeout).unwrap_or(http.read_timeout);
    cfg.max_concurrent_fetches =
        args.max_concurrent_fetches.or(file.max_concurrent_fetches).unwrap_or(cfg.max_concurrent_fetches);
    cfg.reconcile_interval = file.reconcile_interval.unwrap_or(cfg.reconcile_interval);
    cfg.hash_threads = file.hash_threads.unwrap_or(cfg.hash_threads).max(1);
    // A test hook: pretend to be another tiercache version (directory read caches reset on a change).
    if let Ok(v) = std::env::var("TIERCACHE_TEST_VERSION") {
        cfg.version = v;
    }
    cfg.shared = shared_config(args, file)?;
    Ok(cfg)
}

/// The shared tier's settings, if a URL is given; zero time limits are refused.
fn shared_config(args: &EngineArgs, file: &FileConfig) -> Result<Option<SharedConfig>> {
    let Some(url) = args.shared.clone().or_else(|| file.shared.clone()).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let mut c = SharedConfig::new(url);
    let l = &mut c.limits;
    l.timeout = args.shared_timeout.or(file.shared_timeout).unwrap_or(l.timeout);
    l.io_timeout = args.shared_io_timeout.or(file.shared_io_timeout).unwrap_or(l.io_timeout);
    l.retries = args.shared_retries.or(file.shared_retries).unwrap_or(l.retries);
    c.write_back_queue = file.shared_write_back_queue.unwrap_or(c.write_back_queue);
    c.breaker_failures = file.shared_breaker_failures.unwrap_or(c.breaker_failures);
    c.breaker_cooldown = file.shared_breaker_cooldown.unwrap_or(c.breaker_cooldown);
    for (name, d) in [
        ("shared timeout", l.timeout),
        ("shared io timeout", l.io_timeout),
        ("shared breaker cooldown", c.breaker_cooldown),
    ] {
        anyhow::ensure!(!d.is_zero(), "{name} must be longer than zero");
    }
    anyhow::ensure!(c.write_back_queue > 0, "shared_write_back_queue must be at least 1");
    anyhow::ensure!(c.breaker_failures > 0, "shared_breaker_failures must be at least 1");
    Ok(Some(c))
}

/// The listen address from flag/env, the file, or the default.
pub(crate) fn listen(flag: Option<&str>, file: &FileConfig) -> String {
    flag.map(str::to_owned).or_else(|| file.listen.clone()).unwrap_or_else(|| "127.0.0.1:7070".to_owned())
}
