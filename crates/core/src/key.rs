//! Namespace names and entry keys, validated once at the edge.
//!
//! A key names an entry inside a namespace and, for directory and HTTP sources, a path below the
//! source's root. The rules here are what keeps a hostile key from escaping that root: no `.` or
//! `..` segment, no empty segment, no leading `/`, no backslash, no NUL or other control
//! character. Percent-decoding is the caller's job and happens exactly once, before validation, so
//! `%2e%2e` arrives here as `..` and is refused.

use std::fmt;

/// Longest accepted namespace name, in bytes (S3's bucket-name limit).
pub const MAX_NAMESPACE_BYTES: usize = 63;
/// Longest accepted key, in bytes (S3's object-key limit).
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a namespace name or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Empty name or key.
    #[error("{what} is empty")]
    Empty {
        /// `namespace` or `key`.
        what: &'static str,
    },
    /// Longer than the limit.
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// `namespace` or `key`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character that is never allowed.
    #[error("{what} contains a forbidden character {ch:?}")]
    Forbidden {
        /// `namespace` or `key`.
        what: &'static str,
        /// The offending character.
        ch: char,
    },
    /// A path segment that could escape or alias (`.`, `..`, empty, leading `/`).
    #[error("key has a forbidden path segment {segment:?} (no '.', '..', empty segments or leading '/')")]
    Segment {
        /// The offending segment.
        segment: String,
    },
    /// A namespace name outside `[a-z0-9][a-z0-9._-]*`.
    #[error(
        "namespace {0:?} is not allowed: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
    )]
    NamespaceSyntax(String),
}

/// A validated namespace name: 1 to 63 bytes of `[a-z0-9._-]`, starting with `[a-z0-9]`, with no `..`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespaceName(String);

impl NamespaceName {
    /// Validates `s` as a namespace name.
    pub fn new(s: &str) -> Result<NamespaceName, KeyError> {
        const WHAT: &str = "namespace";
        if s.is_empty() {
            return Err(KeyError::Empty { what: WHAT });
        }
        if s.len() > MAX_NAMESPACE_BYTES {
            return Err(KeyError::TooLong { what: WHAT, len: s.len(), max: MAX_NAMESPACE_BYTES });
        }
        let shown: String = s.chars().take(80).collect();
        let first_ok = s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0].is_ascii_digit();
        let all_ok = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if !first_ok || !all_ok || s.contains("..") {
            return Err(KeyError::NamespaceSyntax(shown));
        }
        Ok(NamespaceName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NamespaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NamespaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A validated entry key: UTF-8, 1 to 1024 bytes, `/`-separated segments, none of them empty,
/// `.` or `..`, and no NUL, control character or backslash anywhere.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates `s` (already percent-decoded) as a key.
    pub fn new(s: &str) -> Result<Key, KeyError> {
        const WHAT: &str = "key";
        if s.is_empty() {
            return Err(KeyError::Empty { what: WHAT });
        }
        if s.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong { what: WHAT, len: s.len(), max: MAX_KEY_BYTES });
        }
        if let Some(ch) = s.chars().find(|&c| c.is_control() || c == '\\') {
            return Err(KeyError::Forbidden { what: WHAT, ch });
        }
        for segment in s.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(KeyError::Segment { segment: segment.to_owned() });
            }
        }
        Ok(Key(s.to_owned()))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated segments; none is empty, `.` or `..`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_key(input: &str, ok: bool) {
        assert_eq!(Key::new(input).is_ok(), ok, "key {input:?}");
    }

    fn check_ns(input: &str, ok: bool) {
        assert_eq!(NamespaceName::new(input).is_ok(), ok, "namespace {input:?}");
    }

    #[test]
    fn keys() {
        for good in
            ["a", "a/b/c.txt", "..a", "a..", "dir/.hidden", "ünïcode/ключ", "a b", "%2e%2e", "x".repeat(1024).as_str()]
        {
            check_key(good, true);
        }
        for bad in [
            "",
            "..",
            ".",
            "a/../b",
            "../a",
            "a/..",
            "/abs",
            "/etc/passwd",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "a\0b",
            "a\nb",
            "a\x7fb",
            "x".repeat(1025).as_str(),
        ] {
            check_key(bad, false);
        }
    }

    #[test]
    fn namespaces() {
        for good in ["a", "team-1", "images.v2", "a_b", "0", "x".repeat(63).as_str()] {
            check_ns(good, true);
        }
        for bad in ["", "A", "-a", ".a", "a..b", "a/b", "..", "a\0", "é", " a", "x".repeat(64).as_str()] {
            check_ns(bad, false);
        }
    }
}
