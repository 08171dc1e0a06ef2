//! An S3 bucket, or a prefix in it, as a source: `s3://bucket/prefix?endpoint=…&region=…`, read
//! through OpenDAL's S3 service: a conditional, ranged `GetObject` per fetch and a `HeadObject` per
//! [`Source::head`].
//!
//! The object's ETag and Last-Modified are its validators. A server that ignores the conditions
//! of a request (s3s-fs does) is held to them all the same: an answer whose validators still
//! match the cached ones is [`Fetched::NotModified`] (its body is dropped unread), and one for
//! another version than [`FetchRequest::if_version`] names is [`SourceError::Changed`].
//!
//! The security boundary is the HTTP source's: the endpoint's address goes through the same
//! address policy (`http_source/reach.rs`; literally at definition, every resolved address at
//! connect), redirects are never followed, every call has the connect and read timeouts, and
//! credentials never reach the instance metadata service (it is not asked) nor any description,
//! error or identity. Credentials come from the namespace's options ([`S3Credentials`]) or from
//! the usual AWS variables and files (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_PROFILE`).
//!
//! [`Source::list`] lists the bucket below the prefix, one page at a time (`listing` below).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use opendal::raw::Timestamp;
use opendal::{ErrorKind, Operator, options::ReaderOptions};
use tiercache_core::{ByteRange, Key, Validators};

use crate::http_source::{AddressPolicy, AddressRefused, FilteringResolver, cause_of, enforce_length, root_cause};
use crate::{
    FetchRequest, Fetched, HttpSourceConfig, ListQuery, ListedObject, Listing, Source, SourceBody, SourceError,
    SourceMeta,
};

/// Keys a listing page looks at, at most, beyond those it returns: when they run out, the page
/// ends early (truncated, continuing after the last key looked at) rather than scanning on.
pub const MAX_SCANNED_PER_PAGE: usize = 10_000;

/// The region used when neither the URL nor `AWS_REGION` / `AWS_DEFAULT_REGION` names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// An access key pair given with a namespace (its `s3_access_key` and `s3_secret_key` options),
/// used instead of the AWS variables. Its `Debug` shows the access key only.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct S3Credentials {
    /// The access key id.
    pub access_key: String,
    /// The secret access key.
    pub secret_key: String,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials").field("access_key", &self.access_key).field("secret_key", &"***").finish()
    }
}

/// A parsed `s3://` source URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct S3Url {
    bucket: String,
    /// Empty, or `a/b/` (no leading `/`, a trailing one).
    prefix: String,
    /// `scheme://host[:port]` without a trailing `/`, a default port dropped.
    endpoint: String,
    region: String,
}

impl S3Url {
    /// Parses `url`: `s3://bucket[/prefix][?endpoint=URL][&region=NAME]`. The endpoint defaults to
    /// AWS's for the region; the region to `AWS_REGION`, `AWS_DEFAULT_REGION`, then
    /// [`DEFAULT_REGION`].
    fn parse(url: &str) -> Result<S3Url, String> {
        let shown = tiercache_core::redact_url(url);
        let bad = |why: &str| format!("invalid S3 source URL {shown:?}: {why}");
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "s3" {
            return Err(bad("expected s3://bucket/prefix"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "credentials do not go in the URL: give them as the namespace's s3_access_key and s3_secret_key \
                 options, or in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        }
        if parsed.fragment().is_some() || parsed.port().is_some() {
            return Err(bad("expected s3://bucket/prefix?endpoint=…&region=…"));
        }
        let bucket = parsed.host_str().unwrap_or("").to_owned();
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
            && !bucket.contains("..");
        if !bucket_ok {
            return Err(bad(&format!("{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '.', '-')")));
        }
        let path = percent_encoding::percent_decode_str(parsed.path()).decode_utf8().map_err(|_| bad("not UTF-8"))?;
        // The URL parser drops `.` and `..` segments: judge the path as written.
        let written = url.split_once("://").map_or("", |(_, rest)| rest);
        let written = written.split(['?', '#']).next().unwrap_or("");
        let written = percent_encoding::percent_decode_str(written).decode_utf8_lossy();
        if let Some(seg) = written.split('/').skip(1).find(|s| *s == "." || *s == "..") {
            return Err(bad(&format!("the prefix segment {seg:?} is not allowed")));
        }
        let mut prefix = String::new();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            if seg == "." || seg == ".." || seg.chars().any(|c| c.is_control() || c == '\\') {
                return Err(bad(&format!("the prefix segment {seg:?} is not allowed")));
            }
            prefix.push_str(seg);
            prefix.push('/');
        }
        let (mut endpoint, mut region) = (None, None);
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "endpoint" if endpoint.is_none() => endpoint = Some(v.into_owned()),
                "region" if region.is_none() && !v.is_empty() => region = Some(v.into_owned()),
                _ => return Err(bad(&format!("unknown or repeated option {k:?}: expected endpoint and region"))),
            }
        }
        let region = region
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok().filter(|r| !r.is_empty()))
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let endpoint = match endpoint {
            Some(e) => {
                let u = reqwest::Url::parse(&e).map_err(|err| bad(&format!("endpoint {e:?}: {err}")))?;
                let plain = u.path() == "/" && u.query().is_none() && u.fragment().is_none();
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() || !plain {
                    return Err(bad(&format!("endpoint {e:?}: expected http(s)://host[:port]")));
                }
                if !u.username().is_empty() || u.password().is_some() {
                    return Err(bad("the endpoint takes no credentials"));
                }
                u.as_str().trim_end_matches('/').to_owned()
            }
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        Ok(S3Url { bucket, prefix, endpoint, region })
    }

