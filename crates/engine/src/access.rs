//! Batched last-access bookkeeping: reads are counted in memory and written to the index in one
//! transaction per flush interval, never one write per read.

use std::collections::HashMap;
use std::sync::Mutex;

use tiercache_core::Digest;
use tiercache_index::AccessRecord;

type EntryId = Option<(i64, String)>;

/// Reads not yet written to the index.
#[derive(Debug, Default)]
pub(crate) struct AccessLog {
    pending: Mutex<HashMap<(EntryId, Digest), (i64, u64)>>,
}

impl AccessLog {
    /// Notes one read of `digest` (through entry `entry`, if any) at `at_ms`.
    pub(crate) fn note(&self, entry: EntryId, digest: Digest, at_ms: i64) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.entry((entry, digest)).or_insert((at_ms, 0));
        slot.0 = slot.0.max(at_ms);
        slot.1 += 1;
    }

    /// Takes everything noted so far.
    pub(crate) fn drain(&self) -> Vec<AccessRecord> {
        let map = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        map.into_iter()
            .map(|((entry, digest), (at_ms, n_hits))| AccessRecord { entry, digest, at_ms, n_hits })
            .collect()
    }
}
