//! Derivations (layer 4): outputs computed from blobs by recipes (`tiercache-derive`), found by
//! key in the index, then in the shared tier, else made by the worker pool.
//!
//! A derivation's key is `(recipe, version, canonical parameters, input digest)`. Asking for one:
//! 1. the input is resolved to a digest and an open file (`derive/input.rs`: an entry is read
//!    through the tiers like any read, fetched if no tier has it; a directory namespace's file is
//!    used in place). A blob's key is known from its digest alone, so steps 2 to 4, and joining a
//!    job already under way for the key, come first for it: an output outlives its input;
//! 2. the output by key: remembered in memory, else the index's row, if its blob is present;
//! 3. the shared tier's record for the key, if its output blob is there: filled into the disk
//!    tier, recorded, served (another node made it);
//! 4. the negative cache: an input that failed for this key fails again at once, until its
//!    backoff has passed;
//! 5. a job, queued once per key however many ask (`derive/queue.rs`), and waited for up to the
//!    asker's `wait`: the output, or a placeholder to show meanwhile.
//!
//! A job's output goes into a temp file of the disk tier, is published like every blob and
//! committed with its derivation row in one transaction, written back to the shared tier, then
//! recorded there. A job that fails or is dropped leaves nothing behind: never a partial output.

mod input;
mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tiercache_core::{Digest, now_ms};
use tiercache_derive::{DeriveError, Params, Produced, Recipe};
use tiercache_index::DerivationKey;
use tiercache_tiers::shared::DerivedRecord;

use crate::blocking::Ix;
use crate::config::DeriveConfig;
use crate::error::RecipeFault;
use crate::read::{Intent, Reads};
use crate::store::Stores;
use crate::tasks::Tasks;
use crate::{Error, Read};

pub use input::DeriveInput;
pub use queue::{DeriveStats, Priority};

use queue::{Job, JobState, Queue};

/// What to derive, as a request gave it.
#[derive(Debug, Clone)]
pub struct DeriveAsk {
    /// The recipe's name.
    pub recipe: String,
    /// Its parameters, raw (name and value pairs).
    pub params: Vec<(String, String)>,
    /// The request's `Accept` header, for recipes whose output format follows it.
    pub accept: Option<String>,
    /// How long to wait for a job (zero: not at all).
    pub wait: Duration,
    /// The job's priority if one is queued.
    pub priority: Priority,
}

/// What asking for a derivation found.
#[derive(Debug)]
pub enum Derived {
    /// The output: a read of its blob.
    Ready {
        /// The output's bytes.
        read: Box<Read>,
        /// Its media type.
        content_type: String,
        /// Its digest.
        output: Digest,
        /// Whether a job made it for this ask (else it was there already, here or in the shared
        /// tier).
        is_new: bool,
    },
    /// Queued or running: a stand-in to show meanwhile, if the recipe has one.
    Pending {
        /// The placeholder's bytes and media type.
        placeholder: Option<(Bytes, String)>,
        /// When to ask again.
        retry_after: Duration,
    },
    /// The input failed for this recipe (now, or recently: from the negative cache).
    Failed {
        /// Why.
        reason: String,
        /// Whether because the input is not something the recipe takes (a text file asked for a
        /// thumbnail), rather than a damaged or oversized one.
        is_unsupported: bool,
        /// When asking again may be worth it.
        retry_after: Duration,
    },
    /// The queue is full.
    Busy {
        /// When to ask again.
        retry_after: Duration,
    },
}

/// The derivations of one cache: the recipes' lookups, the queue and its workers, the negative
/// cache.
pub(crate) struct Derivations {
    config: DeriveConfig,
    reads: Arc<Reads>,
    stores: Arc<Stores>,
    ix: Ix,
    tasks: Tasks,
    queue: Arc<Queue>,
    /// Keys whose input failed, with why and until when a new job is not tried.
    failures: Mutex<HashMap<DerivationKey, Failure>>,
    /// Outputs found lately, by key (a memo of the index's rows, so that a hot output costs no
    /// index query; one whose blob is gone is dropped when a read finds so).
    outputs: moka::sync::Cache<DerivationKey, (Digest, Arc<str>)>,
}

