//! The lookup generation: how processes sharing a data directory tell each other that their
//! memory tiers' lookups (namespaces, entries) may be stale.
//!
//! Every change of namespaces and every bulk delete, in any process, replaces
//! `<data>/lookups.gen` by renaming a new empty file over it ([`bump`]). Before a lookup the memory
//! tier could answer, a process asks [`Generation::check`] whether the file was replaced since it
//! last asked, and drops its lookups if so.
//!
//! The check runs on every entry read, so it must cost next to nothing: it reads a non-blocking
//! inotify descriptor watching the data directory (one `read` that finds no event), and falls back
//! to a `stat` of the file where inotify is unavailable. The inotify event is queued by the kernel
//! during the rename itself, so a read that starts after a bump (in any process) returns sees it:
//! there is no window in which a stale lookup is used.

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// One process's view of the lookup generation.
pub(crate) enum Generation {
    /// A non-blocking inotify descriptor watching the data directory; held while its events are
    /// drained and acted on, so that no read slips between the two.
    Watch(Mutex<OwnedFd>),
    /// Without inotify: the file, and its identity (inode and change time) when last seen.
    Stat { path: PathBuf, stamp: AtomicU64 },
}

impl Generation {
    /// Starts watching `data_dir` (which exists).
    pub(crate) fn new(data_dir: &Path) -> Generation {
        let watch = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).and_then(|fd| {
            let events = inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::CREATE
                | inotify::WatchFlags::DELETE
                | inotify::WatchFlags::CLOSE_WRITE
                | inotify::WatchFlags::DELETE_SELF
                | inotify::WatchFlags::MOVE_SELF;
            inotify::add_watch(&fd, data_dir, events)?;
            Ok(fd)
        });
        match watch {
            Ok(fd) => Generation::Watch(Mutex::new(fd)),
            Err(e) => {
                tracing::debug!(error = %e, "no inotify for the data directory; the lookup generation is checked by stat");
                let path = data_dir.join(LOOKUP_GENERATION);
                let stamp = AtomicU64::new(stamp_of(&path));
                Generation::Stat { path, stamp }
            }
        }
    }

    /// Calls `on_change` if the lookup-generation file was replaced (or the watch lost track)
    /// since the last check.
    pub(crate) fn check(&self, on_change: impl FnOnce()) {
        let watch = match self {
            Generation::Watch(watch) => watch,
            Generation::Stat { path, stamp } => {
                let now = stamp_of(path);
                if stamp.swap(now, Ordering::Relaxed) != now {
                    on_change();
                }
                return;
            }
        };
        let fd = watch.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
        let mut reader = inotify::Reader::new(&*fd, &mut buf);
        let mut is_changed = false;
        loop {
            match reader.next() {
                Ok(event) => {
                    let overflow = event.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW);
                    let ours = event.file_name().is_none_or(|n| n.to_bytes() == LOOKUP_GENERATION.as_bytes());
                    is_changed |= overflow || ours;
                }
                Err(e) if e == rustix::io::Errno::AGAIN => break,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the data directory's inotify events; dropping lookups");
                    is_changed = true;
                    break;
                }
            }
        }
        if is_changed {
            on_change();
        }
    }
}

fn stamp_of(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino() ^ (m.ctime() as u64).rotate_left(32) ^ m.ctime_nsec() as u64).unwrap_or(0)
}
