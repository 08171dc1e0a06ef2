//! The lookup generation: how processes sharing a data directory tell each other that their
//! memory tiers' lookups (namespaces, entries) may be stale.
//!
//! `<data>/lookups.gen` holds one 64-bit counter (native byte order, eight bytes). Every change
//! of namespaces and every bulk delete, in any process, adds one to it after its index commit
//! ([`bump`]). Before a lookup the memory tier could answer, a process compares the counter with
//! the value it last acted on ([`Generation::check`]) and drops its lookups if they differ.
//!
//! The check runs on every entry read, so it must cost next to nothing: each process maps the
//! file's first page shared and reads the counter with one atomic load (no system call, no lock).
//! A bump writes through the page cache, which is the mapped page itself, so a read that starts
//! after a bump (in any process) returned sees it: there is no window in which a stale lookup is
//! used. Where the file cannot be mapped, the counter is read with `pread` on every check (as
//! exact, one system call more per read).
//!
//! The file is never replaced or shrunk once it has its eight bytes: a mapped page past the end
//! of a file faults. Shrinking it by hand under a running process is outside what this guards
//! against, like editing the index by hand.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The file holding the counter every change of namespaces and every bulk delete bumps.
pub(crate) const LOOKUP_GENERATION: &str = "lookups.gen";

const COUNTER_BYTES: u64 = 8;

/// Adds one to the lookup-generation counter of `data_dir` (creating the file if needed), under
/// an exclusive `flock` so that concurrent bumps in several processes each count. Memory tiers
/// start empty after a crash, so it needs no fsync (it is bumped on the write path, by eviction).
pub(crate) fn bump(data_dir: &Path) -> std::io::Result<()> {
    let file = open(&data_dir.join(LOOKUP_GENERATION))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    let mut buf = [0; COUNTER_BYTES as usize];
    file.read_exact_at(&mut buf, 0)?;
    file.write_all_at(&u64::from_ne_bytes(buf).wrapping_add(1).to_ne_bytes(), 0)
    // The lock goes with the descriptor.
}

/// Opens (creating) the counter file for reading and writing, with at least its eight bytes.
fn open(path: &Path) -> std::io::Result<File> {
    let file = File::options().read(true).write(true).create(true).truncate(false).open(path)?;
    if file.metadata()?.len() < COUNTER_BYTES {
        // Zeros; concurrent openers set the same length, which changes nothing.
        file.set_len(COUNTER_BYTES)?;
    }
    Ok(file)
}

/// One process's view of the lookup generation of one data directory.
pub(crate) struct Generation {
    counter: Counter,
    /// The counter's value when this process last dropped its lookups (or started).
    seen: AtomicU64,
}

enum Counter {
    /// The file's first page, mapped shared (read and write, though only ever read here).
    Mapped(memmap2::MmapRaw),
    /// The file, read with `pread` on every check (it could not be mapped).
    File(File),
    /// The file could not be opened (a read-only data directory without one): every check is a
    /// change, so the memory tier's lookups are never trusted.
    Missing,
}

impl Generation {
    /// The lookup generation of `data_dir` (which exists).
    pub(crate) fn new(data_dir: &Path) -> Generation {
        let path = data_dir.join(LOOKUP_GENERATION);
        let counter = match open(&path) {
            Ok(file) => match memmap2::MmapOptions::new().len(COUNTER_BYTES as usize).map_raw(&file) {
                Ok(map) => Counter::Mapped(map),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot map the lookup-generation file; reading it on every check");
                    Counter::File(file)
                }
            },
            Err(e) => match File::open(&path) {
                Ok(file) if file.metadata().is_ok_and(|m| m.len() >= COUNTER_BYTES) => Counter::File(file),
                _ => {
                    tracing::warn!(error = %e, path = %path.display(), "no lookup-generation file; the memory tier will not keep lookups");
                    Counter::Missing
                }
            },
        };
        let seen = AtomicU64::new(counter.load().unwrap_or(0));
        Generation { counter, seen }
    }

    /// Calls `on_change` if the counter moved since this process last called it (or since
    /// [`Generation::new`]), or cannot be read.
    pub(crate) fn check(&self, on_change: impl FnOnce()) {
        let now = self.counter.load();
        if now.is_none_or(|now| now != self.seen.load(Ordering::Acquire)) {
            on_change();
            // Stored only after `on_change` has run: a thread that finds the new value already
            // stored finds the lookups already dropped. Two threads may both drop them; harmless.
            if let Some(now) = now {
                self.seen.store(now, Ordering::Release);
            }
        }
    }
}

