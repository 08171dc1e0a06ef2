//! The image tree: an image's layers merged in order, as an unpacker lays them on disk, built
//! from their [`TarIndex`]es alone (no layer byte is read).
//!
//! The rules are the image-spec's ("Applying changesets"):
//! - layers apply bottom first; within a layer, its whiteouts apply first, to the layers below
//!   only (`DIR/.wh.NAME` deletes `DIR/NAME` and what is under it; `DIR/.wh..wh..opq` hides
//!   everything the layers below had in `DIR`), then its other entries in stream order;
//! - an entry replaces what was at its path, except that a directory over a directory only
//!   takes its attributes (the contents merge);
//! - a directory a path needs but no layer has an entry for is made (mode 0755, owned by root),
//!   and one that a file stood in the way of replaces that file;
//! - a hardlink names the file its target names at that point (the same inode: attributes and
//!   data), from its own layer or one below; one whose target is missing or not a file is left
//!   out, with a warning;
//! - whiteouts of what is not there, and aufs' own `.wh..wh.` names, change nothing.
//!
//! Symlinks stay symlinks: [`ImageTree::resolve`] follows them only inside the image (an absolute
//! target starts at the image root, `..` stops there) and gives up after
//! [`MAX_SYMLINK_HOPS`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::tar_index::{EntryKind, TarEntry, TarIndex, Whiteout, normalize_path};

/// The most nodes a tree holds, over all layers (paths deleted by upper layers count too).
pub const MAX_NODES: usize = 20_000_000;
/// The most symlinks one [`ImageTree::resolve`] follows (Linux's limit).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// The most warnings kept (later ones are counted only).
const MAX_WARNINGS: usize = 100;

/// A node of an [`ImageTree`]: a path of the merged image. The root is [`ImageTree::ROOT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// Its inode number, unique within the tree and stable for the same layers: paths that are
    /// hardlinks of one file share it; the root's is 1.
    pub fn ino(self) -> u64 {
        u64::from(self.0) + 1
    }
}

impl ImageTree {
    /// The node whose inode number is `ino` ([`Attrs::ino`]: for hardlinks, the file they name,
    /// which holds the attributes and bytes even if an upper layer deleted its own path).
    pub fn node_of_ino(&self, ino: u64) -> Option<NodeId> {
        let i = u32::try_from(ino.checked_sub(1)?).ok()?;
        ((i as usize) < self.nodes.len()).then_some(NodeId(i))
    }
}

/// Why a path does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nothing is at the path.
    #[error("no such file or directory")]
    NotFound,
    /// A component before the last is neither a directory nor a symlink to one.
    #[error("a component of the path is not a directory")]
    NotADirectory,
    /// More than [`MAX_SYMLINK_HOPS`] symlinks on the way: a loop, most likely.
    #[error("too many levels of symbolic links")]
    Loop,
}

/// The merge would exceed [`MAX_NODES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the image has more than {MAX_NODES} paths over its layers")]
pub struct TooManyNodes;

/// What a node is, as `stat` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    /// File, directory, symlink, device or fifo (never a hardlink: one is its target's inode).
    pub kind: EntryKind,
    /// Permission bits, setuid, setgid and sticky (`mode & 0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes: a file's logical size, a symlink's target length, 0 for the rest.
    pub size: u64,
    /// Modification time: seconds since the epoch, nanoseconds.
    pub mtime: (i64, u32),
    /// A device's major and minor numbers.
    pub rdev: Option<(u32, u32)>,
    /// Paths naming this inode (a directory: 2 plus its subdirectories).
    pub nlink: u32,
    /// The inode number ([`NodeId::ino`] of the inode).
    pub ino: u64,
}

/// Where a file's bytes are: which layer, and its entry there (its data offset, size and sparse
/// map).
#[derive(Debug, Clone, Copy)]
pub struct FileData<'a> {
    /// The layer's position, 0 for the bottom one.
    pub layer: usize,
    /// The entry holding the bytes.
    pub entry: TarEntry<'a>,
}

