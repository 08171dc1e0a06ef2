//! Every background task of a [`crate::Cache`] (layer 0), so that `settle` and `shutdown` can
//! wait for them: one tracker for work that ends by itself (fetches, fills, MD5s, copies, hashes
//! of changed files), and one for loops that run until shutdown (the access flusher, the pruner).
//!
//! It knows nothing of what the tasks do.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The background tasks of one cache. Cheap to clone; clones share the trackers.
#[derive(Clone, Default)]
pub(crate) struct Tasks {
    work: TaskTracker,
    loops: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// Runs `task`, work that ends by itself, in the background.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.work.spawn(task);
    }

    /// Runs the loop `make(stop)` in the background: it must return soon after `stop` is
    /// cancelled.
    pub(crate) fn spawn_loop<F: Future<Output = ()> + Send + 'static>(
        &self,
        make: impl FnOnce(CancellationToken) -> F,
    ) {
        self.loops.spawn(make(self.stop.clone()));
    }

    /// Waits until every task of work spawned so far, and any it spawned meanwhile, has ended.
    pub(crate) async fn settle(&self) {
        self.work.close();
        self.work.wait().await;
        self.work.reopen();
    }

    /// Stops the loops and waits for them, then for the work.
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        self.loops.close();
        self.loops.wait().await;
        self.settle().await;
    }
}
