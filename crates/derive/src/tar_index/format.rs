//! The index's binary format, version 1: what the `tar-index` recipe writes and [`TarIndex`] reads.
//! Fixed-size entry records and a table of entry numbers sorted by path make loading a bounds
//! check (no parsing, no allocation) and a lookup a binary search over the bytes as loaded.
//!
//! Why not JSON Lines: for the same 100 000 entries (`examples/tar_index.rs`, `json`; paths of
//! 35 bytes), JSON Lines took 16.5 MB against this format's 15.0 MB, and 56 to 76 ms to parse and
//! map by path against 2.4 to 3.5 ms to load this one, which then needs no map (and can be used
//! from a memory map as it is).
//!
//! # Layout
//!
//! Integers are little-endian; offsets into the tar stream count uncompressed bytes from its
//! start. The file is exactly `64 + 112·N + 4·N + V` bytes:
//!
//! ```text
//! header, 64 bytes
//!   0  [u8; 8]  magic "TCTARIDX"
//!   8  u32      format version: 1
//!   12 u8       the layer's compression: 0 none, 1 gzip, 2 zstd
//!   13 [u8; 3]  zero
//!   16 u64      N, the number of entries
//!   24 u64      the tar stream's length (uncompressed, through its end)
//!   32 u64      offset of the end-of-archive block (the stream's length if it has none)
//!   40 u64      V, the length of the variable part
//!   48 [u8; 16] zero
//! records, N × 112 bytes, in the order of the tar stream
//!   0  u8   kind: 0 file, 1 hardlink, 2 symlink, 3 char device, 4 block device, 5 dir, 6 fifo
//!   1  u8   whiteout: 0 none, 1 removes (.wh.NAME), 2 opaque (.wh..wh..opq), 3 aufs metadata
//!   2  u8   flags: bit 0 the normalized path is stored on its own (else it lies inside the
//!           raw path, at norm_start), bit 1 the entry is a sparse file; other bits zero
//!   3  u8   zero
//!   4  u32  mode (the header's mode field as written, type bits included if the writer put them)
//!   8  u32  uid
//!   12 u32  gid
//!   16 i64  mtime, seconds since the epoch
//!   24 u32  mtime, nanoseconds (0..1e9)
//!   28 u32  device major (char and block devices; else 0)
//!   32 u32  device minor
//!   36 u32  number of extended attributes
//!   40 u64  offset of the entry's first header (its PAX or GNU long-name header if it has one)
//!   48 u64  offset of the entry's own header block (the one with its type)
//!   56 u64  offset of its data (for a sparse file: of its first segment's data)
//!   64 u64  size: the file's logical size (a sparse file's full size with its holes)
//!   72 u64  offset of the entry's variable part within the variable part
//!   80 u32  raw path length     84 u32 norm_start     88 u32 normalized path length
//!   92 u32  link target length  96 u32 uname length  100 u32 gname length
//!   104 u32 number of sparse segments   108 u32 zero
//! by path, N × u32: entry numbers sorted by normalized path (bytewise), entries with the same
//!   path in stream order
//! variable part, V bytes: for each entry, at its offset, in this order
//!   sparse segments × (u64 offset in the file, u64 length): their data is stored one after the
//!     other from the data offset
//!   raw path, normalized path (if stored on its own), link target, uname, gname
//!   xattrs × (u32 name length, u32 value length, name, value), sorted by name
//! ```
//!
//! A non-sparse entry's data is `size` bytes at its data offset. Strings are bytes as the tar
//! stream holds them (no encoding is assumed).

use std::io::Write;

use super::path::{Whiteout, normalize_path, whited_out};
use super::{Compression, EntryKind, MAX_ENTRIES};
use crate::{Capped, DeriveError};

/// The file's first bytes.
const MAGIC: [u8; 8] = *b"TCTARIDX";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const HEADER_LEN: usize = 64;
const RECORD_LEN: usize = 112;
const FLAG_NORM_SEPARATE: u8 = 1;
const FLAG_SPARSE: u8 = 2;

