//! Multipart uploads over the engine's uploads (`Cache::create_upload` … `complete_upload`):
//! CreateMultipartUpload, UploadPart (streamed through `upload.rs`'s checks, as PutObject is),
//! UploadPartCopy (a part made of an object's bytes, or of a range of them, read from any bucket
//! the access key may read),
//! CompleteMultipartUpload (the object's attributes, kept with the upload, stored with the entry
//! once it exists), AbortMultipartUpload, ListParts and ListMultipartUploads (a delimiter's common
//! prefixes found by asking past each one, so a page costs a query per prefix, not per upload).
//!
//! It makes no decision about data: part sizes and order, the final ETag, where the bytes go and
//! which buckets take writes are the engine's; this module turns S3 inputs into engine calls and
//! their answers back into S3 outputs.

use std::time::{Duration, SystemTime};

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tiercache_engine::{
    ByteRange, Intent, MAX_PART_NUMBER, MAX_UPLOAD_LIST, RangeRequest, UploadId, UploadInfo, UploadMeta,
};

use crate::error::{check_key, s3};
use crate::handler::TierS3;
use crate::objects::{Attrs, Conditions, Facts};
use crate::upload::{Checked, declared, outcome};

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// The upload `id` names, if it is under way for `key` of `bucket` (`NoSuchUpload` otherwise: an
/// id is no capability for another object).
async fn upload_of(s: &TierS3, bucket: &str, key: &str, id: &str) -> S3Result<(UploadId, UploadInfo)> {
    let id = UploadId::parse(id).map_err(s3)?;
    let info = s.cache.upload(&id).await.map_err(s3)?;
    if info.namespace != bucket || info.key != key {
        return Err(s3_error!(NoSuchUpload, "the upload is not one of this object"));
    }
    Ok((id, info))
}

fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| s3_error!(InvalidArgument, "a part number is from 1 to {MAX_PART_NUMBER}"))
}

/// A page size asked for, within what the engine lists at once (1000 when not asked).
fn page_size(asked: Option<i32>) -> usize {
    asked.and_then(|n| usize::try_from(n).ok()).unwrap_or(1000).min(MAX_UPLOAD_LIST)
}

