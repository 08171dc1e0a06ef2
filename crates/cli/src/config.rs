//! Reading the TOML config file, and resolving settings: flag > environment (clap already merged
//! those two) > TOML file > default, into the engine's configuration.
//!
//! The settings themselves, their flags, variables, keys and parsers, are declared in
//! `settings.rs`; this file adds the defaults and the checks that span several settings. It does
//! not parse the command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use tiercache_engine::{CacheConfig, HttpSourceConfig, SharedConfig};
use tiercache_server::{Access, Right};

use crate::args::ServeArgs;
use crate::settings::{EngineSettings, GlobalSettings, ReconcileSettings, ServeSettings, Tokens, TtlSeconds};

/// The TOML config file: each part of the settings as the file sets it, and the namespaces to
/// create. Every key is optional; a key no part knows is refused, with its place in the file.
#[derive(Debug, Default)]
pub(crate) struct FileConfig {
    /// The file read; `None` when there was none.
    pub(crate) path: Option<PathBuf>,
    /// The file's top-level values as written, for `config check` to show.
    pub(crate) table: toml::Table,
    pub(crate) global: GlobalSettings,
    pub(crate) serve: ServeSettings,
    pub(crate) reconcile: ReconcileSettings,
    pub(crate) engine: EngineSettings,
    /// Namespaces created (idempotently) when `serve` starts.
    pub(crate) namespaces: BTreeMap<String, FileNamespace>,
}

/// The file's `[namespaces.*]` tables.
#[derive(Debug, Default, Deserialize)]
struct Namespaces {
    #[serde(default)]
    namespaces: BTreeMap<String, FileNamespace>,
}

/// One `[namespaces.NAME]` table. The doc comments are `config example`'s (`catalog.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileNamespace {
    /// The source: a base URL (http:// or https://), a directory (file:///path), an S3 bucket
    /// (s3://bucket/prefix?endpoint=URL&region=NAME) or a registry (oci://HOST[:PORT]), e.g.
    /// https://example.org/files/ [default: none, entries are uploaded]
    pub(crate) source: Option<String>,
    /// A directory source: keep a copy of each file read in the disk tier (for network or
    /// spinning-disk directories) [default: false]
    #[serde(default)]
    pub(crate) copy_to_cache: bool,
    /// A directory source: leave out paths matching these globs, e.g. **/.cache [default: none]
    #[serde(default)]
    pub(crate) ignore: Vec<String>,
    /// Anyone may read its entries without a token, even when reads need one [default: false]
    #[serde(default)]
    pub(crate) public: bool,
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
        let file = FileConfig::parse(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(FileConfig { path: Some(path), ..file })
    }

    /// Reads each part from the whole text (a part passes over the others' keys), after checking
    /// that every key is some part's: the same as one struct with `deny_unknown_fields`, whose
    /// errors point into the file, without a second list of the keys.
    pub(crate) fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str::<KnownKeys>(text)?;
        Ok(FileConfig {
            path: None,
            table: toml::from_str(text)?,
            global: toml::from_str(text)?,
            serve: toml::from_str(text)?,
            reconcile: toml::from_str(text)?,
            engine: toml::from_str(text)?,
            namespaces: toml::from_str::<Namespaces>(text)?.namespaces,
        })
    }
}

/// Every key of the file, part by part, in the order each part declares them.
pub(crate) fn known_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        [
            keys_of::<GlobalSettings>(),
            keys_of::<ServeSettings>(),
            keys_of::<ReconcileSettings>(),
            keys_of::<EngineSettings>(),
            keys_of::<Namespaces>(),
        ]
        .concat()
    })
}

/// The fields a struct's derived `Deserialize` asks for (the keys it reads, `#[serde(skip)]` ones
/// left out), found by asking it to deserialize from a deserializer that only notes them.
pub(crate) fn keys_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the field names were wanted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// Deserializes only to check the file's keys against [`known_keys`].
struct KnownKeys;

