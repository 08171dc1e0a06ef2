//! The walk over a tar stream: header after header, the extended headers that describe the
//! next entry (PAX `x`, GNU long names `L` and `K`) or all that follow (PAX `g`) folded into it,
//! sparse maps read, data skipped, each entry handed to the index. Every size read from the
//! stream is bounded before anything is allocated for it.
//!
//! Where tar readers disagree, this follows Go's `archive/tar` (what container runtimes unpack
//! layers with): GNU long names override PAX `path`/`linkpath`; a PAX sparse file's
//! `GNU.sparse.name` overrides both; a type `\0` entry whose name ends in `/` is a directory.
//! PAX global headers apply to every later entry (POSIX), an empty PAX value removes the key.

use super::format::{IndexWriter, Parsed};
use super::header::{BLOCK, GnuSparse, Header, gnu_sparse_extension};
use super::pax::Pax;
use super::sparse::{self, DataMap, MAX_SEGMENTS, MapError, PaxSparse};
use super::stream::Stream;
use super::{Compression, EntryKind, MAX_PATH_BYTES, MAX_PAX_BYTES, corrupt};
use crate::{DeriveError, Limits};

/// What the extended headers before an entry said, waiting for the entry.
#[derive(Default)]
struct Pending {
    /// The offset of the first of them.
    start: Option<u64>,
    pax: Vec<u8>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// Where a walk puts each entry it parses.
pub(crate) trait Entries {
    /// Takes `e`; `false` stops the walk there.
    fn push(&mut self, e: &Parsed) -> Result<bool, DeriveError>;
}

impl Entries for IndexWriter {
    fn push(&mut self, e: &Parsed) -> Result<bool, DeriveError> {
        IndexWriter::push(self, e).map(|()| true)
    }
}

/// Walks the tar stream in `stream` to its end-of-archive block (or its end, or until `index`
/// says stop), pushing every entry into `index`; the offset where the archive ends (or where the
/// walk stopped).
pub(crate) fn walk(stream: &mut Stream, limits: &Limits, index: &mut dyn Entries) -> Result<u64, DeriveError> {
    let mut global = Pax::default();
    let mut global_bytes = 0u64;
    let mut pending = Pending::default();
    let mut block = [0u8; BLOCK];
    loop {
        limits.check_time()?;
        let at = stream.pos();
        let n = stream.read_full(&mut block)?;
        block[n..].fill(0);
        let is_first = at == 0;
        if n == 0 || block.iter().all(|&b| b == 0) {
            if is_first && n < BLOCK {
                return Err(DeriveError::Unsupported("the layer is too short to be a tar archive".into()));
            }
            if pending.start.is_some() {
                return Err(corrupt(at, "the archive ends after an extended header, before the entry it describes"));
            }
            if n != 0 && n < BLOCK {
                return Err(corrupt(at, "the tar stream ends inside its end-of-archive block"));
            }
            return Ok(at);
        }
        let header = Header(&block);
        if n < BLOCK || !header.checksum_ok() {
            if is_first && !header.has_magic() {
                let what = if stream.compression() == Compression::None {
                    "not a tar archive, nor gzip or zstd (by its first bytes)".to_owned()
                } else {
                    format!("the {} stream does not hold a tar archive", stream.compression().name())
                };
                return Err(DeriveError::Unsupported(what));
            }
            let why =
                if n < BLOCK { "the tar stream ends inside a header" } else { "a header's checksum does not match" };
            return Err(corrupt(at, why));
        }
        match header.typeflag() {
            b'x' | b'X' => {
                pending.start.get_or_insert(at);
                let max = MAX_PAX_BYTES - pending.pax.len() as u64;
                let data = read_meta(stream, limits, &header, at, max, "PAX header")?;
                pending.pax.extend(data);
            }
            b'g' => {
                let data = read_meta(stream, limits, &header, at, MAX_PAX_BYTES - global_bytes, "PAX global header")?;
                global_bytes += data.len() as u64;
                global.apply(&data).map_err(|e| corrupt(at, &e))?;
            }
            b'L' | b'K' => {
                pending.start.get_or_insert(at);
                let mut name = read_meta(stream, limits, &header, at, MAX_PATH_BYTES + 1, "GNU long name")?;
                name.truncate(memchr::memchr(0, &name).unwrap_or(name.len()));
                let slot = if header.typeflag() == b'L' { &mut pending.long_name } else { &mut pending.long_link };
                *slot = Some(name);
            }
            b'V' => {
                // A volume label names the archive, not a file.
                let size = header.size().map_err(|e| corrupt(at, &e))?;
                skip_data(stream, limits, at, size, || "a volume label".into())?;
            }
            b'M' => return Err(DeriveError::Unsupported("multi-volume archives are not supported".into())),
            b'N' => {
                return Err(DeriveError::Unsupported("old GNU long-name (type N) entries are not supported".into()));
            }
            _ => {
                let entry = entry(stream, limits, &header, at, &global, std::mem::take(&mut pending))?;
                if !index.push(&entry)? {
                    return Ok(stream.pos());
                }
            }
        }
    }
}

/// Reads the data of an extended header (at most `max` bytes) and skips its padding.
fn read_meta(
    stream: &mut Stream,
    limits: &Limits,
    header: &Header<'_>,
    at: u64,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, DeriveError> {
    let size = header.size().map_err(|e| corrupt(at, &e))?;
    if size > max {
        return Err(DeriveError::TooLarge(format!(
            "a {what} at offset {at} is {size} bytes, more than the {max} its limit leaves"
        )));
    }
    let mut data = vec![0u8; size as usize];
    if stream.read_full(&mut data)? < data.len() {
        return Err(corrupt(at, &format!("the tar stream ends inside a {what}")));
    }
    skip_data(stream, limits, at, 0, || format!("a {what}"))?;
    Ok(data)
}

/// Skips `remaining` bytes of data and the padding to the next block.
fn skip_data(
    stream: &mut Stream,
    limits: &Limits,
    at: u64,
    remaining: u64,
    what: impl Fn() -> String,
) -> Result<(), DeriveError> {
    let block = BLOCK as u64;
    let padding = (block - (stream.pos() % block + remaining % block) % block) % block;
    let want = remaining.saturating_add(padding);
    if stream.skip(want, limits)? < want {
        return Err(corrupt(at, &format!("the tar stream ends inside the data of {}", what())));
    }
    Ok(())
}

/// The entry whose own header is `header` (at `at`), its extended headers applied, its sparse
/// map read and its data skipped.
fn entry(
    stream: &mut Stream,
    limits: &Limits,
    header: &Header<'_>,
    at: u64,
    global: &Pax,
    pending: Pending,
) -> Result<Parsed, DeriveError> {
    let mut pax = global.clone();
    pax.apply(&pending.pax).map_err(|e| corrupt(at, &e))?;
    let pax_sparse = sparse::pax_format(&pax.sparse).map_err(DeriveError::Unsupported)?;
    let path = pax
        .sparse
        .name
        .clone()
        .filter(|_| pax_sparse.is_some())
        .or(pending.long_name)
        .or(pax.path.take())
        .unwrap_or_else(|| header.path());
    let link = pending.long_link.or(pax.linkpath.take()).unwrap_or_else(|| header.link());
    let mut e = fields(header, &mut pax, path, link, at)?;
    e.start_offset = pending.start.unwrap_or(at);
    let stored = pax.size.map_or_else(|| header.size(), Ok).map_err(|e| corrupt(at, &e))?;
    // Where the `stored` bytes the header counts begin: after an old GNU sparse header's
    // extension blocks, which it does not count; a PAX 1.0 map is counted, and read here.
    let mut region = stream.pos();
    e.size = stored;
    e.data_offset = region;
    if header.typeflag() == b'S' {
        let (segments, real) = gnu_sparse_map(stream, header, at)?;
        region = stream.pos();
        sparse::check(&segments, real, stored).map_err(|e| e.at(at))?;
        (e.data_offset, e.size, e.sparse) = (region, real, Some(segments));
    } else if let Some(format) = pax_sparse {
        let real = pax.sparse.real_size.ok_or_else(|| corrupt(at, "a PAX sparse file has no GNU.sparse.realsize"))?;
        let segments = match format {
            PaxSparse::InKeys => sparse::from_keys(&pax.sparse).map_err(|e| e.at(at))?,
            PaxSparse::InData => data_map(stream, at, stored)?,
        };
        let map_bytes = stream.pos() - region;
        sparse::check(&segments, real, stored - map_bytes).map_err(|e| e.at(at))?;
        (e.data_offset, e.size, e.sparse) = (stream.pos(), real, Some(segments));
    }
    let remaining = stored - (stream.pos() - region);
    skip_data(stream, limits, at, remaining, || format!("{:?}", String::from_utf8_lossy(&e.path)))?;
    Ok(e)
}

/// An entry's fields from its header, PAX records overriding (all but its offsets and size).
fn fields(header: &Header<'_>, pax: &mut Pax, path: Vec<u8>, link: Vec<u8>, at: u64) -> Result<Parsed, DeriveError> {
    let bad = |e: String| corrupt(at, &e);
    for (what, s) in [("path", &path), ("link target", &link)] {
        if s.len() as u64 > MAX_PATH_BYTES {
            return Err(DeriveError::TooLarge(format!(
                "an entry's {what} at offset {at} is {} bytes, more than the limit of {MAX_PATH_BYTES}",
                s.len()
            )));
        }
    }
    let kind = kind_of(header.typeflag(), &path);
    let device = match kind {
        EntryKind::Char | EntryKind::Block => {
            let (major, minor) = header.device().map_err(bad)?;
            (
                u32_of(pax.devmajor.unwrap_or(major), "device major", at)?,
                u32_of(pax.devminor.unwrap_or(minor), "device minor", at)?,
            )
        }
        _ => (0, 0),
    };
    Ok(Parsed {
        kind,
        mode: u32_of(header.mode().map_err(bad)?, "mode", at)?,
        uid: u32_of(pax.uid.map_or_else(|| header.uid(), Ok).map_err(bad)?, "uid", at)?,
        gid: u32_of(pax.gid.map_or_else(|| header.gid(), Ok).map_err(bad)?, "gid", at)?,
        mtime: match pax.mtime {
            Some(t) => t,
            None => (header.mtime().map_err(bad)?, 0),
        },
        device,
        header_offset: at,
        uname: pax.uname.take().unwrap_or_else(|| header.uname()),
        gname: pax.gname.take().unwrap_or_else(|| header.gname()),
        path,
        link: if matches!(kind, EntryKind::Symlink | EntryKind::Hardlink) { link } else { Vec::new() },
        xattrs: std::mem::take(&mut pax.xattrs).into_iter().collect(),
        ..Parsed::default()
    })
}

/// An old GNU sparse header's map: the header's own segments, then its extension blocks'; and
/// the file's real size.
fn gnu_sparse_map(stream: &mut Stream, header: &Header<'_>, at: u64) -> Result<(Vec<(u64, u64)>, u64), DeriveError> {
    let GnuSparse { mut segments, is_extended: mut extended, real_size: real } =
        header.gnu_sparse().map_err(|e| corrupt(at, &e))?;
    let mut block = [0u8; BLOCK];
    while extended {
        if stream.read_full(&mut block)? < BLOCK {
            return Err(corrupt(at, "the tar stream ends inside a GNU sparse map"));
        }
        let (more, next) = gnu_sparse_extension(&block).map_err(|e| corrupt(at, &e))?;
        segments.extend(more);
        extended = next;
        if segments.len() > MAX_SEGMENTS {
            return Err(MapError::TooMany.at(at));
        }
    }
    Ok((segments, real))
}

/// A PAX 1.0 sparse map, read from the first blocks of the entry's `stored` bytes of data.
fn data_map(stream: &mut Stream, at: u64, stored: u64) -> Result<Vec<(u64, u64)>, DeriveError> {
    let mut map = DataMap::default();
    let mut block = [0u8; BLOCK];
    let mut read = 0u64;
    loop {
        if read + BLOCK as u64 > stored {
            return Err(corrupt(at, "a PAX 1.0 sparse map runs past the entry's data"));
        }
        if stream.read_full(&mut block)? < BLOCK {
            return Err(corrupt(at, "the tar stream ends inside a PAX 1.0 sparse map"));
        }
        read += BLOCK as u64;
        let done = map.feed(&block).map_err(|e| e.at(at))?;
        if done {
            return Ok(map.segments());
        }
    }
}

/// The kind a type flag names (an unknown type is a regular file, as POSIX asks).
fn kind_of(typeflag: u8, path: &[u8]) -> EntryKind {
    match typeflag {
        b'1' => EntryKind::Hardlink,
        b'2' => EntryKind::Symlink,
        b'3' => EntryKind::Char,
        b'4' => EntryKind::Block,
        b'5' | b'D' => EntryKind::Dir,
        b'6' => EntryKind::Fifo,
        0 if path.ends_with(b"/") => EntryKind::Dir,
        _ => EntryKind::File,
    }
}

fn u32_of(n: u64, what: &str, at: u64) -> Result<u32, DeriveError> {
    u32::try_from(n).map_err(|_| corrupt(at, &format!("{what} {n} does not fit 32 bits")))
}
