//! Images of real files for the tests of files inside images: each layer is a tar archive made by
//! GNU `tar` from a directory staged on disk (owners, modes, mtimes, fifos, character devices,
//! `user.*` xattrs, hardlinks, symlinks, long names, names that are not UTF-8, OCI whiteouts), in
//! GNU or POSIX (PAX) format, compressed by the `gzip` or `zstd` command (one frame or several) or
//! left plain; then written as an OCI layout by `image.rs`, which [`RegistryServer::push`] pushes.
//!
//! ```no_run
//! use tiercache_testkit::registry::{FileImage, LayerSpec};
//!
//! let image = FileImage::new("v1")
//!     .layer(LayerSpec::gzip().file("etc/a", b"one", 0o644).dir("var/cache", 0o755).symlink("bin", "usr/bin"))
//!     .layer(LayerSpec::zstd().pax().whiteout("etc/a").opaque("var/cache").file("etc/b", b"two", 0o600).owner(1, 2))
//!     .build()
//!     .unwrap();
//! ```
//!
//! Staging and `tar` need root for owners and devices (tests run as root, as CI does). Beside it:
//! `files/bad.rs` makes layers a cache must refuse or survive, `files/big.rs` one large gzip layer,
//! and `files/facts.rs` unpacks an image with `umoci` and describes the tree it gives.
//!
//! [`RegistryServer::push`]: super::RegistryServer::push

mod big;
mod facts;

use std::ffi::OsStr;

use rustix::fs::{self, FileType};
use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod bad;
pub use big::{BigLayerImage, big_gzip_layer_image};
pub use facts::{FileFacts, FileKind, Unpacked, tree_facts, umoci_unpack};

use super::image::{BuiltImage, ImageBlob, media_types, single_platform_image};
use crate::servers::{find_binary, tempdir};

/// The mtime of every entry and staged parent directory not given one (2023-11-14).
pub const DEFAULT_MTIME: i64 = 1_700_000_000;

/// The tar format `tar --format=…` writes a layer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarFormat {
    /// `--format=gnu`: long names as `././@LongLink` members.
    Gnu,
    /// `--format=posix`: PAX extended headers (long names, xattrs as `SCHILY.xattr.*`).
    Pax,
}

/// How a layer's tar is stored in the image, and the media type that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// Plain tar (`application/vnd.oci.image.layer.v1.tar`).
    Tar,
    /// `gzip -n` (`tar+gzip`).
    Gzip,
    /// `zstd`, one frame (`tar+zstd`).
    Zstd,
    /// The tar cut into pieces of `frame_bytes`, each compressed by `zstd` on its own and the
    /// frames concatenated (`tar+zstd`): a decoder may start at any frame boundary.
    ZstdFrames {
        /// Uncompressed bytes per frame (the last may be shorter).
        frame_bytes: usize,
    },
}

impl LayerCompression {
    /// The layer media type of this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Tar => media_types::OCI_LAYER_TAR,
            LayerCompression::Gzip => media_types::OCI_LAYER_GZIP,
            LayerCompression::Zstd | LayerCompression::ZstdFrames { .. } => media_types::OCI_LAYER_ZSTD,
        }
    }
}

/// What one staged entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryKind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    /// A hardlink to an entry staged earlier in the same layer.
    Hardlink(Vec<u8>),
    Fifo,
    CharDevice(u32, u32),
    /// `size` bytes, all holes but for the writes at their offsets.
    Sparse {
        size_bytes: u64,
        writes: Vec<(u64, Vec<u8>)>,
    },
}

/// One entry of a layer, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: Vec<u8>,
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The entries of one layer, in the order the tar will hold them, and how it is stored.
///
/// Parent directories are staged as needed (mode 0755, owner 0, [`DEFAULT_MTIME`]) and put in the
/// tar before their children. `owner`, `mtime` and `xattr` change the entry added last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    compression: LayerCompression,
    format: TarFormat,
    entries: Vec<Entry>,
}

