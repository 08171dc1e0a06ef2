//! The keys of a registry namespace, parsed and checked once: `NAME/manifests/REFERENCE`,
//! `NAME/blobs/DIGEST` and `NAME/tags/list`, with NAME, REFERENCE and DIGEST under the
//! Distribution spec's grammar.
//!
//! This is the contract between the registry source and the mirror front door: the front door
//! builds keys with [`OciKey`] and the source reads them back with [`OciKey::parse`]. Nothing here
//! sends a request.

use std::fmt;

use tiercache_core::{Digest, Key};

/// Longest repository name, in bytes (the Distribution spec's limit).
pub const MAX_NAME_BYTES: usize = 255;

/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 128;

/// What a manifest key names: a tag (which moves) or a digest (which never does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
    Tag(String),
    /// A digest, `sha256:<64 hex>`.
    Digest(Digest),
}

impl Reference {
    /// Parses a tag or a `sha256:` digest; another digest algorithm is refused by name.
    pub fn parse(s: &str) -> Result<Reference, String> {
        if s.contains(':') {
            return parse_digest(s).map(Reference::Digest);
        }
        let ok_first = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let ok_rest = s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok_first || !ok_rest || s.len() > MAX_TAG_BYTES {
            return Err(format!(
                "{:?} is not a tag or digest: a tag is 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' \
                 or '-'; a digest is sha256:<64 lowercase hex digits>",
                shown(s)
            ));
        }
        Ok(Reference::Tag(s.to_owned()))
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// A key of a registry namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OciKey {
    /// `NAME/manifests/REFERENCE`: `/v2/NAME/manifests/REFERENCE`.
    Manifest {
        /// The repository.
        name: String,
        /// The tag or digest.
        reference: Reference,
    },
    /// `NAME/blobs/DIGEST`: `/v2/NAME/blobs/DIGEST`.
    Blob {
        /// The repository.
        name: String,
        /// The blob's digest.
        digest: Digest,
    },
    /// `NAME/tags/list`: `/v2/NAME/tags/list`.
    Tags {
        /// The repository.
        name: String,
    },
}

impl OciKey {
    /// Parses a key. Refused, with a message saying why: another shape, a NAME outside the
    /// Distribution grammar (uppercase, `..`, empty components, over [`MAX_NAME_BYTES`]), a bad
    /// tag, and a digest that is not `sha256:` with 64 lowercase hex digits (another algorithm
    /// is named as unsupported).
    pub fn parse(key: &str) -> Result<OciKey, String> {
        if let Some(name) = key.strip_suffix("/tags/list") {
            check_name(name)?;
            return Ok(OciKey::Tags { name: name.to_owned() });
        }
        let mut parts = key.rsplitn(3, '/');
        let (last, kind, name) = (parts.next().unwrap_or(""), parts.next(), parts.next());
        let (Some(kind), Some(name)) = (kind, name) else { return Err(bad_shape(key)) };
        match kind {
            "manifests" => {
                check_name(name)?;
                Ok(OciKey::Manifest { name: name.to_owned(), reference: Reference::parse(last)? })
            }
            "blobs" => {
                check_name(name)?;
                Ok(OciKey::Blob { name: name.to_owned(), digest: parse_digest(last)? })
            }
            _ => Err(bad_shape(key)),
        }
    }

    /// The repository.
    pub fn name(&self) -> &str {
        match self {
            OciKey::Manifest { name, .. } | OciKey::Blob { name, .. } | OciKey::Tags { name } => name,
        }
    }

    /// The digest the key names, if it names one (a blob, a manifest by digest).
    pub fn digest(&self) -> Option<Digest> {
        match self {
            OciKey::Blob { digest, .. } | OciKey::Manifest { reference: Reference::Digest(digest), .. } => {
                Some(*digest)
            }
            _ => None,
        }
    }

    /// The entry key (`NAME/manifests/REF`, …). Always a valid [`Key`]: a checked NAME has no
    /// empty, `.` or `..` segment.
    pub fn key(&self) -> Key {
        Key::new(&self.to_string()).expect("a checked OCI key is a valid key")
    }
}

impl fmt::Display for OciKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OciKey::Manifest { name, reference } => write!(f, "{name}/manifests/{reference}"),
            OciKey::Blob { name, digest } => write!(f, "{name}/blobs/{digest}"),
            OciKey::Tags { name } => write!(f, "{name}/tags/list"),
        }
    }
}

fn bad_shape(key: &str) -> String {
    format!(
        "{:?} is not a registry key: expected NAME/manifests/REFERENCE, NAME/blobs/DIGEST or NAME/tags/list",
        shown(key)
    )
}

