//! What the S3 front door counts, each count both a metric (`/metrics`) and the engine's kept
//! counter of the same meaning (`tiercache stats`, summed over every process):
//!
//! | metric | kept counter |
//! |---|---|
//! | `tiercache_s3_requests_total{op}` | `s3.requests.<op>` |
//! | `tiercache_s3_errors_total{code}` | `s3.errors.<code>` |
//! | `tiercache_s3_bytes_total{direction="in"}` / `{direction="out"}` | `s3.bytes_in` / `s3.bytes_out` |

use tiercache_engine::{KeptCounter, kept_counter};

/// One request for S3 operation `op` (s3s's name for it: `GetObject`).
pub(crate) fn request(op: &str) {
    metrics::counter!("tiercache_s3_requests_total", "op" => op.to_owned()).increment(1);
    kept_counter(&format!("s3.requests.{op}")).increment(1);
}

/// One error answer with S3 code `code` (a short ASCII word).
pub(crate) fn error(code: &str) {
    metrics::counter!("tiercache_s3_errors_total", "code" => code.to_owned()).increment(1);
    kept_counter(&format!("s3.errors.{code}")).increment(1);
}

/// Body bytes one way: looked up once, incremented per chunk.
#[derive(Clone)]
pub(crate) struct ByteCount {
    metric: metrics::Counter,
    kept: KeptCounter,
}

impl ByteCount {
    pub(crate) fn increment(&self, n: u64) {
        self.metric.increment(n);
        self.kept.increment(n);
    }
}

/// Upload bodies' bytes as they come in.
pub(crate) fn bytes_in() -> ByteCount {
    ByteCount {
        metric: metrics::counter!("tiercache_s3_bytes_total", "direction" => "in"),
        kept: kept_counter("s3.bytes_in"),
    }
}

/// Object bytes as they go out.
pub(crate) fn bytes_out() -> ByteCount {
    ByteCount {
        metric: metrics::counter!("tiercache_s3_bytes_total", "direction" => "out"),
        kept: kept_counter("s3.bytes_out"),
    }
}
