//! The sources namespaces are bound to (layer 1), each built once from its URL and reused.
//!
//! It only builds and hands out [`Source`]s; what is fetched from them, when, is the read path's
//! business, and what a directory source's read cache holds is `directory/`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tiercache_index::Namespace;
use tiercache_sources::{DirSource, HttpSourceConfig, Source};

use crate::Error;

/// Sources by URL.
pub(crate) struct Sources {
    http: HttpSourceConfig,
    by_url: Mutex<HashMap<String, Arc<dyn Source>>>,
    dirs: Mutex<HashMap<String, Arc<DirSource>>>,
}

impl Sources {
    pub(crate) fn new(http: HttpSourceConfig) -> Sources {
        Sources { http, by_url: Mutex::default(), dirs: Mutex::default() }
    }

    /// The source `url` names; [`Error::Invalid`] if no source understands it.
    pub(crate) fn for_url(&self, url: &str) -> Result<Arc<dyn Source>, Error> {
        let mut sources = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sources.get(url) {
            return Ok(Arc::clone(s));
        }
        let s = tiercache_sources::from_url(url, &self.http).map_err(Error::Invalid)?;
        sources.insert(url.to_owned(), Arc::clone(&s));
        Ok(s)
    }

    /// The directory source of `ns`, if it is bound to a directory that can be opened.
    pub(crate) fn dir_of(&self, ns: &Namespace) -> Option<Arc<DirSource>> {
        let url = ns.source.as_deref()?;
        let root = ns.dir_root()?;
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = dirs.get(url) {
            return Some(Arc::clone(s));
        }
        let src = Arc::new(DirSource::new(root).ok()?);
        dirs.insert(url.to_owned(), Arc::clone(&src));
        Some(src)
    }
}
