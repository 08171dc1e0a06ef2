//! PAX extended headers (`x` for the next entry, `g` for all that follow): their records
//! (`LEN KEY=VALUE\n`) and the keys an index keeps — `path`, `linkpath`, `size`, `uid`, `gid`,
//! `uname`, `gname`, `mtime` (fractional), star's device numbers, extended attributes
//! (`SCHILY.xattr.NAME` with raw values, `LIBARCHIVE.xattr.NAME` with a percent-encoded name and a
//! base64 value) and GNU's sparse keys. Other keys (`atime`, `comment`, ACLs, …) are ignored.
//! The caller bounds the header's size before reading it.

use std::collections::BTreeMap;

use base64::Engine as _;

/// What PAX records said, in the order they came (a later record overrides an earlier one; an
/// empty value removes the key, so the header's own field applies again).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pax {
    pub(crate) path: Option<Vec<u8>>,
    pub(crate) linkpath: Option<Vec<u8>>,
    pub(crate) uname: Option<Vec<u8>>,
    pub(crate) gname: Option<Vec<u8>>,
    pub(crate) size: Option<u64>,
    pub(crate) uid: Option<u64>,
    pub(crate) gid: Option<u64>,
    /// Seconds and nanoseconds (`0..1e9`, so `-1.25` is `(-2, 750_000_000)`).
    pub(crate) mtime: Option<(i64, u32)>,
    pub(crate) devmajor: Option<u64>,
    pub(crate) devminor: Option<u64>,
    pub(crate) xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) sparse: SparseKeys,
}

/// GNU tar's sparse keys (formats 0.0, 0.1 and 1.0; `super::sparse` makes a map of them).
#[derive(Debug, Clone, Default)]
pub(crate) struct SparseKeys {
    /// `GNU.sparse.major` and `GNU.sparse.minor` (1.0 only).
    pub(crate) version: (Option<u64>, Option<u64>),
    /// `GNU.sparse.name`: the file's real path (1.0 and some 0.1).
    pub(crate) name: Option<Vec<u8>>,
    /// `GNU.sparse.realsize` (1.0) or `GNU.sparse.size` (0.x): the file's logical size.
    pub(crate) real_size: Option<u64>,
    /// `GNU.sparse.numblocks` (0.x).
    pub(crate) n_blocks: Option<u64>,
    /// `GNU.sparse.map` (0.1): `offset,length,offset,length,…`.
    pub(crate) map: Option<Vec<u8>>,
    /// `GNU.sparse.offset` / `GNU.sparse.numbytes` pairs in order (0.0).
    pub(crate) pairs: Vec<(u64, u64)>,
    /// A 0.0 `GNU.sparse.offset` still waiting for its `numbytes`.
    pub(crate) pending_offset: Option<u64>,
}

impl SparseKeys {
    /// Whether any key says the entry is a PAX sparse file.
    pub(crate) fn any(&self) -> bool {
        self.version.0.is_some()
            || self.map.is_some()
            || self.n_blocks.is_some()
            || !self.pairs.is_empty()
            || self.pending_offset.is_some()
    }
}

impl Pax {
    /// Applies the records of one PAX header's data, in order; `Err` says what is malformed.
    pub(crate) fn apply(&mut self, data: &[u8]) -> Result<(), String> {
        let mut rest = data;
        while !rest.is_empty() {
            // Some writers pad the data with NULs; nothing follows them.
            if rest.iter().all(|&b| b == 0) {
                break;
            }
            let record = Record::parse(rest)?;
            self.set(record.key, record.value)?;
            rest = record.rest;
        }
        Ok(())
    }

    fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let text = |what: &str| -> Result<Option<Vec<u8>>, String> {
            if value.contains(&0) {
                return Err(format!("pax {what} holds a NUL byte"));
            }
            Ok((!value.is_empty()).then(|| value.to_vec()))
        };
        let number = |what: &str| -> Result<Option<u64>, String> {
            if value.is_empty() { Ok(None) } else { decimal(value).map(Some).map_err(|e| format!("pax {what}: {e}")) }
        };
        match key {
            b"path" => self.path = text("path")?,
            b"linkpath" => self.linkpath = text("linkpath")?,
            b"uname" => self.uname = text("uname")?,
            b"gname" => self.gname = text("gname")?,
            b"size" => self.size = number("size")?,
            b"uid" => self.uid = number("uid")?,
            b"gid" => self.gid = number("gid")?,
            b"mtime" => {
                self.mtime =
                    if value.is_empty() { None } else { Some(time(value).map_err(|e| format!("pax mtime: {e}"))?) }
            }
            b"SCHILY.devmajor" => self.devmajor = number("SCHILY.devmajor")?,
            b"SCHILY.devminor" => self.devminor = number("SCHILY.devminor")?,
            b"GNU.sparse.major" => self.sparse.version.0 = number("GNU.sparse.major")?,
            b"GNU.sparse.minor" => self.sparse.version.1 = number("GNU.sparse.minor")?,
            b"GNU.sparse.name" => self.sparse.name = text("GNU.sparse.name")?,
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => self.sparse.real_size = number("GNU.sparse.realsize")?,
            b"GNU.sparse.numblocks" => self.sparse.n_blocks = number("GNU.sparse.numblocks")?,
            b"GNU.sparse.map" => self.sparse.map = Some(value.to_vec()),
            b"GNU.sparse.offset" => {
                if self.sparse.pending_offset.is_some() {
                    return Err("pax GNU.sparse.offset without its GNU.sparse.numbytes".into());
                }
                self.sparse.pending_offset = number("GNU.sparse.offset")?.or(Some(0));
            }
            b"GNU.sparse.numbytes" => {
                let offset = self
                    .sparse
                    .pending_offset
                    .take()
                    .ok_or("pax GNU.sparse.numbytes without a GNU.sparse.offset before it")?;
                self.sparse.pairs.push((offset, number("GNU.sparse.numbytes")?.unwrap_or(0)));
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.set_xattr(name.to_vec(), value.to_vec());
                } else if let Some(name) = key.strip_prefix(b"LIBARCHIVE.xattr.") {
                    let name = percent_decode(name).ok_or("pax LIBARCHIVE.xattr name is not percent-encoded")?;
                    let value = base64_decode(value).ok_or("pax LIBARCHIVE.xattr value is not base64")?;
                    self.set_xattr(name, value);
                }
            }
        }
        Ok(())
    }

    fn set_xattr(&mut self, name: Vec<u8>, value: Vec<u8>) {
        if !name.is_empty() {
            self.xattrs.insert(name, value);
        }
    }
}

/// One record of a PAX header's data.
struct Record<'a> {
    key: &'a [u8],
    value: &'a [u8],
    /// The data after the record.
    rest: &'a [u8],
}

impl Record<'_> {
    /// The record at the start of `data`.
    fn parse(data: &[u8]) -> Result<Record<'_>, String> {
        let space =
            memchr::memchr(b' ', &data[..data.len().min(24)]).ok_or("a pax record does not start with its length")?;
        let len = decimal(&data[..space]).map_err(|e| format!("pax record length: {e}"))?;
        let len = usize::try_from(len).ok().filter(|&n| n > space + 1 && n <= data.len());
        let Some(len) = len else {
            return Err("a pax record's length runs past its header".into());
        };
        let body = &data[space + 1..len];
        let Some((&b'\n', body)) = body.split_last() else {
            return Err("a pax record does not end with a newline".into());
        };
        let eq = memchr::memchr(b'=', body).filter(|&i| i > 0).ok_or("a pax record has no key=value")?;
        Ok(Record { key: &body[..eq], value: &body[eq + 1..], rest: &data[len..] })
    }
}

