//! Objects are entries: GetObject and HeadObject (ranges, the four conditional headers,
//! `response-*` overrides, `partNumber=N`: one part of a multipart object, by the part sizes kept
//! with its entry, or the whole of an object written whole), PutObject (streamed into the
//! engine's upload path through `upload.rs`'s checks; `If-None-Match: *` checked by the engine in
//! the transaction that writes the entry), CopyObject (the same blob named again, no byte copied,
//! where the engine can), DeleteObject and DeleteObjects. The ETag is the entry's MD5.
//!
//! It makes no decision about data: what a key may be in a bucket, where bytes go and whether a
//! bucket takes writes are the engine's; this module turns S3 inputs into engine calls and their
//! answers back into S3 outputs.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tiercache_engine::{ByteRange, Error, Intent, PutOptions, RangeRequest, Read, ReadMeta};

use crate::error::{check_key, s3};
use crate::handler::TierS3;
use crate::upload::{Checked, declared, outcome};

/// What an object keeps besides its bytes and content type, stored with its entry as JSON
/// (`PutOptions::attrs`, written with the entry; `Cache::set_entry_attrs` for a copy onto an
/// entry). A directory bucket's files keep none.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Attrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_language: Option<String>,
    /// `x-amz-meta-*`, without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

impl Attrs {
    pub(crate) fn new(
        cache_control: Option<String>,
        content_disposition: Option<String>,
        content_language: Option<String>,
        metadata: Option<Metadata>,
    ) -> Attrs {
        let metadata = metadata.map(|m| m.into_iter().collect()).unwrap_or_default();
        Attrs { cache_control, content_disposition, content_language, metadata }
    }

    /// As stored: `None` when there is nothing to keep.
    pub(crate) fn to_json(&self) -> Option<String> {
        let is_empty = self.cache_control.is_none()
            && self.content_disposition.is_none()
            && self.content_language.is_none()
            && self.metadata.is_empty();
        if is_empty { None } else { serde_json::to_string(self).ok() }
    }

    /// Those of `key` in `bucket` (none if it has none, or they cannot be read).
    async fn of(s: &TierS3, bucket: &str, key: &str) -> Attrs {
        match s.cache.entry_attrs(bucket, key.as_bytes()).await {
            Ok(Some(json)) => serde_json::from_str(&json).unwrap_or_default(),
            Ok(None) => Attrs::default(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read an object's attributes");
                Attrs::default()
            }
        }
    }

    /// The user metadata as the answer carries it.
    fn user_metadata(&mut self) -> Option<Metadata> {
        (!self.metadata.is_empty()).then(|| std::mem::take(&mut self.metadata).into_iter().collect())
    }
}

/// What a read's headers say, in S3's types.
pub(crate) struct Facts {
    pub(crate) size: Option<u64>,
    etag: Option<ETag>,
    last_modified: Option<SystemTime>,
    content_type: Option<String>,
    content_encoding: Option<String>,
}

impl Facts {
    pub(crate) fn of(meta: &ReadMeta) -> Facts {
        let etag = meta.etag.as_deref().and_then(|e| ETag::parse_http_header(e.as_bytes()).ok());
        Facts {
            size: meta.size_bytes,
            etag,
            last_modified: meta.last_modified.as_deref().and_then(|t| httpdate::parse_http_date(t).ok()),
            content_type: meta.content_type.as_deref().map(str::to_owned),
            content_encoding: meta.content_encoding.as_deref().map(str::to_owned),
        }
    }

    pub(crate) fn last_modified(&self) -> Option<Timestamp> {
        self.last_modified.map(Timestamp::from)
    }
}

/// The conditional headers of a read.
pub(crate) struct Conditions<'a> {
    pub(crate) if_match: Option<&'a ETagCondition>,
    pub(crate) if_none_match: Option<&'a ETagCondition>,
    pub(crate) if_modified_since: Option<&'a Timestamp>,
    pub(crate) if_unmodified_since: Option<&'a Timestamp>,
}

/// `ts` as a time, to the second (HTTP dates have no finer precision).
fn seconds(ts: &Timestamp) -> i64 {
    time::OffsetDateTime::from(ts.clone()).unix_timestamp()
}

fn seconds_of(t: SystemTime) -> i64 {
    time::OffsetDateTime::from(t).unix_timestamp()
}

