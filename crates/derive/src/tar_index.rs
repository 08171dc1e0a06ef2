//! `tar-index`: the index of a container image layer — every entry of its tar stream (gzip,
//! zstd or plain), with its metadata and where its data lies in the uncompressed stream — so
//! that a file can later be read from the layer without unpacking it. The output is the binary
//! format [`format`](self::TarIndex) documents; [`TarIndex`] loads it and looks entries up by path.
//!
//! The layer is streamed once (a plain layer's file data is skipped by seeking), so memory
//! grows with the number of entries, never with the layer's size, and a hostile layer is bounded
//! everywhere: at most [`MAX_ENTRIES`] entries, paths and link targets of [`MAX_PATH_BYTES`],
//! PAX headers of [`MAX_PAX_BYTES`], sparse maps of a million segments, and the index itself
//! within `Limits::max_output_bytes` and `Limits::max_alloc_bytes`; the deadline is checked
//! between headers and while skipping data.
//!
//! Read: ustar, GNU and v7 headers, PAX (`x`, `g`) and GNU long names (`L`, `K`), base-256
//! numbers, sparse files (old GNU `S` entries and PAX formats 0.0, 0.1 and 1.0: their maps are
//! recorded), PAX and libarchive xattrs. Refused: multi-volume (`M`) and old long-name (`N`)
//! entries, unknown PAX sparse versions (Unsupported). What this does not do: merge layers,
//! apply whiteouts, resolve links, or read any file's data.

use std::io::Write;
use std::path::Path;

use crate::{DeriveError, Limits, Params, Produced, Recipe, no_params};

mod find;
pub mod format;
pub(crate) mod header;
mod path;
mod pax;
mod sparse;
mod stream;
mod walk;

pub use find::{Found, FoundFile, find_file};
pub use format::{FORMAT_VERSION, SparseSegment, TarEntry, TarIndex, TarIndexError};
pub use path::{Whiteout, normalize_path};

/// The most entries one layer's index may hold.
pub const MAX_ENTRIES: usize = 10_000_000;
/// The longest path or link target an entry may have (PAX and GNU long names included).
pub const MAX_PATH_BYTES: u64 = 64 << 10;
/// The most bytes of PAX records one entry may have (and all global headers together).
pub const MAX_PAX_BYTES: u64 = 1 << 20;

/// The media type of the recipe's output.
pub const CONTENT_TYPE: &str = "application/vnd.tiercache.tar-index.v1";

/// The `tar-index` recipe. No parameters.
#[derive(Debug, Clone, Copy)]
pub struct TarIndexRecipe;

impl Recipe for TarIndexRecipe {
    fn name(&self) -> &'static str {
        "tar-index"
    }

    fn version(&self) -> u32 {
        1
    }

    fn params(&self, raw: &[(String, String)], _accept: Option<&str>) -> Result<Params, DeriveError> {
        no_params(raw)
    }

    fn run(
        &self,
        input: &Path,
        _input_len: u64,
        _params: &Params,
        limits: &Limits,
        out: &mut dyn Write,
    ) -> Result<Produced, DeriveError> {
        let mut stream = stream::Stream::open(input)?;
        let mut index = format::IndexWriter::new(limits.max_output_bytes.min(limits.max_alloc_bytes));
        let end_offset = walk::walk(&mut stream, limits, &mut index)?;
        let compression = stream.compression();
        let tar_bytes = stream.finish(limits)?;
        index.finish(compression, tar_bytes, end_offset, out)?;
        Ok(Produced::written(CONTENT_TYPE))
    }
}

/// The error for a malformed tar stream, at the header at offset `at`.
fn corrupt(at: u64, what: &str) -> DeriveError {
    DeriveError::Corrupt(format!("{what} (tar header at offset {at})"))
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EntryKind {
    /// A regular file (also a sparse one, and any type flag tar does not define, as POSIX asks).
    #[default]
    File,
    /// A hard link to an earlier entry.
    Hardlink,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A directory (also GNU's dump directories).
    Dir,
    /// A named pipe.
    Fifo,
}

impl EntryKind {
    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<EntryKind> {
        use EntryKind::*;
        [File, Hardlink, Symlink, Char, Block, Dir, Fifo].get(usize::from(code)).copied()
    }
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (one member or several).
    Gzip,
    /// zstd (one frame or several).
    Zstd,
}

impl Compression {
    /// Its name: `none`, `gzip` or `zstd`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<Compression> {
        [Compression::None, Compression::Gzip, Compression::Zstd].get(usize::from(code)).copied()
    }
}