/// A decimal number of at most 19 digits, nothing else.
pub(crate) fn decimal(digits: &[u8]) -> Result<u64, String> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!("{:?} is not a decimal number", String::from_utf8_lossy(&digits[..digits.len().min(32)])));
    }
    Ok(digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// A PAX time, `[-]SECONDS[.FRACTION]`: seconds, and nanoseconds in `0..1e9` (digits past the
/// ninth are dropped, so the time is rounded toward negative infinity for negative times too).
pub(crate) fn time(value: &[u8]) -> Result<(i64, u32), String> {
    let (negative, unsigned) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = match memchr::memchr(b'.', unsigned) {
        Some(i) => (&unsigned[..i], &unsigned[i + 1..]),
        None => (unsigned, &b""[..]),
    };
    let secs = i64::try_from(decimal(whole)?).map_err(|_| "seconds out of range")?;
    if !fraction.iter().all(u8::is_ascii_digit) {
        return Err(format!("{:?} is not a time", String::from_utf8_lossy(&value[..value.len().min(32)])));
    }
    let mut nanos = 0u32;
    for i in 0..9 {
        nanos = nanos * 10 + fraction.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !negative {
        return Ok((secs, nanos));
    }
    // -S.F is -(S+1) + (1 - 0.F) when F is not zero.
    let lost = fraction.len() > 9 && fraction[9..].iter().any(|&d| d != b'0');
    if nanos == 0 && !lost { Ok((-secs, 0)) } else { Ok((-secs - 1, 1_000_000_000 - nanos - u32::from(lost))) }
}

/// `%XX` escapes decoded (libarchive writes xattr names so); `None` for a broken escape.
fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Standard base64, padded or not (libarchive writes it without padding).
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    ENGINE.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in pairs {
            let body = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            out.extend(format!("{len} {k}=").as_bytes());
            out.extend(*v);
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn records_set_the_keys_an_index_keeps() {
        let mut pax = Pax::default();
        pax.apply(&records(&[
            ("path", b"a/\xffb=c\nd"),
            ("mtime", b"1700000000.123456789123"),
            ("uid", b"4294967295"),
            ("SCHILY.xattr.user.k", b"v\0\xff"),
            ("LIBARCHIVE.xattr.user.a%20b", b"aGVsbG8"),
            ("atime", b"1"),
            ("GNU.sparse.offset", b"0"),
            ("GNU.sparse.numbytes", b"10"),
            ("GNU.sparse.offset", b"4096"),
            ("GNU.sparse.numbytes", b"0"),
        ]))
        .unwrap();
        assert_eq!(pax.path.as_deref(), Some(&b"a/\xffb=c\nd"[..]));
        assert_eq!(pax.mtime, Some((1_700_000_000, 123_456_789)));
        assert_eq!(pax.uid, Some(u64::from(u32::MAX)));
        assert_eq!(pax.xattrs.get(&b"user.k"[..]).map(Vec::as_slice), Some(&b"v\0\xff"[..]));
        assert_eq!(pax.xattrs.get(&b"user.a b"[..]).map(Vec::as_slice), Some(&b"hello"[..]));
        assert_eq!(pax.sparse.pairs, vec![(0, 10), (4096, 0)]);
        pax.apply(&records(&[("path", b"")])).unwrap();
        assert_eq!(pax.path, None, "an empty value removes the key");
    }

    #[test]
    fn malformed_records_are_refused() {
        for bad in [&b"5 a=b\n"[..], b"100 path=x\n", b"12 path=abc!", b"x path=a\n", b"9 =value\n", b"7 nokey\n"] {
            assert!(Pax::default().apply(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(Pax::default().apply(&records(&[("path", b"a\0b")])).is_err());
        assert!(Pax::default().apply(&records(&[("size", b"-1")])).is_err());
        assert!(Pax::default().apply(&records(&[("mtime", b"1.2x")])).is_err());
        assert!(Pax::default().apply(&records(&[("GNU.sparse.numbytes", b"1")])).is_err());
    }

    #[test]
    fn times_keep_their_fraction_and_sign() {
        assert_eq!(time(b"12"), Ok((12, 0)));
        assert_eq!(time(b"12.5"), Ok((12, 500_000_000)));
        assert_eq!(time(b"-1.25"), Ok((-2, 750_000_000)));
        assert_eq!(time(b"-3"), Ok((-3, 0)));
        assert_eq!(time(b"-3.000"), Ok((-3, 0)));
        assert!(time(b"").is_err());
        assert!(time(b"1.2.3").is_err());
    }
}