impl Conditions<'_> {
    /// RFC 9110 §13.2.2's order: `PreconditionFailed` (412) or `NotModified` (304), each with the
    /// object's ETag and Last-Modified.
    pub(crate) fn check(&self, facts: &Facts) -> S3Result<()> {
        let lm = facts.last_modified.map(seconds_of);
        let failed = match (self.if_match, self.if_unmodified_since) {
            (Some(ETagCondition::Any), _) => false,
            (Some(ETagCondition::ETag(want)), _) => !facts.etag.as_ref().is_some_and(|e| e.strong_cmp(want)),
            (None, Some(since)) => lm.is_some_and(|lm| lm > seconds(since)),
            (None, None) => false,
        };
        if failed {
            return Err(with_validators(
                s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold"),
                facts,
            ));
        }
        let not_modified = match (self.if_none_match, self.if_modified_since) {
            (Some(ETagCondition::Any), _) => true,
            (Some(ETagCondition::ETag(want)), _) => facts.etag.as_ref().is_some_and(|e| e.weak_cmp(want)),
            (None, Some(since)) => lm.is_some_and(|lm| lm <= seconds(since)),
            (None, None) => false,
        };
        if not_modified {
            return Err(with_validators(S3Error::new(S3ErrorCode::NotModified), facts));
        }
        Ok(())
    }
}

impl Conditions<'_> {
    /// A copy's conditions (`x-amz-copy-source-if-*`): [`Conditions::check`], except that each
    /// answers `PreconditionFailed` (412) when it does not hold, as S3 does.
    pub(crate) fn check_copy(&self, facts: &Facts) -> S3Result<()> {
        self.check(facts).map_err(|e| {
            if *e.code() == S3ErrorCode::NotModified {
                s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")
            } else {
                e
            }
        })
    }
}

/// `e` carrying the object's ETag and Last-Modified headers (a 304 or 412 says them).
fn with_validators(mut e: S3Error, facts: &Facts) -> S3Error {
    let mut headers = http::HeaderMap::new();
    if let Some(v) = facts.etag.as_ref().and_then(|t| t.to_http_header().ok()) {
        headers.insert(http::header::ETAG, v);
    }
    if let Some(v) = facts.last_modified.and_then(|t| http::HeaderValue::from_str(&httpdate::fmt_http_date(t)).ok()) {
        headers.insert(http::header::LAST_MODIFIED, v);
    }
    e.set_headers(headers);
    e
}

/// The range to serve of an object of `size` bytes, and its `Content-Range`; `None` for all.
fn resolve_range(range: Option<&Range>, size: Option<u64>) -> S3Result<Option<(ByteRange, String)>> {
    let (Some(range), Some(size)) = (range, size) else { return Ok(None) };
    let r = range.check(size)?;
    let last = r.end - 1;
    Ok(Some((ByteRange { start: r.start, end: last }, format!("bytes {}-{last}/{size}", r.start))))
}

/// What a read will want, told to the engine before it reads (so a remote tier verifies those
/// bytes first).
fn intent(range: Option<&Range>) -> Intent {
    range.and_then(|r| RangeRequest::parse(&r.to_header_string()).ok().flatten()).map_or(Intent::Whole, Intent::Range)
}

/// A read of one part (`?partNumber=N`): the part sizes of a multipart object, read before the
/// object itself so that the read can ask for that part's bytes.
struct PartRead {
    number: u64,
    sizes: Option<Vec<u64>>,
}

