//! tiercache's S3-compatible front door: the [`s3s`] protocol layer (request parsing, SigV4 header
//! and presigned checks, aws-chunked bodies and their trailers, XML) over the engine's
//! [`Cache`]. Buckets are namespaces; an object is an entry; its ETag is the entry's MD5.
//!
//! [`service`] builds the whole front door as one tower service, [`S3Front`], from the cache and
//! its [`S3Settings`] (access keys, anonymous buckets, the virtual-host domain). The listener that
//! serves it is the server crate's (`tiercache_server::serve_handler`).
//!
//! It holds no business logic: every decision about data (what a key may be, what a bucket holds,
//! where bytes are stored, whether a delete may go ahead) is the engine's; this crate translates
//! requests into engine calls and engine errors into S3 error codes (`error.rs`, the one place).
//! Operations it does not implement (bucket policies, versioning, tagging, …) answer
//! `NotImplemented`.
#![warn(missing_docs)]

mod access;
mod buckets;
mod counts;
mod error;
mod front;
mod handler;
mod listing;
mod multipart;
mod objects;
mod upload;

use std::sync::Arc;

use tiercache_engine::Cache;

pub use front::S3Front;

/// The region this front door answers as (and accepts in signatures).
pub const REGION: &str = "us-east-1";

/// One access key: its secret, and the buckets it may use (`None`: all).
#[derive(Clone)]
pub struct AccessKey {
    /// The access key id.
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
    /// The buckets this key may use; `None` for every bucket.
    pub buckets: Option<Vec<String>>,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("AccessKey").field("access_key", &self.access_key).field("buckets", &self.buckets).finish()
    }
}

/// How the front door authenticates and names buckets.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// The access keys requests are signed with.
    pub keys: Vec<AccessKey>,
    /// Buckets anyone may read without signing (objects, listings, the bucket's existence).
    pub anonymous_read: Vec<String>,
    /// The base domain of virtual-host style requests (`BUCKET.DOMAIN`); path style always works.
    pub domain: Option<String>,
}

/// Why a front door cannot be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum SetupError {
    /// No access key and no anonymous bucket: nobody could use it, and an open S3 listener is
    /// never the default.
    NoCredentials,
    /// An access key is given twice, or is empty.
    BadKey(String),
    /// The virtual-host domain is not a valid domain name.
    BadDomain(String),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::NoCredentials => f.write_str(
                "the S3 listener needs credentials: TIERCACHE_S3_ACCESS_KEY and TIERCACHE_S3_SECRET_KEY, \
                 [[s3.keys]] in the config file, or --s3-anonymous-read BUCKET for anonymous reads",
            ),
            SetupError::BadKey(why) => write!(f, "invalid S3 access key: {why}"),
            SetupError::BadDomain(d) => write!(f, "invalid S3 virtual-host domain {d:?}"),
        }
    }
}

impl std::error::Error for SetupError {}

/// Bucket names as s3s sees them: any non-empty name passes, so that every namespace is a bucket
/// (namespace names allow `_` and short names, which S3's own rules do not); the engine decides
/// what a valid name is, and refuses the others (`InvalidBucketName`).
struct AnyName;

impl s3s::validation::NameValidation for AnyName {
    fn validate_bucket_name(&self, name: &str) -> bool {
        !name.is_empty()
    }
}

/// Virtual-host style under one domain: `BUCKET.DOMAIN` (with or without a port) names the
/// bucket; any other host name is path style, so path style keeps working beside it. (Requests
/// to an IP address are path style before this is asked.)
struct Domain {
    domain: String,
}

impl s3s::host::S3Host for Domain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let vh = s3s::host::VirtualHost::new(self.domain.as_str());
        let bucket = name.len().checked_sub(self.domain.len() + 1).and_then(|at| {
            let (bucket, rest) = name.split_at_checked(at)?;
            rest.strip_prefix('.').filter(|d| d.eq_ignore_ascii_case(&self.domain)).map(|_| bucket)
        });
        Ok(match bucket {
            Some(bucket) if !bucket.is_empty() => vh.with_bucket(bucket),
            _ => vh,
        })
    }
}

/// Builds the S3 front door over `cache`: authentication by `settings`' keys (SigV4, header or
/// presigned), their bucket limits, anonymous reads of the buckets named so, and virtual-host
/// style requests under `settings.domain`. [`SetupError::NoCredentials`] when `settings` lets
/// nobody in.
pub fn service(cache: Cache, settings: &S3Settings) -> Result<S3Front, SetupError> {
    let (keys, domain) = checked(settings)?;
    let keys = Arc::new(keys);
    let mut builder = s3s::service::S3ServiceBuilder::new(handler::TierS3 { cache, keys: Arc::clone(&keys) });
    builder.set_auth(access::Auth(Arc::clone(&keys)));
    builder.set_access(access::Gate(keys));
    builder.set_validation(AnyName);
    if let Some(domain) = domain {
        builder.set_host(domain);
    }
    Ok(S3Front::new(builder.build()))
}

/// The error [`service`] would return for `settings`, without a cache: for checking a
/// configuration before anything is opened.
pub fn check(settings: &S3Settings) -> Result<(), SetupError> {
    checked(settings).map(|_| ())
}

/// The keys and the virtual-host domain of `settings`, each checked.
fn checked(settings: &S3Settings) -> Result<(access::Keys, Option<Domain>), SetupError> {
    let keys = access::Keys::new(settings)?;
    let domain = match &settings.domain {
        Some(domain) => {
            s3s::host::SingleDomain::new(domain).map_err(|_| SetupError::BadDomain(domain.clone()))?;
            Some(Domain { domain: domain.to_ascii_lowercase() })
        }
        None => None,
    };
    Ok((keys, domain))
}
