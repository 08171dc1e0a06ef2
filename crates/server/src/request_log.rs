//! What the listener records of each request: its id (the client's `X-Request-Id` when it is a
//! sane one, else one of ours), the `tracing` span every log line of the request is written in,
//! and, once the answer's body is sent, one access-log line and the request and byte counters.
//!
//! It does not decide what is logged at which level beyond the access line (INFO, target
//! `tiercache::access`); the binary's log filter and format do.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use metrics::Counter;
use tokio::time::Instant;

/// The request id header, read from requests and set on every answer.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-given request id kept; a longer one, or one with other characters than
/// `A-Z a-z 0-9 - _ . :`, is replaced by one of ours (a log line must not carry what a client
/// chooses to put in it).
const MAX_CLIENT_ID_BYTES: usize = 64;

/// Where request ids of this process start: random, so that ids of two runs (or two nodes) do
/// not collide in a shared log.
pub(crate) struct Ids {
    prefix: u32,
    next: AtomicU64,
}

impl Ids {
    pub(crate) fn new() -> Ids {
        Ids { prefix: rand::random::<u32>() & 0x00ff_ffff, next: AtomicU64::new(1) }
    }

    /// The id of a request with `headers`: the client's, if sane, else the next of ours.
    pub(crate) fn of(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(&X_REQUEST_ID)
            && (1..=MAX_CLIENT_ID_BYTES).contains(&v.len())
            && v.as_bytes().iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
        {
            return v.clone();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // Written on the stack, then copied once into the value: this runs for every request.
        let mut buf = [0u8; 6 + 1 + 20];
        let len = {
            let mut w = &mut buf[..];
            write!(w, "{:06x}-{n}", self.prefix).expect("27 bytes hold 6 hex digits, a dash and a u64");
            27 - w.len()
        };
        HeaderValue::from_bytes(&buf[..len]).expect("hex and digits are a valid header value")
    }
}

/// One request, from its arrival to the last byte of its answer.
pub(crate) struct Record {
    pub(crate) started: Instant,
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) id: HeaderValue,
    /// Filled in when the answer is ready.
    pub(crate) status: StatusCode,
    /// The `X-Tiercache-Tier` of the answer, if it has one.
    pub(crate) tier: Option<HeaderValue>,
    /// Body bytes sent so far.
    pub(crate) sent_bytes: u64,
    pub(crate) is_logged: bool,
}

impl Record {
    /// The span a request's log lines are written in.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!("request", id = self.id.to_str().unwrap_or("-"))
    }

    /// Counts the answered request and its bytes in `requests` (by status class) and `sent`, and
    /// writes its access-log line if `is_logged`.
    pub(crate) fn finish(&self, requests: &[Counter; 5], sent: &Counter) {
        let class = usize::from(self.status.as_u16() / 100).clamp(1, 5) - 1;
        requests[class].increment(1);
        sent.increment(self.sent_bytes);
        if self.is_logged {
            tracing::info!(
                target: "tiercache::access",
                request_id = %Plain(self.id.to_str().unwrap_or("-")),
                method = %self.method,
                path = %Plain(self.uri.path()),
                status = self.status.as_u16(),
                bytes = self.sent_bytes,
                tier = %Plain(self.tier.as_ref().and_then(|t| t.to_str().ok()).unwrap_or("-")),
                duration_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
                "request"
            );
        }
    }
}

/// A string as it is when it is plain printable ASCII without quotes or backslashes (as request
/// ids, paths and tiers nearly always are), else quoted and escaped (`{:?}`): a log line never
/// carries a client's control characters, and the common case skips escaping each character,
/// which was most of an access line's cost.
struct Plain<'a>(&'a str);

impl std::fmt::Display for Plain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let is_plain =
            !self.0.is_empty() && self.0.bytes().all(|b| matches!(b, 0x21..=0x7e) && b != b'"' && b != b'\\');
        if is_plain { f.write_str(self.0) } else { write!(f, "{:?}", self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_are_written_as_they_are_and_any_other_quoted_and_escaped() {
        assert_eq!(Plain("/ns/hot/a-b_c.txt").to_string(), "/ns/hot/a-b_c.txt");
        assert_eq!(Plain("/a\"b").to_string(), r#""/a\"b""#);
        assert_eq!(Plain("/é\u{9b}x").to_string(), r#""/é\u{9b}x""#);
        assert_eq!(Plain("a b").to_string(), r#""a b""#);
        assert_eq!(Plain("").to_string(), r#""""#);
    }

    #[test]
    fn a_sane_client_id_is_kept_and_any_other_replaced() {
        let ids = Ids::new();
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_str(v).unwrap());
            ids.of(&h)
        };
        assert_eq!(with("abc-123_x.y:z"), "abc-123_x.y:z");
        for hostile in ["a b", "x\"y", &"a".repeat(65), "%0a"] {
            let got = with(hostile);
            assert_ne!(got, hostile);
            assert!(got.to_str().unwrap().contains('-'), "{got:?}");
        }
        let (a, b) = (ids.of(&HeaderMap::new()), ids.of(&HeaderMap::new()));
        assert_ne!(a, b, "ours are unique");
    }
}