    /// `s3://bucket/prefix/?endpoint=…`: what the source is, the same on every node, without
    /// credentials or region.
    fn identity(&self) -> String {
        format!("s3://{}/{}?endpoint={}", self.bucket, self.prefix, self.endpoint)
    }
}

/// The identity of the S3 source `url`: bucket, prefix and endpoint, canonical, without
/// credentials (see [`crate::identity`]).
pub(crate) fn identity(url: &str) -> Result<String, String> {
    S3Url::parse(url).map(|u| u.identity())
}

/// An S3 bucket, or a prefix of it, as a source. Keys are object names below the prefix.
#[derive(Clone)]
pub struct S3Source {
    op: Operator,
    /// What it is, as shown: its identity (no credentials in it).
    shown: String,
    read_timeout: std::time::Duration,
}

impl fmt::Debug for S3Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Source").field("source", &self.shown).finish_non_exhaustive()
    }
}

impl S3Source {
    /// A source for `url` (see the module documentation), signing with `credentials` if given,
    /// else with the AWS variables. Refused: a malformed URL, and an endpoint at a link-local or
    /// metadata address not in `config.allowed_addresses`. Does not contact the endpoint.
    pub fn new(url: &str, config: &HttpSourceConfig, credentials: Option<&S3Credentials>) -> Result<S3Source, String> {
        let parsed = S3Url::parse(url)?;
        let shown = parsed.identity();
        let addresses = Arc::new(AddressPolicy::new(&config.allowed_addresses));
        let endpoint = reqwest::Url::parse(&parsed.endpoint).map_err(|e| e.to_string())?;
        addresses.check_url(&endpoint).map_err(|e| {
            format!("S3 source {shown:?} refused: {e}; allow it with --allow-source-address if it is meant")
        })?;
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .no_gzip()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(FilteringResolver(addresses)))
            .user_agent(concat!("tiercache/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        let mut builder = opendal::services::S3::default()
            .bucket(&parsed.bucket)
            .root(&format!("/{}", parsed.prefix))
            .endpoint(&parsed.endpoint)
            .region(&parsed.region)
            .disable_ec2_metadata();
        if let Some(c) = credentials {
            builder = builder.access_key_id(&c.access_key).secret_access_key(&c.secret_key);
        }
        let op = Operator::new(builder).map_err(|e| format!("S3 source {shown:?}: {e}"))?;
        let transport = opendal::HttpTransporter::new(opendal_http_transport_reqwest::ReqwestTransport::new(client));
        let op = op.with_context(opendal::OperationContext::new().with_http_transport(transport));
        Ok(S3Source { op, shown, read_timeout: config.read_timeout })
    }

    /// The object name of `key` below the prefix (OpenDAL adds the prefix). A [`Key`] has no
    /// empty, `.` or `..` segment, no NUL or other control character: nothing here can leave the
    /// prefix.
    fn path_of(key: &Key) -> &str {
        key.as_str()
    }

    fn shown_url_of(&self, key: &Key) -> String {
        let (base, query) = self.shown.split_once('?').unwrap_or((&self.shown, ""));
        format!("{base}{key}?{query}")
    }

    /// What an OpenDAL failure is as a [`SourceError`] (a failed condition is the caller's to
    /// read).
    fn error(&self, url: &str, e: &opendal::Error) -> SourceError {
        let url = url.to_owned();
        match e.kind() {
            ErrorKind::NotFound => return SourceError::NotFound { url },
            ErrorKind::PermissionDenied => return SourceError::Forbidden { url },
            ErrorKind::RangeNotSatisfied => return SourceError::Status { status: 416, url },
            ErrorKind::RateLimited => return SourceError::Status { status: 503, url },
            ErrorKind::ConfigInvalid => {
                return SourceError::Protocol { url, reason: format!("the bucket cannot be used: {}", e.message()) };
            }
            _ => {}
        }
        if let Some(r) = cause_of::<AddressRefused>(e) {
            return SourceError::AddressRefused {
                url,
                reason: format!("{r}; allow it with --allow-source-address if it is meant"),
            };
        }
        match cause_of::<reqwest::Error>(e) {
            Some(r) if r.is_timeout() => SourceError::Timeout { url, after: self.read_timeout },
            Some(r) if r.is_connect() => {
                SourceError::Transport { url, reason: format!("cannot connect: {}", root_cause(r)) }
            }
            Some(r) => SourceError::Transport { url, reason: root_cause(r) },
            None => SourceError::Transport { url, reason: format!("{}: {}", e.kind(), e.message()) },
        }
    }
}

/// The validators of an object as OpenDAL reports them.
fn validators_of(m: &opendal::Metadata) -> Validators {
    Validators { etag: m.etag().map(str::to_owned), last_modified: m.last_modified().map(|t| t.format_http_date()) }
}

fn meta_of(m: &opendal::Metadata) -> SourceMeta {
    SourceMeta {
        size_bytes: Some(m.content_length()),
        content_type: m.content_type().map(str::to_owned),
        validators: validators_of(m),
        content_encoding: m
            .content_encoding()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("identity")),
    }
}

