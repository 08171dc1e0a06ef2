//! The disk tier: `<data>/blobs/sha256/<first two hex>/<64 hex>`, written through temp files.
//!
//! A blob is written by the put protocol (also in docs/design.md):
//! 1. create `<data>/tmp/<pid>-<random>.part` and stream the bytes into it while hashing;
//! 2. [`TempBlob::finish`]: fsync the file and compute the digest (the caller then compares it
//!    with the expected digest and records a pending index row);
//! 3. [`FinishedBlob::publish`]: rename into `blobs/sha256/xx/<hex>` and fsync that directory.
//!
//! Invariant: a file under `blobs/` was verified before its rename, so its name is its digest.
//! A temp file that is dropped unpublished is deleted; one left by a killed process is found by
//! [`DiskTier::sweep_temp`], which removes temp files whose writing process is gone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tiercache_core::{Digest, Hasher};

/// Bytes hashed inline before hashing moves to its own thread: small blobs are not worth a thread,
/// large ones are hashed beside the write so that neither waits for the other.
const INLINE_HASH_BYTES: u64 = 1 << 20;
/// Chunks queued for the hashing thread before a write waits for it.
const HASH_QUEUE_CHUNKS: usize = 64;
/// Bytes written between two requests to the kernel to start writing them to the disk.
const WRITE_BEHIND_BYTES: u64 = 8 << 20;

/// The disk tier of one data directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DiskTier {
    blobs: PathBuf,
    tmp: PathBuf,
}

