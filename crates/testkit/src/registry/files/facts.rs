//! What a real unpacker makes of an image, as the expectation for files read through the cache:
//! `umoci unpack` merges the layers (whiteouts, opaque directories, hardlinks) into a root
//! filesystem, and [`tree_facts`] describes every entry of a tree without following a symlink.
//!
//! It describes; comparing with what the cache serves is the tests' business.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::registry::image::BuiltImage;
use crate::servers::{find_binary, tempdir};

const UMOCI_INSTALL: &str = "apt-get install -y umoci (or set TIERCACHE_UMOCI to a umoci binary)";

/// What an entry of a tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A fifo.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A unix socket.
    Socket,
}

/// The facts of one entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// What it is.
    pub kind: FileKind,
    /// Permission bits with setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// A file's length, a symlink's target length, else 0 (a directory's size depends on the
    /// filesystem, so it is not recorded).
    pub size_bytes: u64,
    /// Modification time, whole seconds since the epoch.
    pub mtime: i64,
    /// A symlink's target, as stored.
    pub link_target: Option<Vec<u8>>,
    /// A device's `(major, minor)`.
    pub device: Option<(u32, u32)>,
    /// Its `user.*` extended attributes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// `sha256:<hex>` of a file's bytes.
    pub sha256: Option<String>,
    /// For an inode that two or more paths of the tree share: the first of those paths (in
    /// byte order), the same for each of them.
    pub hardlink_group: Option<Vec<u8>>,
}

/// Every entry under `root` (not `root` itself), keyed by its path relative to `root` as raw
/// bytes (`etc/hostname`); symlinks are described, never followed.
pub fn tree_facts(root: &Path) -> Result<BTreeMap<Vec<u8>, FileFacts>, String> {
    let mut facts = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("listing {}: {e}", dir.display()))?;
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("under the root").as_os_str().as_bytes().to_vec();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("stat {}: {e}", path.display()))?;
            let f = facts_of(&path, &meta)?;
            if f.kind == FileKind::Dir {
                pending.push(path);
            } else if meta.nlink() > 1 {
                inodes.entry((meta.dev(), meta.ino())).or_default().push(rel.clone());
            }
            facts.insert(rel, f);
        }
    }
    for mut paths in inodes.into_values().filter(|p| p.len() > 1) {
        paths.sort();
        for p in &paths {
            facts.get_mut(p).expect("walked").hardlink_group = Some(paths[0].clone());
        }
    }
    Ok(facts)
}

fn facts_of(path: &Path, meta: &std::fs::Metadata) -> Result<FileFacts, String> {
    let t = meta.file_type();
    let kind = match () {
        () if t.is_symlink() => FileKind::Symlink,
        () if t.is_dir() => FileKind::Dir,
        () if t.is_file() => FileKind::File,
        () if t.is_fifo() => FileKind::Fifo,
        () if t.is_char_device() => FileKind::CharDevice,
        () if t.is_block_device() => FileKind::BlockDevice,
        () => FileKind::Socket,
    };
    let read_err = |e: std::io::Error| format!("reading {}: {e}", path.display());
    let link_target = match kind {
        FileKind::Symlink => Some(std::fs::read_link(path).map_err(read_err)?.as_os_str().as_bytes().to_vec()),
        _ => None,
    };
    let sha256 = match kind {
        FileKind::File => Some(sha256_of_file(path)?),
        _ => None,
    };
    let device = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice)
        .then(|| (rustix::fs::major(meta.rdev()), rustix::fs::minor(meta.rdev())));
    let size_bytes = match kind {
        FileKind::File | FileKind::Symlink => meta.len(),
        _ => 0,
    };
    Ok(FileFacts {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size_bytes,
        mtime: meta.mtime(),
        link_target,
        device,
        xattrs: user_xattrs(path)?,
        sha256,
        hardlink_group: None,
    })
}

fn sha256_of_file(path: &Path) -> Result<String, String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("reading {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hash.finalize())))
}

/// The `user.*` extended attributes of `path` itself (not a symlink's target).
fn user_xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let err = |what: &str, e: rustix::io::Errno| format!("{what} of {}: {e}", path.display());
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(BTreeMap::new()),
        Err(e) => return Err(err("listing the xattrs", e)),
    };
    names.truncate(n);
    let mut out = BTreeMap::new();
    for name in names.split(|&b| b == 0).filter(|n| n.starts_with(b"user.")) {
        let mut value = vec![0u8; 64 * 1024];
        let n = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value[..])
            .map_err(|e| err("reading an xattr", e))?;
        value.truncate(n);
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

/// A bundle `umoci unpack` made (removed on drop).
#[derive(Debug)]
pub struct Unpacked {
    dir: tempfile::TempDir,
}

impl Unpacked {
    /// The bundle directory (`config.json`, `umoci.json`, `rootfs/`).
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    /// The merged root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
}

/// `umoci unpack --image LAYOUT:TAG BUNDLE` of `image` (as root: owners and devices as stored).
/// An `Err` carries umoci's message, e.g. for a layer it refuses.
pub fn umoci_unpack(image: &BuiltImage) -> Result<Unpacked, String> {
    let umoci = find_binary("TIERCACHE_UMOCI", "umoci", &[Path::new("/usr/bin")], UMOCI_INSTALL)?;
    // umoci 0.4 (Debian's) reads gzip and plain layers only: a zstd layer is unpacked from the
    // same tar stream recompressed with gzip, in a copy of the image.
    let gzip_only;
    let image = if image.manifests().iter().flat_map(|m| &m.layers).any(|l| l.media_type.ends_with("+zstd")) {
        gzip_only = zstd_as_gzip(image)?;
        &gzip_only
    } else {
        image
    };
    let dir = tempdir("umoci")?;
    let unpacked = Unpacked { dir };
    let out = Command::new(umoci)
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{}", image.dir().display(), image.tag()))
        .arg(unpacked.bundle())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running umoci: {e}"))?;
    if !out.status.success() {
        return Err(format!("umoci unpack failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(unpacked)
}

/// A one-platform copy of `image` whose zstd layers hold the same tar streams in gzip.
fn zstd_as_gzip(image: &BuiltImage) -> Result<BuiltImage, String> {
    use super::{BuiltLayer, LayerCompression};
    let manifest = image.manifests().first().ok_or("an image without a manifest")?;
    let mut layers = Vec::new();
    for l in &manifest.layers {
        let layer = if l.media_type.ends_with("+zstd") {
            let tar = zstd::decode_all(&l.bytes[..]).map_err(|e| format!("decompressing layer {}: {e}", l.digest))?;
            BuiltLayer::compress(tar, LayerCompression::Gzip)?
        } else {
            let tar = if l.media_type.ends_with("+gzip") {
                let mut tar = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&l.bytes[..]), &mut tar)
                    .map_err(|e| format!("decompressing layer {}: {e}", l.digest))?;
                tar
            } else {
                l.bytes.clone()
            };
            BuiltLayer::raw(&l.media_type, l.bytes.clone(), crate::sha256(&tar), tar)
        };
        layers.push(layer);
    }
    super::image_of_layers(image.tag(), layers)
}
