//! Defining namespaces (layer 2): created, pinned and deleted with everything they own.
//!
//! A namespace's definition is written durably first, to `<data>/namespaces/<name>.json`, and
//! only then to the index, so that an index rebuilt from scratch still knows every namespace and
//! its source. Deleting removes the index rows first, then the definition, then the blob files no
//! other namespace references ([`Namespaces::delete`] has the steps). A directory source's root is
//! checked (`contain.rs`) and recorded canonical before anything is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tiercache_core::{NamespaceName, NamespaceOptions, now_ms};
use tiercache_index::{EmptyDelete, Namespace};

use super::Namespaces;
use crate::Error;
use crate::blocking::{blocking, blocking_with};
use crate::contain::check_source_root;
use crate::fs::write_atomically;
use crate::store::CleanupReport;
use crate::store::place::Place;

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

/// The directory of namespace definitions in data directory `data_dir`.
pub(crate) fn definitions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("namespaces")
}

/// Every namespace definition in data directory `data_dir` (unreadable ones are skipped, with a
/// warning). Blocking.
pub(crate) fn read_definitions(data_dir: &Path) -> Vec<Definition> {
    let mut defs = Vec::new();
    let Ok(rd) = std::fs::read_dir(definitions_dir(data_dir)) else { return defs };
    for f in rd.flatten() {
        if f.path().extension().is_some_and(|e| e == "json") {
            match std::fs::read(f.path()).map(|b| serde_json::from_slice::<Definition>(&b)) {
                Ok(Ok(def)) => defs.push(def),
                _ => tracing::warn!(file = %f.path().display(), "skipping unreadable namespace definition"),
            }
        }
    }
    defs
}

