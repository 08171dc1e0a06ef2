//! Blobs' MD5s (part of `store.rs`, layer 2): an entry's ETag, computed beside the fetch that
//! stored the blob, or after any other store, and recorded in the index. No reader ever waits for
//! one: until a blob's MD5 is known, its entries are served without it (`read.rs`).
//!
//! A pass runs on a thread of its own at the lowest CPU priority (nice 19), so it takes a core
//! only when one is free and never slows the fetch or the readers beside it (a pass a client waits
//! for, as the answer to an upload does, runs at normal priority). Passes take turns a chunk at a
//! time, one hashing at once, so none waits for another to end. A fetch's pass tails the flight's
//! temp file as it fills (bytes below `written` are final), so with a free core it ends about when
//! the fetch does; it reads the pages the fetch has just written, and needs nothing from the fetch
//! but its phases. Any other blob's pass reads its published file. At most one pass per blob is
//! under way; whoever asks for a blob's MD5 shares it ([`Md5Passes::get`]). At most
//! [`PASS_THREADS`] passes have a thread: however many blobs without an MD5 are read, the others
//! wait for one (a fetch's pass is not started then: its blob's MD5 is read after the store).
//!
//! It does not decide which blobs need an MD5, and knows nothing of entries or the memory tier.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use md5::Digest as _;
use tiercache_core::Digest;
use tiercache_tiers::DiskTier;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use crate::Error;
use crate::blocking::Ix;
use crate::single_flight::{Joined, SingleFlight};
use crate::spool::Phase;
use crate::tasks::Tasks;

/// MD5 passes reading at once, at most: one core's worth.
const PASSES_AT_ONCE: usize = 1;
/// Threads running passes, at most (each with a buffer of [`READ_BYTES`]): reads of many blobs
/// without an MD5 queue for a thread instead of starting one each.
const PASS_THREADS: usize = 8;
/// Bytes a pass reads at a time.
const READ_BYTES: usize = 1 << 20;
/// The nice value of a pass's thread: the lowest priority there is.
const PASS_NICE: i32 = 19;

/// A blob's MD5 pass under way, shared by everyone who waits for it: the MD5 in lowercase hex,
/// recorded in the index before it is returned.
type Pass = Shared<BoxFuture<'static, Result<String, Error>>>;

/// The MD5 passes of one cache.
pub(crate) struct Md5Passes {
    ix: Ix,
    tasks: Tasks,
    /// [`PASSES_AT_ONCE`] permits; a pass holds one while it reads and hashes a chunk, so passes
    /// take turns chunk by chunk and none waits for another to end.
    permits: Arc<Semaphore>,
    /// [`PASS_THREADS`] permits; a pass's thread holds one from its start to its end.
    threads: Arc<Semaphore>,
    /// The pass under way for each blob.
    passes: Arc<SingleFlight<Digest, Pass>>,
}

/// A pass tailing a flight's temp file ([`Md5Passes::tail`]), to be handed to
/// [`Md5Passes::start`] once the flight's blob is committed under its digest. Dropped unused, it
/// stops the pass.
pub(crate) struct Md5Tail(oneshot::Receiver<std::io::Result<Option<String>>>);

/// While held, no MD5 pass reads ([`Md5Passes::pause`]).
pub(crate) struct Md5Pause {
    _permits: OwnedSemaphorePermit,
}

/// How soon a pass's MD5 is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// Nobody waits for it: it runs at the lowest CPU priority, on a core nothing else wants.
    Background,
    /// A client waits for it (the answer to an upload carries it): normal priority.
    Waited,
}

impl Md5Passes {
    pub(crate) fn new(ix: Ix, tasks: Tasks) -> Md5Passes {
        Md5Passes {
            ix,
            tasks,
            permits: Arc::new(Semaphore::new(PASSES_AT_ONCE)),
            threads: Arc::new(Semaphore::new(PASS_THREADS)),
            passes: Arc::default(),
        }
    }

