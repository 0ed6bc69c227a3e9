//! [`Failure`]: the answers the signer gives itself, each logged where it is
//! made, and the one `into_response` that turns them into HTTP; [`Refusal`]:
//! their typed cause, public, in the response extensions.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use http::header::HeaderName;
use http::{Response, StatusCode};

use super::body::ResponseBody;
use super::claims::ClaimsRejection;
use crate::keys::{CertificateChain, Kid};

/// Why the signer answered a request itself instead of forwarding it: the
/// typed cause of each of its refusals (see the
/// [status table](super#answers-the-signer-gives-itself)), in the response
/// extensions, so that an outer layer can render the refusal its own way.
///
/// [`error_code`](Self::error_code), [`status`](Self::status) and
/// [`reason`](Self::reason) are what the signer's JSON body says. The
/// reason is safe to send to the client: the claims closure's reason for a
/// 500 and a signing failure's cause are only logged, never here.
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_jwt_signer::signer::Refusal;
///
/// /// An outer layer's rendering: `text/plain` instead of the signer's JSON.
/// fn render<B>(response: Response<B>) -> Response<String> {
///     match response.extensions().get::<Refusal>() {
///         Some(refusal) => {
///             let mut rendered = Response::new(format!("{}: {}", refusal.error_code(), refusal.reason()));
///             *rendered.status_mut() = refusal.status();
///             rendered
///         }
///         None => response.map(|_| String::from("forwarded")),
///     }
/// }
/// # let _ = render::<()>;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// [`ExistingToken::Reject`](super::ExistingToken::Reject) and the
    /// request carries the header. 400 `token_present`.
    TokenPresent {
        /// The header the signer writes.
        header: HeaderName,
    },
    /// A template claim cannot be rendered from this request: a value is
    /// missing, or of the wrong type. 400 `claim_unavailable`.
    ClaimUnavailable {
        /// The claim.
        claim: String,
        /// Why it cannot be rendered.
        problem: String,
    },
    /// The token would be longer than the signer's
    /// [`max_token_len`](super::JwtSignerLayerBuilder::max_token_len).
    /// 400 `token_too_large`.
    TokenTooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The claims closure refused with
    /// [`ClaimsRejection::unauthorized`](super::ClaimsRejection::unauthorized).
    /// 401 `unauthorized`.
    Unauthorized {
        /// The closure's reason.
        reason: Cow<'static, str>,
    },
    /// The claims closure refused with
    /// [`ClaimsRejection::forbidden`](super::ClaimsRejection::forbidden).
    /// 403 `forbidden`.
    Forbidden {
        /// The closure's reason.
        reason: Cow<'static, str>,
    },
    /// The claims closure failed
    /// ([`ClaimsRejection::internal`](super::ClaimsRejection::internal), or a
    /// [`ReservedClaim`](super::ReservedClaim)); its reason is only logged.
    /// 500 `claims_failed`.
    ClaimsFailed,
    /// The registry has no active key. 503 `no_signing_key`.
    NoSigningKey,
    /// The active key is certificate-backed and its certificate chain has
    /// expired (now is after the earliest `notAfter` of the chain): the key
    /// never signs again. 503 `certificate_expired`.
    CertificateExpired {
        /// The active key.
        kid: Kid,
        /// The end of the chain's validity.
        not_after: SystemTime,
    },
    /// The active key is certificate-backed and its certificate chain is not
    /// valid yet (now is before the latest `notBefore` of the chain).
    /// 503 `certificate_not_yet_valid`.
    CertificateNotYetValid {
        /// The active key.
        kid: Kid,
        /// The start of the chain's validity.
        not_before: SystemTime,
    },
    /// Signing failed (the key backend, the random source); the cause is
    /// only logged. 500 `signing_failed`.
    SigningFailed,
}

