//! One file found in a layer as the layer arrives: the tar stream walked (as `tar-index` walks
//! it) until the file's entry, its bytes taken from the last uncompressed bytes read, and the
//! walk stopped there. For a first read of an image no node has indexed yet: the file is
//! answered once the layer's stream has passed it, while the layer's index is made beside it.
//!
//! Only a plain answer is given: a regular file, not sparse, at most `max_bytes`, at the path
//! itself. A layer that whites out the path (or a directory above it, or makes one opaque) says
//! nothing below it is there; anything else at the path or above it (a directory, a symlink, a
//! hardlink, a device) is [`Found::Other`], for the caller to answer from the index.

use std::cell::RefCell;
use std::io::Read;
use std::rc::Rc;

use super::format::Parsed;
use super::path::{Whiteout, normalize_path, whited_out};
use super::stream::Stream;
use super::walk::{self, Entries};
use super::{EntryKind, Limits};
use crate::DeriveError;

/// A file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile {
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its mode field (`& 0o7777` for the permissions).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time: seconds, nanoseconds.
    pub mtime: (i64, u32),
    /// Where its data starts in the uncompressed stream (as `tar-index` records it).
    pub data_offset: u64,
}

/// What a layer says of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A regular file, with its bytes.
    File(FoundFile),
    /// The layer deletes the path or a directory above it from the layers below (a whiteout, an
    /// opaque directory), and does not have it itself.
    Hidden,
    /// The layer has something else at the path or above it (a directory, a symlink, a
    /// hardlink, a device, a sparse file, a file over the size asked for).
    Other,
    /// The layer does not have the path.
    Absent,
}

/// Walks the layer read from `reader` until the entry at `path` (normalized lexically), and says
/// what it is (see the module docs). Reading stops at the entry: the rest of the layer is not
/// decompressed.
pub fn find_file(reader: Box<dyn Read>, path: &[u8], max_bytes: u64, limits: &Limits) -> Result<Found, DeriveError> {
    let target = normalize_path(path).into_owned();
    // The last uncompressed bytes, enough to hold a file of `max_bytes` and what was read ahead
    // of it.
    let recent = Rc::new(RefCell::new(Recent::new(max_bytes.saturating_add(1 << 20))));
    let tap = {
        let recent = Rc::clone(&recent);
        Box::new(move |bytes: &[u8]| recent.borrow_mut().push(bytes))
    };
    let mut stream = Stream::from_reader(reader, tap)?;
    let mut finder = Finder { target: &target, max_bytes, recent, found: None, hidden: false };
    walk::walk(&mut stream, limits, &mut finder)?;
    Ok(finder.found.unwrap_or(if finder.hidden { Found::Hidden } else { Found::Absent }))
}

struct Finder<'a> {
    target: &'a [u8],
    max_bytes: u64,
    recent: Rc<RefCell<Recent>>,
    found: Option<Found>,
    hidden: bool,
}

impl Entries for Finder<'_> {
    fn push(&mut self, e: &Parsed) -> Result<bool, DeriveError> {
        let path = normalize_path(&e.path);
        match Whiteout::of(&path) {
            Some(Whiteout::Removes) => {
                let gone = whited_out(&path);
                self.hidden |= gone == self.target || is_above(&gone, self.target);
                return Ok(true);
            }
            Some(Whiteout::Opaque) => {
                self.hidden |= is_above(parent(&path), self.target);
                return Ok(true);
            }
            Some(Whiteout::AufsMeta) => return Ok(true),
            None => {}
        }
        if *path == *self.target {
            let plain = e.kind == EntryKind::File && e.sparse.is_none() && e.size <= self.max_bytes;
            let bytes = plain.then(|| self.recent.borrow().get(e.data_offset, e.size)).flatten();
            self.found = Some(match bytes {
                Some(bytes) => Found::File(FoundFile {
                    bytes,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    mtime: e.mtime,
                    data_offset: e.data_offset,
                }),
                None => Found::Other,
            });
            return Ok(false);
        }
        if e.kind != EntryKind::Dir && is_above(&path, self.target) {
            self.found = Some(Found::Other);
            return Ok(false);
        }
        Ok(true)
    }
}

/// Whether `dir` is a directory above `path` (both normalized; the root, empty, is above all).
fn is_above(dir: &[u8], path: &[u8]) -> bool {
    dir.is_empty() && !path.is_empty() || path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// The directory part of a normalized path (empty for one component).
fn parent(path: &[u8]) -> &[u8] {
    path.iter().rposition(|&b| b == b'/').map_or(&[], |i| &path[..i])
}

/// The last bytes of a stream, by their offset in it.
struct Recent {
    /// Bytes from `start` on.
    bytes: Vec<u8>,
    start: u64,
    keep: usize,
}

impl Recent {
    fn new(keep: u64) -> Recent {
        Recent { bytes: Vec::new(), start: 0, keep: usize::try_from(keep).unwrap_or(usize::MAX) }
    }

    fn push(&mut self, more: &[u8]) {
        self.bytes.extend_from_slice(more);
        // Dropped in halves, so each byte is moved at most once or twice.
        if self.bytes.len() > self.keep.saturating_mul(2) {
            let drop = self.bytes.len() - self.keep;
            self.bytes.drain(..drop);
            self.start += drop as u64;
        }
    }

    /// Bytes `at..at + len`, if still held.
    fn get(&self, at: u64, len: u64) -> Option<Vec<u8>> {
        let from = usize::try_from(at.checked_sub(self.start)?).ok()?;
        let to = from.checked_add(usize::try_from(len).ok()?)?;
        self.bytes.get(from..to).map(<[u8]>::to_vec)
    }
}
