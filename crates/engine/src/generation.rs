//! The lookup generation: how processes sharing a data directory tell each other that their
//! memory tiers' lookups (namespaces, entries) may be stale.
//!
//! Every change of namespaces and every bulk delete, in any process, replaces
//! `<data>/lookups.gen` by renaming a new empty file over it ([`bump`]). Before a lookup the memory
//! tier could answer, a process asks [`Generation::check`] whether the file was replaced since it
//! last asked, and drops its lookups if so.
//!
//! The check runs on every entry read, so it must cost next to nothing: each thread that checks
//! reads a non-blocking inotify descriptor of its own, watching the data directory (one `read`
//! that finds no event; no lock, so threads never wait for each other), and falls back to a `stat`
//! of the file where inotify is unavailable. The inotify event is queued by the kernel, for every
//! descriptor, during the rename itself, so a read that starts after a bump (in any process)
//! returns sees it: there is no window in which a stale lookup is used. A thread's first check
//! opens its descriptor and counts as a change (a bump may have come before the descriptor).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use rustix::fs::inotify;

/// The file every change of namespaces and every bulk delete replaces.
pub(crate) const LOOKUP_GENERATION: &str = "lookups.gen";

/// Replaces the lookup-generation file in `data_dir` by renaming a new, empty file over it: only
/// its identity matters, and memory tiers start empty after a crash, so it needs no fsync (it is
/// bumped on the write path, by eviction).
pub(crate) fn bump(data_dir: &Path) -> std::io::Result<()> {
    let tmp = data_dir.join(format!(".{LOOKUP_GENERATION}.{}.tmp", std::process::id()));
    std::fs::File::create(&tmp)?;
    std::fs::rename(&tmp, data_dir.join(LOOKUP_GENERATION))
}

/// One process's view of the lookup generation of one data directory.
pub(crate) struct Generation {
    /// Identifies this generation in the threads' descriptor lists; dropped with it, which lets
    /// each thread close its descriptor at its next check (or when it exits).
    id: Arc<()>,
    dir: PathBuf,
    /// The file, and its identity (inode and change time) when last seen: the check of threads
    /// that cannot have a descriptor.
    file: PathBuf,
    stamp: AtomicU64,
}

thread_local! {
    /// This thread's inotify descriptors, one per live [`Generation`] it has checked (`None`
    /// where inotify was refused: that generation is checked by `stat` on this thread).
    static WATCHES: RefCell<Vec<(Weak<()>, Option<OwnedFd>)>> = const { RefCell::new(Vec::new()) };
}

impl Generation {
    /// The lookup generation of `data_dir` (which exists).
    pub(crate) fn new(data_dir: &Path) -> Generation {
        let file = data_dir.join(LOOKUP_GENERATION);
        let stamp = AtomicU64::new(stamp_of(&file));
        Generation { id: Arc::new(()), dir: data_dir.to_owned(), file, stamp }
    }

    /// Calls `on_change` if the lookup-generation file was replaced (or the watch lost track)
    /// since this thread's last check, or if this is the thread's first check.
    pub(crate) fn check(&self, on_change: impl FnOnce()) {
        let changed = WATCHES.with(|w| {
            let mut watches = w.borrow_mut();
            if let Some((_, fd)) = watches.iter().find(|(id, _)| std::ptr::eq(id.as_ptr(), Arc::as_ptr(&self.id))) {
                return match fd {
                    Some(fd) => drain(fd),
                    None => self.stat_changed(),
                };
            }
            watches.retain(|(id, _)| id.strong_count() > 0);
            let fd = watch(&self.dir)
                .inspect_err(|e| {
                    tracing::debug!(error = %e, "no inotify for the data directory; the lookup generation is checked by stat");
                })
                .ok();
            watches.push((Arc::downgrade(&self.id), fd));
            self.stat_changed();
            true
        });
        if changed {
            on_change();
        }
    }

    fn stat_changed(&self) -> bool {
        let now = stamp_of(&self.file);
        self.stamp.swap(now, Ordering::Relaxed) != now
    }
}

/// A non-blocking inotify descriptor watching `dir` for the events a bump (or the directory's
/// removal) makes.
fn watch(dir: &Path) -> rustix::io::Result<OwnedFd> {
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
    let events = inotify::WatchFlags::MOVED_TO
        | inotify::WatchFlags::CREATE
        | inotify::WatchFlags::DELETE
        | inotify::WatchFlags::CLOSE_WRITE
        | inotify::WatchFlags::DELETE_SELF
        | inotify::WatchFlags::MOVE_SELF;
    inotify::add_watch(&fd, dir, events)?;
    Ok(fd)
}

/// Reads every queued event of `fd`: whether one is about the lookup-generation file (or the
/// queue overflowed, or cannot be read).
fn drain(fd: &OwnedFd) -> bool {
    let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut is_changed = false;
    loop {
        match reader.next() {
            Ok(event) => {
                let overflow = event.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW);
                let ours = event.file_name().is_none_or(|n| n.to_bytes() == LOOKUP_GENERATION.as_bytes());
                is_changed |= overflow || ours;
            }
            Err(e) if e == rustix::io::Errno::AGAIN => return is_changed,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the data directory's inotify events; dropping lookups");
                return true;
            }
        }
    }
}

fn stamp_of(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino() ^ (m.ctime() as u64).rotate_left(32) ^ m.ctime_nsec() as u64).unwrap_or(0)
}