/// The strong ETag `v` names, if it has one.
fn strong_etag(v: &Validators) -> Option<&str> {
    v.etag.as_deref().filter(|e| !e.starts_with("W/"))
}

/// Whether an answer with validators `got` is the version `want` names: the same strong ETag,
/// else (without one) the same `Last-Modified`.
fn is_same_version(want: &Validators, got: &Validators) -> bool {
    match (strong_etag(want), &want.last_modified) {
        (Some(etag), _) => got.etag.as_deref() == Some(etag),
        (None, Some(lm)) => got.last_modified.as_ref() == Some(lm),
        (None, None) => false,
    }
}

/// Whether the cached validators `have` still match an answer's `got` (what a 304 would have
/// said): the same ETag if both have one, else the same `Last-Modified`.
fn still_matches(have: &Validators, got: &Validators) -> bool {
    match (have.etag.as_deref(), got.etag.as_deref()) {
        (Some(a), Some(b)) => a.trim_start_matches("W/") == b.trim_start_matches("W/"),
        _ => have.last_modified.is_some() && have.last_modified == got.last_modified,
    }
}

/// `raw`, ended instead of failed by an error that comes once `expected` bytes have come (bytes
/// past them still come, for the length check to refuse).
fn until_failure_after(
    raw: impl futures::Stream<Item = Result<Bytes, SourceError>> + Send + Unpin + 'static,
    expected: u64,
) -> impl futures::Stream<Item = Result<Bytes, SourceError>> + Send + Unpin + 'static {
    let mut got = 0u64;
    raw.take_while(move |item| {
        let keep = match item {
            Ok(chunk) => {
                got += chunk.len() as u64;
                true
            }
            Err(_) => got != expected,
        };
        futures::future::ready(keep)
    })
}

fn timestamp(http_date: &str) -> Option<Timestamp> {
    Timestamp::parse_rfc2822(http_date).ok()
}

