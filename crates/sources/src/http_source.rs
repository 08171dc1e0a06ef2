//! An HTTP(S) base URL as a source: `GET <base>/<key>`, conditional and ranged, and `HEAD`.
//!
//! Credentials in the base URL (`user:pass@`) are taken out of it once and sent as basic
//! authentication, so that no URL this source builds, logs or puts in an error carries them; the
//! client drops them on a redirect to another host. Which redirects are followed and which
//! addresses may be reached is `http_source/reach.rs`'s business. Sources are asked for their
//! bytes as they are (`Accept-Encoding: identity`); a `Content-Encoding` sent anyway is reported in
//! [`SourceMeta`], never decoded.

mod reach;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{StatusCode, header};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tiercache_core::{ByteRange, Key, Validators};

use crate::{FetchRequest, Fetched, Source, SourceBody, SourceError, SourceMeta};
use reach::RedirectRefused;
pub(crate) use reach::{AddressPolicy, AddressRefused, FilteringResolver};
pub use reach::{AddressRange, Redirects};

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
    /// Which redirects are followed (at most 5 in a row).
    pub redirects: Redirects,
    /// Link-local and metadata addresses sources may reach all the same (none by default).
    pub allowed_addresses: Vec<AddressRange>,
    /// How long a registry source's manifests by tag and tag lists stay fresh before they are
    /// revalidated ([`crate::oci::DEFAULT_TAG_TTL`] by default).
    pub oci_tag_ttl: Duration,
}

impl Default for HttpSourceConfig {
    fn default() -> Self {
        HttpSourceConfig {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            redirects: Redirects::default(),
            allowed_addresses: Vec::new(),
            oci_tag_ttl: crate::oci::DEFAULT_TAG_TTL,
        }
    }
}

/// An HTTP(S) base URL. Keys are appended as percent-encoded path segments.
#[derive(Clone)]
pub struct HttpSource {
    /// The base URL without credentials: what requests go to.
    base: String,
    /// The base URL as shown: credentials replaced by `***`.
    shown: String,
    /// User and password from the base URL, percent-decoded, sent as basic authentication.
    credentials: Option<(String, Option<String>)>,
    client: reqwest::Client,
    config: HttpSourceConfig,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource").field("base", &self.shown).finish_non_exhaustive()
    }
}

impl HttpSource {
    /// A source for `base` (a trailing `/` is added if missing). Refused: anything but an
    /// `http(s)://host/…` URL without query or fragment, and a host at a link-local or metadata
    /// address (written literally, or a metadata service's name) not in
    /// `config.allowed_addresses`. Messages show the URL with its credentials redacted.
    pub fn new(base: &str, config: &HttpSourceConfig) -> Result<HttpSource, String> {
        let shown_arg = tiercache_core::redact_url(base);
        let mut parsed = reqwest::Url::parse(base).map_err(|e| format!("invalid source URL {shown_arg:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("invalid source URL {shown_arg:?}: expected http(s)://host/…"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!("invalid source URL {shown_arg:?}: a base URL takes no query or fragment"));
        }
        let addresses = Arc::new(AddressPolicy::new(&config.allowed_addresses));
        addresses.check_url(&parsed).map_err(|e| {
            format!("source URL {shown_arg:?} refused: {e}; allow it with --allow-source-address if it is meant")
        })?;
        let credentials = take_credentials(&mut parsed);
        let mut base = parsed.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let shown = match &credentials {
            Some((_, password)) => {
                let userinfo = if password.is_some() { "***:***@" } else { "***@" };
                let (scheme, rest) = base.split_at(parsed.scheme().len() + 3);
                format!("{scheme}{userinfo}{rest}")
            }
            None => base.clone(),
        };
        let client = build_client(config, addresses)?;
        Ok(HttpSource { base, shown, credentials, client, config: config.clone() })
    }

    /// The same as [`HttpSource::new`], with `extra` refused besides the built-in ranges.
    #[cfg(test)]
    fn refusing(base: &str, config: &HttpSourceConfig, extra: &[&str]) -> HttpSource {
        let mut s = HttpSource::new(base, config).unwrap();
        let addresses = Arc::new(AddressPolicy::new(&config.allowed_addresses).also_refusing(extra));
        s.client = build_client(config, addresses).unwrap();
        s
    }

    /// The URL `key` is fetched from (without the base URL's credentials, which go in a header).
    pub fn url_of(&self, key: &Key) -> String {
        format!("{}{}", self.base, path_of(key))
    }

    /// The URL of `key` as logs and errors show it: credentials redacted.
    fn shown_url_of(&self, key: &Key) -> String {
        format!("{}{}", self.shown, path_of(key))
    }

    /// A request for `key`: its method, basic authentication if the base URL had credentials,
    /// and `Accept-Encoding: identity` (tiercache keeps the bytes the source serves, and serves
    /// them as they are).
    fn request(&self, method: reqwest::Method, key: &Key) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, self.url_of(key)).header(header::ACCEPT_ENCODING, "identity");
        match &self.credentials {
            Some((user, password)) => rb.basic_auth(user, password.as_deref()),
            None => rb,
        }
    }

    /// Sends `rb`; a failure becomes the [`SourceError`] that says why.
    async fn send(&self, rb: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, SourceError> {
        rb.send().await.map_err(|e| self.transport(url, e))
    }

    fn transport(&self, url: &str, e: reqwest::Error) -> SourceError {
        transport_error(url, e, self.config.read_timeout)
    }
}

