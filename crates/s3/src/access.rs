//! Who may do what: the access keys (`S3Auth`, so that s3s checks every signature against the
//! key's secret: `SignatureDoesNotMatch`, and `InvalidAccessKeyId` for a key it does not know),
//! each key's buckets, and anonymous reads of the buckets opened so (`S3Access`:
//! `AccessDenied` otherwise). Every request that passes authentication is counted here by its
//! operation.
//!
//! It does not look at what a bucket holds: that is the engine's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};

use crate::{S3Settings, SetupError};

/// Operations an anonymous client may make on a bucket opened for anonymous reads.
const ANONYMOUS_READS: &[&str] = &[
    "GetObject",
    "HeadObject",
    "HeadBucket",
    "ListObjects",
    "ListObjectsV2",
    "ListObjectVersions",
    "GetBucketLocation",
];

/// The keys and the anonymous buckets.
pub(crate) struct Keys {
    keys: HashMap<String, Key>,
    anonymous_read: HashSet<String>,
}

/// One key's secret and buckets.
struct Key {
    secret: SecretKey,
    /// `None`: every bucket.
    buckets: Option<HashSet<String>>,
}

impl Keys {
    /// The keys of `settings`; [`SetupError::NoCredentials`] if there is neither a key nor an
    /// anonymous bucket.
    pub(crate) fn new(settings: &S3Settings) -> Result<Keys, SetupError> {
        if settings.keys.is_empty() && settings.anonymous_read.is_empty() {
            return Err(SetupError::NoCredentials);
        }
        let mut keys = HashMap::new();
        for k in &settings.keys {
            if k.access_key.is_empty() || k.secret_key.is_empty() {
                return Err(SetupError::BadKey("an access key and its secret must not be empty".into()));
            }
            let key = Key {
                secret: SecretKey::from(k.secret_key.as_str()),
                buckets: k.buckets.as_ref().map(|b| b.iter().cloned().collect()),
            };
            if keys.insert(k.access_key.clone(), key).is_some() {
                return Err(SetupError::BadKey(format!("access key {:?} is given twice", k.access_key)));
            }
        }
        Ok(Keys { keys, anonymous_read: settings.anonymous_read.iter().cloned().collect() })
    }

    /// Whether the client signing with `access_key` (`None`: anonymous) may read `bucket`.
    pub(crate) fn may_read(&self, access_key: Option<&str>, bucket: &str) -> bool {
        match access_key {
            Some(k) => self.may_use(k, bucket),
            None => self.anonymous_read.contains(bucket),
        }
    }

    /// Whether the client signing with `access_key` may use `bucket` at all.
    pub(crate) fn may_use(&self, access_key: &str, bucket: &str) -> bool {
        self.keys.get(access_key).is_some_and(|k| k.buckets.as_ref().is_none_or(|buckets| buckets.contains(bucket)))
    }
}

/// The keys as s3s's authentication.
pub(crate) struct Auth(pub(crate) Arc<Keys>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.keys.get(access_key) {
            Some(k) => Ok(k.secret.clone()),
            None => {
                Err(s3_error!(InvalidAccessKeyId, "The AWS access key Id you provided does not exist in our records."))
            }
        }
    }
}

/// The keys' bucket limits and the anonymous buckets as s3s's access check.
pub(crate) struct Gate(pub(crate) Arc<Keys>);

#[async_trait::async_trait]
impl S3Access for Gate {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let op = cx.s3_op().name();
        crate::counts::request(op);
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(&**bucket),
        };
        let allowed = match (cx.credentials(), bucket) {
            // Listing buckets: each key sees its own (`buckets.rs`).
            (Some(_), None) => true,
            (Some(c), Some(bucket)) => self.0.may_use(&c.access_key, bucket),
            (None, Some(bucket)) => ANONYMOUS_READS.contains(&op) && self.0.anonymous_read.contains(bucket),
            (None, None) => false,
        };
        if allowed {
            Ok(())
        } else if cx.credentials().is_none() {
            Err(s3_error!(AccessDenied, "anonymous access is not allowed here: sign the request"))
        } else {
            Err(s3_error!(AccessDenied, "this access key may not use this bucket"))
        }
    }
}
