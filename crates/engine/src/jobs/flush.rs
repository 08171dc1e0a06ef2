//! Batched writes (layer 4): last-access times and hit counts (`access.rs` gathers them), and the
//! shared tier's and the front doors' kept counters, written to the index in one transaction per flush; the metrics brought
//! up to date at the same time. A background loop flushes every `access_flush_interval`.

use std::sync::Arc;

use tiercache_core::kept;

use super::Jobs;
use crate::{Error, telemetry};

/// Names of the shared tier's counters in the index start with this.
const SHARED_PREFIX: &str = "shared.";

impl Jobs {
    /// Writes batched access times (and shared-tier counters) now.
    ///
    /// Flushes run one at a time: one that finds nothing left to write still waits for the
    /// background flusher's write under way, so what was drained before it is committed when it
    /// returns (otherwise a process could exit between that drain and its commit).
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        let _one_at_a_time = self.flush_lock.lock().await;
        self.flush_shared_counters().await?;
        self.flush_kept_counters().await?;
        self.publish_metrics();
        let batch = self.access.drain();
        if batch.is_empty() {
            return Ok(());
        }
        self.stores.managed().quota.touched(batch.iter().map(|r| r.digest));
        self.ix.run(move |ix| ix.record_access(&batch)).await
    }

    /// The shared-tier counters summed over every process that used this data directory (as of
    /// their last flush), by name (`hits`, `misses`, …, `breaker_open`).
    pub(crate) async fn shared_counters(&self) -> Result<std::collections::BTreeMap<String, i64>, Error> {
        let all = self.ix.run(|ix| ix.counters(SHARED_PREFIX)).await?;
        Ok(all.into_iter().map(|(k, v)| (k[SHARED_PREFIX.len()..].to_owned(), v)).collect())
    }

    /// The kept counters ([`crate::kept`]) summed over every process that used this data
    /// directory (as of their last flush), by name.
    pub(crate) async fn kept_counters(&self) -> Result<std::collections::BTreeMap<String, i64>, Error> {
        let all = self.ix.run(|ix| ix.counters(kept::PREFIX)).await?;
        Ok(all.into_iter().map(|(k, v)| (k[kept::PREFIX.len()..].to_owned(), v)).collect())
    }

    /// Adds what the kept counters counted since the last flush to the index (given back to
    /// them if it cannot be written).
    async fn flush_kept_counters(&self) -> Result<(), Error> {
        let deltas = kept::drain();
        if deltas.is_empty() {
            return Ok(());
        }
        let written = deltas.clone();
        let done = self.ix.run(move |ix| ix.bump_counters(&written, &[])).await;
        if done.is_err() {
            kept::restore(&deltas);
        }
        done
    }

    /// Adds what the shared tier counted since the last flush to the index, and the breaker's
    /// state if it changed (or on the first flush). Writes nothing when nothing changed.
    async fn flush_shared_counters(&self) -> Result<(), Error> {
        let Some(tier) = self.stores.shared() else { return Ok(()) };
        let now = tier.stats();
        let (deltas, latest) = {
            let mut last = self.shared_flushed.lock().unwrap_or_else(|p| p.into_inner());
            let before = last.clone().unwrap_or_default();
            let deltas: Vec<(String, i64)> = now
                .counters()
                .zip(before.counters())
                .filter(|((_, n), (_, b))| n != b)
                .map(|((name, n), (_, b))| (format!("{SHARED_PREFIX}{name}"), (n - b) as i64))
                .collect();
            let mut latest = Vec::new();
            if last.is_none() || before.breaker != now.breaker {
                let open = now.breaker != tiercache_tiers::shared::BreakerState::Closed;
                latest.push((format!("{SHARED_PREFIX}breaker_open"), open as i64));
            }
            *last = Some(now);
            (deltas, latest)
        };
        self.ix.run(move |ix| ix.bump_counters(&deltas, &latest)).await
    }

    /// Brings the metrics up to date: the counts kept per thread (memory-tier hits, misses and
    /// bytes) and the sizes (the disk tier's use and quota, the memory tier's bytes and entries).
    pub(crate) fn publish_metrics(&self) {
        telemetry::publish();
        self.memory.publish_metrics();
        let q = self.stores.managed().quota.stats();
        metrics::gauge!(telemetry::DISK_USED_BYTES).set((q.used_bytes + q.reserved_bytes) as f64);
        if let Some(quota) = q.quota_bytes {
            metrics::gauge!(telemetry::DISK_QUOTA_BYTES).set(quota as f64);
        }
        let m = self.memory.report();
        metrics::gauge!(telemetry::MEMORY_ENABLED).set(if m.is_enabled { 1.0 } else { 0.0 });
        metrics::gauge!(telemetry::MEMORY_TTL_SECONDS).set(m.ttl_seconds as f64);
        metrics::gauge!(telemetry::MEMORY_BYTES).set(m.bytes as f64);
        metrics::gauge!(telemetry::MEMORY_ENTRIES).set(m.entries as f64);
    }

    /// Starts the background flusher: a flush every `access_flush_interval`, until shutdown or
    /// until the cache is dropped.
    pub(crate) fn spawn_flusher(self: &Arc<Self>) {
        let every = self.config.access_flush_interval;
        self.tasks.spawn_every(self, tokio::time::Instant::now(), every, |jobs| async move {
            if let Err(e) = jobs.flush().await {
                tracing::warn!(error = %e, "cannot record access times; will retry");
            }
        });
    }
}