impl LayerSpec {
    /// An empty layer stored as `compression`, in GNU format.
    pub fn new(compression: LayerCompression) -> LayerSpec {
        LayerSpec { compression, format: TarFormat::Gnu, entries: Vec::new() }
    }

    /// An empty gzip layer.
    pub fn gzip() -> LayerSpec {
        LayerSpec::new(LayerCompression::Gzip)
    }

    /// An empty zstd layer, one frame.
    pub fn zstd() -> LayerSpec {
        LayerSpec::new(LayerCompression::Zstd)
    }

    /// An empty zstd layer of frames of `frame_bytes` uncompressed bytes each.
    pub fn zstd_frames(frame_bytes: usize) -> LayerSpec {
        assert!(frame_bytes > 0, "a frame holds at least one byte");
        LayerSpec::new(LayerCompression::ZstdFrames { frame_bytes })
    }

    /// An empty uncompressed layer.
    pub fn tar() -> LayerSpec {
        LayerSpec::new(LayerCompression::Tar)
    }

    /// Written in POSIX (PAX) format.
    pub fn pax(mut self) -> LayerSpec {
        self.format = TarFormat::Pax;
        self
    }

    /// Written in GNU format (the default).
    pub fn gnu(mut self) -> LayerSpec {
        self.format = TarFormat::Gnu;
        self
    }

    /// How it is stored.
    pub fn compression(&self) -> LayerCompression {
        self.compression
    }

    /// Its tar format.
    pub fn format(&self) -> TarFormat {
        self.format
    }

    fn push(mut self, path: &[u8], kind: EntryKind, mode: u32) -> LayerSpec {
        assert!(!path.is_empty() && !path.starts_with(b"/"), "entry paths are relative and not empty");
        self.entries.push(Entry {
            path: path.to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: DEFAULT_MTIME,
            xattrs: Vec::new(),
        });
        self
    }

    /// A regular file holding `bytes`.
    pub fn file(self, path: impl AsRef<[u8]>, bytes: impl AsRef<[u8]>, mode: u32) -> LayerSpec {
        self.push(path.as_ref(), EntryKind::File(bytes.as_ref().to_vec()), mode)
    }

    /// A directory (the mode of one staged before is changed).
    pub fn dir(self, path: impl AsRef<[u8]>, mode: u32) -> LayerSpec {
        self.push(path.as_ref(), EntryKind::Dir, mode)
    }

    /// A symlink to `target`, taken as it is (absolute, relative, dangling or a loop).
    pub fn symlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> LayerSpec {
        self.push(path.as_ref(), EntryKind::Symlink(target.as_ref().to_vec()), 0o777)
    }

    /// A hardlink to `target`, an entry added before in this layer (tar stores the first name
    /// as the file and this one as a link to it).
    pub fn hardlink(self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> LayerSpec {
        self.push(path.as_ref(), EntryKind::Hardlink(target.as_ref().to_vec()), 0)
    }

    /// A fifo (`mkfifo`).
    pub fn fifo(self, path: impl AsRef<[u8]>, mode: u32) -> LayerSpec {
        self.push(path.as_ref(), EntryKind::Fifo, mode)
    }

    /// A character device `major:minor` (`mknod`; needs root).
    pub fn char_device(self, path: impl AsRef<[u8]>, major: u32, minor: u32, mode: u32) -> LayerSpec {
        self.push(path.as_ref(), EntryKind::CharDevice(major, minor), mode)
    }

    /// A sparse file of `size_bytes` (`truncate`), holding `writes` at their offsets; the layer
    /// is then made with `tar --sparse`.
    pub fn sparse_file(self, path: impl AsRef<[u8]>, size_bytes: u64, writes: &[(u64, &[u8])]) -> LayerSpec {
        let writes = writes.iter().map(|(at, b)| (*at, b.to_vec())).collect();
        self.push(path.as_ref(), EntryKind::Sparse { size_bytes, writes }, 0o644)
    }

    /// The OCI whiteout of `path`: an empty file `.wh.<name>` beside where `path` was, deleting
    /// it (and everything under it) from the layers below.
    pub fn whiteout(self, path: impl AsRef<[u8]>) -> LayerSpec {
        let path = path.as_ref();
        let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(at) => (&path[..=at], &path[at + 1..]),
            None => (&b""[..], path),
        };
        let wh = [parent, b".wh.", name].concat();
        self.push(&wh, EntryKind::File(Vec::new()), 0o644)
    }