impl PartRead {
    /// The part asked for, if one is: `InvalidArgument` for a number below 1, or beside a Range.
    async fn of(s: &TierS3, bucket: &str, key: &str, n: Option<i32>, range: Option<&Range>) -> S3Result<Option<Self>> {
        let Some(n) = n else { return Ok(None) };
        let number = u64::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
            s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive")
        })?;
        if range.is_some() {
            return Err(s3_error!(InvalidArgument, "Cannot specify both Range header and partNumber query parameter"));
        }
        check_key(key)?;
        let sizes = s.cache.entry_part_sizes(bucket, key.as_bytes()).await.map_err(s3)?;
        Ok(Some(PartRead { number, sizes }))
    }

    /// The read's intent: that part's bytes, if the sizes are known.
    fn intent(&self) -> Intent {
        match self.bounds(self.sizes.as_deref()) {
            Some((first, last)) => RangeRequest::single(first, Some(last)).map_or(Intent::Whole, Intent::Range),
            None => Intent::Whole,
        }
    }

    /// The first and last byte of the part among `sizes`, if it is there and not empty.
    fn bounds(&self, sizes: Option<&[u64]>) -> Option<(u64, u64)> {
        let sizes = sizes?;
        let at = usize::try_from(self.number - 1).ok()?;
        let size = *sizes.get(at)?;
        let first: u64 = sizes[..at].iter().sum();
        (size > 0).then(|| (first, first + size - 1))
    }

    /// The object's parts count, and the range to serve with its `Content-Range` (`None`: the
    /// whole object, the single part of an object written whole). The sizes read before count
    /// only if they still describe the object read (the same total and the count its ETag ends
    /// with): a rewrite between the two reads makes it an object written whole.
    fn resolve(&self, facts: &Facts) -> S3Result<(i32, Option<(ByteRange, String)>)> {
        let is_current = |sizes: &&Vec<u64>| {
            let suffix = format!("-{}", sizes.len());
            Some(sizes.iter().sum::<u64>()) == facts.size
                && facts.etag.as_ref().is_some_and(|e| e.value().ends_with(&suffix))
        };
        let sizes = self.sizes.as_ref().filter(is_current);
        let count = sizes.map_or(1, Vec::len);
        if self.number > count as u64 {
            let mut e = S3Error::with_message(
                S3ErrorCode::Custom("InvalidPartNumber".into()),
                format!("The requested partnumber is not satisfiable: the object has {count} part(s)"),
            );
            e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
            return Err(e);
        }
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        let Some(sizes) = sizes else { return Ok((count, None)) };
        let total = facts.size.unwrap_or_default();
        let range = self
            .bounds(Some(sizes))
            .map(|(first, last)| (ByteRange { start: first, end: last }, format!("bytes {first}-{last}/{total}")));
        match range {
            Some(range) => Ok((count, Some(range))),
            None => Err(s3_error!(InvalidRange, "part {} of this object is empty", self.number)),
        }
    }
}

pub(crate) async fn read(s: &TierS3, bucket: &str, key: &str, intent: Intent) -> S3Result<Read> {
    check_key(key)?;
    s.cache.read_entry_with(bucket, key.as_bytes(), intent).await.map_err(s3)
}

