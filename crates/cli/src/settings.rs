//! Every setting, declared once: one field that is at the same time a flag with its `TIERCACHE_*`
//! variable (clap, on the commands that take it) and a key of the TOML config file (serde). The same
//! struct holds both layers: one parsed from the command line and the environment, one from the
//! file; [`EngineSettings::or`] and its siblings merge them field by field, flag or environment
//! first. Durations and sizes are parsed in one place, by [`HumanDuration`] and [`ByteSize`], for
//! flags, variables and the file alike.
//!
//! A field without a flag is `#[arg(skip)]`: only the file (and, for a few, a variable read by
//! `config.rs`) sets it. Defaults are not here but in `config.rs`, so that a value from the file is
//! never shadowed by a clap default; nor is reading the file, nor turning settings into the
//! engine's configuration.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Deserializer};
use tiercache_core::units;

/// Settings of every command.
#[derive(Debug, Default, Clone, Args, Deserialize)]
pub(crate) struct GlobalSettings {
    /// Data directory: index.db, blobs/, tmp/, namespaces/, e.g. /var/lib/tiercache
    /// [default: $XDG_DATA_HOME/tiercache]
    #[arg(long, global = true, env = "TIERCACHE_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

impl GlobalSettings {
    /// Each setting of `self`, or else of `file`.
    pub(crate) fn or(&self, file: &GlobalSettings) -> GlobalSettings {
        GlobalSettings { data_dir: self.data_dir.clone().or_else(|| file.data_dir.clone()) }
    }
}

/// Settings of the HTTP server (`serve`).
#[derive(Debug, Default, Clone, Args, Deserialize)]
pub(crate) struct ServeSettings {
    /// Address to listen on [default: 127.0.0.1:7070]
    #[arg(long, env = "TIERCACHE_LISTEN", value_name = "ADDR")]
    pub(crate) listen: Option<String>,
    /// Watch every directory namespace and keep its read cache current
    // A flag: set by the flag, its variable or the file, never unset by one of them.
    #[arg(long, env = "TIERCACHE_WATCH")]
    #[serde(default)]
    pub(crate) watch: bool,
    /// Bearer token of the admin HTTP endpoints (`/admin/…`); without one they are off. Also
    /// `TIERCACHE_ADMIN_TOKEN`, read by `serve`: a secret has no flag, which `ps` would show
    /// [default: none, /admin is off]
    #[arg(skip)]
    pub(crate) admin_token: Option<String>,
    /// Bearer token(s) that may read and write entries and blobs, not `/admin` (a string or a list
    /// in the file). Also `TIERCACHE_WRITE_TOKEN` (one token), read by `serve`: no flag
    /// [default: none]
    #[arg(skip)]
    pub(crate) write_token: Option<Tokens>,
    /// Make every read need a token: this one, or a write or admin token (reads of namespaces
    /// created with --public stay open); `ps` shows a flag, prefer TIERCACHE_READ_TOKEN [default: reads are open]
    #[arg(long, env = "TIERCACHE_READ_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub(crate) read_token: Option<Tokens>,
    /// Let anyone write without a token: on a trusted network only (said loudly in the log)
    // A flag: set by the flag, its variable or the file, never unset by one of them.
    #[arg(long, env = "TIERCACHE_ALLOW_ANONYMOUS_WRITES")]
    #[serde(default)]
    pub(crate) allow_anonymous_writes: bool,
    /// Most client connections at once, e.g. 4096; beyond them idle keep-alive connections are closed first,
    /// then a small reserve answers /healthz and a 503 to anything else [default: from the
    /// open-file limit, at most 10000]
    #[arg(long, env = "TIERCACHE_MAX_CONNECTIONS", value_name = "N")]
    pub(crate) max_connections: Option<usize>,
    /// Longest time to receive a request's line and headers; a slower client is disconnected [default: 30s]
    #[arg(long, env = "TIERCACHE_HEADER_READ_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) header_read_timeout: Option<HumanDuration>,
    /// Longest time an idle keep-alive connection waits for its next request [default: 75s]
    #[arg(long, env = "TIERCACHE_KEEP_ALIVE_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) keep_alive_timeout: Option<HumanDuration>,
    /// Longest time a request body (an upload) may send nothing, or an answer wait for a client
    /// that reads none of it; an upload is then cut, answered 408, and its temp file and disk
    /// reservation released [default: 60s]
    #[arg(long, env = "TIERCACHE_BODY_IDLE_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) body_idle_timeout: Option<HumanDuration>,
    /// Also serve the S3-compatible API on this address, e.g. 127.0.0.1:9000: its own listener,
    /// with the same connection limits and timeouts as the main one [default: off]
    #[arg(long, env = "TIERCACHE_S3_LISTEN", value_name = "ADDR")]
    pub(crate) s3_listen: Option<String>,
    /// Let anyone read this bucket through the S3 API without signing, e.g. public-photos
    /// (repeatable; a comma-separated list in the variable) [default: none]
    #[arg(
        long = "s3-anonymous-read",
        env = "TIERCACHE_S3_ANONYMOUS_READ",
        value_name = "BUCKET",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub(crate) s3_anonymous_read: Vec<String>,
    /// Base domain of virtual-host style S3 requests (BUCKET.DOMAIN), e.g. s3.example.org; path
    /// style always works [default: none, path style only]
    #[arg(long, env = "TIERCACHE_S3_DOMAIN", value_name = "DOMAIN")]
    pub(crate) s3_domain: Option<String>,
    /// The namespace registry-mirror requests without `?ns=<registry>` go to, e.g. hub (skopeo, podman and
    /// docker send none; containerd does) [default: the only namespace whose source is a
    /// registry, if there is exactly one]
    #[arg(long, env = "TIERCACHE_OCI_DEFAULT_NS", value_name = "NAMESPACE")]
    pub(crate) oci_default_ns: Option<String>,
    /// Log one line per request, at INFO (target `tiercache::access`): method, path, status, body
    /// bytes, the tier that served it, duration and request id [default: true]
    #[arg(long, env = "TIERCACHE_ACCESS_LOG", value_name = "BOOL")]
    pub(crate) access_log: Option<bool>,
    /// The S3 API's access keys: `[[s3.keys]]` tables in the file (`access_key`, `secret_key`,
    /// optional `buckets`, all of them if absent). Also one pair from `TIERCACHE_S3_ACCESS_KEY`
    /// and `TIERCACHE_S3_SECRET_KEY`, read by `serve`: a secret has no flag [default: none]
    #[arg(skip)]
    pub(crate) s3: Option<Box<S3File>>,
}

impl ServeSettings {
    /// Each setting of `self`, or else of `file`.
    pub(crate) fn or(&self, file: &ServeSettings) -> ServeSettings {
        ServeSettings {
            listen: self.listen.clone().or_else(|| file.listen.clone()),
            watch: self.watch || file.watch,
            admin_token: self.admin_token.clone().or_else(|| file.admin_token.clone()),
            write_token: self.write_token.clone().or_else(|| file.write_token.clone()),
            read_token: self.read_token.clone().or_else(|| file.read_token.clone()),
            allow_anonymous_writes: self.allow_anonymous_writes || file.allow_anonymous_writes,
            max_connections: self.max_connections.or(file.max_connections),
            header_read_timeout: self.header_read_timeout.or(file.header_read_timeout),
            keep_alive_timeout: self.keep_alive_timeout.or(file.keep_alive_timeout),
            body_idle_timeout: self.body_idle_timeout.or(file.body_idle_timeout),
            s3_listen: self.s3_listen.clone().or_else(|| file.s3_listen.clone()),
            s3_anonymous_read: if self.s3_anonymous_read.is_empty() {
                file.s3_anonymous_read.clone()
            } else {
                self.s3_anonymous_read.clone()
            },
            s3_domain: self.s3_domain.clone().or_else(|| file.s3_domain.clone()),
            oci_default_ns: self.oci_default_ns.clone().or_else(|| file.oci_default_ns.clone()),
            access_log: self.access_log.or(file.access_log),
            s3: self.s3.clone().or_else(|| file.s3.clone()),
        }
    }
}

/// The file's `[s3]` table.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3File {
    /// `[[s3.keys]]`.
    #[serde(default)]
    pub(crate) keys: Vec<S3KeyFile>,
}