/// The most outputs remembered by key ([`Derivations::outputs`]).
const MEMO_OUTPUTS: u64 = 100_000;

#[derive(Debug, Clone)]
struct Failure {
    reason: String,
    is_unsupported: bool,
    attempts: u32,
    until: Instant,
}

/// Derivation records written to the shared tier.
const RECORDS_WRITTEN: &str = "tiercache_derive_records_written_total";

/// A failed input is not tried again for this long after its first failure, doubling with each
/// failure after, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// The most failed keys remembered (the oldest are forgotten first).
const MAX_FAILURES: usize = 100_000;
/// What a pending answer suggests as `Retry-After`.
const RETRY_PENDING: Duration = Duration::from_secs(1);
/// How many bytes of the input a placeholder may look at.
const PLACEHOLDER_HEAD_BYTES: u64 = 64 * 1024;

impl Derivations {
    pub(crate) fn new(config: DeriveConfig, reads: Arc<Reads>, stores: Arc<Stores>, ix: Ix, tasks: Tasks) -> Arc<Self> {
        let queue = Queue::new(config.queue_jobs);
        let this = Arc::new(Derivations {
            config,
            reads,
            stores,
            ix,
            tasks,
            queue,
            failures: Mutex::default(),
            outputs: moka::sync::Cache::new(MEMO_OUTPUTS),
        });
        if this.config.workers > 0 {
            queue::start_workers(&this);
        }
        this
    }

    /// Asks for derivation `ask` of `input` (see the module docs).
    pub(crate) async fn derive(self: &Arc<Self>, input: &DeriveInput, ask: &DeriveAsk) -> Result<Derived, Error> {
        let recipe = tiercache_derive::recipe(&ask.recipe).map_err(refusal)?;
        let params = recipe.params(&ask.params, ask.accept.as_deref()).map_err(refusal)?;
        let key_of = |input: Digest| DerivationKey {
            recipe: recipe.name().to_owned(),
            version: recipe.version(),
            params: params.canonical(),
            input,
        };
        // A blob's key is known without its bytes: an output is served even once its input is
        // gone (evicted, or a directory's file since deleted). So is that of an entry whose key
        // names its bytes by digest (a registry's layer): another node's output is found without
        // fetching the input.
        let named = match input {
            DeriveInput::Blob(digest) => Some(*digest),
            DeriveInput::Entry { namespace, key } => self.reads.named_digest(namespace, key).await?,
        };
        if let Some(digest) = named {
            let key = key_of(digest);
            if let Some(known) = self.known(recipe, &params, &key).await? {
                return Ok(known);
            }
            if let Some(rx) = self.queue.join(&key, ask.priority) {
                return self.wait_for(rx, &key, ask.wait, || None).await;
            }
        }
        let resolved = input::resolve(&self.reads, &self.stores, input).await?;
        let key = key_of(resolved.digest);
        if let DeriveInput::Entry { .. } = input
            && let Some(known) = self.known(recipe, &params, &key).await?
        {
            return Ok(known);
        }
        if self.config.workers == 0 {
            return Err(Error::Recipe {
                fault: RecipeFault::NotAvailable,
                reason: "this server runs no derivation workers (--no-worker): only outputs already made are served"
                    .into(),
            });
        }
        recipe.available().map_err(|why| Error::Recipe { fault: RecipeFault::NotAvailable, reason: why })?;
        let head = resolved.head(PLACEHOLDER_HEAD_BYTES);
        let job = Job::new(key.clone(), recipe, params.clone(), resolved);
        let Some(rx) = self.queue.submit(job, ask.priority) else {
            return Ok(Derived::Busy { retry_after: RETRY_PENDING * 5 });
        };
        let placeholder = || head.as_deref().and_then(|h| recipe.placeholder(h, &params)).map(placeholder_of);
        self.wait_for(rx, &key, ask.wait, placeholder).await
    }