/// One tar entry as parsed, before it goes into the index.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parsed {
    pub(crate) kind: EntryKind,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: (i64, u32),
    pub(crate) device: (u32, u32),
    pub(crate) start_offset: u64,
    pub(crate) header_offset: u64,
    pub(crate) data_offset: u64,
    pub(crate) size: u64,
    pub(crate) path: Vec<u8>,
    pub(crate) link: Vec<u8>,
    pub(crate) uname: Vec<u8>,
    pub(crate) gname: Vec<u8>,
    pub(crate) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) sparse: Option<Vec<(u64, u64)>>,
}

/// Builds an index in memory, entry by entry, within a byte budget, then writes it.
pub(crate) struct IndexWriter {
    records: Vec<u8>,
    var: Vec<u8>,
    n: usize,
    /// The most bytes the index may take (in memory and written).
    max_bytes: u64,
}

impl IndexWriter {
    /// An empty index that refuses to grow past `max_bytes`.
    pub(crate) fn new(max_bytes: u64) -> IndexWriter {
        IndexWriter { records: Vec::new(), var: Vec::new(), n: 0, max_bytes }
    }

    /// Adds `e`, after the entries before it in the stream.
    pub(crate) fn push(&mut self, e: &Parsed) -> Result<(), DeriveError> {
        if self.n >= MAX_ENTRIES {
            return Err(DeriveError::TooLarge(format!("the layer has more than {MAX_ENTRIES} entries")));
        }
        let normalized = normalize_path(&e.path);
        let whiteout = Whiteout::of(&normalized);
        let inside = if normalized.is_empty() { Some(0) } else { memchr::memmem::find(&e.path, &normalized) };
        let var_offset = self.var.len() as u64;
        let sparse = e.sparse.as_deref().unwrap_or(&[]);
        for &(offset, len) in sparse {
            self.var.extend(offset.to_le_bytes());
            self.var.extend(len.to_le_bytes());
        }
        self.var.extend(&e.path);
        if inside.is_none() {
            self.var.extend(normalized.as_ref());
        }
        for s in [&e.link, &e.uname, &e.gname] {
            self.var.extend(s);
        }
        for (name, value) in &e.xattrs {
            self.var.extend(len32(name).to_le_bytes());
            self.var.extend(len32(value).to_le_bytes());
            self.var.extend(name);
            self.var.extend(value);
        }
        let flags =
            if inside.is_none() { FLAG_NORM_SEPARATE } else { 0 } | if e.sparse.is_some() { FLAG_SPARSE } else { 0 };
        let mut r = [0u8; RECORD_LEN];
        r[0] = e.kind.code();
        r[1] = Whiteout::code(whiteout);
        r[2] = flags;
        put32(&mut r, 4, e.mode);
        put32(&mut r, 8, e.uid);
        put32(&mut r, 12, e.gid);
        r[16..24].copy_from_slice(&e.mtime.0.to_le_bytes());
        put32(&mut r, 24, e.mtime.1);
        put32(&mut r, 28, e.device.0);
        put32(&mut r, 32, e.device.1);
        put32(&mut r, 36, len32(&e.xattrs));
        for (at, v) in
            [(40, e.start_offset), (48, e.header_offset), (56, e.data_offset), (64, e.size), (72, var_offset)]
        {
            put64(&mut r, at, v);
        }
        put32(&mut r, 80, len32(&e.path));
        put32(&mut r, 84, inside.map_or(0, |i| i as u32));
        put32(&mut r, 88, len32(&normalized));
        put32(&mut r, 92, len32(&e.link));
        put32(&mut r, 96, len32(&e.uname));
        put32(&mut r, 100, len32(&e.gname));
        put32(&mut r, 104, len32(sparse));
        self.records.extend(r);
        self.n += 1;
        if self.len_bytes() > self.max_bytes {
            return Err(DeriveError::TooLarge(format!(
                "the index of this layer would be larger than {} bytes (at entry {})",
                self.max_bytes, self.n
            )));
        }
        Ok(())
    }

    /// The bytes the finished index will take.
    fn len_bytes(&self) -> u64 {
        (HEADER_LEN + self.records.len() + 4 * self.n + self.var.len()) as u64
    }

