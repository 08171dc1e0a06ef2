//! Namespaces: created, listed, shown and deleted with everything they own.
//!
//! A namespace's definition is written durably first, to `<data>/namespaces/<name>.json`, and
//! only then to the index, so that an index rebuilt from scratch still knows every namespace and
//! its source. Deleting removes the definition, then the index rows, then the blob files no other
//! namespace references.

use std::path::PathBuf;

use tiercache_core::{NamespaceName, NamespaceOptions, now_ms};
use tiercache_index::Namespace;

use crate::{Cache, CleanupReport, Error};

/// A namespace with its totals, as `ns list` and `ns show` print it.
pub type NamespaceInfo = tiercache_index::NamespaceStats;

#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct Definition {
    pub(crate) name: String,
    pub(crate) source: Option<String>,
    #[serde(default, skip_serializing_if = "NamespaceOptions::is_default")]
    pub(crate) options: NamespaceOptions,
    /// Pinned keys (`""`: the whole namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) pins: Vec<String>,
}

pub(crate) fn definitions_dir(cache: &Cache) -> PathBuf {
    cache.data_dir().join("namespaces")
}

impl Cache {
    /// Creates namespace `name`, optionally bound to `source` (a URL: `http(s)://…` or
    /// `file:///dir`), with `options`. Idempotent: creating it again with the same source returns
    /// it with `false` (and updates its options); another source is a [`Error::Conflict`].
    ///
    /// `options.storage`, an absolute directory, keeps the namespace's blobs there instead of the
    /// disk tier (see `storage.rs`); it is created if missing, and must be empty or already this
    /// namespace's. A namespace's storage is chosen when it is created: later calls without one
    /// keep it, and another one is a [`Error::Conflict`] (`migrate_namespace` moves it).
    pub async fn create_namespace(
        &self,
        name: &str,
        source: Option<&str>,
        options: &NamespaceOptions,
    ) -> Result<(Namespace, bool), Error> {
        let name = NamespaceName::new(name)?;
        if let Some(url) = source {
            self.source_for(url)?; // Refuse a URL no source understands, before writing anything.
        }
        if source.is_none_or(|s| !s.starts_with("file://")) && options.has_dir_options() {
            return Err(Error::Invalid("copy-to-cache and ignore patterns apply to directory sources only".into()));
        }
        tiercache_sources::dir::walk::Ignore::new(&options.ignore).map_err(Error::Invalid)?;
        let lookup = name.as_str().to_owned();
        let existing = self.ix(move |ix| ix.get_namespace(&lookup)).await?;
        let mut options = options.clone();
        match (&options.storage, existing.as_ref().and_then(|e| e.options.storage.clone())) {
            (None, kept) => options.storage = kept,
            (Some(_), _) if source.is_some_and(|s| s.starts_with("file://")) => {
                return Err(Error::Invalid(
                    "a directory namespace is served in place; a storage directory applies to cached namespaces".into(),
                ));
            }
            (Some(dir), kept) => {
                let same = kept
                    .as_ref()
                    .is_some_and(|k| std::fs::canonicalize(dir).is_ok_and(|c| c.as_os_str() == k.as_str()));
                if let Some(e) = existing.as_ref().filter(|_| !same) {
                    return Err(Error::Conflict(format!(
                        "namespace {} keeps its blobs in {}; `tiercache ns migrate` moves them",
                        e.name,
                        kept.as_deref().map_or("the disk tier".to_owned(), |k| format!("directory {k}"))
                    )));
                }
                options.storage = Some(self.claim_dir(name.as_str(), std::path::Path::new(dir)).await?);
            }
        }
        let options = &options;
        if let Some(existing) = &existing
            && existing.source.as_deref() != source
        {
            return Err(Error::Conflict(format!(
                "namespace {} already exists with source {}",
                existing.name,
                existing.source.as_deref().unwrap_or("(none)")
            )));
        }
        if existing.as_ref().is_none_or(|e| e.options != *options) {
            let pins = match &existing {
                Some(e) => {
                    let id = e.id;
                    self.ix(move |ix| ix.pins(id)).await?
                }
                None => Vec::new(),
            };
            let def = Definition {
                name: name.as_str().to_owned(),
                source: source.map(str::to_owned),
                options: options.clone(),
                pins,
            };
            self.write_definition(def).await?;
        }
        let source = source.map(str::to_owned);
        let options = options.clone();
        let created = self.ix(move |ix| ix.put_namespace(&name, source.as_deref(), &options, now_ms())).await?;
        self.bump_lookup_generation().await?;
        Ok(created)
    }

