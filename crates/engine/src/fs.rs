//! File helpers every layer may use (layer 0): atomic small-file writes and whole-file hashes.
//! Nothing here knows about blobs, tiers or the index.

use std::io::{Read as _, Write as _};
use std::path::Path;

use tiercache_core::{Digest, Hasher};

/// Writes `bytes` to `dir/name` atomically:
/// 1. write a temp file beside it (named with this process's id);
/// 2. fsync it;
/// 3. rename it over `name`;
/// 4. fsync the directory.
///
/// A crash before 3 leaves the old file (and a temp file the next write replaces); after 3, the
/// new one.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Feeds every byte of the file at `path` to `update`, a MiB at a time.
fn read_all(path: &Path, mut update: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        update(&buf[..n]);
    }
}

/// The SHA-256 of the file at `path`.
pub(crate) fn sha256_of_file(path: &Path) -> std::io::Result<Digest> {
    let mut h = Hasher::new();
    read_all(path, |b| h.update(b))?;
    Ok(h.finish())
}