/// One `[[s3.keys]]` table. Printed without its secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct S3KeyFile {
    /// The access key id clients sign with
    pub(crate) access_key: String,
    /// Its secret key
    pub(crate) secret_key: String,
    /// The buckets the key may use, e.g. photos [default: all]
    pub(crate) buckets: Option<Vec<String>>,
}

impl std::fmt::Debug for S3KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3KeyFile").field("access_key", &self.access_key).field("buckets", &self.buckets).finish()
    }
}

/// Bearer tokens of one right: one after a flag or in a variable, one or a list in the file.
/// Printed as their number only.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Tokens(pub(crate) Vec<String>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} hidden)", self.0.len())
    }
}

impl FromStr for Tokens {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Tokens, Self::Err> {
        Ok(Tokens(vec![s.to_owned()]))
    }
}

impl<'de> Deserialize<'de> for Tokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tokens, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a token, or a list of tokens")]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(Tokens(match OneOrMany::deserialize(d)? {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(ts) => ts,
        }))
    }
}

/// Settings of keeping directory namespaces current from file events (`serve --watch`, `watch`).
#[derive(Debug, Default, Clone, Args, Deserialize)]
pub(crate) struct ReconcileSettings {
    /// With --watch, a full reconcile this often [default: 10m]
    #[arg(long, env = "TIERCACHE_RECONCILE_INTERVAL", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) reconcile_interval: Option<HumanDuration>,
}