    pub(crate) async fn write_definition(&self, def: Definition) -> Result<(), Error> {
        let dir = definitions_dir(self);
        self.blocking(move |_| write_atomically(&dir, &format!("{}.json", def.name), &serde_json::to_vec_pretty(&def)?))
            .await
    }

    /// Pins `key` of namespace `name` (`None`: every entry of it, present and future): its blobs
    /// are never evicted, and its entries never pruned by age or limits. Returns whether the pin
    /// is new. Pins are kept in the namespace's definition, so an index rebuild keeps them.
    pub async fn pin(&self, name: &str, key: Option<&str>) -> Result<bool, Error> {
        self.change_pin(name, key, true).await
    }

    /// Removes a pin set by [`Cache::pin`]. Returns whether there was one.
    pub async fn unpin(&self, name: &str, key: Option<&str>) -> Result<bool, Error> {
        self.change_pin(name, key, false).await
    }

    async fn change_pin(&self, name: &str, key: Option<&str>, is_pin: bool) -> Result<bool, Error> {
        let ns = self.namespace_row(name).await?;
        let key = match key {
            Some(k) => tiercache_core::Key::new(k)?.to_string(),
            None => String::new(),
        };
        let id = ns.id;
        let mut pins = self.ix(move |ix| ix.pins(id)).await?;
        let changed = if is_pin { !pins.contains(&key) } else { pins.contains(&key) };
        if is_pin {
            pins.push(key.clone());
        } else {
            pins.retain(|p| *p != key);
        }
        pins.sort();
        pins.dedup();
        // The definition first (durable), then the index.
        self.write_definition(Definition {
            name: ns.name.clone(),
            source: ns.source.clone(),
            options: ns.options.clone(),
            pins,
        })
        .await?;
        self.ix(move |ix| if is_pin { ix.put_pin(id, &key) } else { ix.delete_pin(id, &key) }).await?;
        self.bump_lookup_generation().await?;
        let quota = std::sync::Arc::clone(&self.inner.quota);
        self.ix(move |_| quota.reload_pins()).await?;
        Ok(changed)
    }

    /// The pins of namespace `name` (`""`: the whole namespace).
    pub async fn pins(&self, name: &str) -> Result<Vec<String>, Error> {
        let id = self.namespace_row(name).await?.id;
        self.ix(move |ix| ix.pins(id)).await
    }

    /// Disk use of the disk tier, overall and per namespace, from the index alone.
    pub async fn disk_usage(&self) -> Result<tiercache_index::DiskUsage, Error> {
        self.ix(|ix| ix.disk_usage()).await
    }

    /// Every namespace with its totals.
    pub async fn namespaces(&self) -> Result<Vec<NamespaceInfo>, Error> {
        Ok(self.ix(|ix| ix.stats(None)).await?.namespaces)
    }

    /// One namespace with its totals, if it exists.
    pub async fn namespace(&self, name: &str) -> Result<Option<NamespaceInfo>, Error> {
        let name = NamespaceName::new(name)?.as_str().to_owned();
        Ok(self.ix(move |ix| ix.stats(Some(&name))).await?.namespaces.into_iter().next())
    }

    /// Deletes namespace `name`, its entries, and the blobs no other namespace references (for a
    /// namespace stored in its own directory: that directory's blobs, and the directory if nothing
    /// else is in it). Returns `None` if there was no such namespace (deleting is idempotent).
    pub async fn delete_namespace(&self, name: &str) -> Result<Option<CleanupReport>, Error> {
        let name = NamespaceName::new(name)?.as_str().to_owned();
        let lookup = name.clone();
        let storage = self.ix(move |ix| ix.get_namespace(&lookup)).await?.and_then(|ns| ns.options.storage);
        let def = definitions_dir(self).join(format!("{name}.json"));
        self.blocking(move |_| match std::fs::remove_file(def) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await?;
        let Some((n_entries, orphans)) = self.ix(move |ix| ix.delete_namespace(&name)).await? else {
            return Ok(None);
        };
        self.bump_lookup_generation().await?;
        let mut report = self.delete_blob_files(n_entries, orphans).await?;
        if let Some(dir) = storage {
            let (n, bytes) = self.release_dir(&dir).await?;
            report.n_blobs += n;
            report.bytes += bytes;
        }
        Ok(Some(report))
    }
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, fsync directory.
pub(crate) fn write_atomically(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
