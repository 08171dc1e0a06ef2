//! Metric names, in one place, so the dashboard and the code agree (layer 0); the counters every
//! read touches; [`served`], which logs and counts one read; and [`Notes`], what opening a data
//! directory found and did.

use std::sync::Mutex;
use std::time::Instant;

use tiercache_tiers::StripedCounter;

use crate::meta::Tier;

/// Reads served, by `tier` (`memory`, `disk`, `source`) and `outcome` (`hit`, `miss`, `fetch`,
/// `coalesced`). Memory-tier hits reach it (and their bytes [`READ_BYTES`]) when
/// `Cache::publish_metrics` runs: at every access flush, and before the server renders `/metrics`.
pub(crate) const READS: &str = "tiercache_reads_total";
/// Body bytes served, by `tier`.
pub(crate) const READ_BYTES: &str = "tiercache_read_bytes_total";
/// Source requests, by `result` (`ok`, `not_modified`, `error`, `range`).
pub(crate) const SOURCE_FETCHES: &str = "tiercache_source_fetches_total";
/// Stored entries served because their source could not be asked (a key whose policy allows it).
pub(crate) const STALE_SERVED: &str = "tiercache_stale_served_total";
/// Readers that joined a fetch already under way instead of starting one.
pub(crate) const COALESCED: &str = "tiercache_coalesced_waiters_total";
/// Source fetches running now.
pub(crate) const INFLIGHT: &str = "tiercache_inflight_fetches";
/// Errors, by `kind` ([`crate::Error::kind`]).
pub(crate) const ERRORS: &str = "tiercache_errors_total";
/// Time to resolve a read (first byte ready), by `tier`. Memory-tier hits are sampled, one in
/// [`MEMORY_HIT_SAMPLING`] (per thread): the quantiles hold, the count is that much lower (count
/// hits with [`READS`]).
pub(crate) const READ_SECONDS: &str = "tiercache_read_seconds";
/// One memory-tier hit in this many is timed in [`READ_SECONDS`]: timing every one would cost a
/// hit a good part of what it costs to answer.
pub(crate) const MEMORY_HIT_SAMPLING: u32 = 64;

/// Whether to time this memory-tier hit (see [`MEMORY_HIT_SAMPLING`]).
pub(crate) fn sample_memory_hit() -> bool {
    thread_local! {
        static N: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    N.with(|n| {
        let next = n.get().wrapping_add(1);
        n.set(next);
        next % MEMORY_HIT_SAMPLING == 1
    })
}
/// Blobs stored in the disk tier, by `origin` (`fetch`, `upload`).
pub(crate) const BLOBS_STORED: &str = "tiercache_blobs_stored_total";
/// Blobs evicted from the disk tier, and their bytes.
pub(crate) const EVICTED_BLOBS: &str = "tiercache_disk_evicted_blobs_total";
/// Bytes evicted from the disk tier.
pub(crate) const EVICTED_BYTES: &str = "tiercache_disk_evicted_bytes_total";
/// Reads served from the source without storing the blob, because the disk quota had no room.
pub(crate) const PASS_THROUGH: &str = "tiercache_disk_pass_through_total";
/// Blobs evicted within `protect_new` of being stored, because a write found nothing else to evict.
pub(crate) const EVICTED_NEW_BLOBS: &str = "tiercache_disk_evicted_new_blobs_total";
/// Bytes of the disk tier in use and reserved, as this process accounts them; and the quota.
pub(crate) const DISK_USED_BYTES: &str = "tiercache_disk_used_bytes";
/// The disk quota in bytes (absent without one).
pub(crate) const DISK_QUOTA_BYTES: &str = "tiercache_disk_quota_bytes";
/// The memory tier: on (1) or off (0), its TTL, and the bytes and values (blobs, namespaces,
/// entries) it holds.
pub(crate) const MEMORY_ENABLED: &str = "tiercache_memory_enabled";
pub(crate) const MEMORY_TTL_SECONDS: &str = "tiercache_memory_ttl_seconds";
pub(crate) const MEMORY_BYTES: &str = "tiercache_memory_bytes";
pub(crate) const MEMORY_ENTRIES: &str = "tiercache_memory_entries";
/// What pruner passes removed, by `kind` (`orphan`, `temp`, `lock`, `age`, `limit`, `owner`).
pub(crate) const PRUNED: &str = "tiercache_pruned_total";

pub(crate) fn error(e: &crate::Error) {
    metrics::counter!(ERRORS, "kind" => e.kind()).increment(1);
}

/// Handles for the metrics every hit of a local tier (memory, disk) touches, registered on first
/// use: looking a metric up by name and labels costs more than incrementing it, on a small hit. The
/// recorder must be installed before the first read (the server installs it before it listens).
pub(crate) struct HitMetrics {
    pub(crate) hits: metrics::Counter,
    pub(crate) bytes: metrics::Counter,
    pub(crate) seconds: metrics::Histogram,
}

/// The hit handles of `tier`, if it is a local tier (the others are looked up per read).
pub(crate) fn hit(tier: Tier) -> Option<&'static HitMetrics> {
    fn handles(name: &'static str) -> HitMetrics {
        HitMetrics {
            hits: metrics::counter!(READS, "tier" => name, "outcome" => "hit"),
            bytes: metrics::counter!(READ_BYTES, "tier" => name),
            seconds: metrics::histogram!(READ_SECONDS, "tier" => name),
        }
    }
    static DISK: std::sync::OnceLock<HitMetrics> = std::sync::OnceLock::new();
    static MEMORY: std::sync::OnceLock<HitMetrics> = std::sync::OnceLock::new();
    match tier {
        Tier::Disk => Some(DISK.get_or_init(|| handles("disk"))),
        Tier::Memory => Some(MEMORY.get_or_init(|| handles("memory"))),
        Tier::Shared | Tier::Source => None,
    }
}

