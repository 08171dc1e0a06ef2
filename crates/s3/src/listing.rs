//! Listing a bucket: ListObjectsV2, ListObjects (v1) and ListObjectVersions (a bucket is not
//! versioned: every object is its only version, `VersionId` `null`), each one page of the
//! engine's listing walk (paged in SQL: a page costs its own rows, however large the bucket).
//!
//! A continuation token is the last key or common prefix of the page before it, base64: the
//! walk starts after it. With `encoding-type=url`, keys and prefixes are percent-encoded in
//! the answer (every byte but unreserved characters and `/`), so that any key survives XML.

use std::time::{Duration, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tiercache_engine::{ListPage, ListRequest, ListedItem};

use crate::error::s3;
use crate::handler::TierS3;

/// Keys a page holds unless the client asks for fewer (S3's default and maximum).
const MAX_KEYS: i32 = 1000;

/// Bytes `encoding-type=url` leaves as they are.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// How names are written in an answer.
#[derive(Clone, Copy)]
struct Names {
    is_url: bool,
}

impl Names {
    fn new(encoding: Option<&EncodingType>) -> S3Result<Names> {
        match encoding.map(EncodingType::as_str) {
            None => Ok(Names { is_url: false }),
            Some(EncodingType::URL) => Ok(Names { is_url: true }),
            Some(other) => Err(s3_error!(InvalidArgument, "invalid encoding type {other:?}: only \"url\" is known")),
        }
    }

    fn show(self, name: &[u8]) -> String {
        if self.is_url { percent_encode(name, KEEP).to_string() } else { String::from_utf8_lossy(name).into_owned() }
    }

    fn show_opt(self, name: Option<String>) -> Option<String> {
        name.map(|n| self.show(n.as_bytes()))
    }
}

/// One page of `bucket` after `after`.
async fn page(
    s: &TierS3,
    bucket: &str,
    prefix: Option<&str>,
    delimiter: Option<&str>,
    after: Option<Vec<u8>>,
    max_keys: usize,
) -> S3Result<ListPage> {
    if max_keys == 0 {
        // Nothing asked for: the bucket must still exist.
        s.cache.namespace_row(bucket).await.map_err(s3)?;
        return Ok(ListPage::default());
    }
    let req = ListRequest {
        prefix: prefix.unwrap_or("").as_bytes().to_vec(),
        delimiter: delimiter.filter(|d| !d.is_empty()).map(|d| d.as_bytes().to_vec()),
        after,
        limit: max_keys,
    };
    s.cache.list(bucket, req).await.map_err(s3)
}

fn max_keys(asked: Option<i32>) -> S3Result<(i32, usize)> {
    let n = asked.unwrap_or(MAX_KEYS);
    if n < 0 {
        return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
    }
    let n = n.min(MAX_KEYS);
    Ok((n, usize::try_from(n).unwrap_or(0)))
}

fn modified(item: &ListedItem) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(item.modified_ms).unwrap_or(0)))
}

fn owner() -> Owner {
    Owner { display_name: Some("tiercache".to_owned()), id: Some("tiercache".to_owned()) }
}

fn object(item: ListedItem, names: Names, with_owner: bool) -> Object {
    Object {
        e_tag: item.md5.clone().map(ETag::Strong),
        last_modified: Some(modified(&item)),
        size: i64::try_from(item.size_bytes).ok(),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        owner: with_owner.then(owner),
        key: Some(names.show(&item.key)),
        ..Default::default()
    }
}

fn prefixes(page: &ListPage, names: Names) -> Vec<CommonPrefix> {
    page.common_prefixes.iter().map(|p| CommonPrefix { prefix: Some(names.show(p)) }).collect()
}

fn token(last: &[u8]) -> String {
    base64_simd::URL_SAFE_NO_PAD.encode_to_string(last)
}

