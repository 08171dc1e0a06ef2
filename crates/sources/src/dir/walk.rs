//! Walking a directory source in byte order of relative paths.
//!
//! The walk is depth-first with each directory's children sorted by name, a directory's name
//! taken with its trailing `/`: that order is exactly the byte order of the full relative paths,
//! so the engine can merge the walk with the index's rows (`ORDER BY path`) in one pass, in flat
//! memory, however many files there are.
//!
//! Directories are opened relative to their parent with `O_NOFOLLOW`, so the walk never leaves the
//! root through a symlinked directory, and a symlink loop cannot make it spin. A symlink to a file
//! is resolved beneath the root (as a read would be) and listed with its target's markers; a
//! symlink to a directory, out of the root, dangling or looping is reported and skipped.

use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::GlobSet;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use tiercache_core::FileMarkers;

use super::{DirSource, io_err, markers_of, resolve_flags};

/// What the walk found at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkItem {
    /// A regular file (or a symlink to one inside the root).
    File {
        /// Relative path.
        path: Vec<u8>,
        /// Its markers.
        markers: FileMarkers,
    },
    /// A directory that could not be read: what the index holds under `prefix` (which ends in
    /// `/`) must be kept, not taken as deleted.
    Unreadable {
        /// The directory's path with a trailing `/`.
        prefix: Vec<u8>,
        /// Why.
        reason: String,
    },
    /// Something left out, with the reason (a symlink to a directory or out of the root, a
    /// FIFO, a file that vanished mid-walk).
    Skipped {
        /// Relative path.
        path: Vec<u8>,
        /// Why.
        reason: &'static str,
    },
}

/// Patterns left out of the walk, matched against relative paths (directories prune their subtree).
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    set: GlobSet,
}

impl Ignore {
    /// Compiles glob patterns (`*.tmp`, `**/node_modules`, `cache/**`).
    pub fn new(patterns: &[String]) -> Result<Ignore, String> {
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            b.add(globset::Glob::new(p).map_err(|e| format!("invalid ignore pattern {p:?}: {e}"))?);
        }
        Ok(Ignore { set: b.build().map_err(|e| e.to_string())? })
    }

    /// Whether `path` (relative, no trailing `/`) is ignored. Names reserved for tiercache's own
    /// files (`.tiercache-*`, [`super::TEMP_PREFIX`]) always are.
    pub fn is_ignored(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
        if super::is_reserved(name) {
            return true;
        }
        !self.set.is_empty() && self.set.is_match(Path::new(OsStr::from_bytes(path)))
    }
}

impl Ignore {
    /// Whether `path` or any directory above it is ignored (for paths reported by file events,
    /// which the walk would never have reached).
    pub fn covers(&self, path: &[u8]) -> bool {
        path.iter().enumerate().filter(|(_, b)| **b == b'/').any(|(i, _)| self.is_ignored(&path[..i]))
            || self.is_ignored(path)
    }
}

struct Frame {
    fd: OwnedFd,
    /// Relative path of this directory with a trailing `/` (empty for the root).
    prefix: Vec<u8>,
    /// Children still to visit, sorted in reverse so `pop` yields them in order.
    children: Vec<Child>,
}

struct Child {
    /// Sort key: the name, with `/` appended for a directory.
    key: Vec<u8>,
    kind: FileType,
}

fn read_children(fd: &OwnedFd) -> io::Result<Vec<Child>> {
    let mut dir = Dir::read_from(fd).map_err(io_err)?;
    let mut out = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut kind = entry.file_type();
        if kind == FileType::Unknown {
            // Some filesystems do not fill in d_type.
            kind = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => FileType::Unknown,
            };
        }
        let mut key = name.to_vec();
        if kind == FileType::Directory {
            key.push(b'/');
        }
        out.push(Child { key, kind });
    }
    out.sort_unstable_by(|a, b| b.key.cmp(&a.key));
    Ok(out)
}

