//! Vocabulary of directory namespaces: a file's change markers and a namespace's options.

use serde::{Deserialize, Serialize};

/// What says a file changed without reading it: size, modification and status-change times in
/// nanoseconds, and inode number. An edit within the same second changes `mtime_ns`; an edit that
/// restores the old mtime (`touch -r`) still changes `ctime_ns`; a replace-by-rename changes `inode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileMarkers {
    /// Size in bytes.
    pub size_bytes: u64,
    /// Last modification, ns since the epoch.
    pub mtime_ns: i64,
    /// Last status change, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
}

impl FileMarkers {
    /// The markers as a strong HTTP validator (used as the directory source's own ETag).
    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}-{:x}-{:x}\"", self.size_bytes, self.mtime_ns, self.ctime_ns, self.inode)
    }
}

/// A namespace's options beyond its source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceOptions {
    /// For a directory source: keep a copy of each file read in the disk tier (for slow mounts)
    /// instead of serving it in place.
    pub copy_to_cache: bool,
    /// For a directory source: glob patterns of relative paths left out of the read cache.
    pub ignore: Vec<String>,
    /// Who this namespace caches for (an orchestrator's id of a tenant, an engine, a job). The
    /// pruner asks the owner-liveness hook about it, and deletes the namespace of a dead owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Most bytes of blobs this namespace's entries may name (a blob named by several keys counts
    /// once); the least recently read entries go first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    /// Entries not read for this long (ms) are pruned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Most entries; the least recently read go first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<u64>,
    /// Where the namespace's blobs are kept: `None` in the shared, content-addressed disk tier of
    /// the data directory (managed); else this host directory (an absolute, canonical path), which
    /// holds this namespace's blobs alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Whether anyone may read this namespace's entries and listings without a token, when the
    /// server's reads otherwise need one (a read token is configured). Writes are never public.
    #[serde(rename = "public", skip_serializing_if = "is_false")]
    pub is_public: bool,
    /// For an S3 source: the access key id to sign with, instead of `AWS_ACCESS_KEY_ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_access_key: Option<String>,
    /// For an S3 source: the secret access key that goes with `s3_access_key` (never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_secret_key: Option<crate::Secret>,
    /// For a registry source: the user to authenticate with, instead of a docker `config.json`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_user: Option<String>,
    /// For a registry source: the password that goes with `registry_user` (never shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_password: Option<crate::Secret>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl NamespaceOptions {
    /// Whether every option has its default value.
    pub fn is_default(&self) -> bool {
        *self == NamespaceOptions::default()
    }

    /// Whether an option that applies to directory sources only is set.
    pub fn has_dir_options(&self) -> bool {
        self.copy_to_cache || !self.ignore.is_empty()
    }

    /// Whether an option that applies to S3 sources only is set.
    pub fn has_s3_options(&self) -> bool {
        self.s3_access_key.is_some() || self.s3_secret_key.is_some()
    }

    /// Whether an option that applies to registry sources only is set.
    pub fn has_registry_options(&self) -> bool {
        self.registry_user.is_some() || self.registry_password.is_some()
    }
}
