//! Reads, noted in batches (`AccessRecord`): when each entry and blob was last read and how often
//! an entry was.
//!
//! The engine folds many reads into one record and applies a batch in one transaction, so that a
//! read does not cost a write of its own. Last-access times only move forward (`max`), so a batch
//! that arrives late cannot make a row look older. What these times decide (eviction order, the
//! pruner's age limits) is in `lifecycle.rs`.

use rusqlite::params;
use tiercache_core::Digest;

use crate::index::{Index, Result};

/// One batched access: an entry (or just a blob) was read at `at_ms`, `n_hits` times.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// `(namespace id, key)` of the entry read, if it was an entry.
    pub entry: Option<(i64, String)>,
    /// The blob read.
    pub digest: Digest,
    /// Time of the latest read, ms.
    pub at_ms: i64,
    /// Reads folded into this record.
    pub n_hits: u64,
}

impl Index {
    /// Applies a batch of reads in one transaction: last-access times and hit counts.
    pub fn record_access(&self, batch: &[AccessRecord]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut entry_stmt = tx.prepare_cached(
                "UPDATE entries SET last_access = max(last_access, ?3), hits = hits + ?4 WHERE ns_id = ?1 AND key = ?2",
            )?;
            let mut blob_stmt =
                tx.prepare_cached("UPDATE blobs SET last_access = max(last_access, ?2) WHERE digest = ?1")?;
            for rec in batch {
                if let Some((ns_id, key)) = &rec.entry {
                    entry_stmt.execute(params![ns_id, key, rec.at_ms, rec.n_hits as i64])?;
                }
                blob_stmt.execute(params![rec.digest.hex(), rec.at_ms])?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use tiercache_core::{NamespaceName, NamespaceOptions};

    use super::*;
    use crate::testing::{entry, fresh};

    #[test]
    fn access_batches_accumulate_hits() {
        let (_d, ix) = fresh();
        let a = ix.put_namespace(&NamespaceName::new("a").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        let d = Digest::of(b"x");
        ix.commit_blob(&d, 1, (false, false), None, Some(&entry(a.id, "k")), 1).unwrap();
        let rec = AccessRecord { entry: Some((a.id, "k".into())), digest: d, at_ms: 50, n_hits: 3 };
        ix.record_access(&[rec.clone(), rec]).unwrap();
        assert_eq!(ix.stats(Some("a")).unwrap().namespaces[0].hits, 6);
    }
}
