//! [`ImageFs`]: fuser's [`Filesystem`] over one opened image, read-only.
//!
//! Inode numbers are the tree's ([`FileAttrs::ino`](tiercache_engine::FileAttrs)): the root's is
//! 1, as FUSE wants, and the paths of one hardlinked file share theirs. Every answer but a read's
//! comes from the tree in memory, on fuser's thread; a read is a task on the tokio runtime that
//! answers when its bytes arrive.
//!
//! Errors: a name that is not there is `ENOENT` (cached by the kernel as a negative entry), a
//! directory operation on a non-directory `ENOTDIR`, anything that would write `EROFS`, an
//! inode number the tree never gave `ESTALE`, and an engine error while reading `EIO` (logged
//! with its cause).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use tiercache_engine::{Cache, FileKind, Image, ImageTree, NodeId};
use tokio::runtime::Handle;

use crate::attrs::{BLOCK_BYTES, file_attr, file_type};

/// How long the kernel may keep names and attributes: the image never changes under a mount.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest name `statfs` reports (Linux's `NAME_MAX`; the tree may hold longer ones, which
/// the kernel cannot ask for anyway).
const NAME_MAX: u32 = 255;

/// Directories with more children than this are listed from a copy of their children kept in
/// [`Listings`] (smaller ones are walked from the first child on each call).
const BIG_DIR_ENTRIES: usize = 1024;
/// How many such copies are kept.
const LISTINGS: usize = 8;

/// The FUSE filesystem of one image (see the module docs).
pub struct ImageFs {
    cache: Cache,
    image: Arc<Image>,
    runtime: Handle,
    /// `statfs`'s totals, counted on its first call: (bytes of files, inodes).
    totals: OnceLock<(u64, u64)>,
    listings: Listings,
}

impl ImageFs {
    /// The filesystem of `image`, whose file bytes are read through `cache` on `runtime` (the
    /// runtime the cache was opened on).
    pub fn new(cache: Cache, image: Arc<Image>, runtime: Handle) -> ImageFs {
        ImageFs { cache, image, runtime, totals: OnceLock::new(), listings: Listings::default() }
    }

    fn tree(&self) -> &ImageTree {
        self.image.tree()
    }

    /// The node of inode `ino`; `ESTALE` for a number the tree never gave.
    fn node(&self, ino: INodeNo) -> Result<NodeId, Errno> {
        self.tree().node_of_ino(ino.0).ok_or(Errno::ESTALE)
    }

    /// The directory of inode `ino`: `ENOTDIR` if it is something else.
    fn dir(&self, ino: INodeNo) -> Result<NodeId, Errno> {
        let node = self.node(ino)?;
        if self.tree().attrs(node).kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        Ok(node)
    }

    fn attr(&self, node: NodeId) -> FileAttr {
        file_attr(&self.tree().attrs(node))
    }

    /// The bytes of files and the inodes of the tree, each inode once.
    fn totals(&self) -> (u64, u64) {
        *self.totals.get_or_init(|| count(self.tree()))
    }

    /// Calls `add` with the entries of `dir` from `offset` on, in the order and at the offsets
    /// readdir gives them (`.` then `..` then the children by name, each with the offset of the
    /// next), until it says the reply is full.
    fn each_entry(&self, dir: NodeId, offset: u64, mut add: impl FnMut(u64, NodeId, &[u8]) -> bool) {
        let tree = self.tree();
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (next, name) in [(1, &b"."[..]), (2, &b".."[..])].into_iter().skip(skip) {
            if add(next, dir, name) {
                return;
            }
        }
        let Some(children) = tree.children(dir) else { return };
        let skip = skip.saturating_sub(2);
        if children.len() <= BIG_DIR_ENTRIES {
            for (i, (name, node)) in children.enumerate().skip(skip) {
                if add(i as u64 + 3, node, name) {
                    return;
                }
            }
            return;
        }
        let listing = self.listings.get(tree, dir);
        for (i, (name, node)) in listing.iter().enumerate().skip(skip) {
            if add(i as u64 + 3, *node, name) {
                return;
            }
        }
    }
}

/// The children of a directory, by position.
type Listing = Arc<[(Box<[u8]>, NodeId)]>;

/// The listings of the last few large directories read, so that listing one page after another
/// costs each page, not a walk from the first child (a directory of 100 000 files takes
/// thousands of readdir calls).
#[derive(Default)]
struct Listings {
    /// Most recent first; at most [`LISTINGS`].
    recent: Mutex<VecDeque<(NodeId, Listing)>>,
}

impl Listings {
    fn get(&self, tree: &ImageTree, dir: NodeId) -> Listing {
        let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(at) = recent.iter().position(|(d, _)| *d == dir) {
            let hit = recent.remove(at).expect("found");
            recent.push_front(hit.clone());
            return hit.1;
        }
        let listing: Listing =
            tree.children(dir).into_iter().flatten().map(|(name, node)| (Box::from(name), node)).collect();
        recent.push_front((dir, listing.clone()));
        recent.truncate(LISTINGS);
        listing
    }
}

