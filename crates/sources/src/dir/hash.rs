//! MD5 and SHA-256 of a file in one read, with a check that the file held still meanwhile.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub use tiercache_core::Hashes;
use tiercache_core::{Digest, FileMarkers};

use super::{io_err, markers_of, now_ns};

/// Read size for hashing.
const BUF_BYTES: usize = 1 << 20;

/// A file's hashes, and the markers it had throughout the read.
#[derive(Debug, Clone)]
pub struct Hashed {
    /// Markers before and after the read (they were equal).
    pub markers: FileMarkers,
    /// MD5.
    pub md5: [u8; 16],
    /// SHA-256.
    pub sha256: Digest,
    /// When the markers were read after hashing, ns since the epoch.
    pub hashed_at_ns: i64,
}

/// Why hashing did not produce hashes.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The file changed while it was read (its markers differ before and after).
    #[error("file changed while it was read")]
    Changed,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Hashes `file`, whose markers were `before` when it was opened. Fails with
/// [`HashError::Changed`] if its markers after the read differ, or if it held other than
/// `before.size_bytes` bytes. Blocking.
pub fn hash_file(file: &File, before: FileMarkers) -> Result<Hashed, HashError> {
    thread_local! {
        // One read buffer per thread: a fresh 1 MiB buffer per file costs a map, page faults and
        // an unmap, which dominates for small files.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut h = Hashes::new();
    let mut pos = 0u64;
    BUF.with_borrow_mut(|buf| -> io::Result<()> {
        if buf.is_empty() {
            buf.resize(BUF_BYTES, 0);
        }
        // Read exactly the size the markers give; growth shows in the markers read afterwards.
        while pos < before.size_bytes {
            let want = (before.size_bytes - pos).min(BUF_BYTES as u64) as usize;
            let n = file.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(())
    })?;
    let after = markers_of(&rustix::fs::fstat(file).map_err(io_err)?);
    if after != before || pos != before.size_bytes {
        return Err(HashError::Changed);
    }
    let (md5, sha256) = h.finish();
    Ok(Hashed { markers: after, md5, sha256, hashed_at_ns: now_ns() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_the_reference_and_changes_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let f = File::open(&p).unwrap();
        let m = markers_of(&rustix::fs::fstat(&f).unwrap());
        let h = hash_file(&f, m).unwrap();
        assert_eq!(hex::encode(h.md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(h.sha256, Digest::of(b"abc"));
        std::fs::write(&p, b"abcd").unwrap();
        assert!(matches!(hash_file(&f, m), Err(HashError::Changed)));
    }
}
