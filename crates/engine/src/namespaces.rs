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
}

pub(crate) fn definitions_dir(cache: &Cache) -> PathBuf {
    cache.data_dir().join("namespaces")
}

impl Cache {
    /// Creates namespace `name`, optionally bound to `source` (a URL: `http(s)://…` or
    /// `file:///dir`), with `options`. Idempotent: creating it again with the same source returns
    /// it with `false` (and updates its options); another source is a [`Error::Conflict`].
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
        if source.is_none_or(|s| !s.starts_with("file://")) && !options.is_default() {
            return Err(Error::Invalid("copy-to-cache and ignore patterns apply to directory sources only".into()));
        }
        tiercache_sources::dir::walk::Ignore::new(&options.ignore).map_err(Error::Invalid)?;
        let lookup = name.as_str().to_owned();
        let existing = self.ix(move |ix| ix.get_namespace(&lookup)).await?;
        if let Some(existing) = &existing
            && existing.source.as_deref() != source
        {
            return Err(Error::Conflict(format!(
                "namespace {} already exists with source {}",
                existing.name,
                existing.source.as_deref().unwrap_or("(none)")
            )));
        }
        if existing.is_none_or(|e| e.options != *options) {
            let def = Definition {
                name: name.as_str().to_owned(),
                source: source.map(str::to_owned),
                options: options.clone(),
            };
            let dir = definitions_dir(self);
            self.blocking(move |_| {
                write_atomically(&dir, &format!("{}.json", def.name), &serde_json::to_vec_pretty(&def)?)
            })
            .await?;
        }
        let source = source.map(str::to_owned);
        let options = options.clone();
        self.ix(move |ix| ix.put_namespace(&name, source.as_deref(), &options, now_ms())).await
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

    /// Deletes namespace `name`, its entries, and the blobs no other namespace references.
    /// Returns `None` if there was no such namespace (deleting is idempotent).
    pub async fn delete_namespace(&self, name: &str) -> Result<Option<CleanupReport>, Error> {
        let name = NamespaceName::new(name)?.as_str().to_owned();
        let def = definitions_dir(self).join(format!("{name}.json"));
        self.blocking(move |_| match std::fs::remove_file(def) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await?;
        let Some((n_entries, orphans)) = self.ix(move |ix| ix.delete_namespace(&name)).await? else {
            return Ok(None);
        };
        Ok(Some(self.delete_blob_files(n_entries, orphans).await?))
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