    /// Writes the index of a stream of `tar_bytes` bytes whose end-of-archive block is at
    /// `end_offset`, into `out` (at most the writer's budget).
    pub(crate) fn finish(
        self,
        compression: Compression,
        tar_bytes: u64,
        end_offset: u64,
        out: &mut dyn Write,
    ) -> Result<(), DeriveError> {
        let mut by_path: Vec<u32> = (0..self.n as u32).collect();
        by_path.sort_by(|&a, &b| self.normalized(a as usize).cmp(self.normalized(b as usize)));
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(&MAGIC);
        put32(&mut header, 8, FORMAT_VERSION);
        header[12] = compression.code();
        for (at, v) in [(16, self.n as u64), (24, tar_bytes), (32, end_offset), (40, self.var.len() as u64)] {
            put64(&mut header, at, v);
        }
        let mut out = Capped::new(out, self.max_bytes);
        let mut write = |bytes: &[u8]| out.put(bytes);
        write(&header)?;
        write(&self.records)?;
        let table: Vec<u8> = by_path.iter().flat_map(|i| i.to_le_bytes()).collect();
        write(&table)?;
        write(&self.var)
    }

    /// Entry `i`'s normalized path, from what was pushed.
    fn normalized(&self, i: usize) -> &[u8] {
        let r = &self.records[i * RECORD_LEN..(i + 1) * RECORD_LEN];
        normalized_of(r, &self.var)
    }
}

/// A record's normalized path in `var` (the record was checked, or written by this module).
fn normalized_of<'a>(r: &[u8], var: &'a [u8]) -> &'a [u8] {
    let at = get64(r, 72) as usize + 16 * get32(r, 104) as usize;
    let (path_len, start, len) = (get32(r, 80) as usize, get32(r, 84) as usize, get32(r, 88) as usize);
    if r[2] & FLAG_NORM_SEPARATE != 0 {
        &var[at + path_len..at + path_len + len]
    } else {
        &var[at + start..at + start + len]
    }
}

/// A length that fits the format's `u32` (the parser bounds every string and list far below).
fn len32<T>(s: &[T]) -> u32 {
    u32::try_from(s.len()).expect("lengths are bounded by the parser")
}

fn put32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn get64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// Why bytes could not be loaded as a [`TarIndex`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarIndexError {
    /// The bytes do not start with the index's magic: they are something else.
    #[error("not a tar index (no TCTARIDX magic)")]
    NotAnIndex,
    /// The index was written in a format version this build does not read: derive it again.
    #[error(
        "tar index format version {found} is not supported (this build reads version {FORMAT_VERSION}); derive it again"
    )]
    Version {
        /// The version the bytes say.
        found: u32,
    },
    /// The index is damaged or its counts and lengths do not add up (it is refused whole, so no
    /// lookup ever reads out of bounds).
    #[error("the tar index is corrupt: {0}")]
    Corrupt(String),
}

/// A loaded index of one layer: its entries in stream order, and lookups by normalized path.
///
/// `B` holds the index's bytes (a `Vec<u8>`, an `Arc<[u8]>`, a memory map…); loading checks
/// them once and allocates nothing, and entries are read from them in place.
#[derive(Debug, Clone)]
pub struct TarIndex<B = Vec<u8>> {
    bytes: B,
    /// Invariant: `bytes` passed [`TarIndex::load`]'s checks with this many entries.
    n: usize,
}

impl<B: AsRef<[u8]>> TarIndex<B> {
    /// Checks `bytes` and takes them as an index: the magic, the version, every count and
    /// length (at most [`MAX_ENTRIES`] entries; every string, list and offset inside the file;
    /// the path table a sorted list of entry numbers). O(size of the index); allocates nothing.
    pub fn load(bytes: B) -> Result<TarIndex<B>, TarIndexError> {
        let n = check(bytes.as_ref())?;
        Ok(TarIndex { bytes, n })
    }

    /// The bytes it was loaded from.
    pub fn into_inner(self) -> B {
        self.bytes
    }

    /// The length of the bytes it was loaded from.
    pub fn byte_len(&self) -> usize {
        self.bytes.as_ref().len()
    }

    /// How many entries the layer has.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the layer has no entries.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The layer's compression.
    pub fn compression(&self) -> Compression {
        Compression::from_code(self.bytes.as_ref()[12]).expect("checked by load")
    }

    /// The length of the layer's uncompressed tar stream.
    pub fn tar_bytes(&self) -> u64 {
        get64(self.bytes.as_ref(), 24)
    }

