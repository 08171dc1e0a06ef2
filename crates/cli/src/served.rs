//! `<data>/settings.json`: the effective settings `serve` started with (the disk quota and its
//! watermarks), written atomically at each start, so that a command run beside the server (`df`)
//! can say what the server enforces and where that figure came from.
//!
//! It records only: no command takes it as its own configuration, and nothing is enforced from
//! it. A server started again overwrites it; a server that stopped leaves it (it then says what
//! the last server enforced).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tiercache_engine::DiskLimits;

/// The file's name in the data directory.
pub(crate) const FILE: &str = "settings.json";

/// What a server started with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Served {
    /// The disk quota, bytes (`None`: no quota).
    pub(crate) disk_quota_bytes: Option<u64>,
    /// Background eviction starts above this fraction of the quota.
    pub(crate) disk_high_watermark: f64,
    /// … and evicts down to this fraction.
    pub(crate) disk_low_watermark: f64,
    /// The server's process id.
    pub(crate) pid: u32,
    /// When it started (RFC 3339, UTC).
    pub(crate) started_at: String,
    /// The tiercache version it ran.
    pub(crate) version: String,
}

impl Served {
    /// The settings of a server starting now with `disk`.
    pub(crate) fn now(disk: &DiskLimits) -> Served {
        Served {
            disk_quota_bytes: disk.quota_bytes,
            disk_high_watermark: disk.high_watermark,
            disk_low_watermark: disk.low_watermark,
            pid: std::process::id(),
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The file's path in data directory `data_dir`.
pub(crate) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Writes `served` to `<data_dir>/settings.json` atomically: a temp file beside it, fsync,
/// rename over it, fsync the directory.
pub(crate) fn write(data_dir: &Path, served: &Served) -> Result<()> {
    let tmp = data_dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let target = path(data_dir);
    (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(served)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(data_dir)?.sync_all()
    })()
    .inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
    .with_context(|| format!("cannot write {}", target.display()))
}

/// What the last server started on `data_dir` recorded, if one did. An unreadable file is an
/// error (it says which file).
pub(crate) fn read(data_dir: &Path) -> Result<Option<Served>> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("cannot read {}", p.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
    }
}
