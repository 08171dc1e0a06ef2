//! Every background task of a [`crate::Cache`] (layer 0), so that `settle` and `shutdown` can
//! wait for them: one tracker for work that ends by itself (fetches, fills, MD5s, copies, hashes
//! of changed files), and one for loops that run until shutdown (the access flusher, the pruner).
//!
//! It knows nothing of what the tasks do.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

    /// Runs `pass(owner)` every `every`, the first time at `first`, until shutdown or until `owner`
    /// is dropped (the loop holds it weakly between passes). A pass that runs late delays the
    /// next one instead of bunching them up.
    pub(crate) fn spawn_every<T, F>(
        &self,
        owner: &Arc<T>,
        first: tokio::time::Instant,
        every: Duration,
        pass: impl Fn(Arc<T>) -> F + Send + 'static,
    ) where
        T: Send + Sync + 'static,
        F: Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(owner);
        self.spawn_loop(|stop| async move {
            let mut tick = tokio::time::interval_at(first, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(owner) = weak.upgrade() else { return };
                pass(owner).await;
            }
        });
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
