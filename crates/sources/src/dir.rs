//! The directory source: a local (or mounted) directory whose files are the truth.
//!
//! Every path is resolved *beneath* the root by the kernel (`openat2` with `RESOLVE_BENEATH`), so
//! neither a hostile key nor a symlink (absolute, or with enough `..`) can reach outside it, and
//! no check-then-open race exists. Symlinks that stay inside the root are followed when a file is
//! read; writes and the walk never follow them through directory components.
//!
//! This module knows files and bytes: it walks ([`walk`]), opens, hashes (MD5 and SHA-256 in one
//! read, [`hash`]) and writes atomically. It knows nothing of the index: the engine compares what
//! it finds here with what the index remembers.

pub mod hash;
mod root;
pub mod walk;

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use tiercache_core::{ByteRange, FileMarkers, Key, RelPath};

use crate::{FetchRequest, Fetched, Source, SourceBody, SourceError, SourceMeta};

/// Prefix of the names reserved for tiercache's own files in a directory: the temp file an atomic
/// write may name for an instant (`.tiercache-<32 random hex>.tmp`; older versions used
/// `.tiercache-<pid>-<n>.tmp`). A path with a segment starting so is never walked, and the engine
/// refuses it as a key ([`reserved_segment`]), so a client can neither claim nor read such a file.
pub const TEMP_PREFIX: &str = ".tiercache-";
/// Suffix of the temp files, see [`TEMP_PREFIX`].
pub const TEMP_SUFFIX: &str = ".tmp";

/// Whether `name`, one path segment, is reserved for tiercache's own files ([`TEMP_PREFIX`]).
pub fn is_reserved(name: &[u8]) -> bool {
    name.starts_with(TEMP_PREFIX.as_bytes())
}

/// The first segment of `path` (`/`-separated; the last may be partial, as in a listing's
/// prefix) that is reserved for tiercache's own files, if any.
pub fn reserved_segment(path: &[u8]) -> Option<&[u8]> {
    path.split(|b| *b == b'/').find(|s| is_reserved(s))
}

fn reserved_error(path: &RelPath) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{path} names tiercache's own temp files"))
}

/// A directory source rooted at an absolute path.
#[derive(Debug, Clone)]
pub struct DirSource {
    root: PathBuf,
    /// The root held open for [`DirSource::open_held`], shared by clones.
    held: std::sync::Arc<root::HeldRoot>,
}

/// What an atomic write produced.
#[derive(Debug, Clone)]
pub struct Written {
    /// The new file's markers (after the rename).
    pub markers: FileMarkers,
    /// MD5 of the bytes written.
    pub md5: [u8; 16],
    /// SHA-256 of the bytes written.
    pub sha256: tiercache_core::Digest,
    /// When the markers were read, ns since the epoch.
    pub hashed_at_ns: i64,
}

pub(crate) fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

