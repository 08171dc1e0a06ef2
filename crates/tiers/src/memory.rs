//! The memory tier: a bounded, in-process map from keys to values with a time to live, built on
//! `moka::future::Cache`.
//!
//! It owns: the byte bound (each entry weighed by a caller-given weigher, least valuable entries
//! evicted first), expiry (a TTL per entry, at most the configured one, measured on tokio's clock
//! so that tests can pause and advance time), single flight ([`MemoryTier::get_or_insert_with`]
//! runs one initialisation per missing key however many callers wait for it), and its counters
//! ([`MemoryStats`] and the [`metric`] names).
//!
//! It does not know what it holds: the engine keeps small hot blobs in one (`bytes::Bytes`,
//! weighed by [`weigh_bytes`]) and index lookups in another. It does not verify, persist, or talk
//! to the other tiers, and it never fails: a miss is `None`.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use tokio::time::Instant;

use crate::striped::StripedCounter;

/// The names of the memory tier's metrics; each carries the label `cache` (the tier's name). The
/// counts reach them when [`MemoryTier::publish_metrics`](super::MemoryTier::publish_metrics) runs.
pub mod metric {
    /// Lookups that found a live value.
    pub const HITS: &str = "tiercache_memory_hits_total";
    /// Lookups that found nothing, or an expired value.
    pub const MISSES: &str = "tiercache_memory_misses_total";
    /// Entries removed because the tier was full or because they expired.
    pub const EVICTIONS: &str = "tiercache_memory_evictions_total";
}

/// The longest configured TTL; longer ones are cut to it (moka refuses more than 1000 years, and
/// `Instant + Duration::MAX` overflows).
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// How a memory tier behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// False turns the tier off (the `--no-cache` setting): nothing is kept, see [`MemoryTier`].
    pub is_enabled: bool,
    /// The TTL of an entry put without its own, and the longest any entry is kept: moka drops every
    /// entry this long after its last write (in real time, to free the memory), so a longer
    /// per-entry TTL is cut to it. A zero TTL keeps nothing: every entry is expired on arrival.
    pub ttl: Duration,
    /// The bound on the sum of the entries' weights (bytes, for a byte weigher).
    pub max_bytes: u64,
}

impl Default for MemoryConfig {
    /// Enabled, a TTL of 300 s, 64 MiB.
    fn default() -> Self {
        Self { is_enabled: true, ttl: Duration::from_secs(300), max_bytes: 64 << 20 }
    }
}

/// A snapshot of a memory tier's size and counters.
///
/// `entries` and `bytes` come from moka, which applies inserts and evictions in batches: they (and
/// `evictions`) lag behind until its pending work runs, which [`MemoryTier::run_pending_tasks`]
/// forces. `hits` and `misses` are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Whether the tier keeps anything ([`MemoryConfig::is_enabled`]).
    pub is_enabled: bool,
    /// Entries held, expired ones included until they are removed.
    pub entries: u64,
    /// The sum of the held entries' weights.
    pub bytes: u64,
    /// The bound on `bytes` ([`MemoryConfig::max_bytes`]).
    pub max_bytes: u64,
    /// The default TTL ([`MemoryConfig::ttl`]).
    pub ttl: Duration,
    /// Lookups that found a live value.
    pub hits: u64,
    /// Lookups that found nothing or an expired value.
    pub misses: u64,
    /// Entries removed because the tier was full or because they expired; explicit deletes,
    /// [`MemoryTier::clear`] and replacements are not evictions.
    pub evictions: u64,
}

/// The weigher for byte values: their length (saturated at `u32::MAX`).
pub fn weigh_bytes<K>(_key: &K, value: &Bytes) -> u32 {
    u32::try_from(value.len()).unwrap_or(u32::MAX)
}

/// A bounded in-memory cache with a TTL per entry. Cheap to clone: clones share the entries.
///
/// When disabled ([`MemoryConfig::is_enabled`] false), the tier keeps nothing and counts nothing:
/// [`get`](Self::get) returns `None`, [`put`](Self::put) drops the value, and
/// [`get_or_insert_with`](Self::get_or_insert_with) runs its `init` on every call.
///
/// The counts reach the `metrics` recorder installed when
/// [`publish_metrics`](Self::publish_metrics) runs, whenever the tier was made.
pub struct MemoryTier<K, V> {
    inner: Arc<Inner<K, V>>,
}

