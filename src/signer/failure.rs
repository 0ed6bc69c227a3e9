//! [`Failure`]: the answers the signer gives itself, each logged where it is
//! made, and the one `into_response` that turns them into HTTP.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::ResponseBody;
use super::claims::ClaimsRejection;

/// An answer the signer gives itself: the request is not forwarded.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    error: &'static str,
    reason: Cow<'static, str>,
}

impl Failure {
    /// `400 token_present`: [`ExistingToken::Reject`](super::ExistingToken::Reject)
    /// and the request carries the header.
    pub(crate) fn token_present(header_name: &HeaderName) -> Self {
        tracing::info!(header = %header_name, "request refused: it already carries a token");
        Failure {
            status: StatusCode::BAD_REQUEST,
            error: "token_present",
            reason: format!("the request already carries a {header_name} header").into(),
        }
    }

    /// `400 claim_unavailable`: a template cannot be rendered from this
    /// request.
    pub(crate) fn claim_unavailable(claim: &str, err: &dyn fmt::Display) -> Self {
        tracing::info!(claim = %claim, error = %err, "request refused: a template claim cannot be built");
        Failure {
            status: StatusCode::BAD_REQUEST,
            error: "claim_unavailable",
            reason: format!("claim {claim:?}: {err}").into(),
        }
    }

    /// `400 token_too_large`.
    pub(crate) fn token_too_large(len: usize, max: usize) -> Self {
        tracing::info!(len, max, "request refused: the token would be too large");
        Failure {
            status: StatusCode::BAD_REQUEST,
            error: "token_too_large",
            reason: format!("the token would be {len} bytes long, the limit is {max}").into(),
        }
    }

    /// `503 no_signing_key`.
    pub(crate) fn no_signing_key() -> Self {
        tracing::error!("request refused: the key registry has no active signing key");
        Failure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "no_signing_key",
            reason: "no active signing key".into(),
        }
    }

    /// `500 signing_failed`. The caller logs why.
    pub(crate) fn signing() -> Self {
        Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "signing_failed",
            reason: "the request could not be signed".into(),
        }
    }

    /// The claims closure's refusal: `401`/`403` with its reason, or `500`
    /// with a generic one (the closure's reason is only logged).
    pub(crate) fn from_rejection(rejection: ClaimsRejection) -> Self {
        let status = rejection.status();
        if status.is_server_error() {
            tracing::error!(
                reason = rejection.reason(),
                "request refused: the claims closure failed"
            );
            return Failure {
                status,
                error: "claims_failed",
                reason: "the token claims could not be built".into(),
            };
        }
        tracing::info!(%status, reason = rejection.reason(), "request refused by the claims closure");
        Failure {
            status,
            error: if status == StatusCode::FORBIDDEN {
                "forbidden"
            } else {
                "unauthorized"
            },
            reason: rejection.reason().to_owned().into(),
        }
    }

    /// The response: the status, and `{"error":..,"reason":..}` with
    /// `Cache-Control: no-store`.
    pub(crate) fn into_response<B>(self) -> Response<ResponseBody<B>> {
        let body = serde_json::to_vec(&serde_json::json!({
            "error": self.error,
            "reason": self.reason,
        }))
        .expect("a JSON object of strings serialises");
        let len = body.len();
        let mut response = Response::new(ResponseBody::signer(Bytes::from(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