pub(crate) async fn get(s: &TierS3, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    let part = PartRead::of(s, &input.bucket, &input.key, input.part_number, input.range.as_ref()).await?;
    let intent = part.as_ref().map_or_else(|| intent(input.range.as_ref()), PartRead::intent);
    let read = read(s, &input.bucket, &input.key, intent).await?;
    let facts = Facts::of(&read.meta);
    Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    }
    .check(&facts)?;
    let (parts_count, range) = match &part {
        Some(part) => part.resolve(&facts).map(|(count, range)| (Some(count), range))?,
        None => (None, resolve_range(input.range.as_ref(), facts.size)?),
    };
    let content_length = match &range {
        Some((r, _)) => Some(r.len()),
        None => facts.size,
    };
    let byte_range = range.as_ref().map(|(r, _)| *r);
    let body = match read.read_small(byte_range) {
        Some(Ok(bytes)) => {
            crate::counts::bytes_out().increment(bytes.len() as u64);
            StreamingBlob::from(s3s::Body::from(bytes))
        }
        Some(Err(e)) => return Err(s3(Error::from(e))),
        None => {
            let out = crate::counts::bytes_out();
            StreamingBlob::wrap(Counted(sync_wrapper::SyncStream::new(read.into_stream(byte_range)), out))
        }
    };
    let mut attrs = Attrs::of(s, &input.bucket, &input.key).await;
    let output = GetObjectOutput {
        body: Some(body),
        metadata: attrs.user_metadata(),
        accept_ranges: Some("bytes".to_owned()),
        content_length: content_length.and_then(|n| i64::try_from(n).ok()),
        content_range: range.map(|(_, cr)| cr),
        content_type: input.response_content_type.or(facts.content_type.clone()),
        content_encoding: input.response_content_encoding.or(facts.content_encoding.clone()),
        content_disposition: input.response_content_disposition.or(attrs.content_disposition),
        content_language: input.response_content_language.or(attrs.content_language),
        cache_control: input.response_cache_control.or(attrs.cache_control),
        expires: input.response_expires,
        e_tag: facts.etag.clone(),
        last_modified: facts.last_modified(),
        parts_count,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn head(s: &TierS3, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let part = PartRead::of(s, &input.bucket, &input.key, input.part_number, input.range.as_ref()).await?;
    let read = read(s, &input.bucket, &input.key, Intent::Headers).await?;
    let facts = Facts::of(&read.meta);
    Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    }
    .check(&facts)?;
    let (parts_count, range) = match &part {
        Some(part) => part.resolve(&facts).map(|(count, range)| (Some(count), range))?,
        None => (None, resolve_range(input.range.as_ref(), facts.size)?),
    };
    let content_length = match &range {
        Some((r, _)) => Some(r.len()),
        None => facts.size,
    };
    let mut attrs = Attrs::of(s, &input.bucket, &input.key).await;
    let output = HeadObjectOutput {
        metadata: attrs.user_metadata(),
        accept_ranges: Some("bytes".to_owned()),
        content_length: content_length.and_then(|n| i64::try_from(n).ok()),
        content_range: range.map(|(_, cr)| cr),
        content_type: input.response_content_type.or(facts.content_type.clone()),
        content_encoding: input.response_content_encoding.or(facts.content_encoding.clone()),
        content_disposition: input.response_content_disposition.or(attrs.content_disposition),
        content_language: input.response_content_language.or(attrs.content_language),
        cache_control: input.response_cache_control.or(attrs.cache_control),
        expires: input.response_expires,
        e_tag: facts.etag.clone(),
        last_modified: facts.last_modified(),
        parts_count,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// The ETag of `key` in `bucket` if it exists (`None` if there is no such object).
async fn current_etag(s: &TierS3, bucket: &str, key: &str) -> S3Result<Option<Option<ETag>>> {
    match s.cache.read_entry_with(bucket, key.as_bytes(), Intent::Headers).await {
        Ok(read) => Ok(Some(Facts::of(&read.meta).etag)),
        Err(Error::NoEntry { .. }) => Ok(None),
        Err(Error::Source(tiercache_engine::SourceError::NotFound { .. })) => Ok(None),
        Err(e) => Err(s3(e)),
    }
}

pub(crate) async fn put(s: &TierS3, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
    let S3Request { input, trailing_headers, .. } = req;
    check_key(&input.key)?;
    if let Some(n) = input.content_length {
        let n = u64::try_from(n).map_err(|_| s3_error!(InvalidArgument, "Content-Length is negative"))?;
        s.cache.check_object_size(n).map_err(s3)?;
    }
    if input.if_none_match.is_some() || input.if_match.is_some() {
        let current = current_etag(s, &input.bucket, &input.key).await?;
        if let Some(cond) = &input.if_none_match {
            let exists_match = match (cond, &current) {
                (_, None) => false,
                (ETagCondition::Any, Some(_)) => true,
                (ETagCondition::ETag(want), Some(etag)) => etag.as_ref().is_some_and(|e| e.weak_cmp(want)),
            };
            if exists_match {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        }
        if let Some(cond) = &input.if_match {
            let holds = match (cond, &current) {
                (_, None) => false,
                (ETagCondition::Any, Some(_)) => true,
                (ETagCondition::ETag(want), Some(etag)) => etag.as_ref().is_some_and(|e| e.strong_cmp(want)),
            };
            if !holds {
                return Err(s3_error!(
                    PreconditionFailed,
                    "At least one of the pre-conditions you specified did not hold"
                ));
            }
        }
    }
    let declared = declared!(input);
    let body = input.body.unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
    let (checked, verdict) = Checked::new(body, declared, trailing_headers);
    let opts = PutOptions {
        content_type: input.content_type,
        attrs: Attrs::new(input.cache_control, input.content_disposition, input.content_language, input.metadata)
            .to_json(),
        // `If-None-Match: *` was checked above to answer early; the check that counts is the one
        // in the transaction that writes the entry, which of concurrent writers only one passes.
        is_create_only: matches!(input.if_none_match, Some(ETagCondition::Any)),
    };
    let stored = s.cache.put_entry_with(&input.bucket, input.key.as_bytes(), checked, opts).await;
    let (stored, c) = outcome(stored, &verdict)?;
    let output = PutObjectOutput {
        e_tag: Some(ETag::Strong(stored.md5)),
        size: i64::try_from(stored.size_bytes).ok(),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        checksum_crc64nvme: c.checksum_crc64nvme,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn copy(s: &TierS3, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
    let access_key = req.credentials.as_ref().map(|c| c.access_key.clone());
    let input = req.input;
    let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &input.copy_source else {
        return Err(s3_error!(NotImplemented, "only a bucket and key can be copied from"));
    };
    if !s.keys.may_read(access_key.as_deref(), src_bucket) {
        return Err(s3_error!(AccessDenied, "this access key may not read the source bucket"));
    }
    check_key(&input.key)?;
    let read = read(s, src_bucket, src_key, Intent::Whole).await?;
    let facts = Facts::of(&read.meta);
    Conditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    }
    .check_copy(&facts)?;
    let is_replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    let attrs = if is_replace {
        Attrs::new(input.cache_control, input.content_disposition, input.content_language, input.metadata)
    } else {
        Attrs::of(s, src_bucket, src_key).await
    };
    if **src_bucket == *input.bucket && **src_key == *input.key {
        // Copying an object onto itself changes its attributes only, when they are replaced.
        if is_replace {
            s.cache.set_entry_attrs(&input.bucket, input.key.as_bytes(), attrs.to_json()).await.map_err(s3)?;
        }
        let result = CopyObjectResult { last_modified: facts.last_modified(), e_tag: facts.etag, ..Default::default() };
        return Ok(S3Response::new(CopyObjectOutput { copy_object_result: Some(result), ..Default::default() }));
    }
    // The same blob named again where the engine can (no byte copied), else the bytes copied.
    let src = (&**src_bucket, src_key.as_bytes());
    let stored = match s.cache.copy_entry(src, (&input.bucket, input.key.as_bytes())).await.map_err(s3)? {
        // The engine copied the attributes with the entry; only replaced ones are written.
        Some(stored) if !is_replace => stored,
        Some(stored) => {
            s.cache.set_entry_attrs(&input.bucket, input.key.as_bytes(), attrs.to_json()).await.map_err(s3)?;
            stored
        }
        None => {
            let opts = PutOptions {
                content_type: input.content_type.clone().or(facts.content_type.clone()),
                attrs: attrs.to_json(),
                is_create_only: false,
            };
            let body = read.into_stream(None);
            s.cache.put_entry_with(&input.bucket, input.key.as_bytes(), body, opts).await.map_err(s3)?
        }
    };
    let result = CopyObjectResult {
        e_tag: Some(ETag::Strong(stored.md5)),
        last_modified: Some(Timestamp::from(SystemTime::now())),
        ..Default::default()
    };
    Ok(S3Response::new(CopyObjectOutput { copy_object_result: Some(result), ..Default::default() }))
}

pub(crate) async fn delete(s: &TierS3, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    // Deleting what is not there succeeds, as in S3.
    s.cache.delete_entry(&input.bucket, input.key.as_bytes()).await.map_err(s3)?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
}

pub(crate) async fn delete_many(
    s: &TierS3,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    // The bucket must exist: a missing one is the request's error, not each key's.
    s.cache.namespace_row(&input.bucket).await.map_err(s3)?;
    let is_quiet = input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for object in input.delete.objects {
        let result = match check_key(&object.key) {
            Ok(()) => s.cache.delete_entry(&input.bucket, object.key.as_bytes()).await.map_err(s3),
            Err(e) => Err(e),
        };
        match result {
            Ok(_) if is_quiet => {}
            Ok(_) => deleted.push(DeletedObject { key: Some(object.key), ..Default::default() }),
            Err(e) => errors.push(s3s::dto::Error {
                code: Some(e.code().as_str().to_owned()),
                key: Some(object.key),
                message: e.message().map(str::to_owned),
                version_id: None,
            }),
        }
    }
    let output = DeleteObjectsOutput { deleted: Some(deleted), errors: Some(errors), ..Default::default() };
    Ok(S3Response::new(output))
}

/// A read's body, counted as it goes out (`tiercache_s3_bytes_total{direction="out"}`).
struct Counted<S>(S, crate::counts::ByteCount);

impl<S: Stream<Item = std::io::Result<Bytes>> + Unpin> Stream for Counted<S> {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.0.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &item {
            self.1.increment(chunk.len() as u64);
        }
        item
    }
}