    /// The offset of the stream's end-of-archive block (its length when it has none).
    pub fn end_offset(&self) -> u64 {
        get64(self.bytes.as_ref(), 32)
    }

    /// Entry number `i` (in stream order), if there is one.
    pub fn entry(&self, i: usize) -> Option<TarEntry<'_>> {
        (i < self.n).then(|| {
            let bytes = self.bytes.as_ref();
            let at = HEADER_LEN + i * RECORD_LEN;
            TarEntry { number: i, record: &bytes[at..at + RECORD_LEN], var: &bytes[self.var_at()..] }
        })
    }

    /// The entries in stream order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = TarEntry<'_>> + DoubleEndedIterator + '_ {
        (0..self.n).map(|i| self.entry(i).expect("in range"))
    }

    /// The entry for `path` (normalized first, so `/etc/passwd`, `./etc/passwd` and
    /// `etc/passwd` are one path; the empty path is the root): when the layer holds the path
    /// more than once, the last one in the stream, as extracting the layer leaves it. O(log N).
    pub fn get(&self, path: impl AsRef<[u8]>) -> Option<TarEntry<'_>> {
        let path = normalize_path(path.as_ref());
        let end = self.partition(|p| p <= path.as_ref());
        let last = self.by_path(end.checked_sub(1)?);
        (last.normalized_path() == path.as_ref()).then_some(last)
    }

    /// Every entry for `path` (normalized first), in stream order.
    pub fn get_all(&self, path: impl AsRef<[u8]>) -> impl DoubleEndedIterator<Item = TarEntry<'_>> + '_ {
        let path = normalize_path(path.as_ref());
        let first = self.partition(|p| p < path.as_ref());
        let end = self.partition(|p| p <= path.as_ref());
        (first..end).map(|k| self.by_path(k))
    }

    /// The entries directly inside directory `dir` (normalized first; the empty path is the
    /// root), one per name (the last in the stream), by name. O(log N + entries below `dir`).
    pub fn children(&self, dir: impl AsRef<[u8]>) -> impl Iterator<Item = TarEntry<'_>> + '_ {
        let mut prefix = normalize_path(dir.as_ref()).into_owned();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        let first = self.partition(|p| p < prefix.as_slice());
        let end = self.partition(|p| p < prefix.as_slice() || p.starts_with(&prefix));
        (first..end).map(|k| self.by_path(k)).enumerate().filter_map(move |(j, e)| {
            let name = &e.normalized_path()[prefix.len()..];
            let is_child = !name.is_empty() && !name.contains(&b'/');
            let is_last = first + j + 1 == end || self.by_path(first + j + 1).normalized_path() != e.normalized_path();
            (is_child && is_last).then_some(e)
        })
    }

    /// The first position in the path table where `before` stops holding.
    fn partition(&self, before: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if before(self.by_path(mid).normalized_path()) { lo = mid + 1 } else { hi = mid }
        }
        lo
    }

    /// The entry at position `k` of the path table.
    fn by_path(&self, k: usize) -> TarEntry<'_> {
        let at = HEADER_LEN + self.n * RECORD_LEN + 4 * k;
        self.entry(get32(self.bytes.as_ref(), at) as usize).expect("checked by load")
    }

    fn var_at(&self) -> usize {
        HEADER_LEN + self.n * (RECORD_LEN + 4)
    }
}

