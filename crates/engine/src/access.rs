//! Batched last-access bookkeeping: reads are counted in memory and written to the index in one
//! transaction per flush interval, never one write per read.
//!
//! Each thread notes its reads on a stripe of its own ([`tiercache_tiers::thread_stripe`]), so
//! that threads noting at once seldom wait for each other. A read of an entry the memory tier
//! holds is noted by the address of the memory tier's value, which the stripe keeps alive until
//! the flush: no key is copied or hashed on that path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use foldhash::quality::RandomState;
use tiercache_core::Digest;
use tiercache_index::AccessRecord;
use tiercache_tiers::{STRIPES, thread_stripe};

use crate::memory::HotEntry;

type EntryId = Option<(i64, String)>;

/// Reads not yet written to the index.
#[derive(Debug)]
pub(crate) struct AccessLog {
    stripes: [Mutex<Pending>; STRIPES],
}

/// One stripe's reads: the latest time and the count, by what was read.
#[derive(Debug, Default)]
struct Pending {
    reads: HashMap<(EntryId, Digest), (i64, u64), RandomState>,
    /// By the address of the value, which the `Arc` here keeps from being reused.
    hot: HashMap<usize, (Arc<HotEntry>, i64, u64), RandomState>,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self { stripes: std::array::from_fn(|_| Mutex::default()) }
    }
}

impl AccessLog {
    fn stripe(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.stripes[thread_stripe()].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes one read of `digest` (through entry `entry`, if any) at `at_ms`.
    pub(crate) fn note(&self, entry: EntryId, digest: Digest, at_ms: i64) {
        let mut pending = self.stripe();
        let slot = pending.reads.entry((entry, digest)).or_insert((at_ms, 0));
        slot.0 = slot.0.max(at_ms);
        slot.1 += 1;
    }

    /// Notes one read of the entry `hot` (held by the memory tier) at `at_ms`.
    pub(crate) fn note_hot(&self, hot: &Arc<HotEntry>, at_ms: i64) {
        let mut pending = self.stripe();
        let slot = pending.hot.entry(Arc::as_ptr(hot) as usize).or_insert_with(|| (Arc::clone(hot), at_ms, 0));
        slot.1 = slot.1.max(at_ms);
        slot.2 += 1;
    }

    /// Takes everything noted so far.
    pub(crate) fn drain(&self) -> Vec<AccessRecord> {
        let mut records = Vec::new();
        for stripe in &self.stripes {
            let pending = std::mem::take(&mut *stripe.lock().unwrap_or_else(|p| p.into_inner()));
            records.extend(pending.reads.into_iter().map(|((entry, digest), (at_ms, n_hits))| AccessRecord {
                entry,
                digest,
                at_ms,
                n_hits,
            }));
            records.extend(pending.hot.into_values().map(|(hot, at_ms, n_hits)| AccessRecord {
                entry: Some((hot.entry.ns_id, hot.entry.key.clone())),
                digest: hot.entry.digest,
                at_ms,
                n_hits,
            }));
        }
        records
    }
}