impl Refusal {
    /// The HTTP status the signer answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::TokenPresent { .. }
            | Refusal::ClaimUnavailable { .. }
            | Refusal::TokenTooLarge { .. } => StatusCode::BAD_REQUEST,
            Refusal::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden { .. } => StatusCode::FORBIDDEN,
            Refusal::ClaimsFailed | Refusal::SigningFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::NoSigningKey
            | Refusal::CertificateExpired { .. }
            | Refusal::CertificateNotYetValid { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` of the signer's JSON body: `token_present`,
    /// `claim_unavailable`, `token_too_large`, `unauthorized`,
    /// `forbidden`, `claims_failed`, `no_signing_key`,
    /// `certificate_expired`, `certificate_not_yet_valid` or
    /// `signing_failed`.
    pub fn error_code(&self) -> &'static str {
        match self {
            Refusal::TokenPresent { .. } => "token_present",
            Refusal::ClaimUnavailable { .. } => "claim_unavailable",
            Refusal::TokenTooLarge { .. } => "token_too_large",
            Refusal::Unauthorized { .. } => "unauthorized",
            Refusal::Forbidden { .. } => "forbidden",
            Refusal::ClaimsFailed => "claims_failed",
            Refusal::NoSigningKey => "no_signing_key",
            Refusal::CertificateExpired { .. } => "certificate_expired",
            Refusal::CertificateNotYetValid { .. } => "certificate_not_yet_valid",
            Refusal::SigningFailed => "signing_failed",
        }
    }

    /// The `reason` of the signer's JSON body, safe to send to the client.
    pub fn reason(&self) -> Cow<'_, str> {
        match self {
            Refusal::TokenPresent { header } => {
                format!("the request already carries a {header} header").into()
            }
            Refusal::ClaimUnavailable { claim, problem } => {
                format!("claim {claim:?}: {problem}").into()
            }
            Refusal::TokenTooLarge { len, max } => {
                format!("the token would be {len} bytes long, the limit is {max}").into()
            }
            Refusal::Unauthorized { reason } | Refusal::Forbidden { reason } => {
                Cow::Borrowed(reason)
            }
            Refusal::ClaimsFailed => "the token claims could not be built".into(),
            Refusal::NoSigningKey => "no active signing key".into(),
            Refusal::CertificateExpired { .. } => {
                "the signing key's certificate has expired".into()
            }
            Refusal::CertificateNotYetValid { .. } => {
                "the signing key's certificate is not valid yet".into()
            }
            Refusal::SigningFailed => "the request could not be signed".into(),
        }
    }
}

impl fmt::Display for Refusal {
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

impl std::error::Error for Refusal {}

/// An answer the signer gives itself: the request is not forwarded. Each
/// constructor logs why.
#[derive(Debug)]
pub(crate) struct Failure {
    refusal: Refusal,
}

impl Failure {
    /// `400 token_present`: [`ExistingToken::Reject`](super::ExistingToken::Reject)
    /// and the request carries the header.
    pub(crate) fn token_present(header_name: &HeaderName) -> Self {
        tracing::info!(header = %header_name, "request refused: it already carries a token");
        Failure {
            refusal: Refusal::TokenPresent {
                header: header_name.clone(),
            },
        }
    }

    /// `400 claim_unavailable`: a template cannot be rendered from this
    /// request.
    pub(crate) fn claim_unavailable(claim: &str, err: &dyn fmt::Display) -> Self {
        tracing::info!(claim = %claim, error = %err, "request refused: a template claim cannot be built");
        Failure {
            refusal: Refusal::ClaimUnavailable {
                claim: claim.to_owned(),
                problem: err.to_string(),
            },
        }
    }

    /// `400 token_too_large`.
    pub(crate) fn token_too_large(len: usize, max: usize) -> Self {
        tracing::info!(len, max, "request refused: the token would be too large");
        Failure {
            refusal: Refusal::TokenTooLarge { len, max },
        }
    }

    /// `503 no_signing_key`.
    pub(crate) fn no_signing_key() -> Self {
        tracing::error!("request refused: the key registry has no active signing key");
        Failure {
            refusal: Refusal::NoSigningKey,
        }
    }

    /// `503 certificate_expired` / `certificate_not_yet_valid`: the active
    /// key's certificate chain is not valid now.
    pub(crate) fn certificate_not_valid(
        kid: &Kid,
        chain: &CertificateChain,
        expired: bool,
    ) -> Self {
        let refusal = if expired {
            tracing::error!(
                kid = %kid,
                not_after = chain.not_after_secs(),
                "request refused: the signing key's certificate has expired; it never signs again (renew the certificate, or rotate to another key)"
            );
            Refusal::CertificateExpired {
                kid: kid.clone(),
                not_after: chain.not_after(),
            }
        } else {
            tracing::error!(
                kid = %kid,
                not_before = chain.not_before_secs(),
                "request refused: the signing key's certificate is not valid yet"
            );
            Refusal::CertificateNotYetValid {
                kid: kid.clone(),
                not_before: chain.not_before(),
            }
        };
        Failure { refusal }
    }

    /// `500 signing_failed`. The caller logs why.
    pub(crate) fn signing() -> Self {
        Failure {
            refusal: Refusal::SigningFailed,
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
                refusal: Refusal::ClaimsFailed,
            };
        }
        tracing::info!(%status, reason = rejection.reason(), "request refused by the claims closure");
        let reason = rejection.into_reason();
        Failure {
            refusal: if status == StatusCode::FORBIDDEN {
                Refusal::Forbidden { reason }
            } else {
                Refusal::Unauthorized { reason }
            },
        }
    }

    /// The response: the status, `{"error":..,"reason":..}` with
    /// `Cache-Control: no-store`, and the [`Refusal`] in the extensions.
    pub(crate) fn into_response<B>(self) -> Response<ResponseBody<B>> {
        let refusal = self.refusal;
        crate::metrics::signing_refused(refusal.error_code());
        let mut response = crate::answer::json_error(
            refusal.status(),
            refusal.error_code(),
            &refusal.reason(),
            ResponseBody::signer,
        );
        response.extensions_mut().insert(refusal);
        response
    }
}