pub(crate) async fn create(
    s: &TierS3,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    // The object's attributes wait in the upload, and are written with its entry at completion.
    let attrs = Attrs::new(input.cache_control, input.content_disposition, input.content_language, input.metadata);
    let meta = UploadMeta { content_type: input.content_type.clone(), attrs: attrs.to_json(), ..Default::default() };
    let id = s.cache.create_upload(&input.bucket, &input.key, meta).await.map_err(s3)?;
    let output = CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id.as_str().to_owned()),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn upload_part(s: &TierS3, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
    let S3Request { input, trailing_headers, .. } = req;
    let (id, _) = upload_of(s, &input.bucket, &input.key, &input.upload_id).await?;
    let n = part_number(input.part_number)?;
    let declared = declared!(input);
    let body = input.body.unwrap_or_else(|| StreamingBlob::from(s3s::Body::empty()));
    let (checked, verdict) = Checked::new(body, declared, trailing_headers);
    let stored = s.cache.put_part(&id, n, checked, None).await;
    let (part, c) = outcome(stored, &verdict)?;
    let output = UploadPartOutput {
        e_tag: Some(ETag::Strong(part.md5)),
        checksum_crc32: c.checksum_crc32,
        checksum_crc32c: c.checksum_crc32c,
        checksum_sha1: c.checksum_sha1,
        checksum_sha256: c.checksum_sha256,
        checksum_crc64nvme: c.checksum_crc64nvme,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// An `x-amz-copy-source-range` (`bytes=FIRST-LAST`, both given, inclusive): `InvalidArgument`
/// when it is not one.
fn copy_range(value: &str) -> S3Result<(u64, u64)> {
    let bad = || s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=FIRST-LAST, not {value:?}");
    let (first, last) = value.trim().strip_prefix("bytes=").and_then(|r| r.split_once('-')).ok_or_else(bad)?;
    let number = |n: &str| -> S3Result<u64> {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        n.parse().map_err(|_| bad())
    };
    let (first, last) = (number(first)?, number(last)?);
    if first > last {
        return Err(bad());
    }
    Ok((first, last))
}

pub(crate) async fn upload_part_copy(
    s: &TierS3,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let access_key = req.credentials.as_ref().map(|c| c.access_key.clone());
    let input = req.input;
    let (id, _) = upload_of(s, &input.bucket, &input.key, &input.upload_id).await?;
    let n = part_number(input.part_number)?;
    let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &input.copy_source else {
        return Err(s3_error!(NotImplemented, "only a bucket and key can be copied from"));
    };
    if !s.keys.may_read(access_key.as_deref(), src_bucket) {
        return Err(s3_error!(AccessDenied, "this access key may not read the source bucket"));
    }
    let range = input.copy_source_range.as_deref().map(copy_range).transpose()?;
    let intent = match range {
        Some((first, last)) => RangeRequest::single(first, Some(last)).map_or(Intent::Whole, Intent::Range),
        None => Intent::Whole,
    };
    let read = crate::objects::read(s, src_bucket, src_key, intent).await?;
    let facts = Facts::of(&read.meta);
    Conditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    }
    .check_copy(&facts)?;
    let byte_range = match (range, facts.size) {
        (None, _) => None,
        (Some((first, last)), Some(size)) if last < size => Some(ByteRange { start: first, end: last }),
        (Some(_), size) => {
            return Err(s3_error!(
                InvalidRange,
                "the range is not within the source object of {} bytes",
                size.map_or("unknown".to_owned(), |n| n.to_string())
            ));
        }
    };
    let part = s.cache.put_part(&id, n, read.into_stream(byte_range), None).await.map_err(s3)?;
    let result = CopyPartResult {
        e_tag: Some(ETag::Strong(part.md5)),
        last_modified: Some(timestamp(part.last_modified_ms)),
        ..Default::default()
    };
    Ok(S3Response::new(UploadPartCopyOutput { copy_part_result: Some(result), ..Default::default() }))
}

pub(crate) async fn complete(
    s: &TierS3,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    let (id, _) = upload_of(s, &input.bucket, &input.key, &input.upload_id).await?;
    let listed = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
    let mut parts = Vec::with_capacity(listed.len());
    for p in listed {
        let n = part_number(p.part_number.ok_or_else(|| s3_error!(InvalidPart, "a part has no number"))?)?;
        let etag = p.e_tag.ok_or_else(|| s3_error!(InvalidPart, "part {n} has no ETag"))?;
        parts.push((n, etag.value().to_owned()));
    }
    // `If-None-Match: *`: the object is written only if the key has none, checked in the
    // transaction that writes it.
    let done = if matches!(input.if_none_match, Some(ETagCondition::Any)) {
        s.cache.complete_new_upload(&id, &parts).await
    } else {
        s.cache.complete_upload(&id, &parts).await
    };
    let done = done.map_err(s3)?;
    let output = CompleteMultipartUploadOutput {
        bucket: Some(done.namespace),
        key: Some(done.key),
        e_tag: Some(ETag::Strong(done.etag)),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn abort(
    s: &TierS3,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    let (id, _) = upload_of(s, &input.bucket, &input.key, &input.upload_id).await?;
    s.cache.abort_upload(&id).await.map_err(s3)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(crate) async fn list_parts(s: &TierS3, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    let (id, _) = upload_of(s, &input.bucket, &input.key, &input.upload_id).await?;
    let after = input.part_number_marker.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let limit = page_size(input.max_parts);
    let page = s.cache.list_parts(&id, after, limit).await.map_err(s3)?;
    let next = page.parts.last().map(|p| i32::try_from(p.part_number).unwrap_or(i32::MAX));
    let parts = page
        .parts
        .into_iter()
        .map(|p| Part {
            part_number: i32::try_from(p.part_number).ok(),
            e_tag: Some(ETag::Strong(p.md5)),
            size: i64::try_from(p.size_bytes).ok(),
            last_modified: Some(timestamp(p.last_modified_ms)),
            ..Default::default()
        })
        .collect();
    let output = ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id.as_str().to_owned()),
        max_parts: i32::try_from(limit).ok(),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next.filter(|_| page.is_truncated),
        is_truncated: Some(page.is_truncated),
        parts: Some(parts),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// One item of an uploads listing: an upload, or a common prefix standing for every upload
/// whose key has it.
enum Listed {
    Upload(UploadInfo),
    Prefix(String),
}

pub(crate) async fn list_uploads(
    s: &TierS3,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    let limit = page_size(input.max_uploads);
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    // The common prefix of `key`: the prefix asked for, then up to the first delimiter after it.
    let group = |key: &str| -> Option<String> {
        let d = delimiter.as_deref()?;
        let at = key.strip_prefix(prefix.as_str())?.find(d)?;
        Some(key[..prefix.len() + at + d.len()].to_owned())
    };
    let marker_id = match input.upload_id_marker.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => {
            Some(UploadId::parse(m).map_err(|_| s3_error!(InvalidArgument, "the upload-id marker is no upload id"))?)
        }
        None => None,
    };
    // A key marker alone resumes after every upload of that key: after the highest id there is.
    // A key marker that is a common prefix (one a page ended with) resumes after every key that
    // has it.
    let last_id = UploadId::parse(&"f".repeat(32)).map_err(s3)?;
    let mut after: Option<(String, UploadId)> = match input.key_marker.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => match group(key) {
            Some(cp) if cp == key => Some((past(&cp), last_id.clone())),
            _ => Some((key.to_owned(), marker_id.clone().unwrap_or_else(|| last_id.clone()))),
        },
        None => None,
    };
    let mut listed: Vec<Listed> = Vec::new();
    let mut is_truncated = false;
    'pages: loop {
        let want = (limit + 1 - listed.len()).min(MAX_UPLOAD_LIST);
        let at = after.as_ref().map(|(k, u)| (k.as_str(), u));
        let page = s.cache.list_uploads(&input.bucket, &prefix, at, want).await.map_err(s3)?;
        let n = page.uploads.len();
        for u in page.uploads {
            if listed.len() == limit {
                is_truncated = true;
                break 'pages;
            }
            match group(&u.key) {
                Some(cp) => {
                    // The rest of this prefix's uploads are skipped by asking again past it.
                    after = Some((past(&cp), last_id.clone()));
                    listed.push(Listed::Prefix(cp));
                    continue 'pages;
                }
                None => {
                    after = Some((u.key.clone(), u.upload_id.clone()));
                    listed.push(Listed::Upload(u));
                }
            }
        }
        if !page.is_truncated || n == 0 {
            break;
        }
    }
    let (next_key, next_id) = match listed.last().filter(|_| is_truncated) {
        Some(Listed::Upload(u)) => (Some(u.key.clone()), Some(u.upload_id.as_str().to_owned())),
        Some(Listed::Prefix(cp)) => (Some(cp.clone()), None),
        None => (None, None),
    };
    let mut uploads = Vec::new();
    let mut common_prefixes = Vec::new();
    for item in listed {
        match item {
            Listed::Upload(u) => uploads.push(MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id.as_str().to_owned()),
                initiated: Some(timestamp(u.created_at_ms)),
                ..Default::default()
            }),
            Listed::Prefix(cp) => common_prefixes.push(CommonPrefix { prefix: Some(cp) }),
        }
    }
    let output = ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        delimiter: input.delimiter,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: i32::try_from(limit).ok(),
        is_truncated: Some(is_truncated),
        next_key_marker: next_key,
        next_upload_id_marker: next_id,
        uploads: Some(uploads),
        common_prefixes: (!common_prefixes.is_empty()).then_some(common_prefixes),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// A key after every key that starts with `prefix` (in the index's byte order: `prefix` then
/// the highest code point).
fn past(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}
