//! What every way of verifying a request shares: reading and verifying the
//! token of a request, and the one answer to a refusal. [`JwtVerifier`]
//! (the layer's service) and the tower-http authorizer both go through
//! here, so they refuse the same requests with the same responses.
//!
//! [`JwtVerifier`]: super::JwtVerifier

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use super::source::TokenSource;
use super::token::{Attempt, Verifier, VerifyError};

/// Reads the token of `request` from `source` and starts verifying it: done
/// at once unless a remote key fetch is needed.
pub(crate) fn begin<B>(verifier: &Verifier, source: &TokenSource, request: &Request<B>) -> Attempt {
    match source.extract(request) {
        Ok(token) => verifier.begin(token),
        Err(err) => Attempt::Done(Err(err)),
    }
}

/// The answer to a refused request: no body, the status, an RFC 6750
/// challenge for 400 and 401 (`challenge` is the scheme it names), the
/// error in the extensions.
pub(crate) fn refusal<B: Default>(err: &VerifyError, challenge: &str) -> Response<B> {
    tracing::debug!(status = err.status().as_u16(), reason = %err, "request refused");
    crate::metrics::verifier_refused(err.metric_reason());
    let mut response = Response::new(B::default());
    *response.status_mut() = err.status();
    if err.status() != StatusCode::SERVICE_UNAVAILABLE
        && let Some(value) = www_authenticate(challenge, err.error_code(), &err.description())
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response.extensions_mut().insert(err.clone());
    response
}

/// An RFC 6750 `WWW-Authenticate` value: the bare scheme when there is no
/// error code (section 3.1: a request that simply lacks a token), else
/// `<scheme> error="<code>", error_description="<description>"`. The
/// description must be a safe quoted-string body (no quotes, backslashes
/// or control characters).
pub(crate) fn www_authenticate(
    challenge: &str,
    code: Option<&str>,
    description: &str,
) -> Option<HeaderValue> {
    let value = match code {
        None => challenge.to_owned(),
        Some(code) => format!("{challenge} error=\"{code}\", error_description=\"{description}\""),
    };
    HeaderValue::from_str(&value).ok()
}
