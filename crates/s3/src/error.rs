//! The one place an engine error becomes an S3 error code ([`s3`]). A client's mistake gets its
//! S3 code and the engine's message (which names only what the client sent); a failure of ours
//! or of a source gets a code that says its kind and a message that reveals no path, URL or
//! other bucket's name, the full error being logged.
//!
//! It chooses no HTTP status but through the code (s3s knows each code's status), except for a
//! full disk, which S3 has no code for.

use s3s::{S3Error, S3ErrorCode, s3_error};
use tiercache_engine::{Error, SourceError};

/// `e` as the S3 error a client is told.
pub(crate) fn s3(e: Error) -> S3Error {
    use tiercache_engine::Error as E;
    let told = |code: S3ErrorCode, e: &Error| S3Error::with_message(code, e.to_string());
    let hidden = |code: S3ErrorCode, e: &Error, public: &'static str| {
        tracing::warn!(error = %e, kind = e.kind(), "S3 request failed");
        S3Error::with_message(code, public)
    };
    match &e {
        E::Key(tiercache_engine::KeyError::TooLong { what: "key", .. }) => told(S3ErrorCode::KeyTooLongError, &e),
        E::Key(
            tiercache_engine::KeyError::NamespaceSyntax(_)
            | tiercache_engine::KeyError::TooLong { what: "namespace", .. },
        ) => told(S3ErrorCode::InvalidBucketName, &e),
        E::Key(_) | E::Digest(_) | E::Invalid(_) | E::NameTooLong { .. } => told(S3ErrorCode::InvalidArgument, &e),
        E::Range(_) => told(S3ErrorCode::InvalidRange, &e),
        E::NoNamespace(_) => told(S3ErrorCode::NoSuchBucket, &e),
        E::NoEntry { .. } | E::NoBlob(_) | E::Source(SourceError::NotFound { .. }) => {
            S3Error::with_message(S3ErrorCode::NoSuchKey, "The specified key does not exist.")
        }
        E::NotEmpty { .. } => told(S3ErrorCode::BucketNotEmpty, &e),
        E::Exists { .. } => S3Error::with_message(
            S3ErrorCode::PreconditionFailed,
            "At least one of the pre-conditions you specified did not hold",
        ),
        E::DigestMismatch { .. } | E::BadDigest { .. } => told(S3ErrorCode::BadDigest, &e),
        E::NoSuchUpload { .. } => told(S3ErrorCode::NoSuchUpload, &e),
        E::InvalidPart { .. } => told(S3ErrorCode::InvalidPart, &e),
        E::InvalidPartOrder { .. } => told(S3ErrorCode::InvalidPartOrder, &e),
        E::EntityTooSmall { .. } => told(S3ErrorCode::EntityTooSmall, &e),
        E::TooLarge { .. } => told(S3ErrorCode::EntityTooLarge, &e),
        E::UploadBody { .. } => told(S3ErrorCode::IncompleteBody, &e),
        E::ReadOnly { .. } => S3Error::with_message(
            S3ErrorCode::MethodNotAllowed,
            "this bucket mirrors a source: its objects are read-only here",
        ),
        E::Busy { .. } | E::SourceBusy { .. } => told(S3ErrorCode::SlowDown, &e),
        E::Conflict { .. } => hidden(S3ErrorCode::OperationAborted, &e, "the request conflicts with what exists"),
        E::Containment { .. } => hidden(S3ErrorCode::AccessDenied, &e, "this bucket is refused by the server"),
        E::Source(SourceError::Forbidden { .. }) => {
            hidden(S3ErrorCode::AccessDenied, &e, "the bucket's source refused the request")
        }
        E::Source(_) => hidden(S3ErrorCode::ServiceUnavailable, &e, "the bucket's source failed; try again later"),
        E::StorageFull { .. } => {
            let mut err =
                hidden(S3ErrorCode::Custom("InsufficientStorage".into()), &e, "the server has no room for this object");
            err.set_status_code(http::StatusCode::INSUFFICIENT_STORAGE);
            err
        }
        _ => hidden(S3ErrorCode::InternalError, &e, "internal error"),
    }
}

/// A key S3 refuses whatever the bucket: over 1024 bytes.
pub(crate) fn check_key(key: &str) -> Result<(), S3Error> {
    if key.len() > 1024 {
        return Err(s3_error!(KeyTooLongError, "the key is {} bytes long; the limit is 1024", key.len()));
    }
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "the key is empty"));
    }
    Ok(())
}