    /// Makes directory `dir` opaque: an empty `dir/.wh..wh..opq` hides what the layers below
    /// hold under `dir` (entries of this layer under it stay).
    pub fn opaque(self, dir: impl AsRef<[u8]>) -> LayerSpec {
        let path = [dir.as_ref(), b"/.wh..wh..opq"].concat();
        self.push(&path, EntryKind::File(Vec::new()), 0o644)
    }

    fn last(&mut self) -> &mut Entry {
        self.entries.last_mut().expect("owner, mtime and xattr follow an entry")
    }

    /// The last entry's owner.
    pub fn owner(mut self, uid: u32, gid: u32) -> LayerSpec {
        let e = self.last();
        (e.uid, e.gid) = (uid, gid);
        self
    }

    /// The last entry's mtime, in seconds since the epoch.
    pub fn mtime(mut self, seconds: i64) -> LayerSpec {
        self.last().mtime = seconds;
        self
    }

    /// An extended attribute of the last entry; `name` must start with `user.` (only those are
    /// put in the tar), and the layer be [`pax`](Self::pax) (GNU tar archives xattrs only there).
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> LayerSpec {
        assert!(name.starts_with("user."), "only user.* xattrs are archived");
        self.last().xattrs.push((name.as_bytes().to_vec(), value.as_ref().to_vec()));
        self
    }

    /// Stages the entries, runs `tar` and compresses the archive. Needs root (owners, devices).
    pub fn build(&self) -> Result<BuiltLayer, String> {
        if self.format == TarFormat::Gnu && self.entries.iter().any(|e| !e.xattrs.is_empty()) {
            return Err("xattrs need a PAX layer: GNU tar archives them only with --format=posix".into());
        }
        let stage = tempdir("layer-stage")?;
        let root = stage.path().join("root");
        std::fs::create_dir(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let members = stage_entries(&self.entries, &root)?;
        let list = stage.path().join("members");
        std::fs::write(&list, members.join(&0u8)).map_err(|e| format!("writing {}: {e}", list.display()))?;
        let is_sparse = self.entries.iter().any(|e| matches!(e.kind, EntryKind::Sparse { .. }));
        let tar = run_tar(&root, &list, self.format, is_sparse)?;
        BuiltLayer::compress(tar, self.compression)
    }
}

/// One layer as built: its blob (compressed as its media type says), its diff id and its tar.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    /// The layer's blob.
    pub blob: ImageBlob,
    /// `sha256:<hex>` of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// The uncompressed tar (empty for [`big_gzip_layer_image`]'s layer, streamed and not kept).
    pub tar: Vec<u8>,
}

impl BuiltLayer {
    /// `tar` compressed as `compression`.
    pub fn compress(tar: Vec<u8>, compression: LayerCompression) -> Result<BuiltLayer, String> {
        let bytes = match compression {
            LayerCompression::Tar => tar.clone(),
            LayerCompression::Gzip => filter("gzip", &["-n", "-c"], &tar)?,
            LayerCompression::Zstd => filter("zstd", &["-q", "-c", "-3"], &tar)?,
            LayerCompression::ZstdFrames { frame_bytes } => {
                let mut out = Vec::new();
                for chunk in tar.chunks(frame_bytes) {
                    out.extend(filter("zstd", &["-q", "-c", "-3"], chunk)?);
                }
                out
            }
        };
        Ok(BuiltLayer::raw(compression.media_type(), bytes, crate::sha256(&tar), tar))
    }

    /// A layer of exactly `bytes` with `media_type`, whatever they hold.
    pub fn raw(media_type: &str, bytes: Vec<u8>, diff_id: String, tar: Vec<u8>) -> BuiltLayer {
        BuiltLayer { blob: ImageBlob::new(media_type, bytes), diff_id, tar }
    }
}

