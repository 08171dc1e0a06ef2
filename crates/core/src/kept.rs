//! Kept counters: counts a front door or a source makes beside its metrics (the S3 front door's
//! requests per operation, errors per code, bytes in and out; the registry mirror's answers per
//! tier; a registry source's upstream requests) that `tiercache stats` shows summed over every
//! process that served from the data directory, as it shows the shared tier's. Each access flush
//! of the engine (`crates/engine/src/jobs/flush.rs`) moves what was counted since the last one
//! into the index's `counters` table, under [`PREFIX`].
//!
//! Like the metrics facade, the counters are the process's: a process serves one cache. It does
//! not know what the names mean; the front door names them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// Names of kept counters in the index start with this.
pub const PREFIX: &str = "front.";

/// Every kept counter of the process, by name: what it counted since the last flush.
static COUNTERS: LazyLock<Mutex<BTreeMap<String, Arc<AtomicU64>>>> = LazyLock::new(Mutex::default);

/// A handle to one kept counter; cheap to increment, and to clone.
#[derive(Debug, Clone)]
pub struct KeptCounter(Arc<AtomicU64>);

impl KeptCounter {
    /// Adds `n`.
    pub fn increment(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// The kept counter `name` (created at 0): look it up once where it is counted often.
pub fn kept_counter(name: &str) -> KeptCounter {
    let mut all = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = all.get(name) {
        return KeptCounter(Arc::clone(c));
    }
    let c = Arc::new(AtomicU64::new(0));
    all.insert(name.to_owned(), Arc::clone(&c));
    KeptCounter(c)
}

/// What every counter counted since the last drain, named as in the index (under [`PREFIX`]),
/// leaving them at 0. Counters at 0 are left out. For the engine's flush only.
pub fn drain() -> Vec<(String, i64)> {
    let all = COUNTERS.lock().unwrap_or_else(|p| p.into_inner());
    all.iter()
        .filter_map(|(name, c)| {
            let n = c.swap(0, Ordering::Relaxed);
            (n > 0).then(|| (format!("{PREFIX}{name}"), i64::try_from(n).unwrap_or(i64::MAX)))
        })
        .collect()
}

/// Gives back what [`drain`] took and could not be written: counted again at the next flush.
pub fn restore(deltas: &[(String, i64)]) {
    for (name, n) in deltas {
        if let Some(name) = name.strip_prefix(PREFIX) {
            kept_counter(name).increment(u64::try_from(*n).unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_drained_once_and_restored() {
        let c = kept_counter("test.kept.a");
        c.increment(2);
        kept_counter("test.kept.a").increment(3);
        let mine = |d: Vec<(String, i64)>| d.into_iter().filter(|(n, _)| n.starts_with("front.test.kept.")).collect();
        let got: Vec<_> = mine(drain());
        assert_eq!(got, [("front.test.kept.a".to_owned(), 5)]);
        assert!(mine(drain()).is_empty());
        restore(&got);
        assert_eq!(mine(drain()), got);
    }
}
