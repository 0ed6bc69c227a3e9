//! [`ForwardError`]: the answers the forwarder gives itself.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::ResponseBody;

/// Why the [`Forwarder`](super::Forwarder) answered a request itself
/// instead of with the upstream's response. The answer has the
/// [`status`](Self::status), a small JSON body
/// `{"error": error_code, "reason": reason}`, and this error in its
/// extensions, so an outer layer can render it its own way (as with
/// [`signer::Refusal`](crate::signer::Refusal)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardError {
    /// The request target is not forwarded: not a path (`OPTIONS *`), or a
    /// path that [`check_target`](super::check_target) refuses. 400
    /// `bad_request`; never sent upstream.
    BadTarget {
        /// Why.
        reason: Cow<'static, str>,
    },
    /// `CONNECT`: a tunnel is not a request to forward. 405
    /// `method_not_allowed`, with `Allow`.
    MethodNotAllowed,
    /// The upstream could not be reached, or failed before its response
    /// head (connection refused or reset, not HTTP). 502 `bad_gateway`.
    Unreachable,
    /// The upstream's response head did not arrive within the
    /// [`timeout`](super::ForwarderBuilder::timeout). 504
    /// `gateway_timeout`.
    Timeout {
        /// The timeout.
        after: Duration,
    },
}

impl ForwardError {
    pub(crate) fn bad_target(reason: impl Into<Cow<'static, str>>) -> Self {
        ForwardError::BadTarget {
            reason: reason.into(),
        }
    }

    /// The status the forwarder answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::BadTarget { .. } => StatusCode::BAD_REQUEST,
            ForwardError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ForwardError::Unreachable => StatusCode::BAD_GATEWAY,
            ForwardError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `error` of the JSON body: `bad_request`, `method_not_allowed`,
    /// `bad_gateway` or `gateway_timeout`.
    pub fn error_code(&self) -> &'static str {
        match self {
            ForwardError::BadTarget { .. } => "bad_request",
            ForwardError::MethodNotAllowed => "method_not_allowed",
            ForwardError::Unreachable => "bad_gateway",
            ForwardError::Timeout { .. } => "gateway_timeout",
        }
    }

    /// The `reason` of the JSON body, safe to send to the client (the
    /// upstream's address and the transport error are only logged).
    pub fn reason(&self) -> Cow<'_, str> {
        match self {
            ForwardError::BadTarget { reason } => Cow::Borrowed(reason),
            ForwardError::MethodNotAllowed => "CONNECT is not forwarded".into(),
            ForwardError::Unreachable => "the upstream could not be reached".into(),
            ForwardError::Timeout { after } => format!(
                "the upstream did not answer within {} ms",
                after.as_millis()
            )
            .into(),
        }
    }

    /// The answer: the status, the JSON body with `Cache-Control:
    /// no-store`, `Allow` for a 405, and this error in the extensions.
    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = crate::answer::json_error(
            self.status(),
            self.error_code(),
            &self.reason(),
            ResponseBody::answer,
        );
        let headers = response.headers_mut();
        if self == ForwardError::MethodNotAllowed {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        response.extensions_mut().insert(self);
        response
    }
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.error_code(),
            self.status(),
            self.reason()
        )
    }
}

impl std::error::Error for ForwardError {}

/// With the `axum` feature, a refused target is an axum response, for
/// `axum::middleware::map_request(|r| async { check_target(r) })`.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum::response::IntoResponse for ForwardError {
    fn into_response(self) -> axum::response::Response {
        ForwardError::into_response(self).map(axum::body::Body::new)
    }
}