/// Checks an index's bytes; its number of entries.
fn check(bytes: &[u8]) -> Result<usize, TarIndexError> {
    let corrupt = |what: String| TarIndexError::Corrupt(what);
    if bytes.len() < 12 || bytes[..8] != MAGIC {
        return Err(TarIndexError::NotAnIndex);
    }
    let version = get32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(TarIndexError::Version { found: version });
    }
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!("{} bytes is shorter than the header", bytes.len())));
    }
    if Compression::from_code(bytes[12]).is_none() {
        return Err(corrupt(format!("unknown compression code {}", bytes[12])));
    }
    let n = get64(bytes, 16);
    if n > MAX_ENTRIES as u64 {
        return Err(corrupt(format!("{n} entries is more than the {MAX_ENTRIES} an index may hold")));
    }
    let n = n as usize;
    let var_len = get64(bytes, 40);
    let want = (HEADER_LEN + n * (RECORD_LEN + 4)) as u64;
    if want.checked_add(var_len) != Some(bytes.len() as u64) {
        return Err(corrupt(format!("{n} entries and {var_len} bytes of strings do not make {} bytes", bytes.len())));
    }
    let var = &bytes[want as usize..];
    for i in 0..n {
        let at = HEADER_LEN + i * RECORD_LEN;
        check_record(&bytes[at..at + RECORD_LEN], var).map_err(|e| corrupt(format!("entry {i}: {e}")))?;
    }
    let table = &bytes[HEADER_LEN + n * RECORD_LEN..want as usize];
    let mut previous: Option<&[u8]> = None;
    for k in 0..n {
        let i = get32(table, 4 * k) as usize;
        if i >= n {
            return Err(corrupt(format!("the path table names entry {i} of {n}")));
        }
        let r = &bytes[HEADER_LEN + i * RECORD_LEN..HEADER_LEN + (i + 1) * RECORD_LEN];
        let path = normalized_of(r, var);
        if previous.is_some_and(|p| p > path) {
            return Err(corrupt("the path table is not sorted".into()));
        }
        previous = Some(path);
    }
    Ok(n)
}

/// Checks one record against the variable part, so that reading it never leaves the bytes.
fn check_record(r: &[u8], var: &[u8]) -> Result<(), String> {
    EntryKind::from_code(r[0]).ok_or_else(|| format!("unknown kind {}", r[0]))?;
    Whiteout::from_code(r[1]).map_err(|()| format!("unknown whiteout code {}", r[1]))?;
    if r[2] & !(FLAG_NORM_SEPARATE | FLAG_SPARSE) != 0 {
        return Err(format!("unknown flags {:#x}", r[2]));
    }
    if get32(r, 24) >= 1_000_000_000 {
        return Err("mtime nanoseconds out of range".into());
    }
    let n_sparse = u64::from(get32(r, 104));
    if r[2] & FLAG_SPARSE == 0 && n_sparse != 0 {
        return Err("sparse segments on an entry that is not sparse".into());
    }
    let (path_len, start, norm_len) = (u64::from(get32(r, 80)), u64::from(get32(r, 84)), u64::from(get32(r, 88)));
    let separate = r[2] & FLAG_NORM_SEPARATE != 0;
    if !separate && start + norm_len > path_len {
        return Err("the normalized path lies outside the raw path".into());
    }
    let strings = path_len
        + if separate { norm_len } else { 0 }
        + [92, 96, 100].iter().map(|&at| u64::from(get32(r, at))).sum::<u64>();
    let begin = get64(r, 72);
    let mut at = begin
        .checked_add(16 * n_sparse + strings)
        .filter(|&end| end <= var.len() as u64)
        .ok_or("its strings run past the end of the index")? as usize;
    let mut end = 0u64;
    for s in var[begin as usize..].chunks_exact(16).take(n_sparse as usize) {
        let (offset, len) = (get64(s, 0), get64(s, 8));
        if offset < end {
            return Err("its sparse segments are out of order".into());
        }
        end = offset.checked_add(len).filter(|&e| e <= get64(r, 64)).ok_or("a sparse segment ends past the file")?;
    }
    for _ in 0..get32(r, 36) {
        let lens = var.get(at..at + 8).ok_or("its xattrs run past the end of the index")?;
        let len = get32(lens, 0) as usize + get32(lens, 4) as usize;
        at = (at + 8).checked_add(len).filter(|&e| e <= var.len()).ok_or("its xattrs run past the end of the index")?;
    }
    Ok(())
}

/// One entry of a [`TarIndex`], read in place.
#[derive(Debug, Clone, Copy)]
pub struct TarEntry<'a> {
    number: usize,
    /// Invariant: a record that passed `check_record` against `var`.
    record: &'a [u8],
    var: &'a [u8],
}

impl<'a> TarEntry<'a> {
    /// Its position in the stream (0 for the first entry).
    pub fn number(&self) -> usize {
        self.number
    }

    /// What it is.
    pub fn kind(&self) -> EntryKind {
        EntryKind::from_code(self.record[0]).expect("checked by load")
    }