    /// Starts a pass tailing the temp file `file` of the flight whose phases `rx` receives: it
    /// hashes the bytes below `written` as they come and ends when the flight is done (with the
    /// MD5) or stops storing the body (without one). `None` if every pass thread is busy or no
    /// thread could be started: the blob's MD5 is then computed from its file after the store, as
    /// for any other blob.
    pub(crate) fn tail(&self, file: Arc<File>, rx: watch::Receiver<Phase>) -> Option<Md5Tail> {
        let permits = Arc::clone(&self.permits);
        let thread = Arc::clone(&self.threads).try_acquire_owned().ok()?;
        let (tx, result) = oneshot::channel();
        let md5 = move || {
            let _thread = thread;
            let md5 = tail_file(&file, rx, &permits, || tx.is_closed());
            let _ = tx.send(md5);
        };
        spawn_pass(Urgency::Background, md5).ok()?;
        Some(Md5Tail(result))
    }

    /// Starts the MD5 pass of blob `digest` in `disk` (committed to the index), unless one is
    /// under way, and returns at once; the pass records the MD5 in the index. With `tail` (a pass
    /// that followed the blob's fetch), its result is used; should it have none, the file is read.
    pub(crate) fn start(&self, digest: Digest, disk: &DiskTier, tail: Option<Md5Tail>, urgency: Urgency) {
        drop(self.join(digest, disk, tail, urgency));
    }

    /// Blob `digest`'s MD5 (lowercase hex) in `disk` (the disk tier, or a namespace's own
    /// directory): from the index at once if it is there, else from the pass under way, or a new
    /// one. Concurrent callers for one blob share a single pass.
    pub(crate) async fn get(&self, digest: Digest, disk: &DiskTier) -> Result<String, Error> {
        if let Some(md5) = self.ix.run(move |ix| ix.get_blob(&digest)).await?.and_then(|b| b.md5) {
            return Ok(md5);
        }
        self.join(digest, disk, None, Urgency::Waited).await
    }

    /// Holds every permit until the returned guard is dropped: no pass reads meanwhile (a chunk
    /// being hashed is finished first). For tests that show that no read waits for an MD5.
    pub(crate) async fn pause(&self) -> Md5Pause {
        let n = u32::try_from(PASSES_AT_ONCE).expect("a small constant");
        let permit = Arc::clone(&self.permits).acquire_many_owned(n).await.expect("never closed");
        Md5Pause { _permits: permit }
    }

    /// The pass under way for `digest`, or a new one (driven to its end by a background task,
    /// whether or not anyone waits for it).
    fn join(&self, digest: Digest, disk: &DiskTier, tail: Option<Md5Tail>, urgency: Urgency) -> Pass {
        let mut new = None;
        let joined = self.passes.join(
            digest,
            |_| true,
            || {
                let pass = self.pass(digest, disk.clone(), tail, urgency).boxed().shared();
                new = Some(pass.clone());
                pass
            },
        );
        match joined {
            Joined::Running(pass) => pass,
            Joined::Started(pass) => {
                let passes = Arc::clone(&self.passes);
                let mine = new.expect("a started pass was made here");
                self.tasks.spawn(async move {
                    if let Err(e) = mine.clone().await {
                        tracing::warn!(%digest, error = %e, "cannot compute MD5");
                    }
                    passes.finish(&digest, |p| p.ptr_eq(&mine));
                });
                pass
            }
        }
    }