/// At most 80 characters of `s`, for messages.
fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Parses `sha256:<64 lowercase hex>`; another algorithm is refused by name.
pub(crate) fn parse_digest(s: &str) -> Result<Digest, String> {
    let Some((algorithm, hex)) = s.split_once(':') else {
        return Err(format!("{:?} is not a digest: expected sha256:<64 lowercase hex digits>", shown(s)));
    };
    if algorithm != "sha256" {
        let ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'_' | b'-'));
        return Err(match ok {
            true => format!("digest algorithm {algorithm:?} is not supported: only sha256 digests are"),
            false => format!("{:?} is not a digest: expected sha256:<64 lowercase hex digits>", shown(s)),
        });
    }
    Digest::from_hex(hex)
        .map_err(|_| format!("{:?} is not a digest: expected sha256:<64 lowercase hex digits>", shown(s)))
}

/// Checks a repository name: components of lowercase letters and digits, joined inside by `.`,
/// `_`, `__` or runs of `-`, separated by `/`; at most [`MAX_NAME_BYTES`].
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{:?} is not a repository name: use components of lowercase letters and digits, joined inside by '.', \
             '_', '__' or '-', separated by '/'",
            shown(name)
        )
    };
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("the repository name is {} bytes long; the limit is {MAX_NAME_BYTES}", name.len()));
    }
    if name.is_empty() || !name.split('/').all(is_component) {
        return Err(bad());
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn check(key: &str, expect: Result<&str, &str>) {
        match (OciKey::parse(key), expect) {
            (Ok(k), Ok(shape)) => {
                let got = match &k {
                    OciKey::Manifest { reference: Reference::Tag(_), .. } => "manifest by tag",
                    OciKey::Manifest { reference: Reference::Digest(_), .. } => "manifest by digest",
                    OciKey::Blob { .. } => "blob",
                    OciKey::Tags { .. } => "tags",
                };
                assert_eq!(got, shape, "{key}");
                assert_eq!(k.to_string(), key, "written back as read");
                assert_eq!(OciKey::parse(k.key().as_str()).unwrap(), k);
            }
            (Err(e), Err(needle)) => assert!(e.contains(needle), "{key}: {e}"),
            (got, want) => panic!("{key}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn keys_parse_by_the_distribution_grammar() {
        check("library/nginx/manifests/latest", Ok("manifest by tag"));
        check("a/manifests/V1.2_rc-3", Ok("manifest by tag"));
        check(&format!("a.b/c__d/e---f/manifests/sha256:{HEX}"), Ok("manifest by digest"));
        check(&format!("app/blobs/sha256:{HEX}"), Ok("blob"));
        check("my-org/app/tags/list", Ok("tags"));
        // A name whose components look like the markers: the last two segments decide.
        check(&format!("blobs/manifests/blobs/sha256:{HEX}"), Ok("blob"));
        check("app/tags/manifests/list", Ok("manifest by tag"));
    }

    #[test]
    fn hostile_and_malformed_keys_are_refused_with_a_reason() {
        check("../etc/manifests/latest", Err("not a repository name"));
        check("a/../b/manifests/latest", Err("not a repository name"));
        check("a/./b/manifests/latest", Err("not a repository name"));
        check("Library/Nginx/manifests/latest", Err("not a repository name"));
        check("a//b/manifests/latest", Err("not a repository name"));
        check("a-/manifests/latest", Err("not a repository name"));
        check("a___b/manifests/latest", Err("not a repository name"));
        check("a._b/manifests/latest", Err("not a repository name"));
        check(&format!("{}/manifests/latest", "a".repeat(256)), Err("the limit is 255"));
        check("app/manifests/-bad", Err("not a tag or digest"));
        check(&format!("app/manifests/{}", "t".repeat(129)), Err("not a tag or digest"));
        check(&format!("app/blobs/sha512:{HEX}{HEX}"), Err("digest algorithm \"sha512\" is not supported"));
        check(&format!("app/manifests/md5:{HEX}"), Err("digest algorithm \"md5\" is not supported"));
        check(&format!("app/blobs/sha256:{}", HEX.to_uppercase()), Err("not a digest"));
        check("app/blobs/sha256:abc", Err("not a digest"));
        check("app/blobs/latest", Err("not a digest"));
        check("app/uploads/x", Err("not a registry key"));
        check("manifests/latest", Err("not a registry key"));
        check("/tags/list", Err("not a repository name"));
    }
}
