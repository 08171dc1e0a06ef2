//! The sources namespaces are bound to (layer 1), each built once from its URL and reused.
//!
//! It only builds and hands out [`Source`]s; what is fetched from them, when, is the read path's
//! business, and what a directory source's read cache holds is `directory/`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tiercache_core::NamespaceOptions;
use tiercache_index::Namespace;
use tiercache_sources::{DirSource, HttpSourceConfig, RegistryCredentials, S3Credentials, Source, SourceCredentials};

use crate::Error;

/// A source's URL, with the credentials it signs with (an S3 source's or a registry's, from its
/// namespace's options): two namespaces naming one bucket with other keys get a source each.
type SourceKey = (String, SourceCredentials);

/// Sources by URL.
pub(crate) struct Sources {
    http: HttpSourceConfig,
    by_url: Mutex<HashMap<SourceKey, Arc<dyn Source>>>,
    dirs: Mutex<HashMap<String, Arc<DirSource>>>,
    /// Directory sources refused when the cache opened (`contain.rs`), with why: a namespace
    /// bound to one answers [`Error::Containment`] instead of being served.
    refused: Mutex<HashMap<String, String>>,
}

impl Sources {
    pub(crate) fn new(http: HttpSourceConfig) -> Sources {
        Sources { http, by_url: Mutex::default(), dirs: Mutex::default(), refused: Mutex::default() }
    }

    /// Refuses the source `url` from now on, saying `why` to whoever asks for it.
    pub(crate) fn refuse(&self, url: &str, why: String) {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).remove(url);
        self.by_url.lock().unwrap_or_else(|p| p.into_inner()).retain(|(u, _), _| u != url);
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).insert(url.to_owned(), why);
    }

    /// [`Error::Containment`] if `url` was refused.
    fn check_refused(&self, url: &str) -> Result<(), Error> {
        match self.refused.lock().unwrap_or_else(|p| p.into_inner()).get(url) {
            Some(why) => Err(Error::Containment { what: why.clone() }),
            None => Ok(()),
        }
    }

    /// The source `url` names, with a namespace's `options` (an S3 source's or a registry's
    /// credentials);
    /// [`Error::Invalid`] if no source understands it.
    pub(crate) fn for_url(&self, url: &str, options: &NamespaceOptions) -> Result<Arc<dyn Source>, Error> {
        self.check_refused(url)?;
        let credentials = SourceCredentials { s3: s3_credentials(options)?, registry: registry_credentials(options)? };
        let key = (url.to_owned(), credentials);
        let mut sources = self.by_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sources.get(&key) {
            return Ok(Arc::clone(s));
        }
        let s = tiercache_sources::from_url(url, &self.http, &key.1).map_err(Error::Invalid)?;
        sources.insert(key, Arc::clone(&s));
        Ok(s)
    }

    /// The directory source of `ns`, if it is bound to a directory that can be opened;
    /// [`Error::Containment`] if that directory was refused when the cache opened.
    pub(crate) fn dir_of(&self, ns: &Namespace) -> Result<Option<Arc<DirSource>>, Error> {
        let (Some(url), Some(root)) = (ns.source.as_deref(), ns.dir_root()) else { return Ok(None) };
        self.check_refused(url)?;
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = dirs.get(url) {
            return Ok(Some(Arc::clone(s)));
        }
        let Ok(src) = DirSource::new(root) else { return Ok(None) };
        let src = Arc::new(src);
        dirs.insert(url.to_owned(), Arc::clone(&src));
        Ok(Some(src))
    }
}

/// The S3 credentials of `options`: both keys or neither ([`Error::Invalid`] for one alone).
fn s3_credentials(options: &NamespaceOptions) -> Result<Option<S3Credentials>, Error> {
    match (&options.s3_access_key, &options.s3_secret_key) {
        (Some(access_key), Some(secret)) => {
            Ok(Some(S3Credentials { access_key: access_key.clone(), secret_key: secret.expose().to_owned() }))
        }
        (None, None) => Ok(None),
        _ => Err(Error::Invalid("s3_access_key and s3_secret_key go together: give both or neither".into())),
    }
}

/// The registry credentials of `options`: user and password both or neither ([`Error::Invalid`]
/// for one alone).
fn registry_credentials(options: &NamespaceOptions) -> Result<Option<RegistryCredentials>, Error> {
    match (&options.registry_user, &options.registry_password) {
        (Some(user), Some(password)) => {
            Ok(Some(RegistryCredentials { user: user.clone(), password: password.expose().to_owned() }))
        }
        (None, None) => Ok(None),
        _ => Err(Error::Invalid("registry_user and registry_password go together: give both or neither".into())),
    }
}