    /// One pass over blob `digest`: the tail's MD5 if it has one, else the index's (another
    /// process may have recorded it), else the file's; recorded in the index.
    fn pass(
        &self,
        digest: Digest,
        disk: DiskTier,
        tail: Option<Md5Tail>,
        urgency: Urgency,
    ) -> impl Future<Output = Result<String, Error>> + use<> {
        let (ix, permits, threads) = (self.ix.clone(), Arc::clone(&self.permits), Arc::clone(&self.threads));
        async move {
            let tailed = match tail {
                Some(Md5Tail(result)) => match result.await {
                    Ok(Ok(md5)) => md5,
                    Ok(Err(e)) => {
                        tracing::debug!(%digest, error = %e, "the MD5 pass beside the fetch failed; reading the blob");
                        None
                    }
                    Err(_) => None,
                },
                None => None,
            };
            let md5 = match tailed {
                Some(md5) => md5,
                None => {
                    if let Some(md5) = ix.run(move |ix| ix.get_blob(&digest)).await?.and_then(|b| b.md5) {
                        return Ok(md5);
                    }
                    let path = disk.blob_path(&digest);
                    let (tx, rx) = oneshot::channel();
                    let thread = threads.acquire_owned().await.expect("never closed");
                    spawn_pass(urgency, move || {
                        let _thread = thread;
                        let _ = tx.send(hash_file(&path, &permits));
                    })
                    .map_err(|e| Error::io("cannot start a thread for an MD5 pass", e))?;
                    let md5 = rx.await.map_err(|_| Error::io("computing MD5", std::io::Error::other("the pass ended")));
                    md5?.map_err(|e| Error::io(format!("cannot read blob {digest} for its MD5"), e))?
                }
            };
            let stored = md5.clone();
            ix.run(move |ix| ix.set_md5(&digest, &stored)).await?;
            Ok(md5)
        }
    }
}

/// Runs `work` on a new thread; in the background, at the lowest CPU priority (on Linux a nice
/// value is a thread's own; one that cannot be set leaves the thread at the normal priority).
fn spawn_pass(urgency: Urgency, work: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name("tiercache-md5".into()).spawn(move || {
        if urgency == Urgency::Background {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), PASS_NICE);
        }
        work()
    })?;
    Ok(())
}

/// A running MD5 over a file read in order, a chunk per permit.
struct Hashing<'a> {
    hasher: md5::Md5,
    buf: Vec<u8>,
    pos: u64,
    permits: &'a Semaphore,
}

impl Hashing<'_> {
    fn new(permits: &Semaphore) -> Hashing<'_> {
        Hashing { hasher: md5::Md5::new(), buf: vec![0u8; READ_BYTES], pos: 0, permits }
    }

    /// Hashes `file` on to byte `end`; `false` if `stop()` said to stop first.
    fn feed(&mut self, file: &File, end: u64, stop: &impl Fn() -> bool) -> std::io::Result<bool> {
        while self.pos < end {
            if stop() {
                return Ok(false);
            }
            let _turn = futures::executor::block_on(self.permits.acquire()).expect("never closed");
            let want = usize::try_from(end - self.pos).unwrap_or(usize::MAX).min(self.buf.len());
            let n = file.read_at(&mut self.buf[..want], self.pos)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than expected",
                ));
            }
            self.hasher.update(&self.buf[..n]);
            self.pos += n as u64;
        }
        Ok(true)
    }

    fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

/// The MD5 of the (complete) file at `path`.
fn hash_file(path: &std::path::Path, permits: &Semaphore) -> std::io::Result<String> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut hashing = Hashing::new(permits);
    hashing.feed(&file, len, &|| false)?;
    Ok(hashing.finish())
}

/// The MD5 of a flight's temp file `file`, read below `written` as the flight's phases (`rx`)
/// advance: `Some` once the flight is done (every byte is final), `None` if it stopped storing the
/// body or failed, or `stop()` said nobody wants the result any more.
fn tail_file(
    file: &File,
    mut rx: watch::Receiver<Phase>,
    permits: &Semaphore,
    stop: impl Fn() -> bool,
) -> std::io::Result<Option<String>> {
    let mut hashing = Hashing::new(permits);
    loop {
        let (available, is_done) = match &*rx.borrow_and_update() {
            Phase::Waiting => (0, false),
            Phase::Streaming { written, .. } => (*written, false),
            Phase::Done { written, .. } => (*written, true),
            Phase::NotModified | Phase::PassThrough { .. } | Phase::Overflow { .. } | Phase::Failed(_) => {
                return Ok(None);
            }
        };
        if !hashing.feed(file, available, &stop)? {
            return Ok(None);
        }
        if is_done {
            return Ok(Some(hashing.finish()));
        }
        if futures::executor::block_on(rx.changed()).is_err() && !matches!(*rx.borrow(), Phase::Done { .. }) {
            return Ok(None); // The flight ended without a result.
        }
    }
}
