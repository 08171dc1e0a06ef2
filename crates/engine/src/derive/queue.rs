//! The derivation queue and its workers: jobs queued once per key (however many ask), taken in
//! priority order (a waiting client before `warm` and background work, then oldest first), run
//! at most `workers` at a time on blocking threads, within their limits.
//!
//! Invariant: a key has at most one job queued or running; its askers all watch that job's state.
//! A job that fails or is dropped stores nothing; one that succeeds commits its output with its
//! row before it says `Done`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tiercache_derive::{DeriveError, Params, Recipe};
use tiercache_index::{DerivationKey, DerivationStats};
use tiercache_tiers::{FinishedBlob, TempBlob};
use tokio::sync::{Notify, Semaphore, watch};

use super::Derivations;
use super::input::Resolved;
use crate::quota::Reservation;
use crate::spool::RESERVE_STEP_BYTES;

/// Jobs by outcome and recipe: `done`, `failed`, `dropped` (at shutdown), `skipped` (the output
/// was there), `shared` (another node's output, found in the shared tier).
const JOBS: &str = "tiercache_derive_jobs_total";
/// Seconds a job ran, by recipe.
const JOB_SECONDS: &str = "tiercache_derive_job_seconds";
/// Jobs queued, and running, now.
const QUEUED: &str = "tiercache_derive_queued";
const RUNNING: &str = "tiercache_derive_running";
/// Seconds the oldest queued job has waited (0: none queued).
const OLDEST_QUEUED: &str = "tiercache_derive_oldest_queued_seconds";

/// Counts a derivation asked for by `outcome`: in `/metrics`, and kept for `stats`
/// (`derive.<outcome>.<recipe>`, summed over every process).
pub(super) fn count(outcome: &'static str, recipe: &'static str) {
    metrics::counter!(JOBS, "outcome" => outcome, "recipe" => recipe).increment(1);
    tiercache_core::kept_counter(&format!("derive.{outcome}.{recipe}")).increment(1);
}

/// Which jobs run first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    /// `warm`, `derive` over a namespace: after every waiting client.
    #[default]
    Background = 0,
    /// A client waiting for the output.
    Waiting = 1,
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobState {
    Queued,
    Running,
    /// Its output is committed with its row.
    Done,
    /// It failed: why, and whether because the input is not something the recipe takes.
    Failed {
        reason: String,
        is_unsupported: bool,
    },
    /// It was dropped unrun (shutdown): why.
    Dropped(String),
}

/// One job: a key, its recipe and parameters, its input.
pub(crate) struct Job {
    pub(super) key: DerivationKey,
    pub(super) recipe: &'static dyn Recipe,
    pub(super) params: Params,
    input: Resolved,
    priority: AtomicU8,
    queued_at: Instant,
    /// Set by the worker that takes it (a job may be in the heap twice after a priority bump).
    is_taken: AtomicBool,
    state: watch::Sender<JobState>,
}

impl Job {
    pub(super) fn new(key: DerivationKey, recipe: &'static dyn Recipe, params: Params, input: Resolved) -> Job {
        Job {
            key,
            recipe,
            params,
            input,
            priority: AtomicU8::new(Priority::Background as u8),
            queued_at: Instant::now(),
            is_taken: AtomicBool::new(false),
            state: watch::Sender::new(JobState::Queued),
        }
    }
}

struct Queued {
    priority: Priority,
    seq: Reverse<u64>,
    job: Arc<Job>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.priority, self.seq).cmp(&(other.priority, other.seq))
    }
}

#[derive(Default)]
struct Inner {
    heap: BinaryHeap<Queued>,
    /// Every job queued or running, by key.
    by_key: HashMap<DerivationKey, Arc<Job>>,
    seq: u64,
    is_closed: bool,
}

/// The queue of one cache's derivations.
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    notify: Notify,
    capacity: usize,
    running: AtomicUsize,
    /// Jobs ended since start, by outcome.
    done: AtomicUsize,
    failed: AtomicUsize,
}

