//! The command line, as clap sees it: the commands and their own arguments. The settings, flags
//! that are also `TIERCACHE_*` variables and config-file keys, are declared in `settings.rs` and
//! flattened in here; they resolve as flag > environment > TOML config file > built-in default,
//! in `config.rs`, not here, so that a value from the file is not shadowed by a clap default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::{EngineSettings, GlobalSettings, ReconcileSettings, ServeSettings};

/// tiercache: a tiered, content-addressed, read-through cache for files and blobs.
#[derive(Debug, Parser)]
#[command(name = "tiercache", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalSettings,

    /// TOML config file [default: $XDG_CONFIG_HOME/tiercache/config.toml, if it exists]
    #[arg(long, global = true, env = "TIERCACHE_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Log filter, e.g. `info` or `tiercache_engine=debug` [default: info for serve, warn otherwise]
    #[arg(long, global = true, env = "TIERCACHE_LOG", value_name = "FILTER")]
    pub(crate) log: Option<String>,

    /// Log lines as text, or as one JSON object each (with the request id of a request's lines)
    #[arg(long, global = true, env = "TIERCACHE_LOG_FORMAT", value_name = "FORMAT", default_value = "text")]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// For people: time, level, the request's span, target, message and fields.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the fields, and `span` (the
    /// request's id) within a request.
    Json,
}