impl<'de> Deserialize<'de> for KnownKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KnownKeys, D::Error> {
        d.deserialize_struct("FileConfig", known_keys(), KnownKeys)
    }
}

impl<'de> Visitor<'de> for KnownKeys {
    type Value = KnownKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a table of settings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KnownKeys, A::Error> {
        // The key is checked while the file's deserializer reads it, so that an error names its place.
        while map.next_key_seed(Key)?.is_some() {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(KnownKeys)
    }
}

/// One key of the file, refused unless known.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_identifier(self)
    }
}

impl Visitor<'_> for Key {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a setting's name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        if known_keys().contains(&key) { Ok(()) } else { Err(E::unknown_field(key, known_keys())) }
    }
}

/// `$XDG_CONFIG_HOME/tiercache/config.toml` (`~/.config/…` without the variable), read when it
/// exists and no `--config` names another file.
pub(crate) fn default_config_path() -> Option<PathBuf> {
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

/// A variable read here rather than by clap: a secret's (which has no flag, since `ps` shows
/// flags), or one that every command reads whether or not it takes the setting's flag.
#[derive(Debug)]
pub(crate) struct Variable {
    /// `TIERCACHE_…`.
    pub(crate) name: &'static str,
    /// The setting it sets (its key in the file).
    pub(crate) key: &'static str,
    /// Its value is a secret, never shown.
    pub(crate) is_secret: bool,
    /// It adds to the file's value instead of replacing it (an S3 key pair beside the file's).
    pub(crate) adds: bool,
    /// What it sets, for the man page.
    pub(crate) meaning: &'static str,
}

/// Every variable this file reads, but `TIERCACHE_TEST_VERSION` (a test hook); a test checks
/// the list against the file's text.
pub(crate) const VARIABLES: &[Variable] = &[
    Variable {
        name: "TIERCACHE_CACHE_ENABLED",
        key: "cache_enabled",
        is_secret: false,
        adds: false,
        meaning: "The memory tier on or off (true/false, 1/0, yes/no, on/off), for every command.",
    },
    Variable {
        name: "TIERCACHE_CACHE_TTL",
        key: "cache_ttl",
        is_secret: false,
        adds: false,
        meaning: "The memory tier's time to live, in seconds, for every command.",
    },
    Variable {
        name: "TIERCACHE_ADMIN_TOKEN",
        key: "admin_token",
        is_secret: true,
        adds: false,
        meaning: "The bearer token of serve's admin endpoints (/admin/…); without one they are off.",
    },
    Variable {
        name: "TIERCACHE_WRITE_TOKEN",
        key: "write_token",
        is_secret: true,
        adds: false,
        meaning: "A bearer token that may write entries and blobs through serve.",
    },
    Variable {
        name: "TIERCACHE_S3_ACCESS_KEY",
        key: "s3",
        is_secret: false,
        adds: true,
        meaning: "With TIERCACHE_S3_SECRET_KEY, one more access key of the S3 API, beside the file's.",
    },
    Variable {
        name: "TIERCACHE_S3_SECRET_KEY",
        key: "s3",
        is_secret: true,
        adds: true,
        meaning: "The secret key of TIERCACHE_S3_ACCESS_KEY.",
    },
];

/// A boolean setting from the environment: true/false, 1/0, yes/no, on/off.
pub(crate) fn parse_bool(name: &str, s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => anyhow::bail!("{name}={s:?} is not a boolean (true/false, 1/0, yes/no, on/off)"),
    }
}

/// The flag layer with the memory tier's variables folded in, which every command reads (clap
/// reads the others, and only for the commands that take their flags). `env` is
/// (`TIERCACHE_CACHE_ENABLED`, `TIERCACHE_CACHE_TTL`) as found in the environment.
fn with_memory_env(flags: &EngineSettings, env: (Option<&str>, Option<&str>)) -> Result<EngineSettings> {
    let mut s = flags.clone();
    if let Some(v) = env.0 {
        s.cache_enabled = Some(parse_bool("TIERCACHE_CACHE_ENABLED", v)?);
    }
    if s.cache_ttl.is_none() {
        s.cache_ttl = env.1.map(|v| TtlSeconds { text: v.to_owned(), origin: "TIERCACHE_CACHE_TTL" });
    }
    Ok(s)
}