impl ReconcileSettings {
    /// Each setting of `self`, or else of `file`.
    pub(crate) fn or(&self, file: &ReconcileSettings) -> ReconcileSettings {
        ReconcileSettings { reconcile_interval: self.reconcile_interval.or(file.reconcile_interval) }
    }
}

/// Engine settings: the flags are those of every command that reads through the cache (`serve`,
/// `get`); every other command takes them from the file only.
///
/// The memory tier's switch is the one setting with two fields: `--no-cache` only turns it off,
/// where `cache_enabled` (and `TIERCACHE_CACHE_ENABLED`) say either way.
#[derive(Debug, Default, Clone, Args, Deserialize)]
pub(crate) struct EngineSettings {
    /// Revalidate an entry with its source once it is older than this; 0s revalidates every read [default: 60s]
    #[arg(long, env = "TIERCACHE_REVALIDATE_AFTER", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) revalidate_after: Option<HumanDuration>,
    /// Longest wait to connect to a source [default: 10s]
    #[arg(long, env = "TIERCACHE_SOURCE_CONNECT_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) source_connect_timeout: Option<HumanDuration>,
    /// Longest wait for a source's headers or next body bytes [default: 30s]
    #[arg(long, env = "TIERCACHE_SOURCE_READ_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) source_read_timeout: Option<HumanDuration>,
    /// Which redirects a source may lead to: same-origin (the source's scheme, host and port),
    /// any, or none; at most 5 in a row [default: same-origin]
    #[arg(long, env = "TIERCACHE_SOURCE_REDIRECTS", value_name = "POLICY")]
    #[serde(default, deserialize_with = "parsed")]
    pub(crate) source_redirects: Option<tiercache_engine::Redirects>,
    /// How long a registry namespace serves a manifest by tag (and a tag list) before asking the
    /// registry again, with a HEAD; by digest they never change [default: 5m]
    #[arg(long, env = "TIERCACHE_OCI_TAG_TTL", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) oci_tag_ttl: Option<HumanDuration>,
    /// A link-local or cloud metadata address (or CIDR block) that sources may reach all the same,
    /// e.g. 169.254.169.254/32; repeatable, comma-separated in the variable [default: none]
    #[arg(
        long = "allow-source-address",
        env = "TIERCACHE_ALLOW_SOURCE_ADDRESSES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    #[serde(default, deserialize_with = "parsed_list")]
    pub(crate) allow_source_addresses: Option<Vec<tiercache_engine::AddressRange>>,
    /// Most source fetches at once [default: 64]
    #[arg(long, env = "TIERCACHE_MAX_CONCURRENT_FETCHES", value_name = "N")]
    pub(crate) max_concurrent_fetches: Option<usize>,
    /// Most fetches at once from any one source, e.g. 16, so a hung source holds only its share
    /// [default: a quarter of --max-concurrent-fetches, at least 1]
    #[arg(long, env = "TIERCACHE_MAX_FETCHES_PER_SOURCE", value_name = "N")]
    pub(crate) max_fetches_per_source: Option<usize>,
    /// Threads hashing files in `index`, `update`, `migrate`, e.g. 4 [default: one per core]
    #[arg(skip)]
    pub(crate) hash_threads: Option<usize>,
    /// The shared cluster tier: s3://bucket/prefix?endpoint=…&region=…, redis://host:port/db,
    /// fs:///path, or any OpenDAL service as scheme://…?option=value, e.g. redis://127.0.0.1:6379/0
    /// (S3 credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) [default: none, this node
    /// alone]
    #[arg(long, env = "TIERCACHE_SHARED", value_name = "URL")]
    pub(crate) shared: Option<String>,
    /// Time limit of one call to the shared tier [default: 10s]
    #[arg(long, env = "TIERCACHE_SHARED_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) shared_timeout: Option<HumanDuration>,
    /// Time limit of each read or write step of a shared-tier transfer [default: 5s]
    #[arg(long, env = "TIERCACHE_SHARED_IO_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) shared_io_timeout: Option<HumanDuration>,
    /// Time limit of a lookup a read waits on (a blob's side object, an entry record), retries
    /// included; past it the read goes on without the shared tier [default: 2s]
    #[arg(long, env = "TIERCACHE_SHARED_LOOKUP_TIMEOUT", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) shared_lookup_timeout: Option<HumanDuration>,
    /// Retries of a failed shared-tier call [default: 2]
    #[arg(long, env = "TIERCACHE_SHARED_RETRIES", value_name = "N")]
    pub(crate) shared_retries: Option<usize>,
    /// Write-backs to the shared tier waiting at most; more are dropped and counted [default: 256]
    #[arg(skip)]
    pub(crate) shared_write_back_queue: Option<usize>,
    /// Circuit breaker: failures in a row that open it [default: 3]
    #[arg(skip)]
    pub(crate) shared_breaker_failures: Option<u32>,
    /// Circuit breaker: how long it stays open [default: 5s]
    #[arg(skip)]
    pub(crate) shared_breaker_cooldown: Option<HumanDuration>,
    /// Most bytes the disk tier may hold, e.g. 10GiB or 500MB; least valuable blobs are evicted
    /// first [default: no limit]
    #[arg(long, env = "TIERCACHE_DISK_QUOTA", value_name = "SIZE", allow_hyphen_values = true)]
    pub(crate) disk_quota: Option<ByteSize>,
    /// Largest object kept, e.g. 4GiB: larger uploads are refused (413), larger source objects
    /// served without being stored [default: 64GiB]
    #[arg(long, env = "TIERCACHE_MAX_OBJECT_SIZE", value_name = "SIZE", allow_hyphen_values = true)]
    pub(crate) max_object_size: Option<ByteSize>,
    /// Background eviction above this fraction of the quota, down to `disk_low_watermark`
    /// [default: 0.95]
    #[arg(skip)]
    pub(crate) disk_high_watermark: Option<f64>,
    /// Where background eviction stops, as a fraction of the quota [default: 0.90]
    #[arg(skip)]
    pub(crate) disk_low_watermark: Option<f64>,
    /// Blobs stored this recently are evicted last (only when nothing else can make room)
    /// [default: 10s]
    #[arg(skip)]
    pub(crate) protect_new: Option<HumanDuration>,
    /// The memory tier on or off. Also `TIERCACHE_CACHE_ENABLED`, read by `config.rs` for every
    /// command; `--no-cache` is the flag [default: true]
    #[arg(skip)]
    pub(crate) cache_enabled: Option<bool>,
    /// Time to live of the memory tier's blobs and lookups, in seconds (env TIERCACHE_CACHE_TTL)
    /// [default: 300]
    // The variable is read by `config.rs` for every command, not by clap for two of them.
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub(crate) cache_ttl: Option<TtlSeconds>,
    /// Turn the memory tier off (env TIERCACHE_CACHE_ENABLED=false)
    #[arg(long)]
    #[serde(skip)]
    pub(crate) no_cache: bool,
    /// The memory tier's size bound [default: 64MiB]
    #[arg(skip)]
    pub(crate) cache_max_size: Option<ByteSize>,
    /// The largest blob the memory tier keeps [default: 64KiB]
    #[arg(skip)]
    pub(crate) cache_max_blob_size: Option<ByteSize>,
    /// How often the background pruner runs a pass [default: 5m]
    #[arg(skip)]
    pub(crate) prune_interval: Option<HumanDuration>,
    /// Orphan blobs younger than this are kept [default: 1h]
    #[arg(skip)]
    pub(crate) orphan_grace: Option<HumanDuration>,
    /// Temp files of a live writer not written for this long are removed [default: 1h]
    #[arg(skip)]
    pub(crate) temp_grace: Option<HumanDuration>,
    /// Entries not read for this long are pruned (namespaces with a source), e.g. 30d
    /// [default: never]
    #[arg(skip)]
    pub(crate) max_age: Option<HumanDuration>,
    /// The owner-liveness hook: a shell command (owner as $1; exit 0 alive, 1 gone) or a URL
    /// (`{owner}` replaced; 2xx alive, 404/410 gone), e.g. http://orchestrator.internal/owners/{owner}
    /// [default: none, owners are never asked]
    #[arg(skip)]
    pub(crate) owner_hook: Option<String>,
    /// A namespace whose owner is gone is deleted once the hook has said so for this long
    /// [default: 10m]
    #[arg(skip)]
    pub(crate) owner_grace: Option<HumanDuration>,
    /// Derivation jobs (thumbnails, …) run at once, e.g. 4 [default: one per core]
    #[arg(long, env = "TIERCACHE_WORKER_THREADS", value_name = "N")]
    pub(crate) worker_threads: Option<usize>,
    /// Run no derivation jobs: serve outputs already made only (a missing one answers 503)
    #[arg(long, env = "TIERCACHE_NO_WORKER")]
    #[serde(default)]
    pub(crate) no_worker: bool,
    /// Derivation jobs queued at most; one more answers 503 with Retry-After [default: 1024]
    #[arg(long, env = "TIERCACHE_DERIVE_QUEUE", value_name = "N")]
    pub(crate) derive_queue: Option<usize>,
    /// The longest a derivation job may run [default: 60s]
    #[arg(long, env = "TIERCACHE_DERIVE_TIMEOUT", value_name = "DURATION")]
    pub(crate) derive_timeout: Option<HumanDuration>,
    /// A multipart upload neither completed nor aborted this long after it began is abandoned:
    /// the pruner removes it and its parts [default: 7d]
    #[arg(long, env = "TIERCACHE_MULTIPART_MAX_AGE", value_name = "DURATION", allow_hyphen_values = true)]
    pub(crate) multipart_max_age: Option<HumanDuration>,
}