/// An image of layers built from [`LayerSpec`]s, in order (the first is the bottom).
#[derive(Debug, Clone)]
pub struct FileImage {
    tag: String,
    layers: Vec<LayerSpec>,
}

impl FileImage {
    /// An image without layers, tagged `tag` in its layout.
    pub fn new(tag: &str) -> FileImage {
        FileImage { tag: tag.to_owned(), layers: Vec::new() }
    }

    /// Adds `layer` on top.
    pub fn layer(mut self, layer: LayerSpec) -> FileImage {
        self.layers.push(layer);
        self
    }

    /// Its layers.
    pub fn layers(&self) -> &[LayerSpec] {
        &self.layers
    }

    /// Builds every layer and writes the layout (one platform, `linux/amd64`) to a new
    /// temporary directory.
    pub fn build(&self) -> Result<BuiltImage, String> {
        let layers = self.layers.iter().map(LayerSpec::build).collect::<Result<Vec<_>, _>>()?;
        image_of_layers(&self.tag, layers)
    }

    /// Four layers, tag `sample`, exercising what a tar layer can hold; see [`sample`] for the
    /// paths and what each layer does.
    pub fn sample() -> FileImage {
        sample::image()
    }
}

/// A one-platform image of `layers` (bottom first), tagged `tag`.
pub fn image_of_layers(tag: &str, layers: Vec<BuiltLayer>) -> Result<BuiltImage, String> {
    single_platform_image(tag, layers.into_iter().map(|l| (l.blob, l.diff_id)).collect())
}

/// [`FileImage::sample`]: its layers, and paths a test can check after merging them.
///
/// 1. gzip, GNU: `etc/` files (one to be overwritten, one to be deleted, one `0640` owned
///    `0:42`), `usr/bin/tool` (`0755`, `1000:1000`, mtime [`OLD_MTIME`]) with a hardlink
///    `usr/bin/tool-link`, a setuid file, `var/cache/{a,sub/b}` (hidden later by an opaque
///    directory), symlinks (absolute `etc/localtime`, relative `bin`, the loop `loop/a` ⇄
///    `loop/b`), a fifo, a character device `dev/null` (1:3), and [`GNU_LONG_NAME`].
/// 2. zstd, one frame, PAX: overwrites `etc/hostname`, whites out `etc/old`, makes `var/cache`
///    opaque (adding `var/cache/new`), a file with xattrs [`XATTR_FILE`], [`PAX_LONG_NAME`], a
///    symlink with a long absolute target [`PAX_LONG_LINK`], [`INVALID_UTF8_NAME`], a UTF-8 name,
///    and the hardlink pair `data/original` / `data/hardlink`.
/// 3. zstd, frames of 64 KiB, GNU: `data/frames.bin` (256 KiB), a whiteout of `usr/bin/suid`, a
///    symlink with a long relative target [`GNU_LONG_LINK`], the whole `deep/` directory whited out
///    and its long name staged again under a new parent.
/// 4. plain tar, PAX: `etc/motd`, `data/frames.bin` overwritten by a short file, `opt/app/`
///    (`0700`, `1234:5678`).
pub mod sample {
    use super::{FileImage, LayerSpec};

    /// The mtime of `usr/bin/tool`.
    pub const OLD_MTIME: i64 = 1_600_000_000;
    /// A path longer than 100 bytes in the GNU layer (1), deleted in layer 3.
    pub const GNU_LONG_NAME: &str = "deep/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.txt";
    /// A path longer than 100 bytes in layer 3 (GNU), present in the merged tree.
    pub const GNU_LONG_NAME_KEPT: &str = "kept/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.txt";
    /// A path longer than 100 bytes in the PAX layer (2).
    pub const PAX_LONG_NAME: &str = "pax/cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc.txt";
    /// A symlink in layer 2 whose absolute target is longer than 100 bytes ([`PAX_LONG_TARGET`]).
    pub const PAX_LONG_LINK: &str = "pax/longlink";
    /// Its target.
    pub const PAX_LONG_TARGET: &str = "/tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt/target";
    /// A symlink in layer 3 whose relative target is longer than 100 bytes ([`GNU_LONG_TARGET`]).
    pub const GNU_LONG_LINK: &str = "links/gnu-long";
    /// Its target (the kept long name).
    pub const GNU_LONG_TARGET: &str = "../kept/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.txt";
    /// A name that is not UTF-8 (layer 2).
    pub const INVALID_UTF8_NAME: &[u8] = b"names/bad-\xff\xfe.txt";
    /// A file with `user.comment=hello` and `user.binary=\0\xff` (layer 2).
    pub const XATTR_FILE: &str = "etc/xattr.txt";

