//! Looking namespaces up (layer 2): a hot one from the memory tier, else from the index (and kept
//! in the memory tier under the lookup epoch taken before the index read, `memory.rs`).

use std::sync::Arc;

use tiercache_core::NamespaceName;
use tiercache_index::Namespace;
use tiercache_sources::{DirSource, Source};

use super::{NamespaceInfo, Namespaces};
use crate::Error;

impl Namespaces {
    /// Namespace `name`: from the memory tier if it holds it, else from the index.
    /// [`Error::NoNamespace`] if there is none.
    pub(crate) async fn row(&self, name: &str) -> Result<Arc<Namespace>, Error> {
        if let Some(ns) = self.memory.namespace(name).await {
            return Ok(ns);
        }
        let lookup = NamespaceName::new(name)?.as_str().to_owned();
        let epoch = self.memory.epoch();
        let ns =
            self.ix.run(move |ix| ix.get_namespace(&lookup)).await?.ok_or_else(|| Error::NoNamespace(name.into()))?;
        let ns = Arc::new(ns);
        self.memory.put_namespace(Arc::clone(&ns), epoch).await;
        Ok(ns)
    }

    /// Namespace `name` as the index has it now (not the memory tier's copy).
    pub(crate) async fn fresh(&self, name: &str) -> Result<Namespace, Error> {
        self.find(name).await?.ok_or_else(|| Error::NoNamespace(name.into()))
    }

    /// Namespace `name` from the index, if it exists; a malformed name is an error.
    pub(crate) async fn find(&self, name: &str) -> Result<Option<Namespace>, Error> {
        let lookup = NamespaceName::new(name)?.as_str().to_owned();
        self.ix.run(move |ix| ix.get_namespace(&lookup)).await
    }

    /// Every namespace.
    pub(crate) async fn list(&self) -> Result<Vec<Namespace>, Error> {
        self.ix.run(|ix| ix.list_namespaces()).await
    }

    /// Every namespace bound to a directory.
    pub(crate) async fn directories(&self) -> Result<Vec<Namespace>, Error> {
        Ok(self.list().await?.into_iter().filter(|n| n.dir_root().is_some()).collect())
    }

    /// The directory source of `ns`, if it is bound to one; [`Error::Containment`] if its
    /// directory was refused when the cache opened.
    pub(crate) fn dir_source(&self, ns: &Namespace) -> Result<Option<Arc<DirSource>>, Error> {
        self.sources.dir_of(ns)
    }

    /// The source of `ns` if it has one that is not a directory. A URL its definition accepted
    /// and these settings refuse (a metadata address allowed then and no longer) is the source's
    /// failure: [`SourceError::AddressRefused`](tiercache_sources::SourceError::AddressRefused).
    pub(crate) fn remote_source(&self, ns: &Namespace) -> Result<Option<Arc<dyn Source>>, Error> {
        let Some(url) = ns.source.as_deref().filter(|_| ns.dir_root().is_none()) else { return Ok(None) };
        self.sources.for_url(url, &ns.options).map(Some).map_err(|e| match e {
            Error::Invalid(reason) => Error::Source(tiercache_sources::SourceError::AddressRefused {
                url: tiercache_core::redact_url(url).into(),
                reason,
            }),
            e => e,
        })
    }

    /// Namespace `name` and its directory source; [`Error::Invalid`] if it is not a directory
    /// namespace.
    pub(crate) async fn dir(&self, name: &str) -> Result<(Arc<Namespace>, Arc<DirSource>), Error> {
        let ns = self.row(name).await?;
        let src = self.dir_source(&ns)?.ok_or_else(|| {
            Error::Invalid(format!(
                "namespace {name} is not bound to a directory (source: {})",
                ns.source.as_deref().map_or("none".into(), tiercache_core::redact_url)
            ))
        })?;
        Ok((ns, src))
    }

    /// Every namespace with its totals.
    pub(crate) async fn infos(&self) -> Result<Vec<NamespaceInfo>, Error> {
        Ok(self.ix.run(|ix| ix.stats(None)).await?.namespaces)
    }

    /// One namespace with its totals, if it exists.
    pub(crate) async fn info(&self, name: &str) -> Result<Option<NamespaceInfo>, Error> {
        let name = NamespaceName::new(name)?.as_str().to_owned();
        Ok(self.ix.run(move |ix| ix.stats(Some(&name))).await?.namespaces.into_iter().next())
    }
}
