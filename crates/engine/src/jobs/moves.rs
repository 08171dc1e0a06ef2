//! Moving a namespace between storage places (layer 4): `ns migrate NAME --to managed|path:DIR`,
//! with no read failing and no byte lost:
//! 1. copy every blob its entries name into the new place (verified by digest on the way);
//! 2. switch: the definition file, then the index, then every process's lookups (the
//!    lookup-generation file);
//! 3. copy again what entries stored in the meantime name;
//! 4. release the old place: managed blobs nothing else names are deleted, a directory store is
//!    removed.
//!
//! Until step 4 both places hold every blob, so a read that resolved the namespace before the
//! switch still finds its file; a read of a directory store also falls back to the disk tier for
//! a blob it lacks, and a read that misses after the namespace moved looks again with the new
//! place (`read.rs`).
//!
//! Invariant: a move copies (verified) before it switches and frees the old place only after
//! copying again what was stored meanwhile.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tiercache_core::{Digest, NamespaceOptions};
use tiercache_index::BlobState;

use super::Jobs;
use crate::Error;
use crate::blocking::blocking;
use crate::namespaces::Definition;
use crate::quota::Hold;
use crate::store::place::{Place, describe};
use crate::store::{Origin, Store};

/// What `ns migrate` (a move) did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MoveReport {
    /// The namespace.
    pub namespace: String,
    /// Where its blobs were (`managed` or `path:DIR`).
    pub from: String,
    /// Where they are now.
    pub to: String,
    /// Distinct blobs its entries name.
    pub n_blobs: u64,
    /// Blobs copied into the new place, and their bytes.
    pub n_copied: u64,
    /// Bytes copied.
    pub copied_bytes: u64,
    /// Blobs found in neither place (evicted or lost before the move): their entries are fetched
    /// again from the source on their next read.
    pub n_missing: u64,
    /// Bytes freed in the old place.
    pub released_bytes: u64,
}

impl Jobs {
    /// Moves namespace `name`'s blobs to `to` (see the module's documentation for the protocol).
    /// Moving a namespace where it already is does nothing.
    pub(crate) async fn move_namespace(&self, name: &str, to: &Place) -> Result<MoveReport, Error> {
        let ns = self.namespaces.fresh(name).await?;
        if self.namespaces.dir_source(&ns)?.is_some() {
            return Err(Error::Invalid(format!(
                "namespace {name} is a directory served in place; only cached namespaces have a storage place"
            )));
        }
        // One move of a namespace at a time, across processes too.
        let lock_name = format!("migrate-{}", ns.id);
        let disk = self.stores.managed().disk.clone();
        let _lock = blocking(move || disk.lock(&lock_name)).await?;
        let ns = self.namespaces.fresh(&ns.name).await?;
        let target = match to {
            Place::Managed => None,
            Place::Path(dir) => Some(self.stores.claim_dir(&ns.name, dir).await?),
        };
        let mut report = MoveReport {
            namespace: ns.name.clone(),
            from: describe(&ns.options.storage),
            to: describe(&target),
            ..MoveReport::default()
        };
        if ns.options.storage == target {
            return Ok(report);
        }
        let from = self.stores.of(&ns).await?;
        let to_store = match &target {
            None => Arc::clone(self.stores.managed()),
            Some(dir) => self.stores.dir_store(dir).await?,
        };
        tracing::info!(namespace = ns.name, from = report.from, to = report.to, "moving namespace");

        // 1. Copy. Holds keep what is copied into the disk tier from eviction until the switch.
        let id = ns.id;
        let first = self.ix.run(move |ix| ix.namespace_blobs(id)).await?;
        let mut holds = Vec::new();
        self.copy_blobs(&from, &to_store, &first, &mut report, &mut holds).await?;

        // 2. Switch.
        let options = NamespaceOptions { storage: target.clone(), ..ns.options.clone() };
        let pins = self.ix.run(move |ix| ix.pins(id)).await?;
        let def = Definition { name: ns.name.clone(), source: ns.source.clone(), options: options.clone(), pins };
        self.namespaces.write_definition(def).await?;
        let (ns_name, source) = (tiercache_core::NamespaceName::new(&ns.name)?, ns.source.clone());
        self.ix
            .run(move |ix| ix.put_namespace(&ns_name, source.as_deref(), &options, tiercache_core::now_ms()))
            .await?;
        self.memory.bump_generation().await?;

        // 3. Catch up with entries stored meanwhile.
        let second = self.ix.run(move |ix| ix.namespace_blobs(id)).await?;
        self.copy_blobs(&from, &to_store, &second, &mut report, &mut holds).await?;
        report.n_blobs = second.len() as u64;

        // 4. Release the old place.
        report.released_bytes = match &from.dir {
            None => {
                let mut digests: Vec<Digest> = first.iter().chain(&second).map(|(d, _)| *d).collect();
                digests.sort();
                digests.dedup();
                let released = self.ix.run(move |ix| ix.delete_orphans(&digests)).await?;
                self.stores.delete_blob_files(0, released).await?.bytes
            }
            Some(dir) => self.stores.release_dir(dir).await?.1,
        };
        self.memory.bump_generation().await?;
        drop(holds);
        tracing::info!(
            namespace = ns.name,
            to = report.to,
            copied = report.n_copied,
            missing = report.n_missing,
            "namespace moved"
        );
        Ok(report)
    }

    /// Copies each of `blobs` that `to` lacks from `from` (or, for a directory store, from the disk
    /// tier), verifying its digest on the way.
    async fn copy_blobs(
        &self,
        from: &Store,
        to: &Store,
        blobs: &[(Digest, u64)],
        report: &mut MoveReport,
        holds: &mut Vec<Hold>,
    ) -> Result<(), Error> {
        for &(digest, size) in blobs {
            let is_there = if to.is_managed() {
                let row = self.ix.run(move |ix| ix.get_blob(&digest)).await?;
                row.is_some_and(|r| r.state == BlobState::Present) && to.disk.contains(&digest)
            } else {
                to.disk.contains(&digest)
            };
            if to.is_managed() {
                holds.push(Hold::new(&self.stores.managed().quota, Some(digest), None));
            }
            if is_there {
                continue;
            }
            let Some((file, _)) = self.stores.open_blob(from, &digest)? else {
                tracing::warn!(%digest, "blob in neither place; its entries will be fetched again");
                report.n_missing += 1;
                continue;
            };
            let (temp_store, quota) = (to.disk.clone(), Arc::clone(&to.quota));
            let copied = blocking(move || {
                use std::io::Read as _;
                let reservation = quota.reserve(size).map_err(|no| std::io::Error::other(no.reason))?;
                let mut temp = temp_store.create_temp()?;
                let mut file = file;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    temp.write(Bytes::copy_from_slice(&buf[..n]))?;
                }
                Ok((temp.finish()?, reservation))
            })
            .await?;
            if copied.0.digest != digest {
                tracing::error!(%digest, actual = %copied.0.digest, "a stored blob does not match its digest; not copied");
                report.n_missing += 1;
                continue;
            }
            self.stores.commit(to, copied, false, None, Origin::Move).await?;
            report.n_copied += 1;
            report.copied_bytes += size;
        }
        Ok(())
    }
}
