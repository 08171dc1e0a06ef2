//! [`S3Front`]: the s3s service as the tower service a listener serves, counting every error
//! answer by its S3 code (`tiercache_s3_errors_total{code}`, `counts.rs`): the codes s3s chooses itself
//! (signatures, malformed requests) and those chosen in `error.rs` alike, read from the answer's
//! XML body.
//!
//! It does not answer anything itself but a failure of the protocol layer (a `500`).

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use s3s::service::S3Service;
use s3s::{Body, HttpError, HttpResponse};

/// The S3 front door as one tower service (built by [`crate::service`]).
#[derive(Clone)]
pub struct S3Front {
    inner: S3Service,
}

impl std::fmt::Debug for S3Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Front").finish_non_exhaustive()
    }
}

impl S3Front {
    pub(crate) fn new(inner: S3Service) -> S3Front {
        S3Front { inner }
    }
}

impl<B> tower::Service<http::Request<B>> for S3Front
where
    S3Service: tower::Service<http::Request<B>, Response = HttpResponse, Error = HttpError>,
    <S3Service as tower::Service<http::Request<B>>>::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let answer = tower::Service::call(&mut self.inner, req);
        Box::pin(async move {
            match answer.await {
                Ok(res) => {
                    if res.status().is_client_error() || res.status().is_server_error() {
                        let code = error_code(res.body()).unwrap_or_else(|| res.status().as_str().to_owned());
                        crate::counts::error(&code);
                    }
                    Ok(res)
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "the S3 protocol layer failed to answer");
                    crate::counts::error("InternalError");
                    let mut res = HttpResponse::new(Body::empty());
                    *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    Ok(res)
                }
            }
        })
    }
}

/// The `<Code>` of an error answer's XML body, if the body is in memory and has one.
fn error_code(body: &Body) -> Option<String> {
    let bytes = body.bytes()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    // A label is a bounded set: codes are short ASCII words.
    (code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_read_from_an_error_body() {
        let body =
            Body::from("<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>x</Message></Error>".to_owned());
        assert_eq!(error_code(&body).as_deref(), Some("NoSuchKey"));
        assert_eq!(error_code(&Body::from("<Error><Code>a b</Code></Error>".to_owned())), None);
        assert_eq!(error_code(&Body::empty()), None);
    }
}