    /// The image.
    pub(super) fn image() -> FileImage {
        FileImage::new("sample").layer(base()).layer(second()).layer(third()).layer(fourth())
    }

    fn base() -> LayerSpec {
        LayerSpec::gzip()
            .dir("etc", 0o755)
            .file("etc/hostname", b"base\n", 0o644)
            .file("etc/old", b"deleted by layer 2\n", 0o644)
            .file("etc/shadow", b"root:*:19000::::::\n", 0o640)
            .owner(0, 42)
            .file("usr/bin/tool", crate::bytes(1, 4096), 0o755)
            .owner(1000, 1000)
            .mtime(OLD_MTIME)
            .hardlink("usr/bin/tool-link", "usr/bin/tool")
            .file("usr/bin/suid", b"#!/bin/sh\n", 0o4755)
            .file("var/cache/a", b"hidden by the opaque dir\n", 0o644)
            .file("var/cache/sub/b", b"hidden too\n", 0o644)
            .symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
            .symlink("bin", "usr/bin")
            .symlink("loop/a", "b")
            .symlink("loop/b", "a")
            .fifo("run/fifo", 0o620)
            .char_device("dev/null", 1, 3, 0o666)
            .file(GNU_LONG_NAME, b"a long GNU name\n", 0o644)
    }

    fn second() -> LayerSpec {
        LayerSpec::zstd()
            .pax()
            .file("etc/hostname", b"upper\n", 0o644)
            .whiteout("etc/old")
            .opaque("var/cache")
            .file("var/cache/new", b"after the opaque marker\n", 0o644)
            .file(XATTR_FILE, b"has xattrs\n", 0o644)
            .xattr("user.comment", b"hello")
            .xattr("user.binary", b"\0\xff")
            .file(PAX_LONG_NAME, b"a long PAX name\n", 0o644)
            .symlink(PAX_LONG_LINK, PAX_LONG_TARGET)
            .file(INVALID_UTF8_NAME, b"latin-1 bytes in the name\n", 0o644)
            .file("names/caf\u{e9}-\u{fc}n\u{ef}.txt", b"UTF-8 name\n", 0o644)
            .file("data/original", crate::bytes(2, 10_000), 0o644)
            .owner(7, 8)
            .hardlink("data/hardlink", "data/original")
    }

    fn third() -> LayerSpec {
        LayerSpec::zstd_frames(64 * 1024)
            .file("data/frames.bin", crate::bytes(3, 256 * 1024), 0o644)
            .whiteout("usr/bin/suid")
            .whiteout("deep")
            .file(GNU_LONG_NAME_KEPT, b"a long GNU name, kept\n", 0o644)
            .symlink(GNU_LONG_LINK, GNU_LONG_TARGET)
    }

    fn fourth() -> LayerSpec {
        LayerSpec::tar()
            .pax()
            .file("etc/motd", b"plain tar layer\n", 0o644)
            .file("data/frames.bin", b"overwritten by the plain layer\n", 0o644)
            .dir("opt/app", 0o700)
            .owner(1234, 5678)
    }
}