impl DirSource {
    /// Opens the directory `start` (relative; empty for the root) for reading, beneath the root.
    /// Succeeds if and only if a walk from there could begin.
    pub fn open_dir(&self, start: &[u8]) -> io::Result<OwnedFd> {
        let root = self.open_root()?;
        if start.is_empty() {
            return Ok(root);
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rustix::fs::openat2(&root, start, flags, Mode::empty(), resolve_flags()).map_err(io_err)
    }

    /// Walks the tree under `start` (a directory's relative path, empty for the root), calling
    /// `f` with every item in byte order of paths until it returns `false`.
    ///
    /// Fails if `start` cannot be opened or read (a missing or unreadable root is an error, never
    /// an empty tree); anything unreadable further down is reported as an item. Blocking.
    pub fn walk(&self, start: &[u8], ignore: &Ignore, mut f: impl FnMut(WalkItem) -> bool) -> io::Result<()> {
        let fd = self.open_dir(start)?;
        let prefix = if start.is_empty() {
            Vec::new()
        } else {
            let mut p = start.to_vec();
            p.push(b'/');
            p
        };
        let children = read_children(&fd).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read directory {}: {e}", self.absolute(start).display()))
        })?;
        let root_fd = self.open_root()?;
        let mut stack = vec![Frame { fd, prefix, children }];
        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.children.pop() else {
                stack.pop();
                continue;
            };
            let name: &[u8] = match child.kind {
                FileType::Directory => &child.key[..child.key.len() - 1],
                _ => &child.key,
            };
            let mut path = frame.prefix.clone();
            path.extend_from_slice(name);
            if ignore.is_ignored(&path) {
                continue;
            }
            let item = match child.kind {
                FileType::Directory => {
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let opened = rustix::fs::openat(&frame.fd, name, flags, Mode::empty()).map_err(io_err);
                    path.push(b'/');
                    match opened.and_then(|fd| read_children(&fd).map(|c| (fd, c))) {
                        Ok((fd, children)) => {
                            stack.push(Frame { fd, prefix: path, children });
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // Gone since listed.
                        Err(e) => WalkItem::Unreadable { prefix: path, reason: e.to_string() },
                    }
                }
                FileType::RegularFile => match rustix::fs::statat(&frame.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                        WalkItem::File { path, markers: markers_of(&st) }
                    }
                    Ok(_) => WalkItem::Skipped { path, reason: "replaced by something other than a file" },
                    Err(_) => WalkItem::Skipped { path, reason: "vanished while walked" },
                },
                FileType::Symlink => {
                    let flags = OFlags::PATH | OFlags::CLOEXEC;
                    match rustix::fs::openat2(&root_fd, path.as_slice(), flags, Mode::empty(), resolve_flags())
                        .and_then(|fd| rustix::fs::fstat(&fd))
                    {
                        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
                            FileType::RegularFile => WalkItem::File { path, markers: markers_of(&st) },
                            FileType::Directory => {
                                WalkItem::Skipped { path, reason: "symlink to a directory (not followed)" }
                            }
                            _ => WalkItem::Skipped { path, reason: "symlink to something other than a file" },
                        },
                        Err(rustix::io::Errno::XDEV) => WalkItem::Skipped { path, reason: "symlink out of the root" },
                        Err(rustix::io::Errno::LOOP) => WalkItem::Skipped { path, reason: "symlink loop" },
                        Err(rustix::io::Errno::NOENT) => WalkItem::Skipped { path, reason: "dangling symlink" },
                        Err(_) => WalkItem::Skipped { path, reason: "unresolvable symlink" },
                    }
                }
                _ => WalkItem::Skipped { path, reason: "not a regular file" },
            };
            if !f(item) {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(src: &DirSource, ignore: &Ignore) -> (Vec<String>, Vec<String>) {
        let (mut files, mut other) = (Vec::new(), Vec::new());
        src.walk(b"", ignore, |item| {
            match item {
                WalkItem::File { path, .. } => files.push(String::from_utf8_lossy(&path).into_owned()),
                WalkItem::Skipped { path, reason } => {
                    other.push(format!("{}: {reason}", String::from_utf8_lossy(&path)))
                }
                WalkItem::Unreadable { prefix, .. } => other.push(String::from_utf8_lossy(&prefix).into_owned()),
            }
            true
        })
        .unwrap();
        (files, other)
    }

    #[test]
    fn walk_order_is_byte_order_and_symlinks_are_confined() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["a", "a/b", "a0", "z"] {
            std::fs::create_dir(r.join(d)).unwrap();
        }
        for f in ["a.txt", "a/1", "a/b/2", "a-b", "a0/x", "Z", "z/.tiercache-1-2.tmp", "skip.log"] {
            std::fs::write(r.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("a.txt", r.join("link")).unwrap();
        std::os::unix::fs::symlink(".", r.join("loopdir")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("out")).unwrap();
        std::os::unix::fs::symlink("self", r.join("self")).unwrap();
        let src = DirSource::new(r).unwrap();
        let (f, other) = files(&src, &Ignore::new(&["*.log".into()]).unwrap());
        assert_eq!(f, ["Z", "a-b", "a.txt", "a/1", "a/b/2", "a0/x", "link"]);
        let mut sorted = f.clone();
        sorted.sort();
        assert_eq!(f, sorted);
        assert_eq!(other.len(), 3, "{other:?}");
        assert!(src.walk(b"", &Ignore::default(), |_| true).is_ok());
        assert!(DirSource::new(r.join("missing")).unwrap().walk(b"", &Ignore::default(), |_| true).is_err());
    }
}