impl EngineSettings {
    /// Each setting of `self`, or else of `file`. Every field is named, so that a setting added
    /// without being merged does not compile.
    pub(crate) fn or(&self, file: &EngineSettings) -> EngineSettings {
        let s = self.clone();
        let f = file.clone();
        EngineSettings {
            revalidate_after: s.revalidate_after.or(f.revalidate_after),
            source_connect_timeout: s.source_connect_timeout.or(f.source_connect_timeout),
            source_read_timeout: s.source_read_timeout.or(f.source_read_timeout),
            source_redirects: s.source_redirects.or(f.source_redirects),
            oci_tag_ttl: s.oci_tag_ttl.or(f.oci_tag_ttl),
            allow_source_addresses: s.allow_source_addresses.or(f.allow_source_addresses),
            max_concurrent_fetches: s.max_concurrent_fetches.or(f.max_concurrent_fetches),
            max_fetches_per_source: s.max_fetches_per_source.or(f.max_fetches_per_source),
            hash_threads: s.hash_threads.or(f.hash_threads),
            shared: s.shared.or(f.shared),
            shared_timeout: s.shared_timeout.or(f.shared_timeout),
            shared_io_timeout: s.shared_io_timeout.or(f.shared_io_timeout),
            shared_lookup_timeout: s.shared_lookup_timeout.or(f.shared_lookup_timeout),
            shared_retries: s.shared_retries.or(f.shared_retries),
            shared_write_back_queue: s.shared_write_back_queue.or(f.shared_write_back_queue),
            shared_breaker_failures: s.shared_breaker_failures.or(f.shared_breaker_failures),
            shared_breaker_cooldown: s.shared_breaker_cooldown.or(f.shared_breaker_cooldown),
            disk_quota: s.disk_quota.or(f.disk_quota),
            max_object_size: s.max_object_size.or(f.max_object_size),
            disk_high_watermark: s.disk_high_watermark.or(f.disk_high_watermark),
            disk_low_watermark: s.disk_low_watermark.or(f.disk_low_watermark),
            protect_new: s.protect_new.or(f.protect_new),
            cache_enabled: s.cache_enabled.or(f.cache_enabled),
            cache_ttl: s.cache_ttl.or(f.cache_ttl),
            no_cache: s.no_cache || f.no_cache,
            cache_max_size: s.cache_max_size.or(f.cache_max_size),
            cache_max_blob_size: s.cache_max_blob_size.or(f.cache_max_blob_size),
            prune_interval: s.prune_interval.or(f.prune_interval),
            orphan_grace: s.orphan_grace.or(f.orphan_grace),
            temp_grace: s.temp_grace.or(f.temp_grace),
            max_age: s.max_age.or(f.max_age),
            owner_hook: s.owner_hook.or(f.owner_hook),
            owner_grace: s.owner_grace.or(f.owner_grace),
            multipart_max_age: s.multipart_max_age.or(f.multipart_max_age),
            worker_threads: s.worker_threads.or(f.worker_threads),
            no_worker: s.no_worker || f.no_worker,
            derive_queue: s.derive_queue.or(f.derive_queue),
            derive_timeout: s.derive_timeout.or(f.derive_timeout),
        }
    }
}

