//! One 512-byte tar header block: its checksum, its numeric fields (octal, and GNU's base-256
//! for values octal cannot hold), its names (with the ustar and star prefixes), and the old GNU
//! sparse map it may carry. Reads one block; knows nothing of the stream around it or of PAX.

/// A tar block's size: headers are one block, data is padded to a whole number of them.
pub(crate) const BLOCK: usize = 512;

/// Which dialect a header is written in, by its magic (`ustar\0` + `00`, GNU's `ustar  \0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Pre-POSIX (version 7) tar: no magic, no user names, no prefix.
    V7,
    /// POSIX ustar (and pax): a 155-byte name prefix.
    Ustar,
    /// Schily's star: ustar with a 131-byte prefix and `tar\0` at the block's end.
    Star,
    /// GNU tar's own format: no prefix, sparse maps, long names in `L`/`K` entries.
    Gnu,
}

/// A header block, borrowed.
pub(crate) struct Header<'a>(pub(crate) &'a [u8; BLOCK]);

impl Header<'_> {
    /// The dialect this header's magic names.
    pub(crate) fn dialect(&self) -> Dialect {
        let b = self.0;
        if &b[257..263] == b"ustar\0" {
            if &b[508..512] == b"tar\0" { Dialect::Star } else { Dialect::Ustar }
        } else if &b[257..263] == b"ustar " {
            Dialect::Gnu
        } else {
            Dialect::V7
        }
    }

    /// Whether the magic says ustar or GNU (a header that fails its checksum with such a magic
    /// is a damaged tar rather than something else).
    pub(crate) fn has_magic(&self) -> bool {
        self.dialect() != Dialect::V7
    }

    /// Whether the checksum field matches the block (as an unsigned sum, or a signed one as
    /// some old tars wrote it).
    pub(crate) fn checksum_ok(&self) -> bool {
        let Ok(stored) = numeric(&self.0[148..156]) else { return false };
        let (mut unsigned, mut signed) = (0i64, 0i64);
        for (i, &b) in self.0.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += i64::from(b);
            signed += i64::from(b as i8);
        }
        stored == unsigned || stored == signed
    }

    /// The type flag.
    pub(crate) fn typeflag(&self) -> u8 {
        self.0[156]
    }

    /// The path the header itself holds: `prefix/name` in ustar and star, else `name`.
    pub(crate) fn path(&self) -> Vec<u8> {
        let name = cstr(&self.0[0..100]);
        let prefix = match self.dialect() {
            Dialect::Ustar => cstr(&self.0[345..500]),
            Dialect::Star => cstr(&self.0[345..476]),
            Dialect::V7 | Dialect::Gnu => &[],
        };
        if prefix.is_empty() { name.to_vec() } else { [prefix, b"/", name].concat() }
    }

    /// The link target the header itself holds.
    pub(crate) fn link(&self) -> Vec<u8> {
        cstr(&self.0[157..257]).to_vec()
    }

    /// The user name (empty in v7 headers, which have none).
    pub(crate) fn uname(&self) -> Vec<u8> {
        if self.dialect() == Dialect::V7 { Vec::new() } else { cstr(&self.0[265..297]).to_vec() }
    }

    /// The group name (empty in v7 headers).
    pub(crate) fn gname(&self) -> Vec<u8> {
        if self.dialect() == Dialect::V7 { Vec::new() } else { cstr(&self.0[297..329]).to_vec() }
    }

    /// The mode field.
    pub(crate) fn mode(&self) -> Result<u64, String> {
        unsigned(&self.0[100..108], "mode")
    }

    /// The uid field.
    pub(crate) fn uid(&self) -> Result<u64, String> {
        unsigned(&self.0[108..116], "uid")
    }

    /// The gid field.
    pub(crate) fn gid(&self) -> Result<u64, String> {
        unsigned(&self.0[116..124], "gid")
    }

    /// The size field: how many bytes of data follow (before PAX's `size` overrides it).
    pub(crate) fn size(&self) -> Result<u64, String> {
        unsigned(&self.0[124..136], "size")
    }

    /// The mtime field, in seconds since the epoch (negative in base-256).
    pub(crate) fn mtime(&self) -> Result<i64, String> {
        numeric(&self.0[136..148]).map_err(|e| format!("mtime: {e}"))
    }

    /// The device major and minor numbers (zero in v7 headers).
    pub(crate) fn device(&self) -> Result<(u64, u64), String> {
        if self.dialect() == Dialect::V7 {
            return Ok((0, 0));
        }
        Ok((unsigned(&self.0[329..337], "devmajor")?, unsigned(&self.0[337..345], "devminor")?))
    }

    /// A GNU sparse header's own part of the map.
    pub(crate) fn gnu_sparse(&self) -> Result<GnuSparse, String> {
        Ok(GnuSparse {
            segments: sparse_segments(&self.0[386..482])?,
            is_extended: self.0[482] != 0,
            real_size: unsigned(&self.0[483..495], "sparse real size")?,
        })
    }
}