/// What a failed request is as a [`SourceError`]: a refusal by the redirect policy or the
/// resolver's filter, a timeout (of `read_timeout`), a failed connection, or another transport
/// failure. `url` is the one to show (credentials redacted).
pub(crate) fn transport_error(url: &str, e: reqwest::Error, read_timeout: Duration) -> SourceError {
    let url = url.to_owned();
    // A refusal by the redirect policy or the resolver's filter comes back as the cause of a
    // redirect or connect error.
    if let Some(r) = cause_of::<RedirectRefused>(&e) {
        return SourceError::Redirect { url, reason: r.to_string() };
    }
    if let Some(r) = cause_of::<AddressRefused>(&e) {
        return SourceError::AddressRefused {
            url,
            reason: format!("{r}; allow it with --allow-source-address if it is meant"),
        };
    }
    // reqwest's own message names the URL: the caller's (credentials redacted) is enough.
    let e = e.without_url();
    if e.is_timeout() {
        SourceError::Timeout { url, after: read_timeout }
    } else if e.is_connect() {
        SourceError::Transport { url, reason: format!("cannot connect: {}", root_cause(&e)) }
    } else {
        SourceError::Transport { url, reason: root_cause(&e) }
    }
}

/// The percent-encoded path of `key` below a base URL.
fn path_of(key: &Key) -> String {
    let mut path = String::new();
    for (i, seg) in key.segments().enumerate() {
        if i > 0 {
            path.push('/');
        }
        path.extend(utf8_percent_encode(seg, SEGMENT));
    }
    path
}

/// The identity of the HTTP source at `base`, the same on every node that names it: the URL
/// parsed and written back canonically (scheme and host in lower case, a default port dropped,
/// percent-encoding normalised), its credentials removed, with a trailing `/`. Used to name what a
/// cluster shares about the source's entries, never to send a request.
pub(crate) fn identity(base: &str) -> Result<String, String> {
    let mut parsed = reqwest::Url::parse(base)
        .map_err(|e| format!("invalid source URL {:?}: {e}", tiercache_core::redact_url(base)))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("not an HTTP source URL: {:?}", tiercache_core::redact_url(base)));
    }
    take_credentials(&mut parsed);
    let mut id = parsed.to_string();
    if !id.ends_with('/') {
        id.push('/');
    }
    Ok(id)
}

/// Takes the user and password out of `url`, percent-decoded (as basic authentication wants
/// them).
fn take_credentials(url: &mut reqwest::Url) -> Option<(String, Option<String>)> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let credentials = (decode(url.username()), url.password().map(decode));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(credentials)
}

/// The client of one source: its timeouts, redirect policy and filtering resolver, and no
/// transparent decompression (the cache stores exactly the bytes the source serves).
pub(crate) fn build_client(
    config: &HttpSourceConfig,
    addresses: Arc<AddressPolicy>,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        .no_gzip()
        .redirect(reach::redirect_policy(config.redirects, Arc::clone(&addresses)))
        .dns_resolver(Arc::new(FilteringResolver(addresses)))
        .user_agent(concat!("tiercache/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

/// The first error of type `T` in `e`'s chain of causes.
pub(crate) fn cause_of<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        msg = format!("{msg}: {inner}");
        cur = inner.source();
    }
    msg
}

pub(crate) fn header_str(h: &http::HeaderMap, name: header::HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// What the headers of a source's answer say about the object (`Content-Length` as its size; the
/// caller corrects that for a partial answer).
pub(crate) fn meta_of(headers: &http::HeaderMap) -> SourceMeta {
    SourceMeta {
        size_bytes: header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok()),
        content_type: header_str(headers, header::CONTENT_TYPE),
        validators: Validators {
            etag: header_str(headers, header::ETAG),
            last_modified: header_str(headers, header::LAST_MODIFIED),
        },
        content_encoding: header_str(headers, header::CONTENT_ENCODING)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("identity")),
    }
}

