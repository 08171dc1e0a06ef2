//! Builds the shared tier's `opendal::Operator` from a URL: the only place that knows backends.
//!
//! `s3://bucket/prefix?endpoint=…&region=…`, `redis://host:port/db`, `fs:///path`, and any other
//! service compiled into OpenDAL by its scheme and query options. Credentials come from the
//! backend's usual places (for S3, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`). Everything
//! after this function is the same for every backend.

use std::time::Duration;

use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};

/// Timeouts and retries wrapped around every call to the shared store.
#[derive(Debug, Clone)]
pub struct StoreLimits {
    /// Limit for a whole non-streaming call (stat, delete, small reads and writes).
    pub timeout: Duration,
    /// Limit for each step of a streaming read or write (one chunk of bytes).
    pub io_timeout: Duration,
    /// Retries of a failed call that the backend calls temporary (0: none).
    pub retries: usize,
    /// Limit for a lookup a reader waits on before its answer (a blob's side object, an entry
    /// record), retries included: past it the read goes on without the shared tier, and the
    /// breaker counts a failure. A dead store (a pool waiting for connections that are refused)
    /// then costs a cold read this long, not `timeout` for every attempt.
    pub lookup_timeout: Duration,
}

impl Default for StoreLimits {
    fn default() -> StoreLimits {
        StoreLimits {
            timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(5),
            retries: 2,
            lookup_timeout: Duration::from_secs(2),
        }
    }
}

/// Builds the Operator for `url`, with the timeout layer inside and the retry layer outside (so
/// each attempt gets its own time limit and a timed-out attempt is retried).
///
/// Fails with a message naming the URL (credentials removed) if the scheme is unknown or the
/// options are invalid. Does not contact the store.
pub(super) fn build(url: &str, limits: &StoreLimits) -> Result<Operator, String> {
    opendal::install_default();
    let op = Operator::from_uri(url).map_err(|e| format!("shared tier {}: {e}", redact(url)))?;
    let retry = RetryLayer::new()
        .with_max_times(limits.retries)
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_millis(500))
        .with_jitter();
    Ok(op.layer(TimeoutLayer::new().with_timeout(limits.timeout).with_io_timeout(limits.io_timeout)).layer(retry))
}

/// `url` without user info or secret-looking query options, for logs and errors.
pub fn redact(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    // User info is what precedes an `@` in the authority (up to the first `/` after `://`).
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            match authority.rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if query.is_empty() {
        return base;
    }
    let query: Vec<String> = query
        .split('&')
        .map(|kv| {
            let k = kv.split_once('=').map_or(kv, |(k, _)| k);
            let lk = k.to_ascii_lowercase();
            if ["secret", "password", "token", "key"].iter().any(|s| lk.contains(s)) && lk != "region" {
                format!("{k}=***")
            } else {
                kv.to_owned()
            }
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_known_schemes_and_refuses_unknown_ones() {
        let limits = StoreLimits::default();
        let dir = tempfile::tempdir().unwrap();
        assert!(build(&format!("fs://{}", dir.path().display()), &limits).is_ok());
        assert!(build("s3://bucket/prefix?endpoint=http://127.0.0.1:1&region=us-east-1", &limits).is_ok());
        assert!(build("redis://127.0.0.1:1/0", &limits).is_ok());
        let e = build("nosuch://x?secret_access_key=hunter2", &limits).unwrap_err();
        assert!(e.contains("nosuch://x?secret_access_key=***"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn redacts_user_info_and_secrets() {
        assert_eq!(redact("redis://user:pw@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(
            redact("s3://b/p?endpoint=http://h:9000&access_key_id=AK&region=r"),
            "s3://b/p?endpoint=http://h:9000&access_key_id=***&region=r"
        );
    }
}
