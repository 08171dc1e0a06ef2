//! Metric names, in one place, so the dashboard and the code agree.

/// Reads served, by `tier` (`disk`, `source`) and `outcome` (`hit`, `miss`, `fetch`, `coalesced`).
pub(crate) const READS: &str = "tiercache_reads_total";
/// Body bytes served, by `tier`.
pub(crate) const READ_BYTES: &str = "tiercache_read_bytes_total";
/// Source requests, by `result` (`ok`, `not_modified`, `error`, `range`).
pub(crate) const SOURCE_FETCHES: &str = "tiercache_source_fetches_total";
/// Readers that joined a fetch already under way instead of starting one.
pub(crate) const COALESCED: &str = "tiercache_coalesced_waiters_total";
/// Source fetches running now.
pub(crate) const INFLIGHT: &str = "tiercache_inflight_fetches";
/// Errors, by `kind` ([`crate::Error::kind`]).
pub(crate) const ERRORS: &str = "tiercache_errors_total";
/// Time to resolve a read (first byte ready), by `tier`.
pub(crate) const READ_SECONDS: &str = "tiercache_read_seconds";
/// Blobs stored in the disk tier, by `origin` (`fetch`, `upload`).
pub(crate) const BLOBS_STORED: &str = "tiercache_blobs_stored_total";

pub(crate) fn error(e: &crate::Error) {
    metrics::counter!(ERRORS, "kind" => e.kind()).increment(1);
}

/// Handles for the metrics every disk hit touches, registered on first use: looking a metric up by
/// name and labels costs more than incrementing it, on a small hit. The recorder must be installed
/// before the first read (the server installs it before it listens).
pub(crate) struct DiskHitMetrics {
    pub(crate) hits: metrics::Counter,
    pub(crate) bytes: metrics::Counter,
    pub(crate) seconds: metrics::Histogram,
}

pub(crate) fn disk_hit() -> &'static DiskHitMetrics {
    static HANDLES: std::sync::OnceLock<DiskHitMetrics> = std::sync::OnceLock::new();
    HANDLES.get_or_init(|| DiskHitMetrics {
        hits: metrics::counter!(READS, "tier" => "disk", "outcome" => "hit"),
        bytes: metrics::counter!(READ_BYTES, "tier" => "disk"),
        seconds: metrics::histogram!(READ_SECONDS, "tier" => "disk"),
    })
}

/// Counts body bytes served from `tier`.
pub(crate) fn read_bytes(tier: crate::Tier, n: u64) {
    match tier {
        crate::Tier::Disk => disk_hit().bytes.increment(n),
        other => metrics::counter!(READ_BYTES, "tier" => other.as_str()).increment(n),
    }
}