/// Memory-tier hits and their body bytes, counted per thread: a memory-tier hit costs little
/// enough that two threads incrementing one shared counter on every hit would cost it a good part
/// more. [`publish`] hands them on to [`READS`] and [`READ_BYTES`].
static MEMORY_HITS: StripedCounter = StripedCounter::new();
static MEMORY_HIT_BYTES: StripedCounter = StripedCounter::new();
/// Directory files read in place the short way (`Directories::read_held`), and the body bytes of
/// reads served by the source tier (directory files, fetches), counted per thread for the same
/// reason.
static HELD_FILE_READS: StripedCounter = StripedCounter::new();
static SOURCE_BYTES: StripedCounter = StripedCounter::new();

/// Counts one hit of `tier` (a local tier).
pub(crate) fn count_hit(tier: Tier, m: &HitMetrics) {
    match tier {
        Tier::Memory => MEMORY_HITS.add(1),
        _ => m.hits.increment(1),
    }
}

/// Counts body bytes served from `tier`.
pub(crate) fn read_bytes(tier: Tier, n: u64) {
    match (tier, hit(tier)) {
        (Tier::Memory, _) => MEMORY_HIT_BYTES.add(n),
        (Tier::Source, _) => SOURCE_BYTES.add(n),
        (_, Some(m)) => m.bytes.increment(n),
        (_, None) => metrics::counter!(READ_BYTES, "tier" => tier.as_str()).increment(n),
    }
}

/// Brings [`READS`] and [`READ_BYTES`] of the memory tier up to the counts kept per thread. The
/// handles are looked up here, not taken from [`hit`]: this runs before the first read too (at
/// the first access flush), maybe before a recorder is installed, and a handle taken then would
/// count nowhere, ever.
pub(crate) fn publish() {
    MEMORY_HITS.publish(&metrics::counter!(READS, "tier" => "memory", "outcome" => "hit"));
    MEMORY_HIT_BYTES.publish(&metrics::counter!(READ_BYTES, "tier" => "memory"));
    HELD_FILE_READS.publish(&metrics::counter!(READS, "tier" => "source", "outcome" => "in_place"));
    SOURCE_BYTES.publish(&metrics::counter!(READ_BYTES, "tier" => "source"));
}

/// Logs and counts one read of a directory's file held by the memory tier, served from `tier`
/// (the file itself, as `source`, or its copy in the disk tier), timed one in
/// [`MEMORY_HIT_SAMPLING`] as memory-tier hits are.
pub(crate) fn served_held_file(tier: Tier, t0: Instant, what: impl FnOnce() -> String) {
    match hit(tier) {
        Some(m) => m.hits.increment(1),
        None => HELD_FILE_READS.add(1),
    }
    if sample_memory_hit() {
        metrics::histogram!(READ_SECONDS, "tier" => tier.as_str()).record(t0.elapsed().as_secs_f64());
    }
    tracing::debug!(tier = tier.as_str(), outcome = "held", what = %what(), "read");
}

/// Logs and counts one read: which tier served it, how, the bytes and the time.
pub(crate) fn served(tier: Tier, outcome: &'static str, t0: Instant, bytes: u64, what: impl FnOnce() -> String) {
    let tier_name = tier.as_str();
    if let (Some(m), "hit") = (hit(tier), outcome) {
        count_hit(tier, m);
        if tier != Tier::Memory || sample_memory_hit() {
            m.seconds.record(t0.elapsed().as_secs_f64());
        }
    } else {
        metrics::counter!(READS, "tier" => tier_name, "outcome" => outcome).increment(1);
        metrics::histogram!(READ_SECONDS, "tier" => tier_name).record(t0.elapsed().as_secs_f64());
    }
    tracing::debug!(tier = tier_name, outcome, bytes, elapsed_us = t0.elapsed().as_micros() as u64, what = %what(), "read");
}

/// What opening a data directory found and did, in sentences (an index moved aside, read caches
/// reset and why), for the front doors to show.
#[derive(Default)]
pub(crate) struct Notes(Mutex<Vec<String>>);

impl Notes {
    /// Logs `note` as a warning and keeps it.
    pub(crate) fn add(&self, note: String) {
        tracing::warn!("{note}");
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(note);
    }

    pub(crate) fn all(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
