//! Counts that every hit updates and that are read seldom (reports, `/metrics`), kept on one
//! cache line per thread and summed when read, so that threads counting at once do not take turns
//! owning one line.
//!
//! It does not know what it counts; [`StripedCounter::publish`] hands the sum on to a metric.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The number of stripes ([`thread_stripe`]).
pub const STRIPES: usize = 8;

/// The stripe (below [`STRIPES`]) of the current thread, for state that threads update often and
/// read seldom: threads are dealt stripes in turn as they first ask, and a thread keeps its own.
pub fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

/// One stripe, alone on its cache lines.
#[repr(align(128))]
struct Slot(AtomicU64);

/// A count spread over [`STRIPES`] cache lines: each thread adds to its own stripe.
pub struct StripedCounter {
    slots: [Slot; STRIPES],
    /// How much of the count [`StripedCounter::publish`] has handed on.
    published: AtomicU64,
}

impl StripedCounter {
    /// A count of zero.
    pub const fn new() -> Self {
        Self { slots: [const { Slot(AtomicU64::new(0)) }; STRIPES], published: AtomicU64::new(0) }
    }

    /// Adds `n` on the current thread's stripe.
    pub fn add(&self, n: u64) {
        self.slots[thread_stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count: every `add` that returned before this call began, and maybe some concurrent.
    pub fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }

    /// Adds to `metric` what was counted since the last call, so that once it returns `metric`
    /// has counted everything [`StripedCounter::get`] saw. Concurrent calls count nothing twice;
    /// several counters publishing to one metric make it count their sum.
    pub fn publish(&self, metric: &metrics::Counter) {
        let now = self.get();
        let before = self.published.fetch_max(now, Ordering::Relaxed);
        if now > before {
            metric.increment(now - before);
        }
    }
}

impl Default for StripedCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StripedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StripedCounter").field(&self.get()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_thread_and_publishes_each_count_once() {
        let c = StripedCounter::new();
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| (0..1000).for_each(|_| c.add(1)));
            }
        });
        assert_eq!(c.get(), 16_000);

        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let metric = metrics::counter!("striped_test_total");
            c.publish(&metric);
            c.publish(&metric);
            c.add(5);
            c.publish(&metric);
        });
        let value = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find_map(|(key, _, _, value)| (key.key().name() == "striped_test_total").then_some(value));
        assert_eq!(value, Some(metrics_util::debugging::DebugValue::Counter(16_005)));
    }
}
