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