fn untoken(token: &str) -> S3Result<Vec<u8>> {
    base64_simd::URL_SAFE_NO_PAD
        .decode_to_vec(token)
        .map_err(|_| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}

pub(crate) async fn list_v2(
    s: &TierS3,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let names = Names::new(input.encoding_type.as_ref())?;
    let (max, limit) = max_keys(input.max_keys)?;
    let after = match (&input.continuation_token, &input.start_after) {
        (Some(t), _) => Some(untoken(t)?),
        (None, Some(a)) if !a.is_empty() => Some(a.as_bytes().to_vec()),
        (None, _) => None,
    };
    let page = page(s, &input.bucket, input.prefix.as_deref(), input.delimiter.as_deref(), after, limit).await?;
    let with_owner = input.fetch_owner.unwrap_or(false);
    let common_prefixes = prefixes(&page, names);
    let next = page.is_truncated.then(|| page.last.as_deref().map(token)).flatten();
    let key_count = page.items.len() + common_prefixes.len();
    let contents: Vec<Object> = page.items.into_iter().map(|i| object(i, names, with_owner)).collect();
    let output = ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(names.show_opt(input.prefix).unwrap_or_default()),
        delimiter: names.show_opt(input.delimiter),
        start_after: names.show_opt(input.start_after),
        continuation_token: input.continuation_token,
        next_continuation_token: next,
        max_keys: Some(max),
        key_count: i32::try_from(key_count).ok(),
        is_truncated: Some(page.is_truncated),
        contents: Some(contents),
        common_prefixes: Some(common_prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn list_v1(s: &TierS3, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let names = Names::new(input.encoding_type.as_ref())?;
    let (max, limit) = max_keys(input.max_keys)?;
    let after = input.marker.as_ref().filter(|m| !m.is_empty()).map(|m| m.as_bytes().to_vec());
    let page = page(s, &input.bucket, input.prefix.as_deref(), input.delimiter.as_deref(), after, limit).await?;
    let common_prefixes = prefixes(&page, names);
    let next_marker = page.is_truncated.then(|| page.last.as_deref().map(|l| names.show(l))).flatten();
    let contents: Vec<Object> = page.items.into_iter().map(|i| object(i, names, true)).collect();
    let output = ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(names.show_opt(input.prefix).unwrap_or_default()),
        delimiter: names.show_opt(input.delimiter),
        marker: Some(names.show_opt(input.marker).unwrap_or_default()),
        next_marker,
        max_keys: Some(max),
        is_truncated: Some(page.is_truncated),
        contents: Some(contents),
        common_prefixes: Some(common_prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

pub(crate) async fn versions(
    s: &TierS3,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let names = Names::new(input.encoding_type.as_ref())?;
    let (max, limit) = max_keys(input.max_keys)?;
    let after = input.key_marker.as_ref().filter(|m| !m.is_empty()).map(|m| m.as_bytes().to_vec());
    let page = page(s, &input.bucket, input.prefix.as_deref(), input.delimiter.as_deref(), after, limit).await?;
    let common_prefixes = prefixes(&page, names);
    let next_key_marker = page.is_truncated.then(|| page.last.as_deref().map(|l| names.show(l))).flatten();
    let versions: Vec<ObjectVersion> = page
        .items
        .into_iter()
        .map(|item| ObjectVersion {
            e_tag: item.md5.clone().map(ETag::Strong),
            last_modified: Some(modified(&item)),
            size: i64::try_from(item.size_bytes).ok(),
            storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
            owner: Some(owner()),
            is_latest: Some(true),
            version_id: Some("null".to_owned()),
            key: Some(names.show(&item.key)),
            ..Default::default()
        })
        .collect();
    let output = ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(names.show_opt(input.prefix).unwrap_or_default()),
        delimiter: names.show_opt(input.delimiter),
        key_marker: Some(names.show_opt(input.key_marker).unwrap_or_default()),
        next_key_marker,
        next_version_id_marker: page.is_truncated.then(|| "null".to_owned()),
        max_keys: Some(max),
        is_truncated: Some(page.is_truncated),
        versions: Some(versions),
        common_prefixes: Some(common_prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}