    /// The path as the tar stream gives it (PAX `path` and GNU long names applied), bytes as
    /// they are.
    pub fn path(&self) -> &'a [u8] {
        self.string(0)
    }

    /// The path relative to the image root, as [`normalize_path`] makes it.
    pub fn normalized_path(&self) -> &'a [u8] {
        normalized_of(self.record, self.var)
    }

    /// What the entry is as an OCI whiteout, if it is one.
    pub fn whiteout(&self) -> Option<Whiteout> {
        Whiteout::from_code(self.record[1]).expect("checked by load")
    }

    /// For a [`Whiteout::Removes`] entry, the normalized path it deletes from the layers below.
    pub fn whited_out_path(&self) -> Option<Vec<u8>> {
        (self.whiteout() == Some(Whiteout::Removes)).then(|| whited_out(self.normalized_path()))
    }

    /// The mode field as written (permission bits, and the file type bits if the writer put
    /// them there; take `mode & 0o7777` for the permissions).
    pub fn mode(&self) -> u32 {
        get32(self.record, 4)
    }

    /// The owner's uid.
    pub fn uid(&self) -> u32 {
        get32(self.record, 8)
    }

    /// The group's gid.
    pub fn gid(&self) -> u32 {
        get32(self.record, 12)
    }

    /// The owner's name (empty when the stream gives none).
    pub fn uname(&self) -> &'a [u8] {
        self.string(3)
    }

    /// The group's name (empty when the stream gives none).
    pub fn gname(&self) -> &'a [u8] {
        self.string(4)
    }

    /// The modification time: seconds since the epoch and nanoseconds (PAX `mtime`'s fraction
    /// when it has one).
    pub fn mtime(&self) -> (i64, u32) {
        (i64::from_le_bytes(self.record[16..24].try_into().expect("8 bytes")), get32(self.record, 24))
    }

    /// A device's major and minor numbers (char and block devices only).
    pub fn device(&self) -> Option<(u32, u32)> {
        matches!(self.kind(), EntryKind::Char | EntryKind::Block)
            .then(|| (get32(self.record, 28), get32(self.record, 32)))
    }

    /// A symlink's or hardlink's target, as the stream gives it (PAX `linkpath` and GNU long
    /// link names applied); a hardlink's names an earlier entry's raw path (normalize it to look
    /// it up), a symlink's is kept as it is, never resolved here.
    pub fn link_target(&self) -> Option<&'a [u8]> {
        matches!(self.kind(), EntryKind::Symlink | EntryKind::Hardlink).then(|| self.string(2))
    }

    /// The file's size: its logical size, holes included for a sparse file.
    pub fn size(&self) -> u64 {
        get64(self.record, 64)
    }

    /// Where its data starts in the uncompressed stream; a non-sparse entry's data is
    /// [`TarEntry::size`] bytes from there.
    pub fn data_offset(&self) -> u64 {
        get64(self.record, 56)
    }

    /// Where its own header block is in the uncompressed stream.
    pub fn header_offset(&self) -> u64 {
        get64(self.record, 48)
    }

    /// Where its first header is (its PAX or GNU long-name header when it has one, else its own):
    /// the entry is the stream's bytes from here to the end of its data.
    pub fn start_offset(&self) -> u64 {
        get64(self.record, 40)
    }

    /// For a sparse file, its data segments in file order (the rest of the file reads as zeros);
    /// `None` for every other entry.
    pub fn sparse(&self) -> Option<impl ExactSizeIterator<Item = SparseSegment> + 'a> {
        if self.record[2] & FLAG_SPARSE == 0 {
            return None;
        }
        let at = get64(self.record, 72) as usize;
        let n = get32(self.record, 104) as usize;
        let mut data_offset = self.data_offset();
        Some(self.var[at..at + 16 * n].chunks_exact(16).map(move |s| {
            let segment = SparseSegment { file_offset: get64(s, 0), len: get64(s, 8), data_offset };
            data_offset += segment.len;
            segment
        }))
    }

    /// The bytes of its data in the stream (its size, or the sum of a sparse file's segments).
    pub fn stored_bytes(&self) -> u64 {
        match self.sparse() {
            Some(segments) => segments.map(|s| s.len).sum(),
            None => self.size(),
        }
    }

    /// Its extended attributes (PAX `SCHILY.xattr.*` and `LIBARCHIVE.xattr.*`), name and value,
    /// sorted by name.
    pub fn xattrs(&self) -> impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let var = self.var;
        let mut at = self.strings_at() + (0..5).map(|k| self.string_len(k)).sum::<usize>();
        (0..get32(self.record, 36) as usize).map(move |_| {
            let (name_len, value_len) = (get32(var, at) as usize, get32(var, at + 4) as usize);
            let name = &var[at + 8..at + 8 + name_len];
            let value = &var[at + 8 + name_len..at + 8 + name_len + value_len];
            at += 8 + name_len + value_len;
            (name, value)
        })
    }

    /// Where its strings start in the variable part.
    fn strings_at(&self) -> usize {
        get64(self.record, 72) as usize + 16 * get32(self.record, 104) as usize
    }

    /// The length of string `k`: 0 raw path, 1 separate normalized path, 2 link, 3 uname, 4 gname.
    fn string_len(&self, k: usize) -> usize {
        match k {
            1 if self.record[2] & FLAG_NORM_SEPARATE == 0 => 0,
            1 => get32(self.record, 88) as usize,
            0 => get32(self.record, 80) as usize,
            _ => get32(self.record, 84 + 4 * k) as usize,
        }
    }

    fn string(&self, k: usize) -> &'a [u8] {
        let at = self.strings_at() + (0..k).map(|j| self.string_len(j)).sum::<usize>();
        &self.var[at..at + self.string_len(k)]
    }
}