impl Counter {
    fn load(&self) -> Option<u64> {
        match self {
            Counter::Mapped(map) => Some(mapped_counter(map).load(Ordering::Acquire)),
            Counter::File(file) => {
                let mut buf = [0; COUNTER_BYTES as usize];
                file.read_exact_at(&mut buf, 0).ok().map(|()| u64::from_ne_bytes(buf))
            }
            Counter::Missing => None,
        }
    }
}

/// The counter in the mapped page.
#[allow(unsafe_code)]
fn mapped_counter(map: &memmap2::MmapRaw) -> &AtomicU64 {
    debug_assert!(map.len() >= COUNTER_BYTES as usize);
    // SAFETY: `map` is a shared read-write mapping of at least eight bytes of a file that
    // holds at least eight bytes and is never shrunk (see the module docs), so the pointer is
    // valid for reads and writes for as long as `map` lives, which bounds the returned
    // reference. A mapping starts on a page boundary, so it is aligned for `AtomicU64`. This
    // process only loads through it; other processes change the bytes through the kernel
    // (`pwrite`), outside this program's memory model, as with any memory shared between
    // processes.
    unsafe { AtomicU64::from_ptr(map.as_mut_ptr().cast::<u64>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(g: &Generation) -> bool {
        let mut changed = false;
        g.check(|| changed = true);
        changed
    }

    #[test]
    fn a_bump_from_any_view_is_seen_once_by_every_other() {
        let dir = tempfile::tempdir().unwrap();
        let a = Generation::new(dir.path());
        let b = Generation::new(dir.path());
        assert!(matches!(a.counter, Counter::Mapped(_)));
        assert!(!changed(&a) && !changed(&b), "nothing happened yet");
        bump(dir.path()).unwrap();
        assert!(changed(&a) && changed(&b));
        assert!(!changed(&a) && !changed(&b), "each change is seen once");
        bump(dir.path()).unwrap();
        bump(dir.path()).unwrap();
        assert!(changed(&b));
        assert!(!changed(&b));
        let c = Generation::new(dir.path());
        assert!(!changed(&c), "a new view starts from the current value (its memory tier is empty)");
        assert!(changed(&a));
    }

    #[test]
    fn concurrent_bumps_each_count() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| (0..50).for_each(|_| bump(dir.path()).unwrap()));
            }
        });
        let bytes = std::fs::read(dir.path().join(LOOKUP_GENERATION)).unwrap();
        assert_eq!(u64::from_ne_bytes(bytes[..8].try_into().unwrap()), 400);
    }

    #[test]
    fn an_empty_file_from_an_older_layout_is_extended_and_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOOKUP_GENERATION), b"").unwrap();
        let g = Generation::new(dir.path());
        assert!(matches!(g.counter, Counter::Mapped(_)));
        assert!(!changed(&g));
        bump(dir.path()).unwrap();
        assert!(changed(&g));
    }

    #[test]
    fn the_read_fallback_sees_bumps_too() {
        let dir = tempfile::tempdir().unwrap();
        bump(dir.path()).unwrap();
        let file = File::open(dir.path().join(LOOKUP_GENERATION)).unwrap();
        let g = Generation { seen: AtomicU64::new(1), counter: Counter::File(file) };
        assert!(!changed(&g));
        bump(dir.path()).unwrap();
        assert!(changed(&g));
        assert!(!changed(&g));
        let missing = Generation { seen: AtomicU64::new(0), counter: Counter::Missing };
        assert!(changed(&missing) && changed(&missing), "an unreadable counter is always a change");
    }
}
