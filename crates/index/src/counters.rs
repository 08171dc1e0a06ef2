//! Counters kept across processes and restarts (table `counters`): sums that only grow, and
//! latest values that are replaced.

use std::collections::BTreeMap;

use rusqlite::params;

use crate::index::{Index, Result};

impl Index {
    /// Adds `deltas` to the named counters (creating them at 0) and sets `latest` to the given
    /// values, in one transaction.
    pub fn bump_counters(&self, deltas: &[(String, i64)], latest: &[(String, i64)]) -> Result<()> {
        if deltas.is_empty() && latest.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut add = tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            )?;
            for (name, delta) in deltas {
                add.execute(params![name, delta])?;
            }
            let mut set = tx.prepare_cached(
                "INSERT INTO counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )?;
            for (name, value) in latest {
                set.execute(params![name, value])?;
            }
            Ok(())
        })
    }

    /// Every counter whose name starts with `prefix`, by name.
    pub fn counters(&self, prefix: &str) -> Result<BTreeMap<String, i64>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT name, value FROM counters WHERE substr(name, 1, length(?1)) = ?1")?;
            let rows = stmt.query_map([prefix], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_grow_and_latest_values_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (ix, _) = Index::open(&dir.path().join("index.db")).unwrap();
        let s = |n: &str, v: i64| (n.to_owned(), v);
        ix.bump_counters(&[s("shared.hits", 2), s("shared.misses", 1)], &[s("shared.breaker_open", 1)]).unwrap();
        ix.bump_counters(&[s("shared.hits", 3)], &[s("shared.breaker_open", 0)]).unwrap();
        ix.bump_counters(&[s("other.x", 9)], &[]).unwrap();
        let got = ix.counters("shared.").unwrap();
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [s("shared.breaker_open", 0), s("shared.hits", 5), s("shared.misses", 1)]
        );
    }
}