#[derive(Debug, Clone)]
struct Node {
    /// The entry giving its attributes, `(layer, entry number)`; `None` for a directory no layer
    /// has an entry for.
    entry: Option<(u16, u32)>,
    kind: EntryKind,
    /// The node that is this path's inode: itself, or for a hardlink the file it names.
    inode: u32,
    /// A directory's children by name.
    children: Option<BTreeMap<Box<[u8]>, u32>>,
    /// Paths naming this inode, counted once the tree is built (files only).
    nlink: u32,
}

/// The merged tree of an image's layers (see the module docs).
#[derive(Debug)]
pub struct ImageTree {
    layers: Vec<Arc<TarIndex>>,
    nodes: Vec<Node>,
    warnings: Vec<String>,
    n_warnings: usize,
}

impl ImageTree {
    /// The root directory.
    pub const ROOT: NodeId = NodeId(0);

    /// Merges `layers`, bottom first.
    pub fn build(layers: Vec<Arc<TarIndex>>) -> Result<ImageTree, TooManyNodes> {
        let root = Node { entry: None, kind: EntryKind::Dir, inode: 0, children: Some(BTreeMap::new()), nlink: 1 };
        let mut tree = ImageTree { layers: Vec::new(), nodes: vec![root], warnings: Vec::new(), n_warnings: 0 };
        for (li, layer) in layers.iter().enumerate() {
            let li = u16::try_from(li).map_err(|_| TooManyNodes)?;
            for e in layer.entries() {
                match e.whiteout() {
                    Some(Whiteout::Removes) => {
                        if let Some(path) = e.whited_out_path() {
                            tree.remove(&path);
                        }
                    }
                    Some(Whiteout::Opaque) => tree.make_opaque(parent_of(e.normalized_path())),
                    Some(Whiteout::AufsMeta) | None => {}
                }
            }
            for e in layer.entries().filter(|e| e.whiteout().is_none()) {
                tree.add(li, &e)?;
            }
        }
        tree.layers = layers;
        tree.count_links();
        Ok(tree)
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[Arc<TarIndex>] {
        &self.layers
    }

    /// What merging found wrong (hardlinks to missing files, files in the way of directories),
    /// the first 100, and how many there were.
    pub fn warnings(&self) -> (&[String], usize) {
        (&self.warnings, self.n_warnings)
    }

    /// The node at `path` (normalized lexically first), symlinks not followed.
    pub fn get(&self, path: &[u8]) -> Option<NodeId> {
        let path = normalize_path(path);
        let mut at = 0u32;
        for name in components(&path) {
            at = *self.nodes[at as usize].children.as_ref()?.get(name)?;
        }
        Some(NodeId(at))
    }

    /// The child `name` of directory `dir`.
    pub fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        self.nodes[dir.0 as usize].children.as_ref()?.get(name).map(|&n| NodeId(n))
    }

    /// The node at `path`, following symlinks inside the image (the last component's too if
    /// `follow_last`).
    pub fn resolve(&self, path: &[u8], follow_last: bool) -> Result<NodeId, ResolveError> {
        let mut hops = 0;
        // The components still to walk, last first, and the directories walked (for `..`).
        let mut todo: Vec<Vec<u8>> = components(path).rev().map(<[u8]>::to_vec).collect();
        let mut walked: Vec<u32> = vec![0];
        while let Some(name) = todo.pop() {
            let at = *walked.last().expect("the root is never popped");
            match name.as_slice() {
                b"." => continue,
                b".." => {
                    if walked.len() > 1 {
                        walked.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let children = self.nodes[at as usize].children.as_ref().ok_or(ResolveError::NotADirectory)?;
            let next = *children.get(name.as_slice()).ok_or(ResolveError::NotFound)?;
            let node = &self.nodes[next as usize];
            let is_last = todo.is_empty();
            if node.kind == EntryKind::Symlink && (!is_last || follow_last) {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ResolveError::Loop);
                }
                let target = self.link_target(NodeId(next)).unwrap_or_default();
                if target.starts_with(b"/") {
                    walked.truncate(1);
                }
                todo.extend(components(target).rev().map(<[u8]>::to_vec));
                continue;
            }
            walked.push(next);
        }
        Ok(NodeId(*walked.last().expect("the root is never popped")))
    }

    /// A directory's children, by name in byte order; `None` if `dir` is not a directory.
    pub fn children(&self, dir: NodeId) -> Option<impl ExactSizeIterator<Item = (&[u8], NodeId)> + '_> {
        let children = self.nodes[dir.0 as usize].children.as_ref()?;
        Some(children.iter().map(|(name, &n)| (&name[..], NodeId(n))))
    }