#[async_trait::async_trait]
impl Source for S3Source {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    async fn list(&self, query: &ListQuery) -> Result<Option<Listing>, SourceError> {
        let url = self.shown.clone();
        listing::page(&self.op, query).await.map(Some).map_err(|e| self.error(&url, &e))
    }

    async fn head(&self, key: &Key) -> Result<SourceMeta, SourceError> {
        let url = self.shown_url_of(key);
        let m = self.op.stat(Self::path_of(key)).await.map_err(|e| self.error(&url, &e))?;
        Ok(meta_of(&m))
    }

    async fn fetch(&self, key: &Key, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let url = self.shown_url_of(key);
        let mut opts = ReaderOptions::default();
        if let Some(v) = &req.if_version {
            match (strong_etag(v), v.last_modified.as_deref()) {
                (Some(etag), _) => opts.if_match = Some(etag.to_owned()),
                (None, Some(lm)) => opts.if_unmodified_since = timestamp(lm),
                (None, None) => {}
            }
        } else if let Some(v) = &req.validators {
            match (v.etag.as_deref(), v.last_modified.as_deref()) {
                (Some(etag), _) => opts.if_none_match = Some(etag.to_owned()),
                (None, Some(lm)) => opts.if_modified_since = timestamp(lm),
                (None, None) => {}
            }
        }
        // A failed condition: 412 for a request for one version, 304 for a revalidation.
        let failed = |e: opendal::Error| {
            if e.kind() == ErrorKind::ConditionNotMatch {
                if req.if_version.is_some() {
                    return Err(SourceError::Changed { url: url.clone() });
                }
                if req.validators.is_some() {
                    return Ok(Fetched::NotModified);
                }
            }
            Err(self.error(&url, &e))
        };
        let reader = match self.op.reader_options(Self::path_of(key), opts).await {
            Ok(r) => r,
            Err(e) => return failed(e),
        };
        let bytes_range = match req.range {
            Some(r) => opendal::BytesRange::new(r.start, Some(r.len())),
            None => opendal::BytesRange::new(0, None),
        };
        let mut stream = match reader.into_bytes_stream(bytes_range).await {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
        let m = match stream.metadata().await {
            Ok(m) => m,
            Err(e) => return failed(e),
        };
        let meta = meta_of(&m);
        // A server that ignored the conditions answered anyway: judge the answer here.
        if let Some(v) = &req.if_version {
            if !is_same_version(v, &meta.validators) {
                return Err(SourceError::Changed { url });
            }
        } else if let Some(v) = &req.validators
            && still_matches(v, &meta.validators)
        {
            return Ok(Fetched::NotModified);
        }
        let size = m.content_length();
        let range = match req.range {
            Some(r) if r.start >= size => return Err(SourceError::Status { status: 416, url }),
            Some(r) => Some(ByteRange { start: r.start, end: r.end.min(size - 1) }),
            None => None,
        };
        let expected = range.map_or(size, |r| r.len());
        let (this, stream_url) = (self.clone(), url.clone());
        let raw = stream.map(move |r: std::io::Result<Bytes>| {
            r.map_err(|e| match e.get_ref().and_then(|inner| inner.downcast_ref::<opendal::Error>()) {
                Some(oe) => this.error(&stream_url, oe),
                None => SourceError::Transport { url: stream_url.clone(), reason: root_cause(&e) },
            })
        });
        let stream = match (req.range, range) {
            // The range ran past the object's end: the server sent what there is, and OpenDAL,
            // which expected the whole range, fails the stream after the last byte. Every byte the
            // server declared is there by then: the stream ends at them.
            (Some(asked), Some(got)) if got != asked => {
                enforce_length(until_failure_after(raw, expected), Some(expected), url).boxed()
            }
            _ => enforce_length(raw, Some(expected), url).boxed(),
        };
        Ok(Fetched::Body(SourceBody { meta, range, stream }))
    }
}

mod listing {
    //! One page of a bucket's keys below the source's prefix, from recursive (undelimited)
    //! `ListObjectsV2` requests: the delimiter is applied here. A listing stream of OpenDAL gives
    //! a page's common prefixes before its keys, out of order; a recursive one gives keys in
    //! order. A key that rolls up into a common prefix ends the request: the next one starts
    //! after everything in that prefix, so a page costs one request, plus one per common
    //! prefix on it, each asking for at most the keys the page still needs.

