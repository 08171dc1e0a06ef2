//! Buckets are namespaces: CreateBucket makes a namespace without a source, every namespace of
//! any kind is a bucket (ListBuckets, HeadBucket, GetBucketLocation), DeleteBucket deletes one
//! only while it is empty (the engine checks and deletes in one index transaction).
//!
//! It does not decide what a valid name is: the engine does (`InvalidBucketName` otherwise).

use std::time::{Duration, SystemTime};

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};
use tiercache_engine::NamespaceOptions;

use crate::error::s3;
use crate::handler::TierS3;

pub(crate) async fn create(s: &TierS3, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
    let name = &req.input.bucket;
    let (_, is_new) = s.cache.create_namespace(name, None, &NamespaceOptions::default()).await.map_err(s3)?;
    if !is_new {
        return Err(s3_error!(BucketAlreadyOwnedByYou, "the bucket already exists"));
    }
    let output = CreateBucketOutput { location: Some(format!("/{name}")) };
    Ok(S3Response::new(output))
}

pub(crate) async fn delete(s: &TierS3, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
    if !s.cache.delete_empty_namespace(&req.input.bucket).await.map_err(s3)? {
        return Err(s3_error!(NoSuchBucket, "The specified bucket does not exist"));
    }
    Ok(S3Response::new(DeleteBucketOutput::default()))
}

pub(crate) async fn head(s: &TierS3, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
    s.cache.namespace_row(&req.input.bucket).await.map_err(s3)?;
    let output = HeadBucketOutput { bucket_region: Some(crate::REGION.to_owned()), ..Default::default() };
    Ok(S3Response::new(output))
}

pub(crate) async fn location(
    s: &TierS3,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    s.cache.namespace_row(&req.input.bucket).await.map_err(s3)?;
    // us-east-1 is said with an empty location constraint.
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}

pub(crate) async fn list(s: &TierS3, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
    let access_key = req.credentials.as_ref().map(|c| c.access_key.as_str());
    let namespaces = s.cache.namespace_list().await.map_err(s3)?;
    let prefix = req.input.prefix.as_deref().unwrap_or("");
    let buckets = namespaces
        .into_iter()
        .filter(|ns| ns.name.starts_with(prefix) && s.keys.may_read(access_key, &ns.name))
        .map(|ns| Bucket {
            name: Some(ns.name),
            creation_date: Some(Timestamp::from(
                SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ns.created_at).unwrap_or(0)),
            )),
            bucket_region: Some(crate::REGION.to_owned()),
        })
        .collect();
    let owner = Owner { display_name: Some("tiercache".to_owned()), id: Some("tiercache".to_owned()) };
    let output = ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(owner),
        prefix: req.input.prefix,
        ..Default::default()
    };
    Ok(S3Response::new(output))
}
