//! An HTTP(S) base URL as a source: `GET <base>/<key>`, conditional and ranged.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{StatusCode, header};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tiercache_core::{ByteRange, Key, Validators};

use crate::{FetchRequest, Fetched, Source, SourceBody, SourceError, SourceMeta};

/// Characters escaped in a key segment: everything but RFC 3986 unreserved characters and a few
/// sub-delims that servers treat literally.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Limits for HTTP sources.
#[derive(Debug, Clone)]
pub struct HttpSourceConfig {
    /// Longest wait to connect.
    pub connect_timeout: Duration,
    /// Longest wait for response headers or for the next body bytes.
    pub read_timeout: Duration,
}

impl Default for HttpSourceConfig {
    fn default() -> Self {
        HttpSourceConfig { connect_timeout: Duration::from_secs(10), read_timeout: Duration::from_secs(30) }
    }
}

/// An HTTP(S) base URL. Keys are appended as percent-encoded path segments.
#[derive(Debug, Clone)]
pub struct HttpSource {
    base: String,
    client: reqwest::Client,
    config: HttpSourceConfig,
}

impl HttpSource {
    /// A source for `base` (a trailing `/` is added if missing).
    pub fn new(base: &str, config: &HttpSourceConfig) -> Result<HttpSource, String> {
        let parsed = reqwest::Url::parse(base).map_err(|e| format!("invalid source URL {base:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("invalid source URL {base:?}: expected http(s)://host/…"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!("invalid source URL {base:?}: a base URL takes no query or fragment"));
        }
        let mut base = parsed.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            // The cache stores exactly the bytes the source serves; no transparent decompression.
            .no_gzip()
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("tiercache/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(HttpSource { base, client, config: config.clone() })
    }

    /// The URL `key` is fetched from.
    pub fn url_of(&self, key: &Key) -> String {
        let mut url = self.base.clone();
        for (i, seg) in key.segments().enumerate() {
            if i > 0 {
                url.push('/');
            }
            url.extend(utf8_percent_encode(seg, SEGMENT));
        }
        url
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> SourceError {
        if e.is_timeout() {
            SourceError::Timeout { url: url.to_owned(), after: self.config.read_timeout }
        } else if e.is_connect() {
            SourceError::Transport { url: url.to_owned(), reason: format!("cannot connect: {}", root_cause(&e)) }
        } else {
            SourceError::Transport { url: url.to_owned(), reason: root_cause(&e) }
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        msg = format!("{msg}: {inner}");
        cur = inner.source();
    }
    msg
}

fn header_str(h: &http::HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Parses `bytes a-b/total` (total may be `*`).
fn parse_content_range(v: &str) -> Option<(ByteRange, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let r = ByteRange { start: a.trim().parse().ok()?, end: b.trim().parse().ok()? };
    if r.end < r.start {
        return None;
    }
    let total = if total.trim() == "*" { None } else { Some(total.trim().parse().ok()?) };
    Some((r, total))
}

#[async_trait::async_trait]
impl Source for HttpSource {
    fn describe(&self) -> String {
        self.base.clone()
    }

    async fn fetch(&self, key: &Key, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let url = self.url_of(key);
        let mut rb = self.client.get(&url);
        if let Some(r) = req.range {
            rb = rb.header(header::RANGE, format!("bytes={}-{}", r.start, r.end));
        }
        if let Some(Validators { etag, last_modified }) = &req.validators {
            if let Some(etag) = etag {
                rb = rb.header(header::IF_NONE_MATCH, etag.as_str());
            }
            if let Some(lm) = last_modified {
                rb = rb.header(header::IF_MODIFIED_SINCE, lm.as_str());
            }
        }
        if let Some(v) = &req.if_version {
            rb = if_version_headers(rb, v, req.range.is_some());
        }
        let resp = rb.send().await.map_err(|e| self.transport(&url, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let validators = Validators {
            etag: header_str(&headers, header::ETAG),
            last_modified: header_str(&headers, header::LAST_MODIFIED),
        };
        if let Some(v) = &req.if_version
            && (status == StatusCode::PRECONDITION_FAILED || (status.is_success() && !is_same_version(v, &validators)))
        {
            return Err(SourceError::Changed { url });
        }
        let content_type = header_str(&headers, header::CONTENT_TYPE);
        let declared_len = header_str(&headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        let (range, size_bytes, skip_take) = match status {
            StatusCode::NOT_MODIFIED if req.validators.is_some() => return Ok(Fetched::NotModified),
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(SourceError::NotFound { url }),
            StatusCode::OK => match req.range {
                // The source ignored Range: cut the range out of the whole body ourselves.
                Some(r) => (Some(r), declared_len, Some((r.start, r.len()))),
                None => (None, declared_len, None),
            },
            StatusCode::PARTIAL_CONTENT if req.range.is_some() => {
                let asked = req.range.expect("checked above");
                let (got, total) = header_str(&headers, header::CONTENT_RANGE)
                    .as_deref()
                    .and_then(parse_content_range)
                    .filter(|(got, _)| got.start == asked.start && got.end <= asked.end)
                    .ok_or_else(|| SourceError::Protocol {
                        url: url.clone(),
                        reason: "206 without a Content-Range matching the request".into(),
                    })?;
                (Some(got), total, None)
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(SourceError::Status { status: status.as_u16(), url });
            }
            s => return Err(SourceError::Status { status: s.as_u16(), url }),
        };
        let expected = match (skip_take, range) {
            (Some(_), _) => declared_len,
            (None, Some(r)) => Some(r.len()),
            (None, None) => declared_len,
        };
        let meta = SourceMeta { size_bytes, content_type, validators };
        let (this, stream_url) = (self.clone(), url.clone());
        let raw = resp.bytes_stream().map(move |r| r.map_err(|e| this.transport(&stream_url, e)));
        let checked = enforce_length(raw, expected, url);
        let stream = match skip_take {
            None => checked.boxed(),
            Some((skip, take)) => slice_stream(checked, skip, take).boxed(),
        };
        Ok(Fetched::Body(SourceBody { meta, range, stream }))
    }
}

/// Adds the headers that make a request answer only the version `v` names (RFC 9110 §13.1): with
/// a strong ETag `If-Match` (a changed object answers 412) and, for a range, `If-Range` (a source
/// that ignores `If-Match` on a GET answers 200 with the new version instead of a 206 of its
/// bytes); else the same with `Last-Modified` (`If-Unmodified-Since`, `If-Range` with the date).
/// Either answer of a changed object is then refused by [`is_same_version`].
fn if_version_headers(mut rb: reqwest::RequestBuilder, v: &Validators, is_range: bool) -> reqwest::RequestBuilder {
    match (v.etag.as_deref().filter(|e| !e.starts_with("W/")), v.last_modified.as_deref()) {
        (Some(etag), _) => {
            rb = rb.header(header::IF_MATCH, etag);
            if is_range {
                rb = rb.header(header::IF_RANGE, etag);
            }
        }
        (None, Some(lm)) => {
            rb = rb.header(header::IF_UNMODIFIED_SINCE, lm);
            if is_range {
                rb = rb.header(header::IF_RANGE, lm);
            }
        }
        (None, None) => {}
    }
    rb
}

/// Whether an answer with validators `got` is the version `want` names: the same strong ETag,
/// else (without one) the same `Last-Modified`. Nothing to compare is not the same version.
fn is_same_version(want: &Validators, got: &Validators) -> bool {
    match (want.etag.as_deref().filter(|e| !e.starts_with("W/")), &want.last_modified) {
        (Some(etag), _) => got.etag.as_deref() == Some(etag),
        (None, Some(lm)) => got.last_modified.as_ref() == Some(lm),
        (None, None) => false,
    }
}

/// Passes a body through, failing it if it ends before, or runs past, `expected` bytes: a short
/// body is an error, never a smaller blob.
fn enforce_length(
    raw: impl futures::Stream<Item = Result<Bytes, SourceError>> + Send + Unpin + 'static,
    expected: Option<u64>,
    url: String,
) -> impl futures::Stream<Item = Result<Bytes, SourceError>> + Send + 'static {
    futures::stream::unfold((raw, 0u64, false), move |(mut raw, got, done)| {
        let url = url.clone();
        async move {
            if done {
                return None;
            }
            let mismatch = |got| SourceError::LengthMismatch { url, expected: expected.unwrap_or(0), got };
            match raw.next().await {
                Some(Ok(chunk)) => {
                    let got = got + chunk.len() as u64;
                    if expected.is_some_and(|exp| got > exp) {
                        return Some((Err(mismatch(got)), (raw, got, true)));
                    }
                    Some((Ok(chunk), (raw, got, false)))
                }
                Some(Err(e)) => Some((Err(e), (raw, got, true))),
                None if expected.is_some_and(|exp| got != exp) => Some((Err(mismatch(got)), (raw, got, true))),
                None => None,
            }
        }
    })
}

/// Keeps only bytes `skip..skip + take` of a stream.
fn slice_stream(
    inner: impl futures::Stream<Item = Result<Bytes, SourceError>> + Send + 'static,
    skip: u64,
    take: u64,
) -> impl futures::Stream<Item = Result<Bytes, SourceError>> + Send + 'static {
    let mut pos: u64 = 0;
    let end = skip + take;
    inner
        .take_while(move |_| {
            let more = pos < end;
            futures::future::ready(more)
        })
        .filter_map(move |item| {
            let out = match item {
                Err(e) => Some(Err(e)),
                Ok(chunk) => {
                    let (c_start, c_end) = (pos, pos + chunk.len() as u64);
                    pos = c_end;
                    let (a, b) = (c_start.max(skip), c_end.min(end));
                    (a < b).then(|| Ok(chunk.slice((a - c_start) as usize..(b - c_start) as usize)))
                }
            };
            futures::future::ready(out)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_escape_segments_but_keep_slashes() {
        let s = HttpSource::new("http://127.0.0.1:1/base", &HttpSourceConfig::default()).unwrap();
        let k = Key::new("a b/c?d#e/%2e%2e/ü").unwrap();
        assert_eq!(s.url_of(&k), "http://127.0.0.1:1/base/a%20b/c%3Fd%23e/%252e%252e/%C3%BC");
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in ["ftp://x/", "http://", "not a url", "http://x/?q=1"] {
            assert!(HttpSource::new(bad, &HttpSourceConfig::default()).is_err(), "{bad}");
        }
    }

    /// The read timeout covers the wait for headers, not only for body bytes: a source that
    /// accepts the connection and never answers times out at the read timeout.
    #[tokio::test]
    async fn a_source_that_never_answers_headers_times_out() {
        let src = tiercache_testkit::Source::start().await;
        src.set_behavior("hang", tiercache_testkit::Behavior::Hang);
        let config =
            HttpSourceConfig { connect_timeout: Duration::from_secs(3600), read_timeout: Duration::from_millis(200) };
        let s = HttpSource::new(&src.url(), &config).unwrap();
        let e = s.fetch(&Key::new("hang").unwrap(), &FetchRequest::default()).await.unwrap_err();
        assert!(e.is_timeout(), "{e:?}");
    }

    /// A request for one version gets that version's bytes, or `Changed`: from a 412, and from a
    /// source that ignores the preconditions and answers the new version.
    #[tokio::test]
    async fn a_request_for_one_version_never_gets_another() {
        let src = tiercache_testkit::Source::start().await;
        src.put("o", tiercache_testkit::bytes(1, 1000));
        let v1 = Validators { etag: src.etag("o"), last_modified: None };
        let s = HttpSource::new(&src.url(), &HttpSourceConfig::default()).unwrap();
        let key = Key::new("o").unwrap();
        let range = Some(ByteRange { start: 10, end: 19 });
        let req = FetchRequest { range, if_version: Some(v1.clone()), ..FetchRequest::default() };
        assert!(matches!(s.fetch(&key, &req).await, Ok(Fetched::Body(b)) if b.range == range));
        src.put("o", tiercache_testkit::bytes(2, 1000));
        let e = s.fetch(&key, &req).await.unwrap_err();
        assert!(matches!(e, SourceError::Changed { .. }), "412: {e:?}");
        let by_date = Validators { etag: None, last_modified: Some("Tue, 14 Nov 2023 22:13:20 GMT".into()) };
        let req = FetchRequest { range, if_version: Some(by_date), ..FetchRequest::default() };
        let e = s.fetch(&key, &req).await.unwrap_err();
        assert!(matches!(e, SourceError::Changed { .. }), "by date: {e:?}");
        let last = src.requests("o").pop().unwrap();
        assert!(last.contains_key("if-unmodified-since") && last.contains_key("if-range"), "{last:?}");
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((ByteRange { start: 0, end: 9 }, Some(100))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((ByteRange { start: 5, end: 9 }, None)));
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