struct Inner<K, V> {
    name: &'static str,
    /// `None` when the tier is disabled.
    cache: Option<MokaCache<K, V>>,
    /// The default and longest TTL, already cut to [`MAX_TTL`]; also moka's `time_to_live`.
    ttl: Duration,
    max_bytes: u64,
    /// Shared with moka's eviction listener.
    counters: Arc<Counters>,
}

/// moka's cache as a tier holds it: foldhash rather than SipHash for its keys (seeded per
/// process, so keys chosen by clients cannot be made to collide on purpose).
type MokaCache<K, V> = Cache<K, Stored<V>, foldhash::quality::RandomState>;

/// A value with its deadline.
#[derive(Clone)]
struct Stored<V> {
    value: V,
    /// Invariant: `expires_at` is the tokio time at insertion plus the entry's TTL, which is at
    /// most moka's `time_to_live`. The value is live while `Instant::now() < expires_at`; this
    /// check, not moka's expiry, decides what `get` returns, so that paused tokio time governs it.
    /// moka's expiry (in real time, never earlier than this one outside paused time) only frees
    /// the memory of entries nobody asks for.
    expires_at: Instant,
}

impl<V> Stored<V> {
    fn new(value: V, ttl: Duration) -> Self {
        Self { value, expires_at: Instant::now() + ttl }
    }

    fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// Exact counts, kept per thread (every lookup counts one) and handed on to their metrics by
/// [`MemoryTier::publish_metrics`].
#[derive(Default)]
struct Counters {
    hits: StripedCounter,
    misses: StripedCounter,
    evictions: StripedCounter,
}

impl<K, V> Clone for MemoryTier<K, V> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<K, V> fmt::Debug for MemoryTier<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTier")
            .field("name", &self.inner.name)
            .field("is_enabled", &self.inner.cache.is_some())
            .field("ttl", &self.inner.ttl)
            .field("max_bytes", &self.inner.max_bytes)
            .finish_non_exhaustive()
    }
}

