//! Paths inside an image: the normalized form every entry is looked up by, and OCI whiteout
//! names. Purely lexical: nothing here looks at a file system or follows a symlink.

use std::borrow::Cow;

/// `raw`, an entry's path as its tar stream spells it, relative to the image root.
///
/// The rules, applied component by component (components are split on `/`):
/// 1. empty components (a leading `/`, `//`, a trailing `/`) and `.` are dropped;
/// 2. `..` removes the component before it, and at the root it is dropped: the path never
///    escapes the root, so `../../etc/passwd` and `/etc/passwd` are both `etc/passwd`, and
///    `a/../../b` is `b` (as `path.Clean("/" + raw)` in Go, which container runtimes apply);
/// 3. the kept components are joined by single `/`s, with no leading or trailing `/`.
///
/// The root itself (`.`, `./`, `/`) is the empty path. Bytes other than `/` are kept as they are
/// (invalid UTF-8 included). Borrows `raw` when it is already normalized.
pub fn normalize_path(raw: &[u8]) -> Cow<'_, [u8]> {
    if is_normalized(raw) {
        return Cow::Borrowed(raw);
    }
    let mut kept: Vec<&[u8]> = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                kept.pop();
            }
            name => kept.push(name),
        }
    }
    Cow::Owned(kept.join(&b'/'))
}

/// Whether `path` is already in the form [`normalize_path`] gives.
fn is_normalized(path: &[u8]) -> bool {
    path.is_empty() || path.split(|&b| b == b'/').all(|c| !matches!(c, b"" | b"." | b".."))
}

/// What an OCI whiteout entry means for the layers below it (the image-spec's "Whiteouts").
/// The entry itself stays an ordinary entry of its layer's index; merging layers applies this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Whiteout {
    /// `DIR/.wh.NAME`: `DIR/NAME` of the layers below is deleted
    /// ([`super::TarEntry::whited_out_path`] gives it).
    Removes,
    /// `DIR/.wh..wh..opq`: `DIR`'s contents from the layers below are hidden.
    Opaque,
    /// Another `.wh..wh.` name (aufs' own bookkeeping, such as `.wh..wh.plnk`): neither a file
    /// of the image nor a deletion; unpackers skip it.
    AufsMeta,
}

impl Whiteout {
    /// The whiteout a normalized path's last component names, if any.
    pub(crate) fn of(normalized: &[u8]) -> Option<Whiteout> {
        let name = base_name(normalized);
        if name == b".wh..wh..opq" {
            Some(Whiteout::Opaque)
        } else if name.starts_with(b".wh..wh.") {
            Some(Whiteout::AufsMeta)
        } else if name.len() > 4 && name.starts_with(b".wh.") {
            Some(Whiteout::Removes)
        } else {
            None
        }
    }

    /// The code stored in the index (0 is "not a whiteout").
    pub(crate) fn code(this: Option<Whiteout>) -> u8 {
        match this {
            None => 0,
            Some(Whiteout::Removes) => 1,
            Some(Whiteout::Opaque) => 2,
            Some(Whiteout::AufsMeta) => 3,
        }
    }

    /// The whiteout for a stored code; `Err` for an unknown code.
    pub(crate) fn from_code(code: u8) -> Result<Option<Whiteout>, ()> {
        match code {
            0 => Ok(None),
            1 => Ok(Some(Whiteout::Removes)),
            2 => Ok(Some(Whiteout::Opaque)),
            3 => Ok(Some(Whiteout::AufsMeta)),
            _ => Err(()),
        }
    }
}

/// The path a [`Whiteout::Removes`] entry at `normalized` deletes: its directory joined with the
/// name after `.wh.`.
pub(crate) fn whited_out(normalized: &[u8]) -> Vec<u8> {
    let name = base_name(normalized);
    let dir = &normalized[..normalized.len() - name.len()];
    [dir, &name[4..]].concat()
}

/// The last component of a normalized path (all of it when there is no `/`).
fn base_name(normalized: &[u8]) -> &[u8] {
    match memchr::memrchr(b'/', normalized) {
        Some(i) => &normalized[i + 1..],
        None => normalized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> String {
        String::from_utf8(normalize_path(raw.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn paths_are_normalized_inside_the_root() {
        for (raw, want) in [
            ("usr/bin/env", "usr/bin/env"),
            ("./usr/bin/", "usr/bin"),
            ("/etc/passwd", "etc/passwd"),
            ("../../etc/passwd", "etc/passwd"),
            ("a/../../b", "b"),
            ("a/b/../c/./d//e/", "a/c/d/e"),
            (".", ""),
            ("./", ""),
            ("/", ""),
            ("..", ""),
            ("", ""),
            ("...", "..."),
            ("a/..b", "a/..b"),
        ] {
            assert_eq!(norm(raw), want, "{raw:?}");
        }
        assert!(matches!(normalize_path(b"usr/bin"), Cow::Borrowed(_)));
        assert_eq!(normalize_path(b"./\xff\xfe/x").as_ref(), b"\xff\xfe/x");
    }

    #[test]
    fn whiteouts_are_recognized_by_their_last_component() {
        assert_eq!(Whiteout::of(b"etc/.wh.passwd"), Some(Whiteout::Removes));
        assert_eq!(whited_out(b"etc/.wh.passwd"), b"etc/passwd");
        assert_eq!(whited_out(b".wh.top"), b"top");
        assert_eq!(Whiteout::of(b"etc/.wh..wh..opq"), Some(Whiteout::Opaque));
        assert_eq!(Whiteout::of(b".wh..wh.plnk"), Some(Whiteout::AufsMeta));
        assert_eq!(Whiteout::of(b"etc/.wh."), None);
        assert_eq!(Whiteout::of(b".wh.dir/file"), None);
        assert_eq!(Whiteout::of(b"etc/passwd"), None);
        for w in [None, Some(Whiteout::Removes), Some(Whiteout::Opaque), Some(Whiteout::AufsMeta)] {
            assert_eq!(Whiteout::from_code(Whiteout::code(w)), Ok(w));
        }
    }
}