/// What a temp-file sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Files removed.
    pub n_removed: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl DiskTier {
    /// Opens the disk tier under `data_dir`, creating its directories.
    ///
    /// Fails with a clear error if the directory cannot be created or written.
    pub fn open(data_dir: &Path) -> io::Result<DiskTier> {
        let blobs = data_dir.join("blobs").join("sha256");
        let tmp = data_dir.join("tmp");
        for dir in [&blobs, &tmp] {
            fs::create_dir_all(dir).map_err(|e| annotate(e, "cannot create", dir))?;
        }
        // Unique, so that two opens of one tier at once (threads of one process) do not remove
        // each other's probe.
        let probe = tmp.join(format!("{}-{:016x}.probe.part", std::process::id(), rand::random::<u64>()));
        File::create(&probe).map_err(|e| annotate(e, "data directory is not writable: cannot create", &probe))?;
        fs::remove_file(&probe)?;
        Ok(DiskTier { blobs, tmp })
    }

    /// Where the blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs.join(&hex[..2]).join(hex)
    }

    /// Opens the blob for reading, with its metadata (size, modification time). Returns
    /// `Ok(None)` if and only if it is not in this tier.
    pub fn open_blob(&self, digest: &Digest) -> io::Result<Option<(File, fs::Metadata)>> {
        match File::open(self.blob_path(digest)) {
            Ok(f) => {
                let meta = f.metadata()?;
                Ok(Some((f, meta)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the blob is in this tier.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Deletes the blob's file. Returns whether it was there.
    pub fn delete(&self, digest: &Digest) -> io::Result<bool> {
        match fs::remove_file(self.blob_path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes the cross-process fetch lock `name` (an exclusive `flock` on `<data>/locks/<name>`),
    /// waiting if another process (or another open of it here) holds it. Returns the held lock
    /// (released when dropped) and whether this call had to wait for it.
    ///
    /// `name` must be a plain file name (the engine passes a hex digest).
    ///
    /// The pruner deletes idle lock files, so a lock is held only once the file locked is still
    /// the one at its path (same inode); otherwise it is opened again.
    pub fn lock(&self, name: &str) -> io::Result<(File, bool)> {
        use std::os::unix::fs::MetadataExt;
        let dir = self.locks_dir();
        fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        let mut waited = false;
        loop {
            let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    file.lock()?;
                    waited = true;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            let held = file.metadata()?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok((file, waited)),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes free for this process on the file system holding the disk tier.
    pub fn available_bytes(&self) -> io::Result<u64> {
        let st = rustix::fs::statvfs(&self.tmp)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn locks_dir(&self) -> PathBuf {
        self.tmp.with_file_name("locks")
    }

    /// Deletes lock files no process holds and nobody touched for `older_than` (with `dry_run`,
    /// only lists them). Returns their paths.
    pub fn prune_locks(&self, older_than: std::time::Duration, dry_run: bool) -> io::Result<Vec<PathBuf>> {
        let mut pruned = Vec::new();
        let entries = match fs::read_dir(self.locks_dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(pruned),
            Err(e) => return Err(e),
        };
        for dirent in entries {
            let path = dirent?.path();
            let Ok(meta) = fs::metadata(&path) else { continue };
            if meta.modified().ok().and_then(|m| m.elapsed().ok()).is_none_or(|age| age < older_than) {
                continue;
            }
            let Ok(file) = File::open(&path) else { continue };
            if file.try_lock().is_err() {
                continue; // Held: a fetch is under way.
            }
            // Deleted while held, so a process that opened the old file re-opens the new one.
            if dry_run || fs::remove_file(&path).is_ok() {
                pruned.push(path);
            }
        }
        Ok(pruned)
    }

    /// Removes (unless `dry_run`) the temp files [`DiskTier::prunable_temp`] finds; returns them
    /// with their sizes.
    pub fn prune_temp(&self, older_than: std::time::Duration, dry_run: bool) -> io::Result<Vec<(PathBuf, u64)>> {
        let temps = self.prunable_temp(older_than)?;
        if !dry_run {
            for (p, _) in &temps {
                let _ = fs::remove_file(p);
            }
        }
        Ok(temps)
    }

    /// Temp files to prune: those of processes no longer running, and those not written for
    /// `older_than` (a writer stalled that long has failed), with their sizes.
    pub fn prunable_temp(&self, older_than: std::time::Duration) -> io::Result<Vec<(PathBuf, u64)>> {
        let stale: std::collections::HashSet<PathBuf> = self.stale_temp()?.into_iter().collect();
        let mut out = Vec::new();
        for path in self.list_temp()? {
            let Ok(meta) = fs::metadata(&path) else { continue };
            let idle = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age >= older_than);
            if stale.contains(&path) || idle {
                out.push((path, meta.len()));
            }
        }
        Ok(out)
    }

    /// Starts writing a new blob into a uniquely named temp file. A temp directory removed since
    /// the tier was opened (another process released a namespace's storage directory, which may
    /// be claimed again) is created again.
    pub fn create_temp(&self) -> io::Result<TempBlob> {
        let name = format!("{}-{:016x}.part", std::process::id(), rand::random::<u64>());
        let path = self.tmp.join(name);
        let create = || OpenOptions::new().read(true).write(true).create_new(true).open(&path);
        let file = match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.tmp)?;
                create()?
            }
            opened => opened?,
        };
        Ok(TempBlob {
            file: Arc::new(file),
            path: Some(path),
            sha256: Hashing::Inline(Hasher::new()),
            md5: None,
            checked: None,
            written: 0,
            flushed: 0,
            tier: self.clone(),
        })
    }

    /// Temp files whose writing process no longer runs (left by a crash or a kill).
    pub fn stale_temp(&self) -> io::Result<Vec<PathBuf>> {
        let mut stale = Vec::new();
        for dirent in fs::read_dir(&self.tmp)? {
            let path = dirent?.path();
            let pid = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('-').next());
            let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) else { continue };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                stale.push(path);
            }
        }
        Ok(stale)
    }

    /// Removes [`DiskTier::stale_temp`] files.
    pub fn sweep_temp(&self) -> io::Result<SweepReport> {
        let mut report = SweepReport::default();
        for path in self.stale_temp()? {
            let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(&path).is_ok() {
                report.n_removed += 1;
                report.bytes += bytes;
            }
        }
        Ok(report)
    }

    /// Temp files present now, of any process.
    pub fn list_temp(&self) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(&self.tmp)?.map(|d| d.map(|d| d.path())).collect()
    }

    /// Every file under `blobs/` with its size. A file whose name is not a digest, or that sits in
    /// the wrong fan-out directory, is returned as `Err(path)`.
    pub fn list(&self) -> io::Result<Vec<Result<(Digest, u64), PathBuf>>> {
        let mut out = Vec::new();
        for fan in fs::read_dir(&self.blobs)? {
            let fan = fan?;
            if !fan.file_type()?.is_dir() {
                out.push(Err(fan.path()));
                continue;
            }
            let fan_name = fan.file_name();
            for f in fs::read_dir(fan.path())? {
                let f = f?;
                let name = f.file_name();
                let parsed = name
                    .to_str()
                    .and_then(|n| Digest::from_hex(n).ok())
                    .filter(|d| fan_name.to_str() == Some(&d.hex()[..2]));
                match (parsed, f.file_type()?.is_file()) {
                    (Some(d), true) => out.push(Ok((d, f.metadata()?.len()))),
                    _ => out.push(Err(f.path())),
                }
            }
        }
        Ok(out)
    }
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Where a temp blob's SHA-256 is being computed.
/// A running hash of a blob being written ([`Hasher`] for the SHA-256 digest, `md5::Md5` for an
/// upload's ETag).
trait Running: Send + 'static {
    fn feed(&mut self, bytes: &[u8]);
}

impl Running for Hasher {
    fn feed(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Running for md5::Md5 {
    fn feed(&mut self, bytes: &[u8]) {
        md5::Digest::update(self, bytes);
    }
}

/// Where a running hash is fed: inline while the blob is small (not worth a thread), then on a
/// thread of its own, so that the write, the SHA-256 and the MD5 each take a core when they can.
#[derive(Debug)]
enum Hashing<H> {
    /// On the writing thread (the first [`INLINE_HASH_BYTES`]).
    Inline(H),
    /// On a thread of its own, fed the written chunks through a bounded queue.
    Thread { queue: std::sync::mpsc::SyncSender<Bytes>, done: std::thread::JoinHandle<H> },
    /// Being moved between the two.
    Moving,
}

impl<H: Running> Hashing<H> {
    /// Feeds `chunk`; `written` is the blob's size with it. Moves to a thread named `name` once
    /// the blob is larger than [`INLINE_HASH_BYTES`].
    fn feed(&mut self, chunk: &Bytes, written: u64, name: &str) -> io::Result<()> {
        match self {
            Hashing::Inline(h) => {
                h.feed(chunk);
                if written > INLINE_HASH_BYTES {
                    let Hashing::Inline(mut h) = std::mem::replace(self, Hashing::Moving) else {
                        unreachable!("matched Inline above")
                    };
                    let (queue, chunks) = std::sync::mpsc::sync_channel::<Bytes>(HASH_QUEUE_CHUNKS);
                    let done = std::thread::Builder::new().name(name.into()).spawn(move || {
                        for c in chunks {
                            h.feed(&c);
                        }
                        h
                    })?;
                    *self = Hashing::Thread { queue, done };
                }
            }
            Hashing::Thread { queue, .. } => {
                queue.send(chunk.clone()).map_err(|_| io::Error::other("hashing thread stopped"))?;
            }
            Hashing::Moving => unreachable!("hashing is Moving only inside this module's functions"),
        }
        Ok(())
    }

    /// The hash of every byte fed, once its thread (if any) has hashed them all.
    fn finish(self) -> io::Result<H> {
        match self {
            Hashing::Inline(h) => Ok(h),
            Hashing::Thread { queue, done } => {
                drop(queue); // Ends the thread's loop once it has hashed every queued chunk.
                done.join().map_err(|_| io::Error::other("hashing thread panicked"))
            }
            Hashing::Moving => unreachable!("finish consumes the hashing"),
        }
    }
}

/// A blob being written. Dropping it before [`TempBlob::finish`] and
/// [`FinishedBlob::publish`] deletes the temp file.
#[derive(Debug)]
pub struct TempBlob {
    file: Arc<File>,
    path: Option<PathBuf>,
    sha256: Hashing<Hasher>,
    /// The MD5 too, if [`TempBlob::with_md5`] asked for it.
    md5: Option<Hashing<md5::Md5>>,
    /// The digest the caller checks the bytes against ([`TempBlob::with_checked_digest`]): no
    /// SHA-256 is computed here.
    checked: Option<Digest>,
    written: u64,
    /// Bytes below this were handed to the kernel's writeback ([`TempBlob::write_behind`]).
    flushed: u64,
    tier: DiskTier,
}

impl TempBlob {
    /// Computes the bytes' MD5 too (an upload's ETag), beside the write and the SHA-256, instead
    /// of in a second pass over the stored file. Call it before the first write.
    pub fn with_md5(mut self) -> TempBlob {
        debug_assert_eq!(self.written, 0, "with_md5 is called before the first write");
        self.md5 = Some(Hashing::Inline(md5::Md5::default()));
        self
    }

    /// Takes `digest` as the bytes' digest instead of computing it: for a caller that hashes the
    /// bytes itself on their way here and ends the stream with an error, before its last byte
    /// arrives, if they do not match (a registry blob: `read/verify.rs` in the engine), so that a
    /// blob this finishes always has this digest. Call it before the first write.
    pub fn with_checked_digest(mut self, digest: Digest) -> TempBlob {
        debug_assert_eq!(self.written, 0, "with_checked_digest is called before the first write");
        self.checked = Some(digest);
        self
    }

    /// Appends `chunk` to the file and the running digest. Once the blob is large, hashing runs
    /// on its own thread, so this returns when the bytes are in the file, not when they are hashed.
    pub fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        (&*self.file).write_all(&chunk)?;
        self.written += chunk.len() as u64;
        self.write_behind();
        self.hash(chunk)
    }

    /// Asks the kernel to start writing each [`WRITE_BEHIND_BYTES`] of the file to the disk as
    /// soon as they are written (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`, which does not
    /// wait), so that the fsync of [`TempBlob::finish`] finds little left to write instead of
    /// the whole blob. Best effort: it changes when bytes reach the disk, not whether they do.
    fn write_behind(&mut self) {
        if self.written - self.flushed < WRITE_BEHIND_BYTES {
            return;
        }
        let (from, len) = (self.flushed, self.written - self.flushed);
        self.flushed = self.written;
        start_writeback(&self.file, from, len);
    }

    /// Appends the first `len` bytes of `src` in the kernel (`copy_file_range`: the bytes do not
    /// pass through user space, and file systems that can share extents, such as Btrfs and XFS,
    /// write no second copy), or through user space where the kernel cannot (another file system,
    /// an old kernel). The bytes are then read back from this file into the running digest, so
    /// the digest is of what the blob holds. Fails if `src` has fewer than `len` bytes.
    pub fn append_file(&mut self, src: &File, len: u64) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        use std::os::unix::fs::FileExt;
        let start = self.written;
        let mut done: u64 = 0;
        let mut in_kernel = true;
        let mut buf = Vec::new();
        while done < len {
            let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(1 << 30);
            let n = if in_kernel {
                let (mut off_in, mut off_out) = (done, start + done);
                match rustix::fs::copy_file_range(src, Some(&mut off_in), &*self.file, Some(&mut off_out), want) {
                    Ok(n) => n,
                    Err(e)
                        if done == 0
                            && [
                                rustix::io::Errno::XDEV,
                                rustix::io::Errno::NOSYS,
                                rustix::io::Errno::OPNOTSUPP,
                                rustix::io::Errno::INVAL,
                            ]
                            .contains(&e) =>
                    {
                        in_kernel = false;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                buf.resize(want.min(1 << 20), 0);
                let n = src.read_at(&mut buf, done)?;
                self.file.write_all_at(&buf[..n], start + done)?;
                n
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file to append has {done} bytes, {len} expected"),
                ));
            }
            done += n as u64;
        }
        // Back to the end, where the next `write` appends.
        (&*self.file).seek(SeekFrom::Start(start + len))?;
        let mut at = start;
        while at < start + len {
            let n = usize::try_from(start + len - at).unwrap_or(usize::MAX).min(1 << 20);
            let mut chunk = vec![0u8; n];
            self.file.read_exact_at(&mut chunk, at)?;
            at += n as u64;
            self.written = at;
            self.hash(Bytes::from(chunk))?;
        }
        Ok(())
    }

    /// Feeds `chunk`, just written (and counted in `written`), to the running digest(s).
    fn hash(&mut self, chunk: Bytes) -> io::Result<()> {
        if let Some(md5) = &mut self.md5 {
            md5.feed(&chunk, self.written, "tiercache-md5")?;
        }
        if self.checked.is_some() {
            return Ok(());
        }
        self.sha256.feed(&chunk, self.written, "tiercache-hash")
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// A handle readers may `read_at` while the write goes on; bytes below [`TempBlob::written`]
    /// are final.
    pub fn reader(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Step 2: fsyncs the file and returns its digest and size (and MD5, if asked for).
    pub fn finish(mut self) -> io::Result<FinishedBlob> {
        self.file.sync_all()?;
        let sha256 = std::mem::replace(&mut self.sha256, Hashing::Moving).finish()?;
        let digest = match self.checked {
            Some(d) => d,
            None => sha256.finish(),
        };
        let md5 = match self.md5.take() {
            Some(md5) => Some(md5::Digest::finalize(md5.finish()?).into()),
            None => None,
        };
        let path = self.path.take().expect("path is taken only here");
        Ok(FinishedBlob { path: Some(path), digest, md5, size_bytes: self.written, tier: self.tier.clone() })
    }
}

/// Starts the writeback of `len` bytes of `file` from `from` without waiting for it
/// (`sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`). Errors are ignored: the fsync that makes
/// the file durable reports them.
#[allow(unsafe_code)]
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(len)) = (libc::off64_t::try_from(from), libc::off64_t::try_from(len)) else { return };
    // SAFETY: the descriptor is open for the call's duration (`file` is borrowed), and the call
    // reads no memory of this process.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// A fully written, fsynced temp file whose digest is known. Dropping it unpublished deletes it.
#[derive(Debug)]
pub struct FinishedBlob {
    path: Option<PathBuf>,
    /// The digest of the bytes written.
    pub digest: Digest,
    /// Their MD5, if [`TempBlob::with_md5`] asked for it.
    pub md5: Option<[u8; 16]>,
    /// Their count.
    pub size_bytes: u64,
    tier: DiskTier,
}

impl FinishedBlob {
    /// Step 3: renames the file into the tier and fsyncs the fan-out directory. If the blob is
    /// already there the temp file is simply removed. Returns whether the blob was already there.
    pub fn publish(mut self) -> io::Result<bool> {
        let path = self.path.take().expect("path is taken only here");
        let target = self.tier.blob_path(&self.digest);
        if target.is_file() {
            fs::remove_file(&path)?;
            return Ok(true);
        }
        let dir = target.parent().expect("blob paths have a fan-out parent");
        if let Err(e) = fs::create_dir_all(dir) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        if let Err(e) = fs::rename(&path, &target) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        File::open(dir)?.sync_all()?;
        Ok(false)
    }
}

impl Drop for FinishedBlob {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn put_then_read_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        let mut t = tier.create_temp().unwrap();
        t.write(Bytes::from_static(b"hello ")).unwrap();
        let reader = t.reader();
        t.write(Bytes::from_static(b"world")).unwrap();
        let mut buf = [0u8; 5];
        reader.read_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"world");
        let fin = t.finish().unwrap();
        assert_eq!(fin.digest, Digest::of(b"hello world"));
        let d = fin.digest;
        assert!(!fin.publish().unwrap());
        let (_, meta) = tier.open_blob(&d).unwrap().unwrap();
        assert_eq!(meta.len(), 11);
        assert_eq!(tier.list().unwrap(), vec![Ok((d, 11))]);
        assert!(tier.list_temp().unwrap().is_empty());
        // Publishing the same bytes again keeps the existing file.
        let mut t = tier.create_temp().unwrap();
        t.write(Bytes::from_static(b"hello world")).unwrap();
        assert!(t.finish().unwrap().publish().unwrap());
        assert!(tier.list_temp().unwrap().is_empty());
    }

    #[test]
    fn fetch_locks_exclude_each_other_and_report_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        let (held, waited) = tier.lock("abc").unwrap();
        assert!(!waited);
        let other = tier.clone();
        let t = std::thread::spawn(move || other.lock("abc").unwrap().1);
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(held);
        assert!(t.join().unwrap(), "the second taker waited for the first");
    }

    #[test]
    fn large_blobs_hash_on_their_own_thread_to_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut t = tier.create_temp().unwrap();
        for chunk in data.chunks(100_000) {
            t.write(Bytes::copy_from_slice(chunk)).unwrap();
        }
        assert!(matches!(t.sha256, Hashing::Thread { .. }));
        let fin = t.finish().unwrap();
        assert_eq!((fin.digest, fin.size_bytes, fin.md5), (Digest::of(&data), data.len() as u64, None));
    }

    #[test]
    fn the_md5_is_computed_beside_the_write_when_asked_for() {
        use md5::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        // Small (hashed inline) and large (each hash on its own thread, the file written behind).
        for len in [5_000u32, 20_000_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 241) as u8).collect();
            let mut t = tier.create_temp().unwrap().with_md5();
            for chunk in data.chunks(65_536) {
                t.write(Bytes::copy_from_slice(chunk)).unwrap();
            }
            assert_eq!(matches!(t.md5, Some(Hashing::Thread { .. })), len > 1 << 20);
            let fin = t.finish().unwrap();
            assert_eq!(fin.md5, Some(md5::Md5::digest(&data).into()), "{len} bytes");
            assert_eq!(fin.digest, Digest::of(&data));
            let d = fin.digest;
            fin.publish().unwrap();
            assert_eq!(fs::read(tier.blob_path(&d)).unwrap(), data);
        }
    }

    #[test]
    fn appended_files_are_copied_and_hashed_with_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let part = dir.path().join("part");
        fs::write(&part, &big).unwrap();
        let mut t = tier.create_temp().unwrap();
        t.write(Bytes::from_static(b"head")).unwrap();
        t.append_file(&File::open(&part).unwrap(), big.len() as u64).unwrap();
        t.write(Bytes::from_static(b"tail")).unwrap();
        let short = t.append_file(&File::open(&part).unwrap(), big.len() as u64 + 1);
        assert_eq!(short.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut t = tier.create_temp().unwrap();
        t.write(Bytes::from_static(b"head")).unwrap();
        t.append_file(&File::open(&part).unwrap(), big.len() as u64).unwrap();
        t.write(Bytes::from_static(b"tail")).unwrap();
        let fin = t.finish().unwrap();
        let expect = [&b"head"[..], &big, b"tail"].concat();
        assert_eq!((fin.digest, fin.size_bytes), (Digest::of(&expect), expect.len() as u64));
        let d = fin.digest;
        fin.publish().unwrap();
        assert_eq!(fs::read(tier.blob_path(&d)).unwrap(), expect);
    }

    #[test]
    fn dropped_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        let mut t = tier.create_temp().unwrap();
        t.write(Bytes::from_static(b"partial")).unwrap();
        drop(t);
        let mut t = tier.create_temp().unwrap();
        t.write(Bytes::from_static(b"unpublished")).unwrap();
        drop(t.finish().unwrap());
        assert!(tier.list_temp().unwrap().is_empty());
        assert!(tier.list().unwrap().is_empty());
    }

    #[test]
    fn sweep_removes_only_dead_writers_files() {
        let dir = tempfile::tempdir().unwrap();
        let tier = DiskTier::open(dir.path()).unwrap();
        // 4194305 is above Linux's largest pid; pid 1 always runs.
        fs::write(dir.path().join("tmp/4194305-dead.part"), b"xx").unwrap();
        fs::write(dir.path().join("tmp/1-alive.part"), b"yy").unwrap();
        let _mine = tier.create_temp().unwrap();
        let report = tier.sweep_temp().unwrap();
        assert_eq!(report, SweepReport { n_removed: 1, bytes: 2 });
        assert_eq!(tier.list_temp().unwrap().len(), 2);
    }
}