/// Creates `entries` under `root` (parents as needed) and sets their metadata; returns the
/// member names for `tar`, parents before children, each once, in the order first met.
fn stage_entries(entries: &[Entry], root: &Path) -> Result<Vec<Vec<u8>>, String> {
    let mut members: Vec<Vec<u8>> = Vec::new();
    let mut times: Vec<(PathBuf, i64)> = Vec::new();
    for e in entries {
        for (at, _) in e.path.iter().enumerate().filter(|(_, b)| **b == b'/') {
            let parent = &e.path[..at];
            if !members.iter().any(|m| m == parent) {
                let dir = root.join(OsStr::from_bytes(parent));
                if !dir.exists() {
                    std::fs::create_dir(&dir).map_err(|err| format!("creating {}: {err}", dir.display()))?;
                    times.push((dir, DEFAULT_MTIME));
                }
                members.push(parent.to_vec());
            }
        }
        let path = root.join(OsStr::from_bytes(&e.path));
        create(e, &path, root)?;
        if !matches!(e.kind, EntryKind::Hardlink(_)) {
            set_metadata(e, &path)?;
            times.push((path, e.mtime));
        }
        if !members.contains(&e.path) {
            members.push(e.path.clone());
        }
    }
    // Last: creating a child changes its directory's mtime.
    for (path, mtime) in &times {
        set_mtime(path, *mtime)?;
    }
    Ok(members)
}

/// Creates the entry itself at `path`.
fn create(e: &Entry, path: &Path, root: &Path) -> Result<(), String> {
    let what = |err: std::io::Error| format!("staging {}: {err}", path.display());
    match &e.kind {
        EntryKind::File(bytes) => std::fs::write(path, bytes).map_err(what),
        EntryKind::Dir if path.is_dir() => Ok(()),
        EntryKind::Dir => std::fs::create_dir(path).map_err(what),
        EntryKind::Symlink(target) => std::os::unix::fs::symlink(OsStr::from_bytes(target), path).map_err(what),
        EntryKind::Hardlink(target) => std::fs::hard_link(root.join(OsStr::from_bytes(target)), path).map_err(what),
        EntryKind::Fifo => mknod(path, FileType::Fifo, e.mode, 0).map_err(what),
        EntryKind::CharDevice(major, minor) => {
            mknod(path, FileType::CharacterDevice, e.mode, fs::makedev(*major, *minor)).map_err(what)
        }
        EntryKind::Sparse { size_bytes, writes } => {
            let file = std::fs::File::create(path).map_err(what)?;
            file.set_len(*size_bytes).map_err(what)?;
            for (at, bytes) in writes {
                std::os::unix::fs::FileExt::write_all_at(&file, bytes, *at).map_err(what)?;
            }
            Ok(())
        }
    }
}

/// Owner, mode (not of a symlink) and xattrs of the entry at `path`.
fn set_metadata(e: &Entry, path: &Path) -> Result<(), String> {
    let what = |err: std::io::Error| format!("setting the metadata of {}: {err}", path.display());
    std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid))
        .map_err(|err| format!("{} (staging owners needs root)", what(err)))?;
    if !matches!(e.kind, EntryKind::Symlink(_)) {
        // After chown, which clears setuid bits.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode)).map_err(what)?;
    }
    for (name, value) in &e.xattrs {
        fs::lsetxattr(path, OsStr::from_bytes(name), value, fs::XattrFlags::empty()).map_err(|err| what(err.into()))?;
    }
    Ok(())
}

/// Sets the mtime (and atime) of `path`, not following a symlink.
fn set_mtime(path: &Path, seconds: i64) -> Result<(), String> {
    let t = fs::Timespec { tv_sec: seconds, tv_nsec: 0 };
    let times = fs::Timestamps { last_access: t, last_modification: t };
    fs::utimensat(fs::CWD, path, &times, fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| format!("setting the mtime of {}: {e}", path.display()))
}

/// `mknod` of a fifo or device at `path` with permission bits `mode`.
fn mknod(path: &Path, file_type: FileType, mode: u32, dev: fs::Dev) -> std::io::Result<()> {
    fs::mknodat(fs::CWD, path, file_type, fs::Mode::from_raw_mode(mode), dev).map_err(Into::into)
}

const TAR_INSTALL: &str = "apt-get install -y tar (GNU tar)";

