//! Work that must not run on the async workers (layer 0): index calls and file I/O, each on one
//! of tokio's blocking threads.
//!
//! [`Ix`] is how every other module reaches the index; it knows nothing of what is asked.

use std::sync::Arc;

use tiercache_index::{Index, IndexError};

use crate::Error;

/// The index, called on a blocking thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Ix(Arc<Index>);

impl Ix {
    pub(crate) fn new(index: Arc<Index>) -> Ix {
        Ix(index)
    }

    /// Runs `f` on the index on a blocking thread.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Index) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, Error> {
        let index = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(&index))
            .await
            .map_err(|e| Error::task("index call", e))?
            .map_err(Error::from)
    }

    /// The index itself, for work that runs on a blocking thread already (scans, eviction).
    pub(crate) fn index(&self) -> &Arc<Index> {
        &self.0
    }
}

/// Runs blocking file work on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::task("file work", e))?.map_err(Error::from)
}

/// Runs blocking work that says its own errors on a blocking thread.
pub(crate) async fn blocking_with<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::task("blocking work", e))?
}