/// The markers of an `fstat`.
pub fn markers_of(st: &rustix::fs::Stat) -> FileMarkers {
    FileMarkers {
        size_bytes: st.st_size as u64,
        mtime_ns: st.st_mtime.saturating_mul(1_000_000_000).saturating_add(st.st_mtime_nsec as i64),
        ctime_ns: st.st_ctime.saturating_mul(1_000_000_000).saturating_add(st.st_ctime_nsec as i64),
        inode: st.st_ino,
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

impl DirSource {
    /// A source for the directory `root`, which must be an absolute path. The directory need not
    /// exist yet; every operation says so if it does not.
    pub fn new(root: impl Into<PathBuf>) -> Result<DirSource, String> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(format!("directory source {} must be an absolute path", root.display()));
        }
        let held = std::sync::Arc::new(root::HeldRoot::new(root.clone()));
        Ok(DirSource { root, held })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The namespace source string for this root: `file://` and the path.
    pub fn url(&self) -> String {
        format!("file://{}", self.root.display())
    }

    /// Opens the root itself (to resolve paths beneath it).
    pub fn open_root(&self) -> io::Result<OwnedFd> {
        rustix::fs::open(&self.root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
            let e = io_err(e);
            io::Error::new(e.kind(), format!("cannot open directory {}: {e}", self.root.display()))
        })
    }

    /// Opens the regular file at `path` for reading, resolved beneath the root (symlinks inside
    /// the root are followed), and returns it with its markers. A directory, a device or a FIFO
    /// is refused; a path that escapes the root fails as if it did not exist.
    pub fn open(&self, path: &RelPath) -> io::Result<(File, FileMarkers)> {
        self.open_at(&self.open_root()?, path)
    }

    /// [`DirSource::open`] with the root already open (from [`DirSource::open_root`]), for
    /// callers that open many files.
    pub fn open_at(&self, root: &OwnedFd, path: &RelPath) -> io::Result<(File, FileMarkers)> {
        if reserved_segment(path.as_bytes()).is_some() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{path} is not a file inside the root")));
        }
        self.check_parents(root, path)?;
        self.open_walked(root, path)
    }

    /// Opens the regular file at `path` the cheapest safe way, for a read of a file read before:
    /// one `openat2` beneath the held root ([`root::HeldRoot`]) that refuses every symlink on the
    /// way, and one `fstat`. `None` if that does not give a regular file, for whatever reason
    /// (no such file, a symlink on the path, a directory, a name reserved for tiercache, the root
    /// gone): the caller then takes [`DirSource::open`], which follows symlinks inside the root
    /// and says what is wrong.
    pub fn open_held(&self, path: &RelPath) -> Option<(File, FileMarkers)> {
        if reserved_segment(path.as_bytes()).is_some() {
            return None;
        }
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let how = resolve_flags() | ResolveFlags::NO_SYMLINKS;
        let fd = self.held.with(|root| rustix::fs::openat2(root, path.as_bytes(), flags, Mode::empty(), how))?.ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile).then(|| (File::from(fd), markers_of(&st)))
    }

    /// [`DirSource::open_at`] for a path the walk just produced: the check that no directory on
    /// it is a symlink is skipped (the walk descends only real directories; a directory swapped
    /// for a symlink since then is seen by the next update). The open is still resolved beneath
    /// the root, so it cannot leave it.
    pub fn open_walked(&self, root: &OwnedFd, path: &RelPath) -> io::Result<(File, FileMarkers)> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = match rustix::fs::openat2(root, path.as_bytes(), flags, Mode::empty(), resolve_flags()) {
            Ok(fd) => fd,
            // EXDEV: the path or a symlink on it leads outside the root. ELOOP: a symlink loop.
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::LOOP) => {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("{path} is not a file inside the root")));
            }
            Err(e) => return Err(io_err(e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(io_err)?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Ok((File::from(fd), markers_of(&st))),
            FileType::Directory => Err(io::Error::new(io::ErrorKind::IsADirectory, format!("{path} is a directory"))),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{path} is not a regular file"))),
        }
    }

    /// Refuses (as not found) a path whose directories include a symlink: the walk never descends
    /// through one, so a read must not either, or one file would have several names.
    fn check_parents(&self, root: &OwnedFd, path: &RelPath) -> io::Result<()> {
        let Some(slash) = path.as_bytes().iter().rposition(|b| *b == b'/') else { return Ok(()) };
        let parent = &path.as_bytes()[..slash];
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match rustix::fs::openat2(root, parent, flags, Mode::empty(), resolve_flags() | ResolveFlags::NO_SYMLINKS) {
            Ok(_) => Ok(()),
            Err(
                rustix::io::Errno::NOENT
                | rustix::io::Errno::NOTDIR
                | rustix::io::Errno::LOOP
                | rustix::io::Errno::XDEV,
            ) => Err(io::Error::new(io::ErrorKind::NotFound, format!("{path} is not a file inside the root"))),
            Err(e) => Err(io_err(e)),
        }
    }

    /// What is at `path` now, without reading it: a file (a symlink to a file inside the root
    /// counts as one, as in the walk), a directory (not a symlink to one), something else, or
    /// nothing. Blocking.
    pub fn lookup(&self, path: &RelPath) -> io::Result<Lookup> {
        let root = self.open_root()?;
        if let Err(e) = self.check_parents(&root, path) {
            return if e.kind() == io::ErrorKind::NotFound { Ok(Lookup::Missing) } else { Err(e) };
        }
        let no_follow = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let st = match rustix::fs::openat2(&root, path.as_bytes(), no_follow, Mode::empty(), resolve_flags())
            .and_then(|fd| rustix::fs::fstat(&fd))
        {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(Lookup::Missing),
            Err(rustix::io::Errno::XDEV | rustix::io::Errno::LOOP) => return Ok(Lookup::Other),
            Err(e) => return Err(io_err(e)),
        };
        Ok(match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Lookup::File(markers_of(&st)),
            FileType::Directory => Lookup::Dir,
            FileType::Symlink => {
                let follow = OFlags::PATH | OFlags::CLOEXEC;
                match rustix::fs::openat2(&root, path.as_bytes(), follow, Mode::empty(), resolve_flags())
                    .and_then(|fd| rustix::fs::fstat(&fd))
                {
                    Ok(t) if FileType::from_raw_mode(t.st_mode) == FileType::RegularFile => {
                        Lookup::File(markers_of(&t))
                    }
                    _ => Lookup::Other,
                }
            }
            _ => Lookup::Other,
        })
    }

    /// Opens (creating if asked) each directory of `components` beneath the root, never following
    /// a symlink. Returns the last one.
    fn open_dirs<'a>(&self, components: impl Iterator<Item = &'a [u8]>, create: bool) -> io::Result<OwnedFd> {
        let mut cur = self.open_root()?;
        for comp in components {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let next = match rustix::fs::openat(&cur, comp, flags, Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(io_err(e)),
                    }
                    rustix::fs::fsync(&cur).map_err(io_err)?;
                    rustix::fs::openat(&cur, comp, flags, Mode::empty()).map_err(io_err)?
                }
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    let name = String::from_utf8_lossy(comp);
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{name} is not a directory (writes do not follow symlinks)"),
                    ));
                }
                Err(e) => return Err(io_err(e)),
                Ok(fd) => fd,
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Writes the file at `path` atomically from `chunks`, hashing as it goes:
    /// 1. open (creating) the parent directories beneath the root, never through a symlink;
    /// 2. create an unnamed temp file in the parent directory (`O_TMPFILE`), or where the file
    ///    system cannot, one named `.tiercache-<32 random hex>.tmp` (`O_EXCL`), and write it;
    /// 3. fsync it; 4. link an unnamed one under such a random name; 5. rename it over the
    ///    target; 6. fsync the directory.
    ///
    /// A name nobody can guess is never one a client created first, and a client cannot name it
    /// anyway ([`reserved_segment`]). On any failure the temp file is removed and the target is
    /// untouched. Blocking.
    pub fn write_file(&self, path: &RelPath, chunks: impl Iterator<Item = io::Result<Bytes>>) -> io::Result<Written> {
        self.write_file_with(path, chunks, true)
    }

    /// [`DirSource::write_file`]; `may_be_unnamed: false` always takes the named temp file (as
    /// where `O_TMPFILE` is not supported), so that tests cover both ways.
    fn write_file_with(
        &self,
        path: &RelPath,
        chunks: impl Iterator<Item = io::Result<Bytes>>,
        may_be_unnamed: bool,
    ) -> io::Result<Written> {
        if reserved_segment(path.as_bytes()).is_some() {
            return Err(reserved_error(path));
        }
        let (parent, name) = split(path.as_bytes());
        let dir = self.open_dirs(parent.iter().copied(), true)?;
        let (mut file, mut tmp) = create_temp(&dir, may_be_unnamed)?;
        let result = (|| {
            let mut h = hash::Hashes::new();
            for chunk in chunks {
                let chunk = chunk?;
                h.update(&chunk);
                file.write_all(&chunk)?;
            }
            file.sync_all()?;
            let named = match &tmp {
                Some(named) => named.clone(),
                None => {
                    let named = link_unnamed(&file, &dir)?;
                    tmp = Some(named.clone());
                    named
                }
            };
            rustix::fs::renameat(&dir, named.as_str(), &dir, name).map_err(|e| match e {
                rustix::io::Errno::ISDIR => io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{path} is a directory; it cannot be replaced by a file"),
                ),
                e => io_err(e),
            })?;
            tmp = None;
            rustix::fs::fsync(&dir).map_err(io_err)?;
            let st = rustix::fs::fstat(&file).map_err(io_err)?;
            let (md5, sha256) = h.finish();
            Ok(Written { markers: markers_of(&st), md5, sha256, hashed_at_ns: now_ns() })
        })();
        if let Some(named) = tmp {
            let _ = rustix::fs::unlinkat(&dir, named.as_str(), AtFlags::empty());
        }
        result
    }

    /// Removes the file at `path`. Returns `false` if there was none. Blocking.
    pub fn remove(&self, path: &RelPath) -> io::Result<bool> {
        if reserved_segment(path.as_bytes()).is_some() {
            return Err(reserved_error(path));
        }
        let (parent, name) = split(path.as_bytes());
        let dir = match self.open_dirs(parent.iter().copied(), false) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) => {
                rustix::fs::fsync(&dir).map_err(io_err)?;
                Ok(true)
            }
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(rustix::io::Errno::ISDIR | rustix::io::Errno::PERM) => {
                Err(io::Error::new(io::ErrorKind::IsADirectory, format!("{path} is a directory, not a file")))
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// The absolute path of `path` (for messages and watchers; never for opening).
    pub fn absolute(&self, path: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(path))
    }
}