    /// What `stat` says of `node`.
    pub fn attrs(&self, node: NodeId) -> Attrs {
        let n = &self.nodes[node.0 as usize];
        let inode = &self.nodes[n.inode as usize];
        let ino = NodeId(n.inode).ino();
        let nlink = match &n.children {
            Some(children) => {
                let subdirs = children.values().filter(|&&c| self.nodes[c as usize].children.is_some()).count();
                u32::try_from(subdirs).unwrap_or(u32::MAX).saturating_add(2)
            }
            None => inode.nlink.max(1),
        };
        let Some(e) = self.entry_of(inode) else {
            let size = 0;
            return Attrs { kind: n.kind, perm: 0o755, uid: 0, gid: 0, size, mtime: (0, 0), rdev: None, nlink, ino };
        };
        let size = match inode.kind {
            EntryKind::File => e.size(),
            EntryKind::Symlink => e.link_target().map_or(0, |t| t.len() as u64),
            _ => 0,
        };
        Attrs {
            kind: inode.kind,
            perm: e.mode() & 0o7777,
            uid: e.uid(),
            gid: e.gid(),
            size,
            mtime: e.mtime(),
            rdev: e.device(),
            nlink,
            ino,
        }
    }

    /// A symlink's target, as its entry spells it.
    pub fn link_target(&self, node: NodeId) -> Option<&[u8]> {
        let n = &self.nodes[node.0 as usize];
        if n.kind != EntryKind::Symlink {
            return None;
        }
        self.entry_of(n)?.link_target()
    }

    /// A node's extended attributes, name and value, sorted by name.
    pub fn xattrs(&self, node: NodeId) -> Vec<(&[u8], &[u8])> {
        let n = &self.nodes[node.0 as usize];
        self.entry_of(&self.nodes[n.inode as usize]).map(|e| e.xattrs().collect()).unwrap_or_default()
    }