/// One data segment of a sparse file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseSegment {
    /// Where it lies in the file.
    pub file_offset: u64,
    /// Its length.
    pub len: u64,
    /// Where its bytes are in the uncompressed stream.
    pub data_offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(paths: &[&str]) -> Vec<u8> {
        let mut writer = IndexWriter::new(1 << 20);
        for (i, path) in paths.iter().enumerate() {
            let e = Parsed { path: path.as_bytes().to_vec(), header_offset: 512 * i as u64, ..Parsed::default() };
            writer.push(&e).unwrap();
        }
        let mut out = Vec::new();
        writer.finish(Compression::Gzip, 4096, 3072, &mut out).unwrap();
        out
    }

    #[test]
    fn written_entries_load_and_are_found_by_path() {
        let bytes = index_of(&["./b/", "a", "/b/x", "b/../b/y", "a"]);
        // Every normalized path lies inside its raw path ("b/../b/y" holds "b/y"): none is stored.
        assert_eq!(bytes.len(), HEADER_LEN + 5 * (RECORD_LEN + 4) + "./b/a/b/xb/../b/ya".len());
        let index = TarIndex::load(&bytes[..]).unwrap();
        assert_eq!(
            (index.len(), index.compression(), index.tar_bytes(), index.end_offset()),
            (5, Compression::Gzip, 4096, 3072)
        );
        assert_eq!(index.get("a").unwrap().number(), 4);
        assert_eq!(index.get("b/y").unwrap().path(), b"b/../b/y");
        assert_eq!(index.get("/b").unwrap().normalized_path(), b"b");
        assert!(index.get("c").is_none() && index.get("").is_none());
        let children: Vec<usize> = index.children("b").map(|e| e.number()).collect();
        assert_eq!(children, [2, 3]);
    }

    #[test]
    fn a_normalized_path_not_inside_the_raw_one_is_stored_on_its_own() {
        let bytes = index_of(&["c//d", "./"]);
        assert_eq!(bytes.len(), HEADER_LEN + 2 * (RECORD_LEN + 4) + "c//dc/d./".len());
        let index = TarIndex::load(&bytes[..]).unwrap();
        assert_eq!(index.get("c/d").unwrap().path(), b"c//d");
        assert_eq!(index.get("/").unwrap().path(), b"./");
    }

    #[test]
    fn an_unsorted_path_table_is_refused() {
        let mut bytes = index_of(&["a", "b"]);
        let table = HEADER_LEN + 2 * RECORD_LEN;
        bytes[table..table + 8].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(TarIndex::load(&bytes[..]), Err(TarIndexError::Corrupt(_))));
        bytes[table..table + 8].copy_from_slice(&[0, 0, 0, 0, 2, 0, 0, 0]);
        assert!(matches!(TarIndex::load(&bytes[..]), Err(TarIndexError::Corrupt(_))));
    }
}