/// What [`DirSource::lookup`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A regular file (or a symlink to one inside the root), with its markers.
    File(FileMarkers),
    /// A directory.
    Dir,
    /// Something that is neither (a FIFO, a symlink to a directory or out of the root).
    Other,
    /// Nothing.
    Missing,
}

/// A temp file in `dir` for an atomic write: unnamed (`O_TMPFILE`, `None`) where the file system
/// can, else created under a random reserved name (`O_EXCL`), returned with it.
fn create_temp(dir: &OwnedFd, may_be_unnamed: bool) -> io::Result<(File, Option<String>)> {
    let mode = Mode::from_raw_mode(0o644);
    if may_be_unnamed {
        match rustix::fs::openat(dir, ".", OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC, mode) {
            Ok(fd) => return Ok((File::from(fd), None)),
            // Not supported by this file system or kernel: a named temp file instead.
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    let name = random_temp_name()?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name.as_str(), flags, mode).map_err(io_err)?;
    Ok((File::from(fd), Some(name)))
}

/// Links the unnamed temp `file` into `dir` under a random reserved name, and returns the name.
/// Through `/proc/self/fd` (no privilege needed), else by `AT_EMPTY_PATH` where `/proc` is missing.
fn link_unnamed(file: &File, dir: &OwnedFd) -> io::Result<String> {
    use std::os::fd::AsRawFd;
    let name = random_temp_name()?;
    let proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    match rustix::fs::linkat(rustix::fs::CWD, proc.as_str(), dir, name.as_str(), AtFlags::SYMLINK_FOLLOW) {
        Ok(()) => Ok(name),
        Err(rustix::io::Errno::NOENT) => {
            rustix::fs::linkat(file, "", dir, name.as_str(), AtFlags::EMPTY_PATH).map_err(io_err)?;
            Ok(name)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// `.tiercache-<128 random bits in hex>.tmp`: a name no client can guess (and none may name).
fn random_temp_name() -> io::Result<String> {
    use std::io::Read;
    let mut bits = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bits)?;
    Ok(format!("{TEMP_PREFIX}{}{TEMP_SUFFIX}", hex::encode(bits)))
}

/// `a/b/c` → (`[a, b]`, `c`).
fn split(path: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut parts: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    let name = parts.pop().expect("a RelPath has at least one segment");
    (parts, name)
}

fn read_at_most(file: &File, pos: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    let mut filled = 0;
    while filled < len {
        let n = file.read_at(&mut buf[filled..], pos + filled as u64)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

/// Bytes `start..end` of `file`, read on a blocking thread. Ends with an error if the file ends
/// before `end` (it was truncated while read).
pub fn file_stream(
    file: File,
    start: u64,
    end: u64,
    url: String,
) -> futures::stream::BoxStream<'static, Result<Bytes, SourceError>> {
    const CHUNK: u64 = 256 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, SourceError>>(4);
    tokio::task::spawn_blocking(move || {
        let mut pos = start;
        while pos < end {
            let item = match read_at_most(&file, pos, (end - pos).min(CHUNK) as usize) {
                Ok(b) if b.is_empty() => {
                    Err(SourceError::LengthMismatch { url: url.clone(), expected: end - start, got: pos - start })
                }
                Ok(b) => Ok(b),
                Err(e) => Err(SourceError::Transport { url: url.clone(), reason: e.to_string() }),
            };
            let failed = item.is_err();
            if let Ok(b) = &item {
                pos += b.len() as u64;
            }
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) }).boxed()
}

#[async_trait::async_trait]
impl Source for DirSource {
    fn describe(&self) -> String {
        self.url()
    }

    /// The file's metadata, from an open beneath the root and its `fstat`.
    async fn head(&self, key: &Key) -> Result<SourceMeta, SourceError> {
        let (_, markers, _) = self.open_key(key).await?;
        Ok(meta_of(&RelPath::from(key.clone()), &markers))
    }

    /// Opens the file beneath the root; its validator is its markers' ETag, so a conditional
    /// fetch answers [`Fetched::NotModified`] while size, mtime, ctime and inode are unchanged.
    async fn fetch(&self, key: &Key, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let path = RelPath::from(key.clone());
        let (file, markers, url) = self.open_key(key).await?;
        let etag = markers.etag();
        if req.validators.as_ref().and_then(|v| v.etag.as_deref()) == Some(etag.as_str()) {
            return Ok(Fetched::NotModified);
        }
        let size = markers.size_bytes;
        let range = match req.range {
            Some(r) if r.start >= size => {
                return Err(SourceError::Protocol {
                    url,
                    reason: format!("range starts beyond the file's {size} bytes"),
                });
            }
            Some(r) => Some(ByteRange { start: r.start, end: r.end.min(size - 1) }),
            None => None,
        };
        let (start, end) = range.map(|r| (r.start, r.end + 1)).unwrap_or((0, size));
        let meta = meta_of(&path, &markers);
        Ok(Fetched::Body(SourceBody { meta, range, stream: file_stream(file, start, end, url) }))
    }
}

impl DirSource {
    /// Opens `key`'s file beneath the root, with its markers and its URL for errors.
    async fn open_key(&self, key: &Key) -> Result<(File, FileMarkers, String), SourceError> {
        let path = RelPath::from(key.clone());
        let url = format!("{}/{}", self.url().trim_end_matches('/'), key);
        let this = self.clone();
        let opened = tokio::task::spawn_blocking(move || this.open(&path))
            .await
            .map_err(|e| SourceError::Transport { url: url.clone(), reason: e.to_string() })?;
        match opened {
            Ok((file, markers)) => Ok((file, markers, url)),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::IsADirectory) => {
                Err(SourceError::NotFound { url })
            }
            Err(e) => Err(SourceError::Transport { url, reason: e.to_string() }),
        }
    }
}

/// What a file's markers say of it as a source object.
fn meta_of(path: &RelPath, markers: &FileMarkers) -> SourceMeta {
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(markers.mtime_ns.max(0) as u64);
    SourceMeta {
        size_bytes: Some(markers.size_bytes),
        content_type: Some(content_type(path.as_bytes())),
        validators: tiercache_core::Validators { etag: Some(markers.etag()), last_modified: Some(httpdate_of(mtime)) },
        content_encoding: None,
    }
}

fn httpdate_of(t: std::time::SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// The content type of a file, from its name's extension.
pub fn content_type(path: &[u8]) -> String {
    let name = OsStr::from_bytes(path);
    mime_guess::from_path(Path::new(name)).first_or_octet_stream().essence_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn open_stays_beneath_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join("a.txt"), b"hello").unwrap();
        std::fs::create_dir(r.join("d")).unwrap();
        std::os::unix::fs::symlink("../a.txt", r.join("d/inside")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../../etc/passwd", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop2", r.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", r.join("loop2")).unwrap();
        let src = DirSource::new(r).unwrap();
        assert_eq!(src.open(&rel("a.txt")).unwrap().1.size_bytes, 5);
        assert_eq!(src.open(&rel("d/inside")).unwrap().1.size_bytes, 5);
        for bad in ["abs", "rel", "loop1", "missing"] {
            assert_eq!(src.open(&rel(bad)).unwrap_err().kind(), io::ErrorKind::NotFound, "{bad}");
        }
        assert_eq!(src.open(&rel("d")).unwrap_err().kind(), io::ErrorKind::IsADirectory);
        // The fast open gives the same file and markers, and nothing the full open refuses; a
        // symlink anywhere on the path sends the caller to the full open.
        assert_eq!(src.open_held(&rel("a.txt")).unwrap().1, src.open(&rel("a.txt")).unwrap().1);
        std::fs::write(r.join(".tiercache-x.tmp"), b"t").unwrap();
        for other in ["abs", "rel", "loop1", "missing", "d", "d/inside", ".tiercache-x.tmp"] {
            assert!(src.open_held(&rel(other)).is_none(), "{other}");
        }
    }

    #[test]
    fn atomic_write_creates_parents_and_never_follows_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("out")).unwrap();
        let src = DirSource::new(root.path()).unwrap();
        let w = src.write_file(&rel("x/y/z.bin"), [Ok(Bytes::from_static(b"abc"))].into_iter()).unwrap();
        assert_eq!(std::fs::read(root.path().join("x/y/z.bin")).unwrap(), b"abc");
        assert_eq!(w.sha256, tiercache_core::Digest::of(b"abc"));
        assert_eq!(w.markers, src.open(&rel("x/y/z.bin")).unwrap().1);
        assert!(src.write_file(&rel("out/evil"), [Ok(Bytes::from_static(b"x"))].into_iter()).is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none(), "nothing escaped");
        let failing = [Ok(Bytes::from_static(b"part")), Err(io::Error::other("client went away"))];
        assert!(src.write_file(&rel("x/y/z.bin"), failing.into_iter()).is_err());
        assert_eq!(std::fs::read(root.path().join("x/y/z.bin")).unwrap(), b"abc", "old file kept");
        let names: Vec<_> =
            std::fs::read_dir(root.path().join("x/y")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no temp file left: {names:?}");
        assert!(src.remove(&rel("x/y/z.bin")).unwrap());
        assert!(!src.remove(&rel("x/y/z.bin")).unwrap());
        assert!(!src.remove(&rel("nope/z")).unwrap());
    }

    #[test]
    fn temp_files_cannot_be_claimed_and_reserved_names_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let src = DirSource::new(root.path()).unwrap();
        // Planted under the old name form (pid and counter) and the new one (random).
        let old = format!("{TEMP_PREFIX}{}-0{TEMP_SUFFIX}", std::process::id());
        let new = format!("{TEMP_PREFIX}{}{TEMP_SUFFIX}", "0".repeat(32));
        for name in [&old, &new] {
            std::fs::write(root.path().join(name), b"planted").unwrap();
        }
        for (i, may_be_unnamed) in [true, false, true, false].into_iter().enumerate() {
            let body = format!("v{i}");
            let chunks = [Ok(Bytes::from(body.clone()))].into_iter();
            src.write_file_with(&rel("f"), chunks, may_be_unnamed).unwrap();
            assert_eq!(std::fs::read(root.path().join("f")).unwrap(), body.as_bytes());
            // A failed write leaves no temp file either way.
            let failing = [Ok(Bytes::from_static(b"part")), Err(io::Error::other("gone"))];
            assert!(src.write_file_with(&rel("f"), failing.into_iter(), may_be_unnamed).is_err());
        }
        let mut names: Vec<_> =
            std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        let mut expected = vec![old.clone(), new.clone(), "f".to_owned()];
        expected.sort();
        assert_eq!(names, expected, "planted files untouched, no temp file left");
        for name in [&old, &new] {
            let bad = rel(name);
            assert_eq!(src.open(&bad).unwrap_err().kind(), io::ErrorKind::NotFound, "{name}");
            assert!(src.write_file(&bad, std::iter::empty()).is_err(), "{name}");
            assert!(src.remove(&bad).is_err(), "{name}");
            assert_eq!(std::fs::read(root.path().join(name)).unwrap(), b"planted");
        }
        assert_eq!(reserved_segment(b"a/.tiercache-x/b"), Some(&b".tiercache-x"[..]));
        assert_eq!(reserved_segment(b"a/tiercache-x/.tiercachex"), None);
        let names = random_temp_name().unwrap();
        assert!(names.len() == ".tiercache-".len() + 32 + ".tmp".len() && is_reserved(names.as_bytes()));
        assert_ne!(random_temp_name().unwrap(), names);
    }
}
