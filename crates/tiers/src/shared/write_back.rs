//! The write-back queue: blobs stored on this node are copied to the shared tier in the
//! background, so no reader ever waits for the shared store.
//!
//! Invariant: bounded. At most `capacity` blobs wait; when the queue is full a write-back is
//! dropped and counted (the blob stays on this node's disk; the next node to miss it will fetch
//! from the source and write it back). A blob already queued is not queued twice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tiercache_core::Digest;
use tokio::sync::{mpsc, oneshot};

use super::{Counter, PutOutcome, SharedTier};

/// The queue's sending side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WriteBack {
    tx: mpsc::Sender<(Digest, PathBuf)>,
    /// Queued or being written, with whoever waits for the outcome (`true`: the blob is in the
    /// shared tier).
    pending: Arc<Mutex<HashMap<Digest, Vec<oneshot::Sender<bool>>>>>,
    tier: Arc<SharedTier>,
}

impl WriteBack {
    /// Starts `workers` tasks writing back through `tier`, fed by a queue of `capacity`. Must be
    /// called inside a tokio runtime; the tasks end when every [`WriteBack`] clone is dropped.
    pub fn spawn(tier: Arc<SharedTier>, capacity: usize, workers: usize) -> WriteBack {
        let (tx, rx) = mpsc::channel::<(Digest, PathBuf)>(capacity.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let pending: Arc<Mutex<HashMap<Digest, Vec<oneshot::Sender<bool>>>>> = Arc::default();
        for _ in 0..workers.max(1) {
            let (rx, tier, pending) = (Arc::clone(&rx), Arc::clone(&tier), Arc::clone(&pending));
            tokio::spawn(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some((digest, path)) = next else { return };
                    let result = match tier.put_file(&digest, &path).await {
                        Ok(PutOutcome::Stored) => Counter::WriteBacksDone,
                        Ok(PutOutcome::Existed) => Counter::WriteBacksSkipped,
                        Err(e) => {
                            tracing::warn!(%digest, error = %e, "write-back to the shared tier failed");
                            Counter::WriteBacksFailed
                        }
                    };
                    tracing::debug!(%digest, result = result.name(), "write-back");
                    tier.count_write_back(result);
                    let waiters = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
                    let is_there = matches!(result, Counter::WriteBacksDone | Counter::WriteBacksSkipped);
                    for w in waiters.unwrap_or_default() {
                        let _ = w.send(is_there);
                    }
                }
            });
        }
        WriteBack { tx, pending, tier }
    }

    /// Queues blob `digest` (its file at `path`) for writing back. Never waits. Returns `false`
    /// if it was dropped because the queue is full, or was already queued.
    pub fn queue(&self, digest: Digest, path: PathBuf) -> bool {
        self.enqueue(digest, path, None)
    }

    /// Queues blob `digest` as [`WriteBack::queue`] does, or joins its write-back already queued,
    /// and answers when it ends: `true` once the blob is readable in the shared tier (uploaded, or
    /// there already), `false` if the write-back failed or was dropped.
    pub fn queue_watched(&self, digest: Digest, path: PathBuf) -> impl Future<Output = bool> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.enqueue(digest, path, Some(tx));
        async move { rx.await.unwrap_or(false) }
    }

    fn enqueue(&self, digest: Digest, path: PathBuf, waiter: Option<oneshot::Sender<bool>>) -> bool {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(waiters) = pending.get_mut(&digest) {
                waiters.extend(waiter);
                return false;
            }
            pending.insert(digest, waiter.into_iter().collect());
        }
        match self.tx.try_send((digest, path)) {
            Ok(()) => {
                self.tier.count_write_back(Counter::WriteBacksQueued);
                true
            }
            Err(_) => {
                self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&digest);
                tracing::debug!(%digest, "write-back queue full; dropped");
                self.tier.count_write_back(Counter::WriteBacksDropped);
                false
            }
        }
    }

    /// Blobs queued or being written now.
    pub fn n_pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The most blobs that may wait in the queue.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}