impl Namespaces {
    /// Creates namespace `name`, optionally bound to `source` (a URL: `http(s)://…` or
    /// `file:///dir`), with `options`. Idempotent: creating it again with the same source returns
    /// it with `false` (and updates its options); another source is a [`Error::Conflict`].
    ///
    /// `options.storage`, an absolute directory, keeps the namespace's blobs there instead of the
    /// disk tier (see `store/place.rs`); it is created if missing, and must be empty or already this
    /// namespace's. A namespace's storage is chosen when it is created: later calls without one
    /// keep it, and another one is a [`Error::Conflict`] (a move, `jobs/moves.rs`, moves it).
    pub(crate) async fn create(
        &self,
        name: &str,
        source: Option<&str>,
        options: &NamespaceOptions,
    ) -> Result<(Namespace, bool), Error> {
        let name = NamespaceName::new(name)?;
        if let Some(url) = source {
            self.sources.for_url(url, options)?; // Refuse a URL no source understands, before writing anything.
        }
        if source.is_none_or(|s| !s.to_ascii_lowercase().starts_with("s3://")) && options.has_s3_options() {
            return Err(Error::Invalid("s3_access_key and s3_secret_key apply to s3:// sources only".into()));
        }
        if !source.is_some_and(tiercache_sources::oci::is_registry_url) && options.has_registry_options() {
            return Err(Error::Invalid(
                "registry_user and registry_password apply to oci:// and oci+http:// sources only".into(),
            ));
        }
        let lookup = name.as_str().to_owned();
        let existing = self.ix.run(move |ix| ix.get_namespace(&lookup)).await?;
        let source = match source.and_then(|s| s.strip_prefix("file://")) {
            Some(root) => {
                let url = self.contained_root(name.as_str(), root).await?;
                // A namespace defined before roots were recorded canonical keeps its URL when it
                // names the same directory.
                let same = existing.as_ref().and_then(|e| e.dir_root()).filter(|kept| {
                    std::fs::canonicalize(kept).is_ok_and(|k| url.strip_prefix("file://") == k.to_str())
                });
                Some(same.map_or(url, |kept| format!("file://{kept}")))
            }
            None => source.map(str::to_owned),
        };
        let source = source.as_deref();
        if source.is_none_or(|s| !s.starts_with("file://")) && options.has_dir_options() {
            return Err(Error::Invalid("copy-to-cache and ignore patterns apply to directory sources only".into()));
        }
        tiercache_sources::dir::walk::Ignore::new(&options.ignore).map_err(Error::Invalid)?;
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
                    return Err(Error::conflict(format!(
                        "namespace {} keeps its blobs in {}; `tiercache ns migrate` moves them",
                        e.name,
                        kept.as_deref().map_or("the disk tier".to_owned(), |k| format!("directory {k}"))
                    )));
                }
                options.storage = Some(self.stores.claim_dir(name.as_str(), Path::new(dir)).await?);
            }
        }
        let options = &options;
        if let Some(existing) = &existing
            && existing.source.as_deref() != source
        {
            return Err(Error::conflict(format!(
                "namespace {} already exists with source {}",
                existing.name,
                existing.source.as_deref().map_or("(none)".into(), tiercache_core::redact_url)
            )));
        }
        if existing.as_ref().is_none_or(|e| e.options != *options) {
            let pins = match &existing {
                Some(e) => {
                    let id = e.id;
                    self.ix.run(move |ix| ix.pins(id)).await?
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
        let created = self.ix.run(move |ix| ix.put_namespace(&name, source.as_deref(), &options, now_ms())).await?;
        self.memory.bump_generation().await?;
        Ok(created)
    }

    /// [`Namespaces::create`] with its storage place given as a [`Place`]. `None` makes a new
    /// namespace managed and leaves an existing one where it is; another place than an existing
    /// namespace's is a [`Error::Conflict`] (a move changes it), and nothing is changed.
    pub(crate) async fn create_in(
        &self,
        name: &str,
        source: Option<&str>,
        options: &NamespaceOptions,
        place: Option<&Place>,
    ) -> Result<(Namespace, bool), Error> {
        if let Some(Place::Managed) = place
            && let Some(existing) = self.find(name).await?
            && let Some(dir) = existing.options.storage
        {
            return Err(Error::conflict(format!(
                "namespace {name} keeps its blobs in directory {dir}; `tiercache ns migrate` moves them"
            )));
        }
        let storage = match place {
            Some(p) => p.option()?,
            None => None,
        };
        let options = NamespaceOptions { storage, ..options.clone() };
        self.create(name, source, &options).await
    }

    /// The `file://` URL of directory `root`, canonical, if it may be namespace `name`'s source
    /// (`contain.rs`); [`Error::Containment`] or [`Error::Invalid`] if not.
    async fn contained_root(&self, name: &str, root: &str) -> Result<String, Error> {
        let namespaces = self.ix.run(|ix| ix.list_namespaces()).await?;
        let (name, root, data_dir) = (name.to_owned(), PathBuf::from(root), self.stores.data_dir().to_owned());
        let canonical = blocking_with(move || check_source_root(&name, &root, &data_dir, &namespaces)).await?;
        canonical
            .to_str()
            .map(|r| format!("file://{r}"))
            .ok_or_else(|| Error::Invalid(format!("directory path {} is not UTF-8", canonical.display())))
    }

    /// At open: refuses every directory namespace whose root breaks the containment rule
    /// (`contain.rs`; defined so by an older version, or the directory was changed since): it is
    /// not served, and every use of it says why. Returns a note per namespace refused.
    pub(crate) async fn refuse_uncontained(&self) -> Result<Vec<String>, Error> {
        let namespaces = self.ix.run(|ix| ix.list_namespaces()).await?;
        let data_dir = self.stores.data_dir().to_owned();
        let refused = blocking_with(move || {
            let mut refused = Vec::new();
            for ns in namespaces.iter() {
                let (Some(url), Some(root)) = (ns.source.as_deref(), ns.dir_root()) else { continue };
                // A root that is missing now is not refused: it may come back, and every use of it
                // says that it is missing.
                if let Err(Error::Containment { what }) =
                    check_source_root(&ns.name, Path::new(root), &data_dir, &namespaces)
                {
                    refused.push((ns.name.clone(), url.to_owned(), what));
                }
            }
            Ok(refused)
        })
        .await?;
        let mut notes = Vec::new();
        for (name, url, what) in refused {
            tracing::warn!(namespace = %name, reason = %what, "directory namespace refused: it is not served");
            notes.push(format!(
                "directory namespace {name} is refused and not served: {what}; `tiercache ns delete {name}` removes it"
            ));
            self.sources.refuse(&url, format!("namespace {name} is refused: {what}"));
        }
        Ok(notes)
    }

    /// Writes `def` durably, before the index learns of it.
    pub(crate) async fn write_definition(&self, def: Definition) -> Result<(), Error> {
        let dir = definitions_dir(self.stores.data_dir());
        blocking(move || write_atomically(&dir, &format!("{}.json", def.name), &serde_json::to_vec_pretty(&def)?)).await
    }

    /// Pins `key` of namespace `name` (`None`: every entry of it, present and future): its blobs
    /// are never evicted, and its entries never pruned by age or limits. Returns whether the pin
    /// is new. Pins are kept in the namespace's definition, so an index rebuild keeps them.
    pub(crate) async fn pin(&self, name: &str, key: Option<&str>) -> Result<bool, Error> {
        self.change_pin(name, key, true).await
    }

    /// Removes a pin set by [`Namespaces::pin`]. Returns whether there was one.
    pub(crate) async fn unpin(&self, name: &str, key: Option<&str>) -> Result<bool, Error> {
        self.change_pin(name, key, false).await
    }

    async fn change_pin(&self, name: &str, key: Option<&str>, is_pin: bool) -> Result<bool, Error> {
        let ns = self.row(name).await?;
        let key = match key {
            Some(k) => tiercache_core::Key::new(k)?.to_string(),
            None => String::new(),
        };
        let id = ns.id;
        let mut pins = self.ix.run(move |ix| ix.pins(id)).await?;
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
        self.ix.run(move |ix| if is_pin { ix.put_pin(id, &key) } else { ix.delete_pin(id, &key) }).await?;
        self.memory.bump_generation().await?;
        let quota = Arc::clone(&self.stores.managed().quota);
        self.ix.run(move |_| quota.reload_pins()).await?;
        Ok(changed)
    }

    /// The pins of namespace `name` (`""`: the whole namespace).
    pub(crate) async fn pins(&self, name: &str) -> Result<Vec<String>, Error> {
        let id = self.row(name).await?.id;
        self.ix.run(move |ix| ix.pins(id)).await
    }

    /// Deletes namespace `name`, its entries, and the blobs no other namespace references (for a
    /// namespace stored in its own directory: that directory's blobs, and the directory if nothing
    /// else is in it). Returns `None` if there was no such namespace (deleting is idempotent).
    ///
    /// The steps, in this order, so that a failure at any one leaves the index and the definition
    /// files agreeing on what is served (docs/design.md says what a crash between each pair leaves):
    /// 1. delete the namespace's rows from the index, in one transaction (a failure, a full disk
    ///    say, changes nothing: the namespace is still defined and served);
    /// 2. bump the lookup generation, so no process serves it from memory;
    /// 3. remove its definition file (if this fails, the namespace is no longer served, and
    ///    deleting it again removes the file: that is done even when the index has no such row);
    /// 4. remove the blob files no other namespace references;
    /// 5. release its storage directory, if it had one.
    pub(crate) async fn delete(&self, name: &str) -> Result<Option<CleanupReport>, Error> {
        let name = NamespaceName::new(name)?.as_str().to_owned();
        let lookup = name.clone();
        let storage = self.ix.run(move |ix| ix.get_namespace(&lookup)).await?.and_then(|ns| ns.options.storage);
        let def = definitions_dir(self.stores.data_dir()).join(format!("{name}.json"));
        let deleted = self.ix.run(move |ix| ix.delete_namespace(&name)).await?;
        if deleted.is_some() {
            self.memory.bump_generation().await?;
        }
        remove_definition(def).await?;
        let Some((n_entries, orphans)) = deleted else { return Ok(None) };
        let mut report = self.stores.delete_blob_files(n_entries, orphans).await?;
        if let Some(dir) = storage {
            let (n, bytes) = self.stores.release_dir(&dir).await?;
            report.n_blobs += n;
            report.bytes += bytes;
        }
        Ok(Some(report))
    }

    /// Deletes namespace `name` if it holds no entry and no file ([`Error::NotEmpty`] otherwise,
    /// and nothing changes); `false` if there was no such namespace. The index checks and deletes
    /// in one transaction, so an entry written before it is never lost; then the steps of
    /// [`Namespaces::delete`] from 2 on (there are no blob files to remove).
    pub(crate) async fn delete_if_empty(&self, name: &str) -> Result<bool, Error> {
        let name = NamespaceName::new(name)?.as_str().to_owned();
        let lookup = name.clone();
        let storage = self.ix.run(move |ix| ix.get_namespace(&lookup)).await?.and_then(|ns| ns.options.storage);
        let def = definitions_dir(self.stores.data_dir()).join(format!("{name}.json"));
        let target = name.clone();
        match self.ix.run(move |ix| ix.delete_namespace_if_empty(&target)).await? {
            EmptyDelete::Missing => return Ok(false),
            EmptyDelete::NotEmpty => return Err(Error::NotEmpty { namespace: name }),
            EmptyDelete::Deleted => {}
        }
        self.memory.bump_generation().await?;
        remove_definition(def).await?;
        if let Some(dir) = storage {
            self.stores.release_dir(&dir).await?;
        }
        Ok(true)
    }
}

/// Removes a deleted namespace's definition file `def` (already gone is fine): the step after its
/// index rows are deleted, so a failure here is finished by deleting it again.
async fn remove_definition(def: std::path::PathBuf) -> Result<(), Error> {
    blocking_with(move || match std::fs::remove_file(&def) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
            format!(
                "the namespace is deleted from the index, but its definition file {} cannot be removed \
                 (delete it again to finish)",
                def.display()
            ),
            e,
        )),
        _ => Ok(()),
    })
    .await
}
