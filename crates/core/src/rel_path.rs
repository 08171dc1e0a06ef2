//! Relative paths inside a directory source, as raw bytes.
//!
//! A directory's file names are bytes, not necessarily UTF-8, and may hold characters a [`crate::Key`]
//! refuses (a backslash, a newline). A [`RelPath`] accepts any name the filesystem does, and refuses
//! only what could escape or alias the root: an empty path, a leading `/`, an empty, `.` or `..`
//! segment, and NUL. Symlinks are the opener's business (it resolves beneath the root).

use std::fmt;

use crate::KeyError;

/// Longest accepted relative path, in bytes (Linux's `PATH_MAX`).
pub const MAX_REL_PATH_BYTES: usize = 4096;

/// A validated path relative to a directory source's root: `/`-separated, raw bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    /// Validates `bytes` as a relative path.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<RelPath, KeyError> {
        const WHAT: &str = "path";
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(KeyError::Empty { what: WHAT });
        }
        if bytes.len() > MAX_REL_PATH_BYTES {
            return Err(KeyError::TooLong { what: WHAT, len: bytes.len(), max: MAX_REL_PATH_BYTES });
        }
        if bytes.contains(&0) {
            return Err(KeyError::Forbidden { what: WHAT, ch: '\0' });
        }
        for segment in bytes.split(|b| *b == b'/') {
            if matches!(segment, b"" | b"." | b"..") {
                return Err(KeyError::Segment { segment: String::from_utf8_lossy(segment).into_owned() });
            }
        }
        Ok(RelPath(bytes))
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path as UTF-8, if it is.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The path's bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

impl From<crate::Key> for RelPath {
    fn from(k: crate::Key) -> RelPath {
        // A key's rules are strictly tighter than a path's.
        RelPath(k.as_str().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_a_filesystem_does_and_refuses_escapes() {
        for ok in [&b"a"[..], b"a/b.txt", b"\xff\xfe/x", b"back\\slash", b"new\nline", b"...", b".hidden/x"] {
            assert!(RelPath::new(ok).is_ok(), "{ok:?}");
        }
        for bad in [&b""[..], b"/etc/passwd", b"a/../b", b"..", b"./a", b"a//b", b"a/", b"nul\0x"] {
            assert!(RelPath::new(bad).is_err(), "{bad:?}");
        }
        assert!(RelPath::new(vec![b'a'; MAX_REL_PATH_BYTES + 1]).is_err());
    }
}