    use futures::TryStreamExt;
    use opendal::Operator;

    use super::{ListQuery, ListedObject, Listing, MAX_SCANNED_PER_PAGE};

    /// Sorts after every valid key starting with what it is appended to.
    const PAST: char = char::MAX;

    /// Keys asked for per request after a common prefix (the next one may well be another).
    const AFTER_PREFIX_BATCH: usize = 100;

    /// The part of `prefix` the bucket can be asked for: OpenDAL trims whitespace, leading `/`
    /// and empty segments from a path; a prefix it would change is listed from a shorter one
    /// and filtered here.
    fn asked_prefix(prefix: &str) -> &str {
        let is_plain = |p: &str| !p.starts_with('/') && !p.contains("//") && p.trim() == p;
        if is_plain(prefix) {
            return prefix;
        }
        let cut = prefix.find(|c: char| c.is_whitespace()).unwrap_or(prefix.len());
        let mut p = &prefix[..cut];
        if let Some(i) = p.find("//") {
            p = &p[..i + 1];
        }
        if p.starts_with('/') || !is_plain(p) { "" } else { p }
    }

    /// The common prefix `key` rolls up into, if any.
    fn common_prefix<'a>(key: &'a str, prefix: &str, delimiter: Option<&str>) -> Option<&'a str> {
        let d = delimiter?;
        let rest = key.strip_prefix(prefix)?;
        rest.find(d).map(|i| &key[..prefix.len() + i + d.len()])
    }

    fn millis(m: &opendal::Metadata) -> Option<i64> {
        let t: std::time::SystemTime = m.last_modified()?.into();
        t.duration_since(std::time::UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_millis()).ok())
    }

    pub(super) async fn page(op: &Operator, q: &ListQuery) -> opendal::Result<Listing> {
        let limit = q.limit.max(1);
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        let asked = asked_prefix(&q.prefix);
        let mut out = Listing::default();
        // Where the next request starts, and the common prefix whose keys are all skipped.
        let mut skip: Option<String> = None;
        let mut start = q.after.clone();
        if let Some(after) = &q.after
            && let Some(cp) = common_prefix(after, &q.prefix, delimiter)
        {
            skip = Some(cp.to_owned());
            start = Some(format!("{cp}{PAST}"));
        }
        let mut scanned = 0usize;
        let mut batch = limit + 1;
        'requests: loop {
            let mut lister = op.lister_with(asked).recursive(true).limit(batch);
            if let Some(s) = &start {
                lister = lister.start_after(s);
            }
            let mut lister = lister.await?;
            while let Some(entry) = lister.try_next().await? {
                let key = entry.path();
                scanned += 1;
                if scanned > limit + MAX_SCANNED_PER_PAGE {
                    // Out of budget: end here; the next page starts after this key.
                    out.is_truncated = true;
                    out.last = Some(key.to_owned());
                    return Ok(out);
                }
                if !key.starts_with(&q.prefix) {
                    if key > q.prefix.as_str() {
                        break 'requests; // Past every key with the prefix.
                    }
                    continue;
                }
                if q.after.as_deref().is_some_and(|a| key <= a) || skip.as_deref().is_some_and(|s| key.starts_with(s)) {
                    continue;
                }
                if let Some(cp) = common_prefix(key, &q.prefix, delimiter) {
                    if out.objects.len() + out.common_prefixes.len() == limit {
                        out.is_truncated = true;
                        return Ok(out);
                    }
                    out.common_prefixes.push(cp.to_owned());
                    out.last = Some(cp.to_owned());
                    start = Some(format!("{cp}{PAST}"));
                    skip = Some(cp.to_owned());
                    batch = (limit - out.objects.len() - out.common_prefixes.len() + 1).min(AFTER_PREFIX_BATCH);
                    continue 'requests;
                }
                if tiercache_core::Key::new(key).is_err() {
                    continue; // A directory marker (`a/`), or a name no key can read.
                }
                if out.objects.len() + out.common_prefixes.len() == limit {
                    out.is_truncated = true;
                    return Ok(out);
                }
                let m = entry.metadata();
                out.objects.push(ListedObject {
                    key: key.to_owned(),
                    size_bytes: m.content_length(),
                    etag: m.etag().map(|e| e.trim_matches('"').to_owned()),
                    modified_ms: millis(m),
                });
                out.last = Some(key.to_owned());
            }
            break;
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn prefixes_opendal_would_change_are_asked_shorter() {
            assert_eq!(asked_prefix("a/b"), "a/b");
            assert_eq!(asked_prefix(""), "");
            assert_eq!(asked_prefix("a/b "), "a/b");
            assert_eq!(asked_prefix(" a"), "");
            assert_eq!(asked_prefix("a//b"), "a/");
            assert_eq!(asked_prefix("/a"), "");
        }

        #[test]
        fn keys_roll_up_at_the_first_delimiter_after_the_prefix() {
            assert_eq!(common_prefix("a/b/c", "a/", Some("/")), Some("a/b/"));
            assert_eq!(common_prefix("a/b", "a/", Some("/")), None);
            assert_eq!(common_prefix("a-x-y", "", Some("-x")), Some("a-x"));
            assert_eq!(common_prefix("a/b", "", None), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_identities_are_canonical() {
        let u = S3Url::parse("s3://my-bucket/a/b?endpoint=HTTP://LocalHost:9000/&region=eu-west-1").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("my-bucket", "a/b/"));
        assert_eq!((u.endpoint.as_str(), u.region.as_str()), ("http://localhost:9000", "eu-west-1"));
        assert_eq!(u.identity(), "s3://my-bucket/a/b/?endpoint=http://localhost:9000");
        let same = S3Url::parse("s3://my-bucket/a//b/?region=us-west-2&endpoint=http://localhost:9000").unwrap();
        assert_eq!(same.identity(), u.identity(), "the region and the form of the prefix do not change it");
        let aws = S3Url::parse("s3://my-bucket?region=eu-west-1").unwrap();
        assert_eq!(aws.identity(), "s3://my-bucket/?endpoint=https://s3.eu-west-1.amazonaws.com");
    }

    #[test]
    fn bad_urls_are_refused_and_never_echo_credentials() {
        for bad in [
            "s3://",
            "s3://UPPER/x",
            "s3://b/x",
            "s3://bucket/../x",
            "s3://bucket/x?endpoint=ftp://h",
            "s3://bucket/x?endpoint=http://h/path",
            "s3://bucket/x?secret=1",
            "s3://bucket:1/x",
        ] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
        let e = S3Url::parse("s3://AKIA:s3cr3t@bucket/x").unwrap_err();
        assert!(e.contains("s3_access_key") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn a_metadata_endpoint_is_refused_unless_allowed() {
        let url = "s3://bucket/p?endpoint=http://169.254.169.254";
        let e = S3Source::new(url, &HttpSourceConfig::default(), None).unwrap_err();
        assert!(e.contains("refused") && e.contains("--allow-source-address"), "{e}");
        let allowed =
            HttpSourceConfig { allowed_addresses: vec!["169.254.169.254/32".parse().unwrap()], ..Default::default() };
        assert!(S3Source::new(url, &allowed, None).is_ok());
    }

    #[test]
    fn credentials_are_never_shown() {
        let creds = S3Credentials { access_key: "AKIA".into(), secret_key: "s3cr3t".into() };
        let s = S3Source::new("s3://bucket/p?endpoint=http://127.0.0.1:1", &HttpSourceConfig::default(), Some(&creds))
            .unwrap();
        let shown = format!("{s:?} {} {creds:?}", s.describe());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(s.describe(), "s3://bucket/p/?endpoint=http://127.0.0.1:1");
    }

    use tiercache_testkit::servers::{self, S3Server};

    /// A source for prefix `pre` of the test bucket, signing with the server's keys.
    fn source_of(s3: &S3Server) -> S3Source {
        let creds = S3Credentials { access_key: s3.access_key().into(), secret_key: s3.secret_key().into() };
        let url = format!("s3://{}/pre?endpoint={}&region={}", S3Server::BUCKET, s3.endpoint(), s3.region());
        S3Source::new(&url, &HttpSourceConfig::default(), Some(&creds)).unwrap()
    }

    fn put(s3: &S3Server, key: &str, bytes: &[u8]) {
        let path = s3.object_path(S3Server::BUCKET, &format!("pre/{key}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn key(k: &str) -> Key {
        Key::new(k).unwrap()
    }

    /// Reads a whole body, or the error it ended with.
    async fn body_of(f: Fetched) -> Result<(SourceMeta, Option<ByteRange>, Vec<u8>), SourceError> {
        let Fetched::Body(mut b) = f else { panic!("expected a body") };
        let mut out = Vec::new();
        while let Some(chunk) = b.stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok((b.meta, b.range, out))
    }

    /// Whole objects, ranges (one past the end cut short, one after it refused), validators and
    /// content type, and a HEAD, from a real S3-compatible server.
    #[tokio::test]
    async fn objects_ranges_and_metadata_come_from_the_bucket() {
        let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
        let s = source_of(&s3);
        let data = tiercache_testkit::bytes(1, 300_000);
        put(&s3, "dir/a b.bin", &data);
        s.op.write_with("typed.txt", b"hello".to_vec()).content_type("text/plain").await.unwrap();

        let (meta, range, got) =
            body_of(s.fetch(&key("dir/a b.bin"), &FetchRequest::default()).await.unwrap()).await.unwrap();
        assert!(got == data && range.is_none());
        assert_eq!(meta.size_bytes, Some(300_000));
        assert!(meta.validators.etag.as_deref().is_some_and(|e| e.starts_with('"')), "{meta:?}");
        assert!(meta.validators.last_modified.as_deref().is_some_and(|d| d.ends_with("GMT")), "{meta:?}");

        let r = ByteRange { start: 1000, end: 1999 };
        let req = FetchRequest { range: Some(r), ..FetchRequest::default() };
        let (meta, range, got) = body_of(s.fetch(&key("dir/a b.bin"), &req).await.unwrap()).await.unwrap();
        assert_eq!((range, meta.size_bytes), (Some(r), Some(300_000)));
        assert!(got[..] == data[1000..2000]);
        let past = FetchRequest { range: Some(ByteRange { start: 299_990, end: 400_000 }), ..FetchRequest::default() };
        let (_, range, got) = body_of(s.fetch(&key("dir/a b.bin"), &past).await.unwrap()).await.unwrap();
        assert_eq!(range, Some(ByteRange { start: 299_990, end: 299_999 }));
        assert!(got[..] == data[299_990..]);
        let after = FetchRequest { range: Some(ByteRange { start: 300_000, end: 300_010 }), ..FetchRequest::default() };
        let e = s.fetch(&key("dir/a b.bin"), &after).await.unwrap_err();
        assert!(matches!(e, SourceError::Status { status: 416, .. }), "{e:?}");

        let (meta, _, got) =
            body_of(s.fetch(&key("typed.txt"), &FetchRequest::default()).await.unwrap()).await.unwrap();
        assert_eq!((meta.content_type.as_deref(), &got[..]), (Some("text/plain"), &b"hello"[..]));
        let head = s.head(&key("typed.txt")).await.unwrap();
        assert_eq!((head.size_bytes, head.content_type.as_deref()), (Some(5), Some("text/plain")));
        assert_eq!(head.validators, meta.validators);
    }

    /// An unchanged object revalidates as not modified, a changed one comes with its new bytes
    /// and ETag, and a request for the old version of a changed object is refused: whether or not
    /// the server itself honours the conditions (s3s-fs does not).
    #[tokio::test]
    async fn validators_revalidate_and_versions_are_held() {
        let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
        let s = source_of(&s3);
        put(&s3, "o", b"version one");
        let (m1, _, _) = body_of(s.fetch(&key("o"), &FetchRequest::default()).await.unwrap()).await.unwrap();
        let revalidate = FetchRequest { validators: Some(m1.validators.clone()), ..FetchRequest::default() };
        assert!(matches!(s.fetch(&key("o"), &revalidate).await.unwrap(), Fetched::NotModified));
        let by_date = Validators { etag: None, ..m1.validators.clone() };
        let req = FetchRequest { validators: Some(by_date), ..FetchRequest::default() };
        assert!(matches!(s.fetch(&key("o"), &req).await.unwrap(), Fetched::NotModified));

        put(&s3, "o", b"version two, longer");
        let (m2, _, got) = body_of(s.fetch(&key("o"), &revalidate).await.unwrap()).await.unwrap();
        assert_eq!(got, b"version two, longer");
        assert_ne!(m2.validators.etag, m1.validators.etag);
        let old = FetchRequest {
            range: Some(ByteRange { start: 0, end: 3 }),
            if_version: Some(Validators { etag: m1.validators.etag.clone(), last_modified: None }),
            ..FetchRequest::default()
        };
        let e = s.fetch(&key("o"), &old).await.unwrap_err();
        assert!(matches!(e, SourceError::Changed { .. }), "{e:?}");
        let now = FetchRequest { if_version: Some(m2.validators.clone()), ..old };
        let (_, _, got) = body_of(s.fetch(&key("o"), &now).await.unwrap()).await.unwrap();
        assert_eq!(got, b"vers");
    }

    /// A missing object is not found; wrong keys are forbidden; an endpoint nothing listens on is
    /// a transport failure. No message shows the secret.
    #[tokio::test]
    async fn failures_are_the_source_errors_of_an_http_source() {
        let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
        let s = source_of(&s3);
        let e = s.fetch(&key("missing"), &FetchRequest::default()).await.unwrap_err();
        assert!(matches!(e, SourceError::NotFound { .. }), "{e:?}");
        assert!(matches!(s.head(&key("missing")).await, Err(SourceError::NotFound { .. })));

        put(&s3, "o", b"bytes");
        let wrong = S3Credentials { access_key: s3.access_key().into(), secret_key: "not-the-secret".into() };
        let url = format!("s3://{}/pre?endpoint={}", S3Server::BUCKET, s3.endpoint());
        let bad = S3Source::new(&url, &HttpSourceConfig::default(), Some(&wrong)).unwrap();
        let e = bad.fetch(&key("o"), &FetchRequest::default()).await.unwrap_err();
        assert!(matches!(e, SourceError::Forbidden { .. }), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("not-the-secret"));
        let unknown = S3Credentials { access_key: "nobody".into(), secret_key: "x".into() };
        let bad = S3Source::new(&url, &HttpSourceConfig::default(), Some(&unknown)).unwrap();
        assert!(matches!(bad.head(&key("o")).await, Err(SourceError::Forbidden { .. })));

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let creds = S3Credentials { access_key: "a".into(), secret_key: "b".into() };
        let url = format!("s3://bucket/pre?endpoint=http://127.0.0.1:{port}");
        let down = S3Source::new(&url, &HttpSourceConfig::default(), Some(&creds)).unwrap();
        let e = down.fetch(&key("o"), &FetchRequest::default()).await.unwrap_err();
        assert!(matches!(e, SourceError::Transport { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot connect"), "{e}");
    }

    /// An endpoint that takes the connection and never answers times out at the read timeout.
    #[tokio::test]
    async fn an_endpoint_that_never_answers_times_out() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("s3://bucket/pre?endpoint=http://{}", silent.local_addr().unwrap());
        let config = HttpSourceConfig {
            connect_timeout: std::time::Duration::from_secs(3600),
            read_timeout: std::time::Duration::from_millis(200),
            ..HttpSourceConfig::default()
        };
        let creds = S3Credentials { access_key: "a".into(), secret_key: "b".into() };
        let s = S3Source::new(&url, &config, Some(&creds)).unwrap();
        let e = s.fetch(&key("o"), &FetchRequest::default()).await.unwrap_err();
        assert!(e.is_timeout(), "{e:?}");
        assert!(s.head(&key("o")).await.unwrap_err().is_timeout());
    }

    #[test]
    fn versions_and_revalidations_compare_validators() {
        let v = |e: Option<&str>, lm: Option<&str>| Validators {
            etag: e.map(str::to_owned),
            last_modified: lm.map(str::to_owned),
        };
        assert!(is_same_version(&v(Some("\"a\""), None), &v(Some("\"a\""), Some("x"))));
        assert!(!is_same_version(&v(Some("\"a\""), None), &v(Some("\"b\""), None)));
        assert!(is_same_version(&v(None, Some("x")), &v(Some("\"b\""), Some("x"))));
        assert!(still_matches(&v(Some("\"a\""), Some("x")), &v(Some("\"a\""), Some("y"))));
        assert!(!still_matches(&v(Some("\"a\""), Some("x")), &v(Some("\"b\""), Some("x"))));
        assert!(!still_matches(&v(None, None), &v(None, None)));
    }
}