impl Filesystem for ImageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Listings with attributes in one call, lookups in parallel, symlink targets in the page
        // cache; a kernel without one of them works without it.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS;
        let supported = wanted & config.capabilities();
        if let Err(refused) = config.add_capabilities(supported) {
            tracing::debug!(?refused, "FUSE capabilities the kernel does not offer");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let dir = match self.dir(parent) {
            Ok(dir) => dir,
            Err(e) => return reply.error(e),
        };
        match self.tree().child(dir, name.as_bytes()) {
            Some(node) => reply.entry(&TTL, &self.attr(node), Generation(0)),
            // Inode 0 with a time to live: a negative entry the kernel keeps (no ENOENT round trip
            // for each `PATH` lookup of a program that is not there).
            None => {
                let mut absent = self.attr(dir);
                absent.ino = INodeNo(0);
                reply.entry(&TTL, &absent, Generation(0));
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Ok(node) => reply.attr(&TTL, &self.attr(node)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino).map(|node| self.tree().link_target(node)) {
            Ok(Some(target)) => reply.data(target),
            Ok(None) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if let Err(e) = self.node(ino) {
            return reply.error(e);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & (libc::O_TRUNC | libc::O_APPEND) != 0 {
            return reply.error(Errno::EROFS);
        }
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        match self.tree().attrs(node).kind {
            FileKind::File => {}
            FileKind::Dir => return reply.error(Errno::EISDIR),
            _ => return reply.error(Errno::EINVAL),
        }
        let (cache, image) = (self.cache.clone(), Arc::clone(&self.image));
        let range = offset..offset.saturating_add(u64::from(size));
        self.runtime.spawn(async move {
            match cache.image_read(&image, node, range.clone()).await {
                Ok(bytes) => reply.data(&bytes),
                Err(e) => {
                    tracing::error!(image = %image.reference(), ino = ino.0, ?range, error = %e, "read failed");
                    reply.error(Errno::EIO);
                }
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.dir(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let dir = match self.dir(ino) {
            Ok(dir) => dir,
            Err(e) => return reply.error(e),
        };
        self.each_entry(dir, offset, |next, node, name| {
            let attrs = self.tree().attrs(node);
            reply.add(INodeNo(attrs.ino), next, file_type(&attrs.kind), OsStr::from_bytes(name))
        });
        reply.ok();
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let dir = match self.dir(ino) {
            Ok(dir) => dir,
            Err(e) => return reply.error(e),
        };
        self.each_entry(dir, offset, |next, node, name| {
            let attr = self.attr(node);
            reply.add(attr.ino, next, OsStr::from_bytes(name), &TTL, &attr, Generation(0))
        });
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (bytes, inodes) = self.totals();
        let blocks = bytes.div_ceil(u64::from(BLOCK_BYTES));
        reply.statfs(blocks, 0, 0, inodes, 0, BLOCK_BYTES, NAME_MAX, BLOCK_BYTES);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let xattrs = self.tree().xattrs(node);
        match xattrs.iter().find(|(n, _)| *n == name.as_bytes()) {
            Some((_, value)) => reply_sized(reply, size, value),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let mut names = Vec::new();
        for (name, _) in self.tree().xattrs(node) {
            names.extend_from_slice(name);
            names.push(0);
        }
        reply_sized(reply, size, &names);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // The mount asks the kernel to check permissions (`default_permissions`), so this is
        // called only without it: existence, and no writing.
        match self.node(ino) {
            Err(e) => reply.error(e),
            Ok(_) if mask.contains(AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(_) => reply.ok(),
        }
    }
}

/// An extended attribute reply by the size protocol (see [`sized`]).
fn reply_sized(reply: ReplyXattr, size: u32, value: &[u8]) {
    match sized(size, value) {
        Sized::Length(len) => reply.size(len),
        Sized::Value => reply.data(value),
        Sized::Error(e) => reply.error(e),
    }
}

/// The answer to a `getxattr` or `listxattr` of `value` with a buffer of `size` bytes.
#[derive(Debug, PartialEq)]
enum Sized {
    /// `size` was 0: the caller asks how long the value is.
    Length(u32),
    /// The value, which fits.
    Value,
    /// `ERANGE`: the buffer is too small; `E2BIG`: the value is longer than FUSE can carry.
    Error(Errno),
}

fn sized(size: u32, value: &[u8]) -> Sized {
    let Ok(len) = u32::try_from(value.len()) else { return Sized::Error(Errno::E2BIG) };
    if size == 0 {
        Sized::Length(len)
    } else if len > size {
        Sized::Error(Errno::ERANGE)
    } else {
        Sized::Value
    }
}

/// The bytes of the files of `tree` and its inodes, each hardlinked inode once.
fn count(tree: &ImageTree) -> (u64, u64) {
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![ImageTree::ROOT];
    while let Some(node) = stack.pop() {
        let attrs = tree.attrs(node);
        if !seen.insert(attrs.ino) {
            continue;
        }
        inodes += 1;
        if attrs.kind == FileKind::File {
            bytes = bytes.saturating_add(attrs.size);
        }
        stack.extend(tree.children(node).into_iter().flatten().map(|(_, child)| child));
    }
    (bytes, inodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattrs_follow_the_size_protocol() {
        assert_eq!(sized(0, b"hello"), Sized::Length(5));
        assert_eq!(sized(0, b""), Sized::Length(0));
        assert_eq!(sized(5, b"hello"), Sized::Value);
        assert_eq!(sized(64, b"hello"), Sized::Value);
        assert_eq!(sized(4, b"hello"), Sized::Error(Errno::ERANGE));
    }
}
