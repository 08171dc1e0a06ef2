//! MD5 and SHA-256 of the same bytes, fed together: what a directory file costs to index (its MD5
//! is the entry's ETag, its SHA-256 the blob digest).

use md5::Digest as _;

use crate::{Digest, Hasher};

/// Both hashes, fed together.
pub struct Hashes {
    md5: md5::Md5,
    sha256: Hasher,
}

impl Default for Hashes {
    fn default() -> Self {
        Hashes::new()
    }
}

impl Hashes {
    /// Empty hashes.
    pub fn new() -> Hashes {
        Hashes { md5: md5::Md5::new(), sha256: Hasher::new() }
    }

    /// Feeds `bytes` to both.
    pub fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
        self.sha256.update(bytes);
    }

    /// The MD5 and the SHA-256.
    pub fn finish(self) -> ([u8; 16], Digest) {
        (self.md5.finalize().into(), self.sha256.finish())
    }
}
