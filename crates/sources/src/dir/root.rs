//! A directory source's root held open ([`HeldRoot`]), so that a read by path is one `openat2`
//! beneath it (`DirSource::open_held`) rather than an open of the root and then of the file.
//!
//! A descriptor names the directory the root path named when it was opened. At most
//! [`RECHECK`] after the path names another directory (the root replaced, moved or mounted
//! over), a read looks up the path again and holds the new directory; a root that is gone stops
//! being held (`DirSource::open_held` then answers `None`, and the caller's full open says why).
//! Between two checks the cost is one atomic load and a clock read.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use rustix::fs::{Mode, OFlags};

/// How long a held root is used before its path is looked up again.
pub(crate) const RECHECK: Duration = Duration::from_secs(1);

/// The root directory of one source, held open.
pub(crate) struct HeldRoot {
    path: PathBuf,
    /// The clock `Opened::checked_ms` counts from.
    base: Instant,
    held: ArcSwapOption<Opened>,
}

impl std::fmt::Debug for HeldRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldRoot").field("is_held", &self.held.load().is_some()).finish_non_exhaustive()
    }
}

struct Opened {
    fd: OwnedFd,
    /// Device and inode of the directory `fd` names.
    id: (u64, u64),
    /// When the path last named it (ms since `HeldRoot::base`).
    checked_ms: AtomicU64,
}

impl HeldRoot {
    pub(crate) fn new(path: PathBuf) -> HeldRoot {
        HeldRoot { path, base: Instant::now(), held: ArcSwapOption::empty() }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `f` of the held root, opening it (again) if it is not held or due for a check; `None` if
    /// the root cannot be opened.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&OwnedFd) -> T) -> Option<T> {
        let now = self.now_ms();
        {
            let held = self.held.load();
            if let Some(o) = held.as_ref()
                && now.saturating_sub(o.checked_ms.load(Ordering::Relaxed)) < RECHECK.as_millis() as u64
            {
                return Some(f(&o.fd));
            }
        }
        let o = self.refresh(now)?;
        Some(f(&o.fd))
    }

    /// Looks up the root path: the held directory if it still names it, else the one it names
    /// now, opened (threads racing here each open one; the last kept wins, which is harmless).
    fn refresh(&self, now: u64) -> Option<Arc<Opened>> {
        let Ok(st) = rustix::fs::stat(&self.path) else {
            self.held.store(None);
            return None;
        };
        if let Some(o) = self.held.load_full()
            && o.id == id_of(&st)
        {
            o.checked_ms.store(now, Ordering::Relaxed);
            return Some(o);
        }
        let fd = rustix::fs::open(&self.path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok();
        // The identity of what was opened, not of what the path named a moment before.
        let opened = fd.and_then(|fd| {
            let id = id_of(&rustix::fs::fstat(&fd).ok()?);
            Some(Arc::new(Opened { fd, id, checked_ms: AtomicU64::new(now) }))
        });
        self.held.store(opened.clone());
        opened
    }
}

#[allow(clippy::unnecessary_cast)] // The field types differ between targets.
fn id_of(st: &rustix::fs::Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ino(root: &HeldRoot) -> Option<u64> {
        root.with(|fd| rustix::fs::fstat(fd).unwrap().st_ino as u64)
    }

    #[test]
    fn a_replaced_root_is_held_anew_after_the_recheck_and_a_gone_one_is_let_go() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("root");
        std::fs::create_dir(&path).unwrap();
        let root = HeldRoot::new(path.clone());
        let first = ino(&root).expect("the root opens");
        std::fs::rename(&path, tmp.path().join("old")).unwrap();
        std::fs::create_dir(&path).unwrap();
        // Within the recheck interval the held directory is used as it is.
        assert_eq!(ino(&root), Some(first));
        // Past it (moved back by hand, rather than waited for), the path is looked up again.
        root.held.load().as_ref().unwrap().checked_ms.store(0, Ordering::Relaxed);
        let base_shift = RECHECK.as_millis() as u64 + 1;
        let now = root.now_ms() + base_shift;
        let second = root.refresh(now).map(|o| o.id.1);
        assert!(second.is_some_and(|i| i != first), "the new directory is held");
        std::fs::remove_dir(&path).unwrap();
        assert!(root.refresh(now).is_none(), "a root that is gone is not held");
        assert!(root.held.load().is_none());
    }
}