    /// Whether recipe `recipe`'s output (no parameters) for `input` is made already, here or on
    /// another node (filled from the shared tier if so), without fetching the input or queueing a
    /// job. Only an input known by digest (a blob, an entry naming its bytes by digest) can be.
    pub(crate) async fn is_made(&self, input: &DeriveInput, recipe: &str) -> Result<bool, Error> {
        let recipe = tiercache_derive::recipe(recipe).map_err(refusal)?;
        let params = recipe.params(&[], None).map_err(refusal)?;
        let digest = match input {
            DeriveInput::Blob(digest) => Some(*digest),
            DeriveInput::Entry { namespace, key } => self.reads.named_digest(namespace, key).await?,
        };
        let Some(input) = digest else { return Ok(false) };
        let key = DerivationKey {
            recipe: recipe.name().to_owned(),
            version: recipe.version(),
            params: params.canonical(),
            input,
        };
        Ok(self.present(&key, false).await?.is_some() || self.made_elsewhere(recipe, &params, &key).await?.is_some())
    }

    /// Waits up to `wait` for the job of `key` (`rx`, its state): its output, its failure, or
    /// (still queued or running) a pending answer with `placeholder`'s stand-in.
    async fn wait_for(
        &self,
        mut rx: tokio::sync::watch::Receiver<JobState>,
        key: &DerivationKey,
        wait: Duration,
        placeholder: impl FnOnce() -> Option<(Bytes, String)>,
    ) -> Result<Derived, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                JobState::Done => {
                    if let Some(ready) = self.present(key, true).await? {
                        return Ok(ready);
                    }
                    // Evicted between its commit and this look (a disk under pressure).
                    return Ok(Derived::Busy { retry_after: RETRY_PENDING });
                }
                JobState::Failed { reason, is_unsupported } => {
                    let retry_after =
                        self.failed(key).map_or(Duration::ZERO, |f| f.until.saturating_duration_since(Instant::now()));
                    return Ok(Derived::Failed { reason, is_unsupported, retry_after });
                }
                JobState::Dropped(reason) => return Err(Error::Busy { what: reason }),
                JobState::Queued | JobState::Running => {}
            }
            let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Ok(Derived::Pending { placeholder: placeholder(), retry_after: RETRY_PENDING });
            }
        }
    }

    /// What is known of `key` without a job: its output (here, or another node's), or its input's
    /// remembered failure.
    async fn known(&self, recipe: &dyn Recipe, params: &Params, key: &DerivationKey) -> Result<Option<Derived>, Error> {
        if let Some(ready) = self.present(key, false).await? {
            queue::count("skipped", recipe.name());
            return Ok(Some(ready));
        }
        if let Some(ready) = self.made_elsewhere(recipe, params, key).await? {
            queue::count("shared", recipe.name());
            return Ok(Some(ready));
        }
        Ok(self.failed(key).map(|f| {
            let retry_after = f.until.saturating_duration_since(Instant::now());
            Derived::Failed { reason: f.reason, is_unsupported: f.is_unsupported, retry_after }
        }))
    }

    /// The bounds of a job starting now.
    pub(crate) fn limits(&self) -> tiercache_derive::Limits {
        tiercache_derive::Limits {
            max_input_bytes: self.config.max_input_bytes,
            max_output_bytes: self.config.max_output_bytes,
            max_alloc_bytes: self.config.max_alloc_bytes,
            max_pixels: self.config.max_pixels,
            deadline: Instant::now() + self.config.job_timeout,
        }
    }

    /// The output of `key`, if the index has it and its blob is present (`is_new`: a job made it
    /// for this ask).
    async fn present(&self, key: &DerivationKey, is_new: bool) -> Result<Option<Derived>, Error> {
        let (output, content_type) = match self.outputs.get(key) {
            Some(known) => known,
            None => {
                let k = key.clone();
                let Some(found) = self.ix.run(move |ix| ix.get_derivation(&k)).await? else { return Ok(None) };
                let known = (found.output, Arc::<str>::from(found.content_type));
                self.outputs.insert(key.clone(), known.clone());
                known
            }
        };
        match self.reads.blob(&output, Intent::Whole).await {
            Ok(read) => {
                let content_type = content_type.to_string();
                Ok(Some(Derived::Ready { read: Box::new(read), content_type, output, is_new }))
            }
            Err(Error::NoBlob(_)) => {
                self.outputs.invalidate(key);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The output of `key` made by another node: its shared-tier record, and its blob filled into
    /// the disk tier and recorded here.
    async fn made_elsewhere(
        &self,
        recipe: &dyn Recipe,
        params: &Params,
        key: &DerivationKey,
    ) -> Result<Option<Derived>, Error> {
        let Some(tier) = self.stores.shared() else { return Ok(None) };
        let params_key = tiercache_derive::params_key(recipe, params);
        let wanted = (key.recipe.as_str(), key.version, key.params.as_str());
        let record = match tier.read_derived(wanted, &params_key, &key.input).await {
            Ok(Some(record)) => record,
            Ok(None) | Err(_) => return Ok(None),
        };
        // Filled whole before the row is written: a row names only a present blob.
        let read = match self.reads.blob(&record.output, Intent::Whole).await {
            Ok(read) => read,
            Err(Error::NoBlob(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        input::drain(read).await?;
        let (k, output, size, content_type) = (key.clone(), record.output, record.size_bytes, record.content_type);
        let recorded = self.ix.run(move |ix| ix.commit_derived(&k, &output, size, &content_type, now_ms())).await;
        recorded?;
        self.present(key, false).await
    }

    /// The failure remembered for `key`, while its backoff lasts.
    fn failed(&self, key: &DerivationKey) -> Option<Failure> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(key).filter(|f| f.until > Instant::now()).cloned()
    }

    /// Remembers that `key`'s input failed for `reason` (`is_unsupported`: not something the
    /// recipe takes): not tried again until its backoff passes.
    fn remember_failure(&self, key: &DerivationKey, reason: &str, is_unsupported: bool) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_FAILURES && !failures.contains_key(key) {
            let oldest = failures.iter().min_by_key(|(_, f)| f.until).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                failures.remove(&k);
            }
        }
        let attempts = failures.get(key).map_or(1, |f| f.attempts.saturating_add(1));
        let backoff = FIRST_BACKOFF.saturating_mul(1 << (attempts - 1).min(16)).min(MAX_BACKOFF);
        let until = Instant::now() + backoff;
        failures.insert(key.clone(), Failure { reason: reason.to_owned(), is_unsupported, attempts, until });
    }

    /// After a job stored its output: writes the shared tier's record once the output blob is
    /// written back there (in the background).
    fn record_in_shared(self: &Arc<Self>, job: &Job, output: Digest, size_bytes: u64, content_type: String) {
        let Some(tier) = self.stores.shared().cloned() else { return };
        let record = DerivedRecord {
            recipe: job.key.recipe.clone(),
            version: job.key.version,
            params: job.key.params.clone(),
            input: job.key.input,
            output,
            size_bytes,
            content_type,
        };
        let params_key = tiercache_derive::params_key(job.recipe, &job.params);
        let stores = Arc::clone(&self.stores);
        self.tasks.spawn(async move {
            if !stores.written_back(output).await {
                tracing::debug!(recipe = record.recipe, %output, "output not written back; no derivation record");
                return;
            }
            match tier.write_derived(&record, &params_key).await {
                Ok(()) => metrics::counter!(RECORDS_WRITTEN).increment(1),
                Err(e) => tracing::debug!(recipe = record.recipe, error = %e, "derivation record not written"),
            }
        });
    }

    /// Brings the queue's gauges up to date (before `/metrics` renders).
    pub(crate) fn publish_metrics(&self) {
        self.queue.publish_metrics();
    }

    /// The queue's and the outputs' figures, for `stats` and `/metrics`.
    pub(crate) async fn stats(&self) -> Result<DeriveStats, Error> {
        let outputs = self.ix.run(|ix| ix.derivation_stats()).await?;
        Ok(self.queue.stats(self.config.workers, outputs))
    }
}

/// A recipe's refusal of a request, as the engine's error.
fn refusal(e: DeriveError) -> Error {
    let fault = match &e {
        DeriveError::Unsupported(_) => RecipeFault::Unsupported,
        DeriveError::NotAvailable(_) => RecipeFault::NotAvailable,
        _ => RecipeFault::BadRequest,
    };
    Error::Recipe { fault, reason: e.to_string() }
}

fn placeholder_of(p: Produced) -> (Bytes, String) {
    (Bytes::from(p.bytes), p.content_type)
}