/// A duration setting, written like `90s`, `10m`, `7d` or `1h 30m` (see [`parse_duration`]); a
/// string in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub(crate) Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<HumanDuration, String> {
        parse_duration(s).map(HumanDuration)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HumanDuration, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A size setting, written like `10GiB`, `500MB` or `4096` (see [`parse_size`]); a string or a
/// number of bytes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<ByteSize, String> {
        parse_size(s).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Bytes(i64),
            Text(String),
        }
        let text = match Size::deserialize(d)? {
            Size::Bytes(n) => n.to_string(),
            Size::Text(s) => s,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A setting written as a string in the file and parsed by its type's `FromStr`, like its flag.
fn parsed<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<String>::deserialize(d)?.map(|s| s.parse().map_err(serde::de::Error::custom)).transpose()
}

/// A list of strings in the file, each parsed by its type's `FromStr`, like a repeated flag.
fn parsed_list<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(d: D) -> Result<Option<Vec<T>>, D::Error> {
    let Some(items) = Option::<Vec<String>>::deserialize(d)? else { return Ok(None) };
    items.iter().map(|s| s.parse().map_err(serde::de::Error::custom)).collect::<Result<Vec<T>, _>>().map(Some)
}

/// The memory tier's time to live as written, checked when settings are resolved so that the
/// message names where it came from: any text after `--cache-ttl` or in `TIERCACHE_CACHE_TTL`, a
/// whole number in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TtlSeconds {
    /// The value as written.
    pub(crate) text: String,
    /// Where it was written: `--cache-ttl`, `TIERCACHE_CACHE_TTL` or `cache_ttl`.
    pub(crate) origin: &'static str,
}

impl FromStr for TtlSeconds {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<TtlSeconds, Self::Err> {
        Ok(TtlSeconds { text: s.to_owned(), origin: "--cache-ttl" })
    }
}

impl<'de> Deserialize<'de> for TtlSeconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TtlSeconds, D::Error> {
        Ok(TtlSeconds { text: u64::deserialize(d)?.to_string(), origin: "cache_ttl" })
    }
}

/// A duration like `90s`, `10m`, `7d`, `1h 30m`: not negative, at most 100 years (the one
/// parser, `tiercache_core::units`, shared with the admin API).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.to_string())
}

/// A size like `10GiB`, `500MB`, `4k`, `1.5K`, or a number of bytes: binary units (KiB, MiB, GiB,
/// TiB, and K, M, G, T) are powers of 1024, decimal ones (kB, MB, GB, TB) of 1000. At most 1 EiB
/// (the one parser, `tiercache_core::units`).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    units::parse_size(s).map_err(|e| e.to_string())
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
}