/// What an old GNU sparse header (type `S`) holds of its file's map.
pub(crate) struct GnuSparse {
    /// Its first segments (up to four), `(offset, length)`.
    pub(crate) segments: Vec<(u64, u64)>,
    /// Whether extension blocks with more segments follow the header.
    pub(crate) is_extended: bool,
    /// The file's logical size.
    pub(crate) real_size: u64,
}

/// The segments of a GNU sparse extension block (up to 21) and whether another block follows.
pub(crate) fn gnu_sparse_extension(block: &[u8; BLOCK]) -> Result<(Vec<(u64, u64)>, bool), String> {
    Ok((sparse_segments(&block[..504])?, block[504] != 0))
}

/// The `(offset, length)` pairs of a GNU sparse array (24 bytes each), up to the first empty one.
fn sparse_segments(array: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let mut out = Vec::new();
    for slot in array.chunks_exact(24) {
        if slot[0] == 0 {
            break;
        }
        out.push((unsigned(&slot[..12], "sparse offset")?, unsigned(&slot[12..], "sparse length")?));
    }
    Ok(out)
}

/// `field` up to its first NUL (all of it when there is none).
fn cstr(field: &[u8]) -> &[u8] {
    match memchr::memchr(0, field) {
        Some(i) => &field[..i],
        None => field,
    }
}

/// A numeric field that must not be negative.
fn unsigned(field: &[u8], what: &str) -> Result<u64, String> {
    let n = numeric(field).map_err(|e| format!("{what}: {e}"))?;
    u64::try_from(n).map_err(|_| format!("{what} is negative ({n})"))
}

/// A numeric field: octal digits (leading and trailing spaces and NULs ignored; empty is 0), or
/// GNU base-256 when the first byte's high bit is set (0xff starts a negative number).
pub(crate) fn numeric(field: &[u8]) -> Result<i64, String> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        return base256(field);
    }
    let start = field.iter().position(|&b| b != 0 && b != b' ').unwrap_or(field.len());
    let trimmed = &field[start..];
    let end = trimmed.iter().position(|&b| b == 0 || b == b' ').unwrap_or(trimmed.len());
    let (digits, rest) = trimmed.split_at(end);
    if rest.iter().any(|&b| b != 0 && b != b' ') {
        return Err(format!("{:?} is not an octal number", String::from_utf8_lossy(field)));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return Err(format!("{:?} is not an octal number", String::from_utf8_lossy(field)));
        }
        n = n.checked_mul(8).and_then(|n| n.checked_add(i64::from(d - b'0'))).ok_or("octal number too large")?;
    }
    Ok(n)
}

/// GNU's base-256: the first byte's high bit marks it, the rest of the bits are a big-endian
/// two's-complement number.
fn base256(field: &[u8]) -> Result<i64, String> {
    let negative = field[0] & 0x40 != 0;
    let fill: u8 = if negative { 0xff } else { 0 };
    let first = if negative { field[0] | 0x80 } else { field[0] & 0x7f };
    let bytes: Vec<u8> = std::iter::once(first).chain(field[1..].iter().copied()).collect();
    let significant = bytes.len().saturating_sub(8);
    if bytes[..significant].iter().any(|&b| b != fill) {
        return Err("base-256 number too large".into());
    }
    let mut buf = [fill; 8];
    let tail = &bytes[significant..];
    buf[8 - tail.len()..].copy_from_slice(tail);
    let n = i64::from_be_bytes(buf);
    if (n < 0) != negative {
        return Err("base-256 number too large".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_read_octal_and_base256() {
        assert_eq!(numeric(b"0000644\0"), Ok(0o644));
        assert_eq!(numeric(b"  644 \0"), Ok(0o644));
        assert_eq!(numeric(b"\0\0\0\0"), Ok(0));
        assert_eq!(numeric(b"\0 644\0"), Ok(0o644));
        assert_eq!(numeric(b"77777777777\0"), Ok(0o77777777777));
        assert!(numeric(b"12a4\0").is_err());
        assert!(numeric(b"12 4\0").is_err());
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4..].copy_from_slice(&(10u64 << 30).to_be_bytes());
        assert_eq!(numeric(&big), Ok(10 << 30));
        let mut neg = [0xffu8; 12];
        neg[11] = 0xfe;
        assert_eq!(numeric(&neg), Ok(-2));
        let mut huge = [0u8; 12];
        huge[0] = 0x80;
        huge[3] = 1;
        assert!(numeric(&huge).is_err());
        let mut top = [0u8; 12];
        top[0] = 0x80;
        top[4] = 0x80;
        assert!(numeric(&top).is_err(), "2^63 does not fit an i64");
    }
}
