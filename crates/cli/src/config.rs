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
    /// The disk tier's quota, e.g. "10GiB".
    #[serde(default, with = "opt_size")]
    pub(crate) disk_quota: Option<u64>,
    /// Background eviction above this fraction of the quota, down to `disk_low_watermark`.
    pub(crate) disk_high_watermark: Option<f64>,
    pub(crate) disk_low_watermark: Option<f64>,
    /// Blobs stored this recently are not evicted.
    #[serde(default, with = "opt_duration")]
    pub(crate) protect_new: Option<Duration>,
    /// The memory tier: on or off, TTL in seconds, size bound, largest blob kept.
    pub(crate) cache_enabled: Option<bool>,
    pub(crate) cache_ttl: Option<u64>,
    #[serde(default, with = "opt_size")]
    pub(crate) cache_max_size: Option<u64>,
    #[serde(default, with = "opt_size")]
    pub(crate) cache_max_blob_size: Option<u64>,
    /// The pruner: how often, and its grace periods.
    #[serde(default, with = "opt_duration")]
    pub(crate) prune_interval: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(crate) orphan_grace: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub(crate) temp_grace: Option<Duration>,
    /// Entries not read for this long are pruned (namespaces with a source).
    #[serde(default, with = "opt_duration")]
    pub(crate) max_age: Option<Duration>,
    /// The owner-liveness hook: a shell command (owner as $1; exit 0 alive, 1 gone) or a URL
    /// (`{owner}` replaced; 2xx alive, 404/410 gone).
    pub(crate) owner_hook: Option<String>,
    #[serde(default, with = "opt_duration")]
    pub(crate) owner_grace: Option<Duration>,
    /// Bearer token of the admin HTTP endpoints (`/admin/…`); without one they are off.
    pub(crate) admin_token: Option<String>,
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
        s.map(|s| super::parse_duration(&s).map_err(serde::de::Error::custom)).transpose()
    }
}

mod opt_size {
    use serde::{Deserialize, Deserializer};

    /// A size as a string ("10GiB") or a number of bytes.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Bytes(i64),
            Text(String),
        }
        match Option::<Size>::deserialize(d)? {
            None => Ok(None),
            Some(Size::Bytes(n)) => super::parse_size(&n.to_string()).map(Some).map_err(serde::de::Error::custom),
            Some(Size::Text(s)) => super::parse_size(&s).map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// The longest duration any setting accepts: longer is a typo, not a wish.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// The largest size any setting accepts (1 EiB).
const MAX_SIZE: u64 = 1 << 60;

/// A duration like `90s`, `10m`, `7d`, `1h 30m`: not negative, at most 100 years.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("{s:?} is negative; durations are 0 or more"));
    }
    let d = humantime::parse_duration(t).map_err(|e| format!("{s:?} is not a duration like 90s, 10m or 7d: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is longer than 100 years"));
    }
    Ok(d)
}

/// A size like `10GiB`, `500MB`, `4k`, or a number of bytes: binary units (KiB, MiB, GiB, TiB,
/// and K, M, G, T) are powers of 1024, decimal ones (kB, MB, GB, TB) of 1000. At most 1 EiB.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("{s:?} is negative; sizes are 0 or more"));
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("{s:?} is not a size like 10GiB, 500MB or 4096"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)")),
    };
    let bytes = num * mult as f64;
    if !bytes.is_finite() || bytes > MAX_SIZE as f64 {
        return Err(format!("{s:?} is larger than 1 EiB"));
    }
    Ok(bytes as u64)
}

/// A boolean setting from the environment: true/false, 1/0, yes/no, on/off.
pub(crate) fn parse_bool(name: &str, s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => anyhow::bail!("{name}={s:?} is not a boolean (true/false, 1/0, yes/no, on/off)"),
    }
}