    /// Where a regular file's bytes are; `None` for anything else.
    pub fn data(&self, node: NodeId) -> Option<FileData<'_>> {
        let n = &self.nodes[node.0 as usize];
        let inode = &self.nodes[n.inode as usize];
        if inode.kind != EntryKind::File {
            return None;
        }
        let (layer, number) = inode.entry?;
        let entry = self.layers[usize::from(layer)].entry(number as usize)?;
        Some(FileData { layer: usize::from(layer), entry })
    }

    /// The number of nodes made while merging (live or deleted by an upper layer).
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    fn entry_of(&self, n: &Node) -> Option<TarEntry<'_>> {
        let (layer, number) = n.entry?;
        self.layers.get(usize::from(layer))?.entry(number as usize)
    }

    fn warn(&mut self, what: String) {
        self.n_warnings += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(what);
        }
    }

    /// Deletes what is at `path` (a whiteout).
    fn remove(&mut self, path: &[u8]) {
        let (parent, name) = split_last(path);
        if name.is_empty() {
            return; // The root is never deleted.
        }
        if let Some(dir) = self.get(parent)
            && let Some(children) = self.nodes[dir.0 as usize].children.as_mut()
        {
            children.remove(name);
        }
    }

    /// Hides everything the layers merged so far have in directory `path` (an opaque whiteout).
    fn make_opaque(&mut self, path: &[u8]) {
        if let Some(dir) = self.get(path)
            && let Some(children) = self.nodes[dir.0 as usize].children.as_mut()
        {
            children.clear();
        }
    }

    /// Adds entry `e` of layer `layer` at its path.
    fn add(&mut self, layer: u16, e: &TarEntry<'_>) -> Result<(), TooManyNodes> {
        let path = e.normalized_path();
        let number = u32::try_from(e.number()).map_err(|_| TooManyNodes)?;
        if path.is_empty() {
            if e.kind() == EntryKind::Dir {
                self.nodes[0].entry = Some((layer, number));
            }
            return Ok(());
        }
        let (parent, name) = split_last(path);
        let dir = self.make_dirs(parent)?;
        let existing = self.child(NodeId(dir), name).map(|n| n.0);
        let node = match e.kind() {
            EntryKind::Hardlink => {
                let target = normalize_path(e.link_target().unwrap_or_default()).into_owned();
                match self.get(&target).map(|t| self.nodes[t.0 as usize].inode) {
                    Some(inode) if self.nodes[inode as usize].children.is_none() => {
                        let kind = self.nodes[inode as usize].kind;
                        Node { entry: Some((layer, number)), kind, inode, children: None, nlink: 0 }
                    }
                    _ => {
                        let what = format!(
                            "hardlink {} names {}, which is not a file of the layers so far; left out",
                            String::from_utf8_lossy(path),
                            String::from_utf8_lossy(&target)
                        );
                        self.warn(what);
                        return Ok(());
                    }
                }
            }
            EntryKind::Dir => {
                if let Some(n) = existing.filter(|&n| self.nodes[n as usize].children.is_some()) {
                    self.nodes[n as usize].entry = Some((layer, number));
                    return Ok(());
                }
                Node {
                    entry: Some((layer, number)),
                    kind: EntryKind::Dir,
                    inode: 0,
                    children: Some(BTreeMap::new()),
                    nlink: 0,
                }
            }
            kind => Node { entry: Some((layer, number)), kind, inode: 0, children: None, nlink: 0 },
        };
        let id = self.push(node)?;
        self.nodes[dir as usize].children.as_mut().expect("made a directory").insert(name.into(), id);
        Ok(())
    }

    /// Appends `node` (its own inode unless it names another's).
    fn push(&mut self, mut node: Node) -> Result<u32, TooManyNodes> {
        if self.nodes.len() >= MAX_NODES {
            return Err(TooManyNodes);
        }
        let id = u32::try_from(self.nodes.len()).map_err(|_| TooManyNodes)?;
        if node.inode == 0 {
            node.inode = id;
        }
        self.nodes.push(node);
        Ok(id)
    }

    /// The directory at `path`, made (with its parents) where missing, replacing a non-directory
    /// in the way.
    fn make_dirs(&mut self, path: &[u8]) -> Result<u32, TooManyNodes> {
        let mut at = 0u32;
        for name in components(path) {
            let existing = self.nodes[at as usize].children.as_ref().and_then(|c| c.get(name)).copied();
            at = match existing {
                Some(n) if self.nodes[n as usize].children.is_some() => n,
                other => {
                    if other.is_some() {
                        let what = format!(
                            "{} is not a directory but a path below it is; replaced",
                            String::from_utf8_lossy(path)
                        );
                        self.warn(what);
                    }
                    let dir =
                        Node { entry: None, kind: EntryKind::Dir, inode: 0, children: Some(BTreeMap::new()), nlink: 0 };
                    let id = self.push(dir)?;
                    self.nodes[at as usize].children.as_mut().expect("walked directories only").insert(name.into(), id);
                    id
                }
            };
        }
        Ok(at)
    }

    /// Counts the paths naming each file's inode.
    fn count_links(&mut self) {
        let mut stack = vec![0u32];
        let mut counts: Vec<(u32, u32)> = Vec::new();
        while let Some(dir) = stack.pop() {
            let Some(children) = self.nodes[dir as usize].children.as_ref() else { continue };
            for &c in children.values() {
                let n = &self.nodes[c as usize];
                if n.children.is_some() {
                    stack.push(c);
                } else {
                    counts.push((n.inode, 1));
                }
            }
        }
        for (inode, k) in counts {
            self.nodes[inode as usize].nlink += k;
        }
    }
}

/// The non-empty components of `path`.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// `path`'s parent and last component (`("", "a")` for `a`).
fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// `path`'s parent (the root's is the root).
fn parent_of(path: &[u8]) -> &[u8] {
    split_last(path).0
}
