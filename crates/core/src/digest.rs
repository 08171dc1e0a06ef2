//! Content digests: `sha256:<64 lowercase hex>`, the address of every blob.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A SHA-256 content digest.
///
/// Invariant: the only way to build one is from 32 raw bytes or from a string that
/// [`Digest::from_str`] accepted, so its hex form is always 64 lowercase hex digits and is safe to
/// use as a file name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The algorithm prefix is missing or is not `sha256`.
    #[error("unsupported digest algorithm in {0:?}: only sha256:<64 lowercase hex> is accepted")]
    Algorithm(String),
    /// The hex part has the wrong length or contains something other than lowercase hex digits.
    #[error("malformed digest {0:?}: expected sha256: followed by 64 lowercase hex digits")]
    Malformed(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Wraps 32 raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// Parses the bare 64-hex form (no `sha256:` prefix), as used in file names.
    pub fn from_hex(hex_str: &str) -> Result<Digest, DigestError> {
        let malformed = || DigestError::Malformed(truncate(hex_str));
        if hex_str.len() != 64 || !hex_str.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(malformed());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_str, &mut out).map_err(|_| malformed())?;
        Ok(Digest(out))
    }

    /// The 64 lowercase hex digits, without the algorithm prefix.
    pub fn hex(&self) -> String {
        self.with_hex(str::to_owned)
    }

    /// `sha256:` and the 64 lowercase hex digits, as ASCII bytes (the [`Display`](fmt::Display)
    /// form without formatting machinery or allocation).
    pub fn prefixed_ascii(&self) -> [u8; 71] {
        let mut out = [0u8; 71];
        out[..7].copy_from_slice(b"sha256:");
        hex::encode_to_slice(self.0, &mut out[7..]).expect("64 digits for 32 bytes");
        out
    }

    /// Calls `f` with the 64 lowercase hex digits, formatted on the stack.
    fn with_hex<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).expect("64 digits for 32 bytes");
        f(std::str::from_utf8(&buf).expect("hex digits are ASCII"))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl FromStr for Digest {
    type Err = DigestError;

    /// Accepts exactly `sha256:` followed by 64 lowercase hex digits.
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        match s.split_once(':') {
            Some(("sha256", hex_str)) => Digest::from_hex(hex_str),
            Some(_) => Err(DigestError::Algorithm(truncate(s))),
            None => Err(DigestError::Malformed(truncate(s))),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.with_hex(|hex| f.write_str(hex))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Incremental SHA-256 over a stream of chunks.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(sha256)")
    }
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher::default()
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, ok: bool) {
        assert_eq!(input.parse::<Digest>().is_ok(), ok, "{input:?}");
    }

    #[test]
    fn parse() {
        let good = format!("sha256:{}", "a".repeat(64));
        check(&good, true);
        check(&format!("sha256:{}", "A".repeat(64)), false);
        check(&format!("sha256:{}", "a".repeat(63)), false);
        check(&format!("sha256:{}", "a".repeat(65)), false);
        check(&format!("sha256:{}g", "a".repeat(63)), false);
        check(&format!("sha512:{}", "a".repeat(64)), false);
        check(&format!("md5:{}", "a".repeat(32)), false);
        check(&"a".repeat(64), false);
        check("", false);
        check("sha256:", false);
        check(&format!("sha256:{}/../x", "a".repeat(58)), false);
        check(&format!("sha256:{}é", "a".repeat(62)), false);
    }

    #[test]
    fn round_trip_and_known_value() {
        let d = Digest::of(b"abc");
        assert_eq!(d.to_string(), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        let mut h = Hasher::new();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), d);
    }
}