/// `tar` of the members listed (NUL-separated) in `list`, relative to `root`, in that order.
fn run_tar(root: &Path, list: &Path, format: TarFormat, is_sparse: bool) -> Result<Vec<u8>, String> {
    let tar = find_binary("TIERCACHE_TAR", "tar", &[Path::new("/usr/bin"), Path::new("/bin")], TAR_INSTALL)?;
    let mut command = Command::new(tar);
    command.args(["--create", "--file=-", "--numeric-owner", "--no-recursion", "--null"]);
    match format {
        TarFormat::Gnu => command.arg("--format=gnu"),
        // Without atime and ctime the PAX headers depend only on what was staged. GNU tar archives
        // xattrs in PAX headers only.
        TarFormat::Pax => command.args([
            "--format=posix",
            "--pax-option=delete=atime,delete=ctime",
            "--xattrs",
            "--xattrs-include=user.*",
        ]),
    };
    if is_sparse {
        command.arg("--sparse");
    }
    command.arg("-C").arg(root).arg("--files-from").arg(list);
    let out = command.stdin(Stdio::null()).output().map_err(|e| format!("running tar: {e}"))?;
    if !out.status.success() {
        return Err(format!("tar failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}

/// The output of `program args` given `input` on its standard input (`program` found as
/// `$TIERCACHE_<PROGRAM>`, else on `PATH`).
pub(crate) fn filter(program: &str, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let install = format!("apt-get install -y {program}");
    let env_var = format!("TIERCACHE_{}", program.to_uppercase());
    let binary = find_binary(&env_var, program, &[Path::new("/usr/bin"), Path::new("/bin")], &install)?;
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {program}: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (out, written) = std::thread::scope(|s| {
        let writer = s.spawn(move || stdin.write_all(input));
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out);
        (read.map(|_| out), writer.join().expect("the writer thread"))
    });
    let status = child.wait().map_err(|e| format!("waiting for {program}: {e}"))?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(format!("{program} {} failed ({status}): {err}", args.join(" ")));
    }
    written.map_err(|e| format!("writing to {program}: {e}"))?;
    out.map_err(|e| format!("reading from {program}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::sample::*;
    use super::*;
    use crate::registry::{FileKind, RegistryAuth, RegistryServer, tree_facts, umoci_unpack};
    use crate::servers::or_skip;

    /// `Some(built)` as root; else `None` after `skip_or_fail` (staging owners needs root).
    pub(crate) fn as_root<T>(build: impl FnOnce() -> Result<T, String>) -> Option<T> {
        if !crate::registry::is_root() {
            crate::servers::skip_or_fail("root", "staging owners and devices needs root".into());
            return None;
        }
        Some(build().unwrap())
    }

    const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

    /// The sample's layers are what their specs say: compressions, formats, several zstd frames.
    #[test]
    fn the_sample_layers_are_stored_as_specified() {
        let Some(image) = as_root(|| FileImage::sample().build()) else { return };
        let layers = &image.manifests()[0].layers;
        let types: Vec<_> = layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(
            types,
            [
                media_types::OCI_LAYER_GZIP,
                media_types::OCI_LAYER_ZSTD,
                media_types::OCI_LAYER_ZSTD,
                media_types::OCI_LAYER_TAR
            ]
        );
        assert_eq!(&layers[0].bytes[..2], &[0x1f, 0x8b]);
        let frames = |b: &[u8]| b.windows(4).filter(|w| *w == ZSTD_MAGIC).count();
        assert_eq!(frames(&layers[1].bytes), 1);
        assert!(frames(&layers[2].bytes) >= 4, "a frame per 64 KiB of a 256 KiB file");
        assert_eq!(&layers[3].bytes[257..262], b"ustar", "plain tar");
        let gnu = &layers[0].bytes;
        let tar = filter("gzip", &["-d", "-c"], gnu).unwrap();
        assert!(tar.windows(13).any(|w| w == b"././@LongLink"), "GNU long names");
    }

    /// Pushed by skopeo and unpacked by umoci, the sample merges as its layers say: overwrites,
    /// whiteouts, an opaque directory, hardlinks, long names, a name that is not UTF-8, xattrs.
    #[test]
    fn the_sample_pushes_and_unpacks_as_documented() {
        let Some(image) = as_root(|| FileImage::sample().build()) else { return };
        let Some(reg) = or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else { return };
        if let Err(e) = reg.push(&image, "files/sample", "v1") {
            crate::servers::skip_or_fail("skopeo", e);
            return;
        }
        let Some(unpacked) = or_skip("umoci", umoci_unpack(&image)) else { return };
        let facts = tree_facts(&unpacked.rootfs()).unwrap();
        let get = |p: &[u8]| facts.get(p).unwrap_or_else(|| panic!("{} missing", String::from_utf8_lossy(p)));
        assert_eq!(get(b"etc/hostname").sha256, Some(crate::sha256(b"upper\n")));
        assert!(!facts.contains_key(&b"etc/old"[..]) && !facts.contains_key(&b"etc/.wh.old"[..]));
        assert!(!facts.contains_key(&b"var/cache/a"[..]) && !facts.contains_key(&b"var/cache/sub"[..]));
        assert!(facts.contains_key(&b"var/cache/new"[..]));
        assert!(!facts.keys().any(|k| k.windows(4).any(|w| w == b".wh.")), "no whiteout file is left");
        assert!(!facts.contains_key(&b"usr/bin/suid"[..]) && !facts.contains_key(&b"deep"[..]));
        let tool = get(b"usr/bin/tool");
        assert_eq!((tool.mode, tool.uid, tool.gid, tool.mtime), (0o755, 1000, 1000, OLD_MTIME));
        assert_eq!(tool.hardlink_group.as_deref(), Some(&b"usr/bin/tool"[..]));
        assert_eq!(get(b"usr/bin/tool-link").hardlink_group, tool.hardlink_group);
        assert_eq!(get(b"data/hardlink").hardlink_group.as_deref(), Some(&b"data/hardlink"[..]));
        assert_eq!((get(b"data/original").uid, get(b"data/original").gid), (7, 8));
        assert_eq!((get(b"etc/shadow").mode, get(b"etc/shadow").gid), (0o640, 42));
        assert_eq!(get(GNU_LONG_NAME_KEPT.as_bytes()).kind, FileKind::File);
        assert_eq!(get(PAX_LONG_NAME.as_bytes()).sha256, Some(crate::sha256(b"a long PAX name\n")));
        assert_eq!(get(PAX_LONG_LINK.as_bytes()).link_target.as_deref(), Some(PAX_LONG_TARGET.as_bytes()));
        assert_eq!(get(GNU_LONG_LINK.as_bytes()).link_target.as_deref(), Some(GNU_LONG_TARGET.as_bytes()));
        assert_eq!(get(b"etc/localtime").link_target.as_deref(), Some(&b"/usr/share/zoneinfo/UTC"[..]));
        assert_eq!(get(b"loop/a").link_target.as_deref(), Some(&b"b"[..]));
        assert_eq!(get(INVALID_UTF8_NAME).kind, FileKind::File);
        let xattrs = &get(XATTR_FILE.as_bytes()).xattrs;
        assert_eq!(xattrs.get(&b"user.comment"[..]).map(Vec::as_slice), Some(&b"hello"[..]));
        assert_eq!(xattrs.get(&b"user.binary"[..]).map(Vec::as_slice), Some(&b"\0\xff"[..]));
        assert_eq!(get(b"run/fifo").kind, FileKind::Fifo);
        assert_eq!(get(b"dev/null").device, Some((1, 3)));
        assert_eq!(get(b"data/frames.bin").sha256, Some(crate::sha256(b"overwritten by the plain layer\n")));
        let app = get(b"opt/app");
        assert_eq!((app.kind, app.mode, app.uid, app.gid), (FileKind::Dir, 0o700, 1234, 5678));
    }

    #[test]
    fn whiteouts_and_opaque_markers_are_named_as_oci_says() {
        let spec = LayerSpec::tar().whiteout("a/b").whiteout("top").opaque("c/d");
        let paths: Vec<_> = spec.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(paths, [&b"a/.wh.b"[..], b".wh.top", b"c/d/.wh..wh..opq"]);
    }
}