/// The derivation figures `stats` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeriveStats {
    /// Worker slots (0: no workers).
    pub workers: usize,
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Jobs running.
    pub running: usize,
    /// Jobs that stored an output since this process started.
    pub done: usize,
    /// Jobs that failed since this process started.
    pub failed: usize,
    /// Seconds the oldest queued job has waited.
    pub oldest_queued_seconds: f64,
    /// Outputs present in the disk tier, by recipe.
    pub outputs: DerivationStats,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Arc<Queue> {
        Arc::new(Queue {
            inner: Mutex::default(),
            notify: Notify::new(),
            capacity: capacity.max(1),
            running: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `job` at `priority`, or joins the job already queued or running for its key (raising
    /// its priority if this asker's is higher): a receiver of its state. `None` if the queue is
    /// full.
    pub(super) fn submit(&self, job: Job, priority: Priority) -> Option<watch::Receiver<JobState>> {
        let mut inner = self.lock();
        if inner.is_closed {
            let (_, rx) = watch::channel(JobState::Dropped("the server is shutting down".into()));
            return Some(rx);
        }
        inner.seq += 1;
        let seq = Reverse(inner.seq);
        if let Some(existing) = inner.by_key.get(&job.key).cloned() {
            return Some(self.join_existing(&mut inner, existing, priority, seq));
        }
        if inner.by_key.len() >= self.capacity {
            return None;
        }
        job.priority.store(priority as u8, Ordering::Release);
        let job = Arc::new(job);
        let rx = job.state.subscribe();
        inner.by_key.insert(job.key.clone(), Arc::clone(&job));
        inner.heap.push(Queued { priority, seq, job });
        metrics::gauge!(QUEUED).increment(1.0);
        self.notify.notify_one();
        Some(rx)
    }

    /// Joins the job queued or running for `key`, if there is one (raising its priority to
    /// `priority` if that is higher): a receiver of its state.
    pub(super) fn join(&self, key: &DerivationKey, priority: Priority) -> Option<watch::Receiver<JobState>> {
        let mut inner = self.lock();
        let existing = inner.by_key.get(key).cloned()?;
        inner.seq += 1;
        let seq = Reverse(inner.seq);
        Some(self.join_existing(&mut inner, existing, priority, seq))
    }

    /// A receiver of `existing`'s state, its priority raised to `priority` if that is higher.
    fn join_existing(
        &self,
        inner: &mut Inner,
        existing: Arc<Job>,
        priority: Priority,
        seq: Reverse<u64>,
    ) -> watch::Receiver<JobState> {
        let rx = existing.state.subscribe();
        if (priority as u8) > existing.priority.fetch_max(priority as u8, Ordering::AcqRel)
            && !existing.is_taken.load(Ordering::Acquire)
        {
            inner.heap.push(Queued { priority, seq, job: existing });
            self.notify.notify_one();
        }
        metrics::counter!(crate::telemetry::COALESCED).increment(1);
        rx
    }

    /// The next job to run, if any.
    fn pop(&self) -> Option<Arc<Job>> {
        let mut inner = self.lock();
        while let Some(q) = inner.heap.pop() {
            if !q.job.is_taken.swap(true, Ordering::AcqRel) {
                metrics::gauge!(QUEUED).decrement(1.0);
                return Some(q.job);
            }
        }
        None
    }

    /// The job of `key` ended: later askers look at the index (or the negative cache) again.
    fn finish(&self, key: &DerivationKey) {
        self.lock().by_key.remove(key);
    }

    /// Drops every queued job (their askers are told why) and takes no more.
    pub(super) fn close(&self) {
        let mut inner = self.lock();
        inner.is_closed = true;
        let dropped: Vec<Queued> = inner.heap.drain().collect();
        for q in dropped {
            if !q.job.is_taken.swap(true, Ordering::AcqRel) {
                metrics::gauge!(QUEUED).decrement(1.0);
                count("dropped", q.job.recipe.name());
                q.job.state.send_replace(JobState::Dropped("the server is shutting down".into()));
                inner.by_key.remove(&q.job.key);
            }
        }
        self.notify.notify_waiters();
    }

    /// Sets the gauge of the oldest queued job's age.
    pub(super) fn publish_metrics(&self) {
        let oldest = self.stats(0, DerivationStats::default()).oldest_queued_seconds;
        metrics::gauge!(OLDEST_QUEUED).set(oldest);
    }

    pub(super) fn stats(&self, workers: usize, outputs: DerivationStats) -> DeriveStats {
        let inner = self.lock();
        let queued: Vec<&Arc<Job>> = inner.by_key.values().filter(|j| !j.is_taken.load(Ordering::Acquire)).collect();
        let oldest = queued.iter().map(|j| j.queued_at.elapsed().as_secs_f64()).fold(0.0, f64::max);
        DeriveStats {
            workers,
            queued: queued.len(),
            running: self.running.load(Ordering::Acquire),
            done: self.done.load(Ordering::Acquire),
            failed: self.failed.load(Ordering::Acquire),
            oldest_queued_seconds: oldest,
            outputs,
        }
    }
}

/// Starts the loop that hands queued jobs to at most `workers` running at once, until shutdown.
pub(super) fn start_workers(d: &Arc<Derivations>) {
    let weak: Weak<Derivations> = Arc::downgrade(d);
    let (queue, slots) = (Arc::clone(&d.queue), Arc::new(Semaphore::new(d.config.workers)));
    d.tasks.spawn_loop(|stop| async move {
        loop {
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                slot = Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
            };
            let job = loop {
                let notified = queue.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(job) = queue.pop() {
                    break Some(job);
                }
                tokio::select! {
                    _ = stop.cancelled() => break None,
                    _ = &mut notified => {}
                }
            };
            let (Some(job), Some(d)) = (job, weak.upgrade()) else { break };
            let tasks = d.tasks.clone();
            tasks.spawn(async move {
                d.run(job).await;
                drop(slot);
            });
        }
        queue.close();
    });
}

impl Derivations {
    /// Runs `job`: its recipe on a blocking thread into a temp file of the disk tier, then the
    /// output committed with its row, recorded in the shared tier, and the job's state published.
    async fn run(self: &Arc<Self>, job: Arc<Job>) {
        job.state.send_replace(JobState::Running);
        self.queue.running.fetch_add(1, Ordering::AcqRel);
        metrics::gauge!(RUNNING).increment(1.0);
        let t0 = Instant::now();
        let outcome = self.make(&job).await;
        metrics::histogram!(JOB_SECONDS, "recipe" => job.recipe.name()).record(t0.elapsed().as_secs_f64());
        metrics::gauge!(RUNNING).decrement(1.0);
        self.queue.running.fetch_sub(1, Ordering::AcqRel);
        let state = match outcome {
            Ok(true) => {
                self.queue.done.fetch_add(1, Ordering::AcqRel);
                count("done", job.recipe.name());
                JobState::Done
            }
            Ok(false) => {
                count("skipped", job.recipe.name());
                JobState::Done
            }
            Err(Failure { reason, is_about_input, is_unsupported }) => {
                self.queue.failed.fetch_add(1, Ordering::AcqRel);
                count("failed", job.recipe.name());
                tracing::warn!(recipe = job.recipe.name(), input = %job.key.input, %reason, "derivation failed");
                if is_about_input {
                    self.remember_failure(&job.key, &reason, is_unsupported);
                }
                JobState::Failed { reason, is_unsupported }
            }
        };
        self.queue.finish(&job.key);
        job.state.send_replace(state);
    }

    /// The job's work: `true` if it made the output, `false` if the output was there already (a
    /// job of the same key that ended between an asker's look and its submission made it). On
    /// failure, why and whether it is the input's fault.
    async fn make(self: &Arc<Self>, job: &Arc<Job>) -> Result<bool, Failure> {
        let k = job.key.clone();
        if let Ok(Some(_)) = self.ix.run(move |ix| ix.get_derivation(&k)).await {
            return Ok(false);
        }
        let store = self.stores.managed();
        let (temp, reservation) = store.create_temp(None).await.map_err(|e| Failure::local(e.to_string()))?;
        let (j, limits) = (Arc::clone(job), self.limits());
        let ran = tokio::task::spawn_blocking(move || {
            let mut out = TempWriter { temp: Some(temp), reservation, buf: BytesMut::new() };
            let produced = j.recipe.run(&j.input.path(), j.input.size_bytes, &j.params, &limits, &mut out)?;
            let finished = out.finish()?;
            Ok::<_, DeriveError>((finished, produced))
        })
        .await;
        let (finished, produced) = match ran {
            Ok(Ok(made)) => made,
            Ok(Err(e)) => {
                let is_unsupported = matches!(e, DeriveError::Unsupported(_));
                return Err(Failure { reason: e.to_string(), is_about_input: e.is_about_input(), is_unsupported });
            }
            Err(e) => {
                let reason = format!("the recipe stopped unexpectedly: {e}");
                return Err(Failure { reason, is_about_input: true, is_unsupported: false });
            }
        };
        if !job.input.is_unchanged() {
            return Err(Failure::local("the input changed while its job ran; nothing stored".into()));
        }
        let size = finished.0.size_bytes;
        let content_type = produced.content_type;
        let output = self
            .stores
            .commit_derived(finished, job.key.clone(), content_type.clone())
            .await
            .map_err(|e| Failure::local(e.to_string()))?;
        self.record_in_shared(job, output, size, content_type);
        Ok(true)
    }
}

/// Why a job failed.
struct Failure {
    reason: String,
    /// The input's fault: remembered, so that it is not tried again at once.
    is_about_input: bool,
    /// The input is not something the recipe takes.
    is_unsupported: bool,
}

impl Failure {
    /// A local fault (no room, an I/O error): not the input's.
    fn local(reason: String) -> Failure {
        Failure { reason, is_about_input: false, is_unsupported: false }
    }
}

/// A recipe's output going into a temp file of the disk tier, its quota reservation grown (in
/// [`RESERVE_STEP_BYTES`] steps) before the bytes are written: no room is an error.
struct TempWriter {
    temp: Option<TempBlob>,
    reservation: Reservation,
    buf: BytesMut,
}

impl TempWriter {
    fn flush_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let temp = self.temp.as_mut().expect("open until finished");
        let need = temp.written() + self.buf.len() as u64;
        if need > self.reservation.bytes() {
            self.reservation
                .grow_to(need.next_multiple_of(RESERVE_STEP_BYTES))
                .map_err(|no| std::io::Error::new(std::io::ErrorKind::StorageFull, no.reason))?;
        }
        let chunk: Bytes = self.buf.split().freeze();
        temp.write(chunk)
    }

    fn finish(mut self) -> std::io::Result<(FinishedBlob, Reservation)> {
        self.flush_buf()?;
        let finished = self.temp.take().expect("open until finished").finish()?;
        Ok((finished, self.reservation))
    }
}

impl Write for TempWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tiercache_core::Digest;

    use super::*;

    fn job(name: &str) -> Job {
        let recipe = tiercache_derive::recipe("checksum").unwrap();
        let input = Digest::of(name.as_bytes());
        let key = DerivationKey { recipe: "checksum".into(), version: 1, params: "algo=sha1".into(), input };
        let file = std::fs::File::open("/dev/null").unwrap();
        Job::new(key, recipe, Params::default(), Resolved::for_test(input, file))
    }

    fn taken(queue: &Queue) -> Digest {
        queue.pop().expect("a job").key.input
    }

    #[test]
    fn a_waiting_client_goes_first_then_the_oldest_and_one_job_per_key() {
        let queue = Queue::new(3);
        let _a = queue.submit(job("a"), Priority::Background).unwrap();
        let _b = queue.submit(job("b"), Priority::Background).unwrap();
        let _c = queue.submit(job("c"), Priority::Waiting).unwrap();
        assert!(queue.submit(job("d"), Priority::Waiting).is_none(), "full: three jobs at most");
        // Another ask of a queued key joins it (and a waiting one raises its priority).
        let joined = queue.submit(job("b"), Priority::Waiting).unwrap();
        assert_eq!(*joined.borrow(), JobState::Queued);
        assert_eq!(taken(&queue), Digest::of(b"c"));
        assert_eq!(taken(&queue), Digest::of(b"b"), "raised by a waiting asker");
        assert_eq!(taken(&queue), Digest::of(b"a"));
        assert!(queue.pop().is_none(), "b was in the heap twice, and is taken once");
        queue.finish(&job("a").key);
        assert!(queue.submit(job("d"), Priority::Background).is_some(), "room again once a job ended");
        queue.close();
        let dropped = queue.submit(job("e"), Priority::Waiting).unwrap();
        assert!(matches!(*dropped.borrow(), JobState::Dropped(_)), "closed: nothing is taken");
    }
}