/// Parses `bytes a-b/total` (total may be `*`).
pub(crate) fn parse_content_range(v: &str) -> Option<(ByteRange, Option<u64>)> {
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
        self.shown.clone()
    }

    async fn head(&self, key: &Key) -> Result<SourceMeta, SourceError> {
        let url = self.shown_url_of(key);
        let resp = self.send(self.request(reqwest::Method::HEAD, key), &url).await?;
        match resp.status() {
            StatusCode::OK => Ok(meta_of(resp.headers())),
            StatusCode::NOT_FOUND | StatusCode::GONE => Err(SourceError::NotFound { url }),
            s => Err(SourceError::Status { status: s.as_u16(), url }),
        }
    }

    async fn fetch(&self, key: &Key, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let url = self.shown_url_of(key);
        let mut rb = self.request(reqwest::Method::GET, key);
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
        let resp = self.send(rb, &url).await?;
        let status = resp.status();
        let meta = meta_of(resp.headers());
        if let Some(v) = &req.if_version
            && (status == StatusCode::PRECONDITION_FAILED
                || (status.is_success() && !is_same_version(v, &meta.validators)))
        {
            return Err(SourceError::Changed { url });
        }
        if status == StatusCode::NOT_MODIFIED && req.validators.is_some() {
            return Ok(Fetched::NotModified);
        }
        let read_timeout = self.config.read_timeout;
        body_of(resp, meta, req.range, url, read_timeout).map(Fetched::Body)
    }
}