#[derive(Debug, Subcommand)]
// One is parsed per process: boxing the larger variants would save nothing that matters.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    /// Run the HTTP server (blob and entry API, /healthz, /metrics)
    Serve(ServeArgs),
    /// Read an entry, a blob or a URL through the cache
    Get(GetArgs),
    /// Pull an image's manifests and blobs into a registry namespace's cache
    Warm(WarmArgs),
    /// Mount an image's files, read-only, on a directory (FUSE; reads fetch only what they need)
    Mount(MountArgs),
    /// Make a derivation (a thumbnail, …) of every entry of a namespace, in the background pool
    Derive(DeriveArgs),
    /// Create, list, show and delete namespaces
    #[command(subcommand)]
    Ns(NsCommand),
    /// Entries, bytes, oldest and newest, overall and per namespace
    Stats {
        /// Only this namespace
        #[arg(long)]
        ns: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove entries, and the blobs no namespace references any more
    Cleanup(CleanupArgs),
    /// Compact the index database; prints its size before, after, and saved
    Vacuum {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Bind a namespace to a directory and build its read cache (paths, markers, MD5, SHA-256)
    Index(IndexArgs),
    /// Bring directory namespaces' read caches up to date: re-read only what changed
    Update {
        /// Only this namespace [default: every directory namespace]
        #[arg(long)]
        ns: Option<String>,
        /// Re-read and rehash every file, changed or not
        #[arg(long, short)]
        force: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Follow file events and keep directory namespaces' read caches current (until killed)
    // The setting is `serve`'s too; its help is said for this command.
    #[command(mut_arg("reconcile_interval", |a| a.help("Full reconcile this often, to catch anything events missed [default: 10m]")))]
    Watch {
        /// Only this namespace [default: every directory namespace]
        #[arg(long)]
        ns: Option<String>,
        #[command(flatten)]
        reconcile: ReconcileSettings,
    },
    /// Fill in hashes not computed yet (files indexed with --no-hash, unreadable or changing files; blobs without MD5)
    Migrate {
        /// The namespace
        #[arg(long)]
        ns: String,
        /// Only count the files and bytes that would be hashed
        #[arg(long)]
        dry_run: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove what nothing needs: orphan blobs, stale temp and lock files, entries past their age or
    /// limits, namespaces of owners gone; one pass of the background pruner [default: all of it]
    Prune(PruneArgs),
    /// Disk use per tier and per namespace, from the index (shared blobs counted once)
    Df {
        /// Per-namespace detail
        #[arg(short, long)]
        verbose: bool,
        /// The disk quota to show, e.g. 10GiB [default: the one the last `serve` on this data
        /// directory started with (`<data>/settings.json`), else the config file's]
        #[arg(long, value_name = "SIZE")]
        disk_quota: Option<crate::settings::ByteSize>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Rehash every blob and reconcile the index with the disk tier (exit 3 if damage remains)
    Verify {
        /// Delete corrupt files (they are fetched again), drop rows of missing files, adopt untracked files
        #[arg(long)]
        repair: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration as `serve` would, or print an example config file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell's completion script (e.g. to /usr/share/bash-completion/completions/tiercache)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page, of every command (e.g. to /usr/share/man/man1/tiercache.1)
    Man,
}

/// The shells `completions` writes a script for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
// One is parsed per process, as `Command`'s.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ConfigCommand {
    /// Check the config file and the settings as `serve` would (unknown keys, bad values, bad
    /// tokens; exit 1 if invalid), and print every effective setting with where it came from:
    /// flag, env, file or default (secrets as `(set)`)
    Check(ConfigCheckArgs),
    /// Print an example config file: every key it accepts, commented out, each with its doc and
    /// its default or an example value
    Example,
}

/// `config check`: the flags of `serve`, so that a flag is a source it can report.
#[derive(Debug, Args)]
pub(crate) struct ConfigCheckArgs {
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
}

/// `serve`: every setting that has a flag.
#[derive(Debug, Default, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) serve: ServeSettings,
    #[command(flatten)]
    pub(crate) reconcile: ReconcileSettings,
    #[command(flatten)]
    pub(crate) engine: EngineSettings,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// `NAMESPACE/KEY`, `sha256:<hex>`, or a URL under some namespace's source
    pub(crate) target: String,
    /// Write to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Only bytes START-END (inclusive; END may be omitted)
    #[arg(long, value_name = "START-END")]
    pub(crate) range: Option<String>,
    #[command(flatten)]
    pub(crate) engine: EngineSettings,
}

#[derive(Debug, Args)]
pub(crate) struct WarmArgs {
    /// The image: NAME[:TAG] (default tag: latest) or NAME@sha256:<hex>, NAME as the registry
    /// names it (library/alpine on Docker Hub)
    pub(crate) image: String,
    /// The registry namespace to warm (one whose source is oci:// or oci+http://)
    #[arg(long, value_name = "NAMESPACE")]
    pub(crate) ns: String,
    /// Only this platform of a multi-platform image: OS/ARCH[/VARIANT], e.g. linux/amd64
    /// [default: every platform]
    #[arg(long, value_name = "OS/ARCH")]
    pub(crate) platform: Option<String>,
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) engine: EngineSettings,
}

#[derive(Debug, Args)]
pub(crate) struct MountArgs {
    /// The image: NAMESPACE/NAME[:TAG] (default tag: latest) or NAMESPACE/NAME@sha256:<hex>, the
    /// first path segment being the registry namespace (one whose source is oci:// or oci+http://)
    pub(crate) image: String,
    /// The directory to mount it on
    pub(crate) dir: PathBuf,
    /// The platform of a multi-platform image: OS/ARCH[/VARIANT], e.g. linux/arm64
    /// [default: this machine's]
    #[arg(long, value_name = "OS/ARCH")]
    pub(crate) platform: Option<String>,
    /// Let other users than the one mounting it read it (FUSE's allow_other; file permissions
    /// still apply)
    #[arg(long)]
    pub(crate) allow_other: bool,
    /// Say it is mounted as one line of JSON (namespace, image, manifest digest, directory)
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) engine: EngineSettings,
}

impl MountArgs {
    /// The namespace and the image (`NAME:TAG` or `NAME@DIGEST`) of [`image`](Self::image);
    /// `None` without a `/`.
    pub(crate) fn namespace_and_image(&self) -> Option<(&str, &str)> {
        self.image.split_once('/').filter(|(ns, image)| !ns.is_empty() && !image.is_empty())
    }
}

#[derive(Debug, Args)]
pub(crate) struct DeriveArgs {
    /// The namespace whose entries are the inputs
    #[arg(long, value_name = "NAMESPACE")]
    pub(crate) ns: String,
    /// The recipe: thumbnail, video-thumbnail, decompress, checksum
    #[arg(long)]
    pub(crate) recipe: String,
    /// Only keys starting with this
    #[arg(long, value_name = "PREFIX")]
    pub(crate) prefix: Option<String>,
    /// The `size` parameter (thumbnails: the longest side, in pixels)
    #[arg(long, value_name = "PIXELS")]
    pub(crate) size: Option<u32>,
    /// Another parameter of the recipe, NAME=VALUE (repeatable), e.g. fit=cover, algo=sha1
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,
    /// Print a JSON summary
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) engine: EngineSettings,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NsCommand {
    /// Create a namespace (idempotent), optionally bound to a source
    Create {
        /// Namespace name: lowercase letters, digits, '.', '_', '-'
        name: String,
        /// The source: a base URL (http:// or https://), a directory (file:///path), an S3 bucket
        /// (s3://bucket/prefix?endpoint=URL&region=NAME) or a registry (oci://HOST[:PORT], or
        /// oci+http://HOST:PORT without TLS)
        #[arg(long, value_name = "URL")]
        source: Option<String>,
        #[command(flatten)]
        dir: DirOptionArgs,
        #[command(flatten)]
        s3: S3KeyArgs,
        #[command(flatten)]
        registry: Box<RegistryKeyArgs>,
        #[command(flatten)]
        limits: NsLimitArgs,
        /// Where its blobs are kept: `managed` (the shared disk tier) or `path:DIR` (a directory of
        /// its own, empty or new) [default: managed]
        #[arg(long, value_name = "managed|path:DIR")]
        storage: Option<tiercache_engine::Place>,
        /// Anyone may read its entries and listing without a token, even when the server's reads
        /// need one (`--read-token`); writes still need a write token
        #[arg(long)]
        public: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Move a namespace's blobs to another storage place; reads go on meanwhile, nothing is lost
    Migrate {
        /// Namespace name
        name: String,
        /// `managed` (the shared disk tier) or `path:DIR` (a directory of its own, empty or new)
        #[arg(long, value_name = "managed|path:DIR")]
        to: tiercache_engine::Place,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Pin a namespace (every entry, now and later) or some of its keys: never evicted or pruned
    Pin {
        /// Namespace name
        name: String,
        /// Only this key (repeatable) [default: the whole namespace]
        #[arg(long)]
        key: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove pins set by `ns pin`
    Unpin {
        /// Namespace name
        name: String,
        /// Only this key (repeatable) [default: the whole-namespace pin]
        #[arg(long)]
        key: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// List namespaces with their totals
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one namespace with its totals
    Show {
        /// Namespace name
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a namespace, its entries and the blobs no other namespace references (idempotent)
    Delete {
        /// Namespace name
        name: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// A namespace's owner and limits.
#[derive(Debug, Args, Default)]
pub(crate) struct NsLimitArgs {
    /// Owner label: the pruner deletes the namespace once the owner-liveness hook says it is gone
    #[arg(long, value_name = "LABEL")]
    pub(crate) owner: Option<String>,
    /// Most bytes its entries may name, e.g. 2GiB; the least recently read go first
    #[arg(long, value_name = "SIZE", value_parser = crate::settings::parse_size)]
    pub(crate) quota: Option<u64>,
    /// Remove entries not read for this long, e.g. 7d
    #[arg(long, value_name = "DURATION", value_parser = crate::settings::parse_duration, allow_hyphen_values = true)]
    pub(crate) max_age: Option<std::time::Duration>,
    /// Most entries; the least recently read go first
    #[arg(long, value_name = "N")]
    pub(crate) max_entries: Option<u64>,
}

/// The access key pair an S3 source signs with, instead of the AWS variables.
#[derive(Debug, Args, Default)]
pub(crate) struct S3KeyArgs {
    /// For an s3:// source: the access key id [default: AWS_ACCESS_KEY_ID]
    #[arg(long, value_name = "KEY")]
    pub(crate) s3_access_key: Option<String>,
    /// For an s3:// source: the secret access key (kept with the namespace, never shown)
    /// [default: AWS_SECRET_ACCESS_KEY]
    #[arg(long, value_name = "SECRET", env = "TIERCACHE_S3_SOURCE_SECRET_KEY", hide_env_values = true)]
    pub(crate) s3_secret_key: Option<String>,
}

/// The user and password a registry source authenticates with, instead of a docker config.json's.
#[derive(Debug, Args, Default)]
pub(crate) struct RegistryKeyArgs {
    /// For an oci:// source: the user to authenticate with [default: from a docker config.json]
    #[arg(long, value_name = "USER")]
    pub(crate) registry_user: Option<String>,
    /// For an oci:// source: the password or access token (kept with the namespace, never shown)
    #[arg(long, value_name = "PASSWORD", env = "TIERCACHE_REGISTRY_PASSWORD", hide_env_values = true)]
    pub(crate) registry_password: Option<String>,
}

/// Options of a directory namespace.
#[derive(Debug, Args, Default)]
pub(crate) struct DirOptionArgs {
    /// Keep a copy of each file read in the disk tier (for network or spinning-disk directories)
    #[arg(long)]
    pub(crate) copy_to_cache: bool,
    /// Leave out paths matching this glob (repeatable), e.g. '*.tmp' or '**/node_modules'
    #[arg(long, value_name = "GLOB")]
    pub(crate) ignore: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct IndexArgs {
    /// The directory
    pub(crate) dir: PathBuf,
    /// The namespace to bind it to (created if needed)
    #[arg(long)]
    pub(crate) ns: String,
    #[command(flatten)]
    pub(crate) options: DirOptionArgs,
    /// Record paths and change markers only; hashes are computed on first read or by `migrate`
    #[arg(long)]
    pub(crate) no_hash: bool,
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["ns", "all"])))]
pub(crate) struct CleanupArgs {
    /// Remove this namespace's entries
    #[arg(long)]
    pub(crate) ns: Option<String>,
    /// Only keys starting with this prefix (byte for byte; no wildcards)
    #[arg(long, requires = "ns")]
    pub(crate) prefix: Option<String>,
    /// Remove the entries of every namespace
    #[arg(long)]
    pub(crate) all: bool,
    /// Do not ask for confirmation
    #[arg(long, short)]
    pub(crate) yes: bool,
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Only orphan blobs (no entry references them; uploads are never pruned)
    #[arg(long)]
    pub(crate) orphans: bool,
    /// Only entries not read for this long, e.g. 7d
    #[arg(long, value_name = "DURATION", value_parser = crate::settings::parse_duration, allow_hyphen_values = true)]
    pub(crate) older_than: Option<std::time::Duration>,
    /// Only evict, by the eviction policy, until the disk tier holds at most SIZE, e.g. 50GiB
    #[arg(long, value_name = "SIZE", value_parser = crate::settings::parse_size)]
    pub(crate) max_size: Option<u64>,
    /// Only this namespace's entries (age and limits) and owner
    #[arg(long)]
    pub(crate) ns: Option<String>,
    /// Orphans younger than this are kept [default: orphan_grace from the config, 1h]
    #[arg(long, value_name = "DURATION", value_parser = crate::settings::parse_duration, allow_hyphen_values = true)]
    pub(crate) grace: Option<std::time::Duration>,
    /// List what would be removed and the bytes freed; remove nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print JSON
    #[arg(long)]
    pub(crate) json: bool,
}