/// The memory tier's settings: flag > environment > file > default. `env` is
/// (`TIERCACHE_CACHE_ENABLED`, `TIERCACHE_CACHE_TTL`) as found in the environment.
pub(crate) fn memory_config(
    args: &EngineArgs,
    env: (Option<&str>, Option<&str>),
    file: &FileConfig,
) -> Result<tiercache_engine::MemoryConfig> {
    let mut m = tiercache_engine::MemoryConfig::default();
    let env_enabled = env.0.map(|v| parse_bool("TIERCACHE_CACHE_ENABLED", v)).transpose()?;
    m.is_enabled = if args.no_cache { false } else { env_enabled.or(file.cache_enabled).unwrap_or(m.is_enabled) };
    let ttl_secs = |what: &str, v: &str| -> Result<u64> {
        let n: u64 = v.trim().parse().map_err(|_| anyhow::anyhow!("{what} {v:?} is not a whole number of seconds"))?;
        anyhow::ensure!(n <= MAX_DURATION.as_secs(), "{what} {v:?} is longer than 100 years");
        Ok(n)
    };
    let ttl = match (&args.cache_ttl, env.1, file.cache_ttl) {
        (Some(flag), _, _) => Some(ttl_secs("--cache-ttl", flag)?),
        (None, Some(e), _) => Some(ttl_secs("TIERCACHE_CACHE_TTL", e)?),
        (None, None, Some(f)) => Some(ttl_secs("cache_ttl", &f.to_string())?),
        _ => None,
    };
    if let Some(t) = ttl {
        m.ttl = Duration::from_secs(t);
    }
    m.max_bytes = file.cache_max_size.unwrap_or(m.max_bytes);
    Ok(m)
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
    let env = |k: &str| std::env::var(k).ok();
    let (enabled, ttl) = (env("TIERCACHE_CACHE_ENABLED"), env("TIERCACHE_CACHE_TTL"));
    cfg.memory = memory_config(args, (enabled.as_deref(), ttl.as_deref()), file)?;
    cfg.memory_max_blob_bytes = file.cache_max_blob_size.unwrap_or(cfg.memory_max_blob_bytes);
    let d = &mut cfg.disk;
    d.quota_bytes = args.disk_quota.or(file.disk_quota);
    anyhow::ensure!(d.quota_bytes != Some(0), "the disk quota must be more than 0 bytes");
    d.high_watermark = file.disk_high_watermark.unwrap_or(d.high_watermark);
    d.low_watermark = file.disk_low_watermark.unwrap_or(d.low_watermark);
    anyhow::ensure!(
        0.0 < d.low_watermark && d.low_watermark <= d.high_watermark && d.high_watermark <= 1.0,
        "disk watermarks must satisfy 0 < disk_low_watermark ≤ disk_high_watermark ≤ 1 (got {} and {})",
        d.low_watermark,
        d.high_watermark
    );
    d.protect_new = file.protect_new.unwrap_or(d.protect_new);
    let p = &mut cfg.pruner;
    p.interval = file.prune_interval.unwrap_or(p.interval);
    anyhow::ensure!(!p.interval.is_zero(), "prune_interval must be longer than zero");
    p.orphan_grace = file.orphan_grace.unwrap_or(p.orphan_grace);
    p.temp_grace = file.temp_grace.unwrap_or(p.temp_grace);
    p.max_age = file.max_age;
    p.owner_grace = file.owner_grace.unwrap_or(p.owner_grace);
    if let Some(hook) = file.owner_hook.as_deref() {
        p.owner_hook = Some(std::sync::Arc::new(crate::owner_hook::OwnerHook::parse(hook)?));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (input, want) in [
            ("4096", Ok(4096)),
            ("10GiB", Ok(10 << 30)),
            ("10gib", Ok(10 << 30)),
            ("500MB", Ok(500_000_000)),
            ("1.5K", Ok(1536)),
            ("0", Ok(0)),
        ] {
            assert_eq!(parse_size(input), want, "{input}");
        }
        for bad in ["-1GiB", "ten", "5 parsecs", "2000000EiB", "99999999999999999999999T", ""] {
            assert!(parse_size(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        for bad in ["-5s", "5 fortnights", "1000years", ""] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    /// Flag beats environment beats file beats default, for both memory-tier settings.
    #[test]
    fn memory_settings_precedence() {
        let file = |enabled: Option<bool>, ttl: Option<u64>| FileConfig {
            cache_enabled: enabled,
            cache_ttl: ttl,
            ..Default::default()
        };
        let args = |no_cache: bool, ttl: Option<&str>| EngineArgs {
            no_cache,
            cache_ttl: ttl.map(str::to_owned),
            ..Default::default()
        };
        let check = |a: EngineArgs, env: (Option<&str>, Option<&str>), f: FileConfig, enabled: bool, ttl: u64| {
            let m = memory_config(&a, env, &f).unwrap();
            assert_eq!((m.is_enabled, m.ttl.as_secs()), (enabled, ttl), "{a:?} {env:?} {f:?}");
        };
        check(args(false, None), (None, None), file(None, None), true, 300);
        check(args(false, None), (None, None), file(Some(false), Some(9)), false, 9);
        check(args(false, None), (Some("true"), Some("7")), file(Some(false), Some(9)), true, 7);
        check(args(true, Some("5")), (Some("true"), Some("7")), file(Some(true), Some(9)), false, 5);
        check(args(false, Some("5")), (None, Some("7")), file(None, Some(9)), true, 5);
        check(args(false, None), (Some("0"), None), file(Some(true), None), false, 300);
        for bad in [(Some("maybe"), None), (None, Some("-3")), (None, Some("soon")), (None, Some("99999999999999"))] {
            assert!(memory_config(&args(false, None), bad, &file(None, None)).is_err(), "{bad:?}");
        }
        assert!(memory_config(&args(false, Some("-1")), (None, None), &file(None, None)).is_err());
    }
}