impl<K, V> MemoryTier<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A tier named `name` (the `cache` label of its metrics), holding at most `config.max_bytes`
    /// of weight, an entry weighing `weigher(key, value)`.
    ///
    /// A weight of 0 counts as 1, so that every entry counts against the bound.
    pub fn new(name: &'static str, config: &MemoryConfig, weigher: fn(&K, &V) -> u32) -> Self {
        let counters = Arc::new(Counters::default());
        let ttl = config.ttl.min(MAX_TTL);
        let cache = config.is_enabled.then(|| {
            let listener_counters = Arc::clone(&counters);
            Cache::builder()
                .name(name)
                .max_capacity(config.max_bytes)
                .weigher(move |key: &K, stored: &Stored<V>| weigher(key, &stored.value).max(1))
                .time_to_live(ttl)
                .eviction_listener(move |_key, _value, cause: RemovalCause| {
                    // `Expired` and `Size` only; an expired value that `get` removes itself is
                    // counted there, as its removal here reads as `Explicit`.
                    if cause.was_evicted() {
                        listener_counters.evictions.add(1);
                    }
                })
                .build_with_hasher(foldhash::quality::RandomState::default())
        });
        let inner = Inner { name, cache, ttl, max_bytes: config.max_bytes, counters };
        Self { inner: Arc::new(inner) }
    }

    /// The value under `key`, if there is one and its TTL has not passed on tokio's clock.
    ///
    /// Counts a hit or a miss. An expired value found here is removed and counted as an eviction.
    /// Always `None` when the tier is disabled (and then counts nothing).
    pub async fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let cache = self.inner.cache.as_ref()?;
        let found = self.lookup(cache, key).await;
        match found {
            Some(_) => self.inner.counters.hits.add(1),
            None => self.inner.counters.misses.add(1),
        }
        found
    }

    /// Keeps `value` under `key` for the default TTL, replacing any value there. A no-op when the
    /// tier is disabled.
    pub async fn put(&self, key: K, value: V) {
        self.put_with_ttl(key, value, Duration::ZERO).await;
    }

    /// Keeps `value` under `key` for `ttl`, replacing any value there. `Duration::ZERO`, or a TTL
    /// longer than the default, means the default TTL ([`MemoryConfig::ttl`]). A no-op when the
    /// tier is disabled.
    pub async fn put_with_ttl(&self, key: K, value: V, ttl: Duration) {
        if let Some(cache) = &self.inner.cache {
            cache.insert(key, Stored::new(value, self.entry_ttl(ttl))).await;
        }
    }

    /// Removes the value under `key`, if any. Not counted as an eviction.
    pub async fn delete(&self, key: &K) {
        if let Some(cache) = &self.inner.cache {
            cache.invalidate(key).await;
        }
    }

    /// Removes every value. `get` stops seeing them at once; [`MemoryStats::entries`] and
    /// [`MemoryStats::bytes`] drop when moka's pending work runs. Not counted as evictions.
    pub fn clear(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.invalidate_all();
        }
    }

    /// The live value under `key`, or else the value `init` makes, kept for `ttl` (as in
    /// [`put_with_ttl`](Self::put_with_ttl)): a read-through, like a `@cached(ttl=…)` decorator.
    ///
    /// Single flight: while one caller's `init` runs for a missing key, other callers for that key
    /// wait for it and get its value, and their own `init` never runs. An error is not kept: every
    /// caller waiting on the failed `init` gets the same `Arc<E>`, and the next call runs its
    /// `init` again. Counts a hit when the value was there, else a miss (waiters included).
    /// When the tier is disabled, runs `init` on every call and counts nothing.
    pub async fn get_or_insert_with<F, Fut, E>(&self, key: K, ttl: Duration, init: F) -> Result<V, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let Some(cache) = &self.inner.cache else {
            return init().await.map_err(Arc::new);
        };
        // The fast path first: it also removes an expired value, which `or_try_insert_with` would
        // otherwise return as if it were live.
        if let Some(value) = self.lookup(cache, &key).await {
            self.inner.counters.hits.add(1);
            return Ok(value);
        }
        self.inner.counters.misses.add(1);
        let ttl = self.entry_ttl(ttl);
        let entry = cache
            .entry(key)
            .or_try_insert_with(async move {
                let value = init().await?;
                // The deadline counts from when the value exists, not from when it was asked for.
                Ok(Stored::new(value, ttl))
            })
            .await?;
        Ok(entry.into_value().value)
    }

    /// Brings the metrics ([`metric`]) up to the counts: they are counted per thread and handed
    /// on here, not on every lookup. Call before the metrics are read.
    ///
    /// The handles are looked up here, not kept: one taken before a recorder is installed (by a
    /// tier made before the server starts) would count nowhere, ever.
    pub fn publish_metrics(&self) {
        let (name, c) = (self.inner.name, &self.inner.counters);
        c.hits.publish(&metrics::counter!(metric::HITS, "cache" => name));
        c.misses.publish(&metrics::counter!(metric::MISSES, "cache" => name));
        c.evictions.publish(&metrics::counter!(metric::EVICTIONS, "cache" => name));
    }

    /// The tier's size and counters; see [`MemoryStats`] for which numbers may lag.
    pub fn stats(&self) -> MemoryStats {
        let inner = &*self.inner;
        let (entries, bytes) = inner.cache.as_ref().map_or((0, 0), |c| (c.entry_count(), c.weighted_size()));
        MemoryStats {
            is_enabled: inner.cache.is_some(),
            entries,
            bytes,
            max_bytes: inner.max_bytes,
            ttl: inner.ttl,
            hits: inner.counters.hits.get(),
            misses: inner.counters.misses.get(),
            evictions: inner.counters.evictions.get(),
        }
    }

    /// Runs moka's pending work now (applying recent writes, evicting down to the bound, removing
    /// expired entries), so that [`stats`](Self::stats) is up to date. moka also does this on its
    /// own as the tier is used; callers need it only for exact figures, as tests do.
    pub async fn run_pending_tasks(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.run_pending_tasks().await;
        }
    }

    /// The live value under `key`, uncounted. An expired value is removed (and counted as an
    /// eviction) unless a live one replaced it meanwhile.
    async fn lookup<Q>(&self, cache: &MokaCache<K, V>, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        // The hit path: one moka read, one clock read, one compare.
        let stored = cache.get(key).await?;
        let now = Instant::now();
        if stored.is_live(now) {
            return Some(stored.value);
        }
        // Boxed: this rare path's future would otherwise make every lookup's future larger.
        let removed = Box::pin(cache.entry_by_ref(key).and_compute_with(|current| {
            let op = match current {
                Some(entry) if !entry.value().is_live(now) => Op::Remove,
                _ => Op::Nop,
            };
            std::future::ready(op)
        }))
        .await;
        if matches!(removed, CompResult::Removed(_)) {
            self.inner.counters.evictions.add(1);
        }
        None
    }

    /// An entry's TTL: the one asked for, unless it is zero or longer than moka's `time_to_live`.
    fn entry_ttl(&self, ttl: Duration) -> Duration {
        if ttl.is_zero() { self.inner.ttl } else { ttl.min(self.inner.ttl) }
    }
}