/// The memory tier's settings from resolved settings: `--no-cache` wins, else `cache_enabled`.
fn memory_config(s: &EngineSettings) -> Result<tiercache_engine::MemoryConfig> {
    let mut m = tiercache_engine::MemoryConfig::default();
    m.is_enabled = if s.no_cache { false } else { s.cache_enabled.unwrap_or(m.is_enabled) };
    if let Some(TtlSeconds { text, origin }) = &s.cache_ttl {
        let n: u64 =
            text.trim().parse().map_err(|_| anyhow::anyhow!("{origin} {text:?} is not a whole number of seconds"))?;
        m.ttl = tiercache_core::units::seconds(origin, n)?;
    }
    m.max_bytes = s.cache_max_size.map_or(m.max_bytes, |b| b.0);
    Ok(m)
}

/// The engine configuration from flags/env (`global`, `flags`), the file, and defaults.
pub(crate) fn engine_config(global: &GlobalSettings, flags: &EngineSettings, file: &FileConfig) -> Result<CacheConfig> {
    let data_dir = global.or(&file.global).data_dir.unwrap_or_else(default_data_dir);
    let env = |k: &str| std::env::var(k).ok();
    let (enabled, ttl) = (env("TIERCACHE_CACHE_ENABLED"), env("TIERCACHE_CACHE_TTL"));
    let s = with_memory_env(flags, (enabled.as_deref(), ttl.as_deref()))?.or(&file.engine);
    let mut cfg = CacheConfig::new(data_dir);
    let http = HttpSourceConfig::default();
    cfg.revalidate_after = s.revalidate_after.map_or(cfg.revalidate_after, |d| d.0);
    cfg.http.connect_timeout = s.source_connect_timeout.map_or(http.connect_timeout, |d| d.0);
    cfg.http.read_timeout = s.source_read_timeout.map_or(http.read_timeout, |d| d.0);
    cfg.http.redirects = s.source_redirects.unwrap_or(http.redirects);
    cfg.http.oci_tag_ttl = s.oci_tag_ttl.map_or(http.oci_tag_ttl, |d| d.0);
    cfg.http.allowed_addresses = s.allow_source_addresses.clone().unwrap_or_default();
    cfg.max_concurrent_fetches = s.max_concurrent_fetches.unwrap_or(cfg.max_concurrent_fetches);
    anyhow::ensure!(s.max_fetches_per_source != Some(0), "max_fetches_per_source must be at least 1");
    cfg.max_fetches_per_source = s.max_fetches_per_source.or(cfg.max_fetches_per_source);
    cfg.reconcile_interval = file.reconcile.reconcile_interval.map_or(cfg.reconcile_interval, |d| d.0);
    cfg.hash_threads = s.hash_threads.unwrap_or(cfg.hash_threads).max(1);
    // A test hook: pretend to be another tiercache version (directory read caches reset on a change).
    if let Ok(v) = std::env::var("TIERCACHE_TEST_VERSION") {
        cfg.version = v;
    }
    cfg.shared = shared_config(&s)?;
    cfg.memory = memory_config(&s)?;
    cfg.memory_max_blob_bytes = s.cache_max_blob_size.map_or(cfg.memory_max_blob_bytes, |b| b.0);
    cfg.max_object_bytes = s.max_object_size.map_or(cfg.max_object_bytes, |b| b.0);
    anyhow::ensure!(cfg.max_object_bytes > 0, "max_object_size must be more than 0 bytes");
    let d = &mut cfg.disk;
    d.quota_bytes = s.disk_quota.map(|b| b.0);
    anyhow::ensure!(d.quota_bytes != Some(0), "the disk quota must be more than 0 bytes");
    d.high_watermark = s.disk_high_watermark.unwrap_or(d.high_watermark);
    d.low_watermark = s.disk_low_watermark.unwrap_or(d.low_watermark);
    anyhow::ensure!(
        0.0 < d.low_watermark && d.low_watermark <= d.high_watermark && d.high_watermark <= 1.0,
        "disk watermarks must satisfy 0 < disk_low_watermark ≤ disk_high_watermark ≤ 1 (got {} and {})",
        d.low_watermark,
        d.high_watermark
    );
    d.protect_new = s.protect_new.map_or(d.protect_new, |d| d.0);
    let p = &mut cfg.pruner;
    p.interval = s.prune_interval.map_or(p.interval, |d| d.0);
    anyhow::ensure!(!p.interval.is_zero(), "prune_interval must be longer than zero");
    p.orphan_grace = s.orphan_grace.map_or(p.orphan_grace, |d| d.0);
    p.temp_grace = s.temp_grace.map_or(p.temp_grace, |d| d.0);
    p.max_age = s.max_age.map(|d| d.0);
    p.owner_grace = s.owner_grace.map_or(p.owner_grace, |d| d.0);
    cfg.multipart_max_age = s.multipart_max_age.map_or(cfg.multipart_max_age, |d| d.0);
    anyhow::ensure!(!cfg.multipart_max_age.is_zero(), "multipart_max_age must be longer than zero");
    let dv = &mut cfg.derive;
    anyhow::ensure!(s.worker_threads != Some(0), "worker_threads must be at least 1 (--no-worker runs none)");
    anyhow::ensure!(s.worker_threads.is_none_or(|n| n <= 1024), "worker_threads must be at most 1024");
    dv.workers = if s.no_worker { 0 } else { s.worker_threads.unwrap_or(dv.workers) };
    anyhow::ensure!(s.derive_queue.is_none_or(|n| (1..=1_000_000).contains(&n)), "derive_queue must be 1 to 1000000");
    dv.queue_jobs = s.derive_queue.unwrap_or(dv.queue_jobs);
    dv.job_timeout = s.derive_timeout.map_or(dv.job_timeout, |d| d.0);
    anyhow::ensure!(!dv.job_timeout.is_zero(), "derive_timeout must be longer than zero");
    if let Some(hook) = s.owner_hook.as_deref() {
        p.owner_hook = Some(std::sync::Arc::new(crate::owner_hook::OwnerHook::parse(hook)?));
    }
    Ok(cfg)
}

