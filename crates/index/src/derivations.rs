//! Derivations (table `derivations`): which blob a recipe made from which input blob, by key.
//!
//! The output blob is committed in the same transaction as its row, retained (no entry names it,
//! so the pruner never takes it as an orphan) and evictable like any blob; a row whose output is
//! not present is a miss. This module stores names, numbers and digests: what a recipe is and how
//! outputs are made is the engine's business (`tiercache-derive` and the engine's `derive`).

use rusqlite::{OptionalExtension, params};
use tiercache_core::Digest;

use crate::index::{Index, Result, digest_of};

/// The key of a derivation: recipe, version, canonical parameters, input blob.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DerivationKey {
    /// The recipe's name.
    pub recipe: String,
    /// The recipe's version.
    pub version: u32,
    /// The canonical parameters (`name=value&…`).
    pub params: String,
    /// The input blob.
    pub input: Digest,
}

/// A derivation whose output blob is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivation {
    /// The output blob.
    pub output: Digest,
    /// Its size.
    pub size_bytes: u64,
    /// Its media type.
    pub content_type: String,
    /// When it was made (ms).
    pub created_at: i64,
}

/// Derivations by recipe, for `stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DerivationStats {
    /// `(recipe, outputs present, their bytes)`, by recipe name.
    pub by_recipe: Vec<(String, u64, u64)>,
}

impl Index {
    /// Commits output blob `output` (`size_bytes`, present, retained) and the derivation row
    /// `key` naming it, with media type `content_type`, in one transaction.
    pub fn commit_derived(
        &self,
        key: &DerivationKey,
        output: &Digest,
        size_bytes: u64,
        content_type: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO blobs (digest, size, state, is_retained, is_upload, created_at, last_access)
                 VALUES (?1, ?2, 1, 1, 0, ?3, ?3)
                 ON CONFLICT (digest) DO UPDATE SET state = 1, is_retained = 1, last_access = excluded.last_access",
            )?
            .execute(params![output.hex(), size_bytes as i64, now_ms])?;
            tx.prepare_cached(
                "INSERT INTO derivations (recipe, version, params, input, output, size, content_type, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT DO UPDATE SET output = excluded.output, size = excluded.size,
                     content_type = excluded.content_type, created_at = excluded.created_at",
            )?
            .execute(params![
                key.recipe,
                key.version,
                key.params,
                key.input.hex(),
                output.hex(),
                size_bytes as i64,
                content_type,
                now_ms
            ])?;
            Ok(())
        })
    }

    /// The derivation `key`, if its output blob is present in the disk tier.
    pub fn get_derivation(&self, key: &DerivationKey) -> Result<Option<Derivation>> {
        self.read(|c| {
            let found = c
                .prepare_cached(
                    "SELECT d.output, d.size, d.content_type, d.created_at FROM derivations d
                     JOIN blobs b ON b.digest = d.output AND b.state = 1
                     WHERE d.recipe = ?1 AND d.version = ?2 AND d.params = ?3 AND d.input = ?4",
                )?
                .query_row(params![key.recipe, key.version, key.params, key.input.hex()], |r| {
                    Ok(Derivation {
                        output: digest_of(r.get(0)?)?,
                        size_bytes: r.get::<_, i64>(1)? as u64,
                        content_type: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                })
                .optional()?;
            Ok(found)
        })
    }

    /// Deletes the rows whose output blob is not present any more; returns how many.
    pub fn forget_lost_derivations(&self) -> Result<u64> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM derivations
                 WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = derivations.output AND b.state = 1)",
                [],
            )? as u64)
        })
    }

    /// Outputs present, and their bytes, by recipe.
    pub fn derivation_stats(&self) -> Result<DerivationStats> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT d.recipe, count(*), coalesce(sum(d.size), 0) FROM derivations d
                 JOIN blobs b ON b.digest = d.output AND b.state = 1 GROUP BY d.recipe ORDER BY d.recipe",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(DerivationStats { by_recipe: rows })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh;

    fn key(input: &Digest, params: &str) -> DerivationKey {
        DerivationKey { recipe: "thumbnail".into(), version: 1, params: params.into(), input: *input }
    }

    #[test]
    fn an_output_is_found_by_key_while_present_and_survives_the_orphan_pruner() {
        let (_dir, ix) = fresh();
        let (input, output) = (Digest::of(b"in"), Digest::of(b"out"));
        let k = key(&input, "size=300");
        assert_eq!(ix.get_derivation(&k).unwrap(), None);
        ix.commit_derived(&k, &output, 3, "image/webp", 1000).unwrap();
        let found = ix.get_derivation(&k).unwrap().unwrap();
        assert_eq!((found.output, found.size_bytes, found.content_type.as_str()), (output, 3, "image/webp"));
        assert_eq!(ix.get_derivation(&key(&input, "size=200")).unwrap(), None, "other parameters, other key");
        let newer = DerivationKey { version: 2, ..k.clone() };
        assert_eq!(ix.get_derivation(&newer).unwrap(), None, "a new version is a new key");
        let (_, orphans) = ix.cleanup(None, None).unwrap();
        assert!(orphans.is_empty(), "an output is not an orphan");
        assert!(ix.get_derivation(&k).unwrap().is_some());
        let stats = ix.derivation_stats().unwrap();
        assert_eq!(stats.by_recipe, vec![("thumbnail".to_owned(), 1, 3)]);
    }

    #[test]
    fn an_evicted_output_is_a_miss_and_its_row_can_be_forgotten() {
        let (_dir, ix) = fresh();
        let (input, output) = (Digest::of(b"in"), Digest::of(b"out"));
        let k = key(&input, "");
        ix.commit_derived(&k, &output, 3, "text/plain", 1000).unwrap();
        let (_, evicted) = ix.evict_blobs(&[output]).unwrap();
        assert_eq!(evicted, vec![output], "an output is evictable");
        assert_eq!(ix.get_derivation(&k).unwrap(), None);
        assert_eq!(ix.forget_lost_derivations().unwrap(), 1);
        ix.commit_derived(&k, &output, 3, "text/plain", 2000).unwrap();
        assert_eq!(ix.get_derivation(&k).unwrap().unwrap().created_at, 2000, "made again");
    }
}