/// The body of `resp`, an answer to a GET of `url` (shown) for `range` whose headers said `meta`:
/// a 200 (cut to the range here if the source ignored it), a 206 whose `Content-Range` matches the
/// request; any other status is the error it stands for. The stream ends with an error if the
/// body is shorter or longer than declared.
pub(crate) fn body_of(
    resp: reqwest::Response,
    mut meta: SourceMeta,
    range: Option<ByteRange>,
    url: String,
    read_timeout: Duration,
) -> Result<SourceBody, SourceError> {
    let (status, headers) = (resp.status(), resp.headers());
    let asked = range;
    let declared_len = meta.size_bytes;
    let (range, size_bytes, skip_take) = match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => return Err(SourceError::NotFound { url }),
        StatusCode::OK => match asked {
            // The source ignored Range: cut the range out of the whole body ourselves.
            Some(r) => (Some(r), declared_len, Some((r.start, r.len()))),
            None => (None, declared_len, None),
        },
        StatusCode::PARTIAL_CONTENT if asked.is_some() => {
            let asked = asked.expect("checked above");
            let (got, total) = header_str(headers, header::CONTENT_RANGE)
                .as_deref()
                .and_then(parse_content_range)
                .filter(|(got, _)| got.start == asked.start && got.end <= asked.end)
                .ok_or_else(|| SourceError::Protocol {
                    url: url.clone(),
                    reason: "206 without a Content-Range matching the request".into(),
                })?;
            (Some(got), total, None)
        }
        s => return Err(SourceError::Status { status: s.as_u16(), url }),
    };
    let expected = match (skip_take, range) {
        (Some(_), _) => declared_len,
        (None, Some(r)) => Some(r.len()),
        (None, None) => declared_len,
    };
    meta.size_bytes = size_bytes;
    let stream_url = url.clone();
    let raw = resp.bytes_stream().map(move |r| r.map_err(|e| transport_error(&stream_url, e, read_timeout)));
    let checked = enforce_length(raw, expected, url);
    let stream = match skip_take {
        None => checked.boxed(),
        Some((skip, take)) => slice_stream(checked, skip, take).boxed(),
    };
    Ok(SourceBody { meta, range, stream })
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
pub(crate) fn enforce_length(
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
    use tiercache_testkit::Behavior;

    use super::*;

    #[test]
    fn urls_escape_segments_but_keep_slashes() {
        let s = HttpSource::new("http://127.0.0.1:1/base", &HttpSourceConfig::default()).unwrap();
        let k = Key::new("a b/c?d#e/%2e%2e/ü").unwrap();
        assert_eq!(s.url_of(&k), "http://127.0.0.1:1/base/a%20b/c%3Fd%23e/%252e%252e/%C3%BC");
    }

    #[test]
    fn identities_are_canonical_and_without_credentials() {
        let a = identity("HTTP://User:Secret@Origin.Example:80/base").unwrap();
        assert_eq!(a, "http://origin.example/base/");
        assert_eq!(identity("http://origin.example/base/").unwrap(), a);
        assert_ne!(identity("http://origin.example/other/").unwrap(), a);
        assert!(identity("file:///srv").is_err());
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
        let config = HttpSourceConfig {
            connect_timeout: Duration::from_secs(3600),
            read_timeout: Duration::from_millis(200),
            ..HttpSourceConfig::default()
        };
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

    /// Reads a whole body, or the error it ended with.
    async fn body_of(f: Fetched) -> Result<(SourceMeta, Vec<u8>), SourceError> {
        let Fetched::Body(mut b) = f else { panic!("expected a body") };
        let mut out = Vec::new();
        while let Some(chunk) = b.stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok((b.meta, out))
    }

    fn key(k: &str) -> Key {
        Key::new(k).unwrap()
    }

    fn config(redirects: Redirects) -> HttpSourceConfig {
        HttpSourceConfig { redirects, ..HttpSourceConfig::default() }
    }

    /// Same-origin redirects are followed by default; one to another origin (another port of the
    /// same host) is refused unless the policy is `any`; `none` refuses every redirect.
    #[tokio::test]
    async fn redirects_follow_the_policy() {
        let (src, other) = (tiercache_testkit::Source::start().await, tiercache_testkit::Source::start().await);
        src.put("there", b"same origin".to_vec());
        other.put("there", b"other origin".to_vec());
        src.set_behavior("here", Behavior::Redirect(302, "/there".into()));
        src.set_behavior("away", Behavior::Redirect(301, format!("{}there", other.url())));
        src.set_behavior("loop", Behavior::Redirect(307, "/loop".into()));
        let fetch = async |redirects: Redirects, k: &str| {
            let s = HttpSource::new(&src.url(), &config(redirects)).unwrap();
            body_of(s.fetch(&key(k), &FetchRequest::default()).await?).await.map(|(_, b)| b)
        };
        assert_eq!(fetch(Redirects::SameOrigin, "here").await.unwrap(), b"same origin");
        let err = fetch(Redirects::SameOrigin, "away").await.unwrap_err();
        assert!(matches!(err, SourceError::Redirect { .. }), "{err:?}");
        assert!(err.to_string().contains("left the source's origin"), "{err}");
        assert_eq!(other.counts("there").full, 0, "nothing was asked of the other origin");
        assert_eq!(fetch(Redirects::Any, "away").await.unwrap(), b"other origin");
        let err = fetch(Redirects::None, "here").await.unwrap_err();
        assert!(matches!(err, SourceError::Redirect { .. }) && err.to_string().contains("redirects are off"), "{err}");
        let err = fetch(Redirects::Any, "loop").await.unwrap_err();
        assert!(err.to_string().contains("more than 5 redirects"), "{err}");
        assert_eq!(src.counts("loop").full, 1 + reach::MAX_REDIRECTS as u64, "at most 5 hops");
    }

    /// A redirect to a metadata address is refused before any connection is tried, under any
    /// policy: the test needs no network, and would hang or fail otherwise.
    #[tokio::test]
    async fn a_redirect_to_a_metadata_address_is_refused_without_connecting() {
        let src = tiercache_testkit::Source::start().await;
        src.set_behavior("meta", Behavior::Redirect(302, "http://169.254.169.254/latest/meta-data/".into()));
        src.set_behavior("meta6", Behavior::Redirect(302, "http://[fd00:ec2::254]/latest/".into()));
        let cfg = HttpSourceConfig { connect_timeout: Duration::from_secs(3600), ..config(Redirects::Any) };
        let s = HttpSource::new(&src.url(), &cfg).unwrap();
        for k in ["meta", "meta6"] {
            let err = s.fetch(&key(k), &FetchRequest::default()).await.unwrap_err();
            assert!(matches!(err, SourceError::AddressRefused { .. }), "{err:?}");
            assert!(err.to_string().contains("metadata address"), "{err}");
        }
        let err = s.head(&key("meta")).await.unwrap_err();
        assert!(matches!(err, SourceError::AddressRefused { .. }), "a HEAD follows the same policy: {err:?}");
    }

    /// A host name that resolves to a refused address is refused by the client's resolver, before
    /// connecting. Without a network, `localhost` stands for such a name: the test refuses
    /// loopback as the built-in ranges refuse link-local ones.
    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_is_refused_by_the_resolver() {
        let src = tiercache_testkit::Source::start().await;
        src.put("k", b"bytes".to_vec());
        let by_name = src.url().replace("127.0.0.1", "localhost");
        let open = HttpSource::new(&by_name, &HttpSourceConfig::default()).unwrap();
        assert!(body_of(open.fetch(&key("k"), &FetchRequest::default()).await.unwrap()).await.is_ok());
        let s = HttpSource::refusing(&by_name, &HttpSourceConfig::default(), &["127.0.0.0/8", "::1/128"]);
        let err = s.fetch(&key("k"), &FetchRequest::default()).await.unwrap_err();
        assert!(matches!(err, SourceError::AddressRefused { .. }), "{err:?}");
        assert!(err.to_string().contains("localhost is at"), "{err}");
        assert_eq!(src.counts("k").full, 1, "only the allowed client reached the source");
    }

    #[test]
    fn a_literal_metadata_address_is_refused_as_a_source_unless_allowed() {
        for url in [
            "http://169.254.169.254/",
            "http://[fe80::1]:80/",
            "http://100.100.100.200/x/",
            "http://metadata.google.internal/",
        ] {
            let err = HttpSource::new(url, &HttpSourceConfig::default()).unwrap_err();
            assert!(err.contains("refused") && err.contains("--allow-source-address"), "{url}: {err}");
        }
        let allowed =
            HttpSourceConfig { allowed_addresses: vec!["169.254.169.254/32".parse().unwrap()], ..Default::default() };
        assert!(HttpSource::new("http://169.254.169.254/latest/", &allowed).is_ok());
        assert!(HttpSource::new("http://169.254.169.253/", &allowed).is_err());
    }

    /// Credentials of the base URL go as basic authentication to the source, never to another
    /// host it redirects to, and never into a URL, a description or an error.
    #[tokio::test]
    async fn credentials_reach_only_the_source_and_are_never_shown() {
        let (src, other) = (tiercache_testkit::Source::start().await, tiercache_testkit::Source::start().await);
        other.put("there", b"other".to_vec());
        src.set_behavior("away", Behavior::Redirect(302, format!("{}there", other.url())));
        src.set_behavior("broken", Behavior::Status(500));
        let base = src.url().replace("http://", "http://user:s3cr%40t@");
        let s = HttpSource::new(&base, &config(Redirects::Any)).unwrap();
        assert_eq!(s.describe(), src.url().replace("http://", "http://***:***@"));
        assert!(!format!("{s:?}").contains("s3cr"));
        assert!(!s.url_of(&key("away")).contains("user"));
        body_of(s.fetch(&key("away"), &FetchRequest::default()).await.unwrap()).await.unwrap();
        let sent = &src.requests("away")[0];
        // "user:s3cr@t" in base64.
        assert_eq!(sent.get("authorization").map(String::as_str), Some("Basic dXNlcjpzM2NyQHQ="));
        assert_eq!(sent.get("accept-encoding").map(String::as_str), Some("identity"));
        let seen = &other.requests("there")[0];
        assert!(!seen.contains_key("authorization"), "credentials followed a redirect to another host: {seen:?}");
        for err in [
            s.fetch(&key("broken"), &FetchRequest::default()).await.unwrap_err(),
            s.head(&key("broken")).await.unwrap_err(),
            s.fetch(&key("missing"), &FetchRequest::default()).await.unwrap_err(),
        ] {
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("s3cr") && !shown.contains("user") && shown.contains("***:***@"), "{shown}");
        }
        let err = HttpSource::new("http://user:s3cret@169.254.169.254/", &HttpSourceConfig::default()).unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    /// A HEAD answers what the source says, with the same status mapping as a fetch.
    #[tokio::test]
    async fn head_reports_the_source_metadata() {
        let src = tiercache_testkit::Source::start().await;
        src.put("k", b"compressed bytes".to_vec());
        src.set_content_encoding("k", "gzip");
        let s = HttpSource::new(&src.url(), &HttpSourceConfig::default()).unwrap();
        let meta = s.head(&key("k")).await.unwrap();
        assert_eq!(meta.size_bytes, Some(16));
        assert_eq!(meta.content_encoding.as_deref(), Some("gzip"));
        assert_eq!(meta.validators.etag, src.etag("k"));
        assert!(matches!(s.head(&key("nope")).await, Err(SourceError::NotFound { .. })));
        assert_eq!((src.counts("k").head, src.counts("k").full), (1, 0));
        assert_eq!(src.requests("k")[0].get("accept-encoding").map(String::as_str), Some("identity"));
    }

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((ByteRange { start: 0, end: 9 }, Some(100))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((ByteRange { start: 5, end: 9 }, None)));
        assert_eq!(parse_content_range("bytes 9-5/100"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