/// The shared tier's settings, if a URL is given; zero time limits are refused.
fn shared_config(s: &EngineSettings) -> Result<Option<SharedConfig>> {
    let Some(url) = s.shared.clone().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let mut c = SharedConfig::new(url);
    let l = &mut c.limits;
    l.timeout = s.shared_timeout.map_or(l.timeout, |d| d.0);
    l.io_timeout = s.shared_io_timeout.map_or(l.io_timeout, |d| d.0);
    l.lookup_timeout = s.shared_lookup_timeout.map_or(l.lookup_timeout, |d| d.0);
    l.retries = s.shared_retries.unwrap_or(l.retries);
    c.write_back_queue = s.shared_write_back_queue.unwrap_or(c.write_back_queue);
    c.breaker_failures = s.shared_breaker_failures.unwrap_or(c.breaker_failures);
    c.breaker_cooldown = s.shared_breaker_cooldown.map_or(c.breaker_cooldown, |d| d.0);
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

/// The reconcile interval of `serve --watch` and `watch`, from flag/env or the file, if set.
pub(crate) fn reconcile_interval(flags: &ReconcileSettings, file: &FileConfig) -> Option<Duration> {
    flags.or(&file.reconcile).reconcile_interval.map(|d| d.0)
}

/// Where `serve` listens unless told otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// The server's settings from flag/env (and `TIERCACHE_ADMIN_TOKEN`, `TIERCACHE_WRITE_TOKEN`;
/// an empty variable is unset), then the file.
pub(crate) fn serve_settings(flags: &ServeSettings, file: &FileConfig) -> ServeSettings {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let flags = ServeSettings {
        admin_token: env("TIERCACHE_ADMIN_TOKEN"),
        write_token: env("TIERCACHE_WRITE_TOKEN").map(|t| Tokens(vec![t])),
        ..flags.clone()
    };
    flags.or(&file.serve)
}

/// The S3 listener's address and settings, if `s3_listen` is set: the file's `[[s3.keys]]` and
/// the pair from `TIERCACHE_S3_ACCESS_KEY` / `TIERCACHE_S3_SECRET_KEY` (both or neither; an
/// empty variable is unset), the anonymous buckets and the virtual-host domain. Every bucket
/// named must be a valid namespace name. Whether anyone may use it at all is checked when the
/// front door is built (`tiercache_s3::service`).
pub(crate) fn s3_settings(s: &ServeSettings) -> Result<Option<(String, tiercache_s3::S3Settings)>> {
    let Some(addr) = s.s3_listen.clone() else { return Ok(None) };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut keys: Vec<tiercache_s3::AccessKey> =
        s.s3.iter()
            .flat_map(|f| &f.keys)
            .map(|k| tiercache_s3::AccessKey {
                access_key: k.access_key.clone(),
                secret_key: k.secret_key.clone(),
                buckets: k.buckets.clone(),
            })
            .collect();
    match (env("TIERCACHE_S3_ACCESS_KEY"), env("TIERCACHE_S3_SECRET_KEY")) {
        (Some(access_key), Some(secret_key)) => {
            keys.push(tiercache_s3::AccessKey { access_key, secret_key, buckets: None });
        }
        (None, None) => {}
        _ => anyhow::bail!("TIERCACHE_S3_ACCESS_KEY and TIERCACHE_S3_SECRET_KEY go together: set both, or neither"),
    }
    let named = keys.iter().flat_map(|k| k.buckets.iter().flatten()).chain(&s.s3_anonymous_read);
    for bucket in named {
        tiercache_core::NamespaceName::new(bucket).with_context(|| format!("invalid S3 bucket {bucket:?}"))?;
    }
    let settings =
        tiercache_s3::S3Settings { keys, anonymous_read: s.s3_anonymous_read.clone(), domain: s.s3_domain.clone() };
    Ok(Some((addr, settings)))
}

/// The server's access rules from its settings: each token checked (an empty one is unset), the
/// error naming the setting of a bad one.
pub(crate) fn access(s: &ServeSettings) -> Result<Access> {
    let mut access = Access::new().allow_anonymous_writes(s.allow_anonymous_writes);
    let admin = s.admin_token.iter().cloned().collect();
    let settings = [
        (Right::Admin, "TIERCACHE_ADMIN_TOKEN / admin_token", admin),
        (Right::Write, "TIERCACHE_WRITE_TOKEN / write_token", s.write_token.clone().map_or_else(Vec::new, |t| t.0)),
        (
            Right::Read,
            "--read-token / TIERCACHE_READ_TOKEN / read_token",
            s.read_token.clone().map_or_else(Vec::new, |t| t.0),
        ),
    ];
    for (right, setting, tokens) in settings {
        for token in tokens.iter().filter(|t| !t.is_empty()) {
            access = access.with_token(right, token).with_context(|| format!("invalid token in {setting}"))?;
        }
    }
    Ok(access)
}

/// Every check `serve` makes of its settings before it opens the data directory or binds an
/// address, in one place for `serve` and `config check`: the engine's settings, the tokens, the
/// listener's limits, the S3 listener's keys, buckets and domain, and the names of the file's
/// namespaces. Their sources are checked when `serve` creates them, since whether a directory
/// may be a source depends on the data directory, which this does not open. Returns the engine's
/// configuration.
pub(crate) fn check_serve(global: &GlobalSettings, args: &ServeArgs, file: &FileConfig) -> Result<CacheConfig> {
    let engine = engine_config(global, &args.engine, file)?;
    let settings = serve_settings(&args.serve, file);
    access(&settings)?;
    server_limits(&settings)?;
    if let Some((_, s3)) = s3_settings(&settings)? {
        tiercache_s3::check(&s3)?;
    }
    for name in file.namespaces.keys() {
        tiercache_core::NamespaceName::new(name)
            .with_context(|| format!("invalid namespace name {name:?} in the config file"))?;
    }
    Ok(engine)
}

/// The listener's limits from resolved server settings and their defaults; zero is refused (a
/// limit is turned off by making it large, never by accident).
pub(crate) fn server_limits(s: &ServeSettings) -> Result<tiercache_server::Limits> {
    let mut l = tiercache_server::Limits::default();
    l.max_connections = s.max_connections.unwrap_or(l.max_connections);
    anyhow::ensure!(l.max_connections > 0, "max_connections must be at least 1");
    l.header_read_timeout = s.header_read_timeout.map_or(l.header_read_timeout, |d| d.0);
    l.keep_alive_timeout = s.keep_alive_timeout.map_or(l.keep_alive_timeout, |d| d.0);
    l.body_idle_timeout = s.body_idle_timeout.map_or(l.body_idle_timeout, |d| d.0);
    l.access_log = s.access_log.unwrap_or(l.access_log);
    for (name, d) in [
        ("header_read_timeout", l.header_read_timeout),
        ("keep_alive_timeout", l.keep_alive_timeout),
        ("body_idle_timeout", l.body_idle_timeout),
    ] {
        anyhow::ensure!(!d.is_zero(), "{name} must be longer than zero");
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::HumanDuration;

    /// Flag beats environment beats file beats default, for both memory-tier settings.
    #[test]
    fn memory_settings_precedence() {
        let file = |enabled: Option<bool>, ttl: Option<u64>| EngineSettings {
            cache_enabled: enabled,
            cache_ttl: ttl.map(|t| TtlSeconds { text: t.to_string(), origin: "cache_ttl" }),
            ..Default::default()
        };
        let args = |no_cache: bool, ttl: Option<&str>| EngineSettings {
            no_cache,
            cache_ttl: ttl.map(|t| t.parse().unwrap()),
            ..Default::default()
        };
        let resolve = |a: &EngineSettings, env: (Option<&str>, Option<&str>), f: &EngineSettings| {
            memory_config(&with_memory_env(a, env)?.or(f))
        };
        let check =
            |a: EngineSettings, env: (Option<&str>, Option<&str>), f: EngineSettings, enabled: bool, ttl: u64| {
                let m = resolve(&a, env, &f).unwrap();
                assert_eq!((m.is_enabled, m.ttl.as_secs()), (enabled, ttl), "{a:?} {env:?} {f:?}");
            };
        check(args(false, None), (None, None), file(None, None), true, 300);
        check(args(false, None), (None, None), file(Some(false), Some(9)), false, 9);
        check(args(false, None), (Some("true"), Some("7")), file(Some(false), Some(9)), true, 7);
        check(args(true, Some("5")), (Some("true"), Some("7")), file(Some(true), Some(9)), false, 5);
        check(args(false, Some("5")), (None, Some("7")), file(None, Some(9)), true, 5);
        check(args(false, None), (Some("0"), None), file(Some(true), None), false, 300);
        for bad in [(Some("maybe"), None), (None, Some("-3")), (None, Some("soon")), (None, Some("99999999999999"))] {
            assert!(resolve(&args(false, None), bad, &file(None, None)).is_err(), "{bad:?}");
        }
        assert!(resolve(&args(false, Some("-1")), (None, None), &file(None, None)).is_err());
    }

    /// `max_fetches_per_source` from the file reaches the engine; without it, a quarter of the
    /// global limit; 0 is refused.
    #[test]
    fn fetches_per_source_from_the_file() {
        let global = GlobalSettings { data_dir: Some("/d".into()) };
        let cfg = |text: &str| engine_config(&global, &EngineSettings::default(), &FileConfig::parse(text).unwrap());
        let c = cfg("max_concurrent_fetches = 40\nmax_fetches_per_source = 3\n").unwrap();
        assert_eq!(c.fetches_per_source(), 3);
        assert_eq!(cfg("max_concurrent_fetches = 40\n").unwrap().fetches_per_source(), 10);
        assert!(cfg("max_fetches_per_source = 0\n").is_err());
    }

    /// `multipart_max_age` from the file reaches the engine; its default is 7 days; 0 is refused.
    #[test]
    fn multipart_max_age_from_the_file() {
        let global = GlobalSettings { data_dir: Some("/d".into()) };
        let cfg = |text: &str| engine_config(&global, &EngineSettings::default(), &FileConfig::parse(text).unwrap());
        let day = std::time::Duration::from_secs(24 * 3600);
        assert_eq!(cfg("multipart_max_age = \"2d\"\n").unwrap().multipart_max_age, 2 * day);
        assert_eq!(cfg("").unwrap().multipart_max_age, 7 * day);
        assert!(cfg("multipart_max_age = \"0s\"\n").is_err());
    }

    /// Every variable this file reads by name is in `VARIABLES` (what `config check` and the man
    /// page say of it), and `VARIABLES` names no other.
    #[test]
    fn every_variable_read_here_is_listed() {
        let text = include_str!("config.rs");
        let mut read: Vec<&str> = text
            .match_indices("\"TIERCACHE_")
            .filter_map(|(at, _)| {
                let name = text[at + 1..].split('"').next()?;
                name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_').then_some(name)
            })
            // The pattern itself, in this test, names no variable.
            .filter(|name| *name != "TIERCACHE_" && *name != "TIERCACHE_TEST_VERSION")
            .collect();
        read.sort_unstable();
        read.dedup();
        let mut listed: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        listed.sort_unstable();
        assert_eq!(read, listed);
    }

    /// Each key lands in its part; an unknown key is refused with the list of known ones.
    #[test]
    fn the_file_is_read_part_by_part_and_unknown_keys_are_refused() {
        let text = "data_dir = \"/d\"\nlisten = \"0.0.0.0:1\"\nreconcile_interval = \"5m\"\n\
                    disk_quota = 4096\nowner_grace = \"1h\"\n[namespaces.web]\nsource = \"http://s/\"\n";
        let f = FileConfig::parse(text).unwrap();
        assert_eq!(f.global.data_dir.as_deref(), Some(Path::new("/d")));
        assert_eq!(f.serve.listen.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(f.reconcile.reconcile_interval, Some(HumanDuration(Duration::from_secs(300))));
        assert_eq!(f.engine.disk_quota.map(|b| b.0), Some(4096));
        assert_eq!(f.engine.owner_grace, Some(HumanDuration(Duration::from_secs(3600))));
        assert_eq!(f.namespaces["web"].source.as_deref(), Some("http://s/"));

        let err = FileConfig::parse("listen = \"x\"\nno_cache = true\n").unwrap_err();
        assert_eq!(err.span(), Some(13..21), "{err}");
        let msg = err.message();
        assert!(msg.starts_with("unknown field `no_cache`, expected one of `data_dir`, `listen`"), "{msg}");
        for key in known_keys() {
            assert!(msg.contains(&format!("`{key}`")), "{key} missing from {msg}");
        }
        assert!(!known_keys().contains(&"no_cache"), "a flag without a key");
        let err = FileConfig::parse("[namespaces.web]\nsorce = \"x\"\n").unwrap_err();
        assert!(err.message().starts_with("unknown field `sorce`"), "{err}");
    }
}
