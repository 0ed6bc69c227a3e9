//! The middleware service.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::answer;
use super::future::ResponseFuture;
use super::source::TokenSource;
use super::token::{Attempt, Verifier};

/// Verifies the token of every request before calling the inner service.
/// See the [module docs](super).
///
/// On success the [`VerifiedClaims`](super::VerifiedClaims) are in the
/// request extensions. On failure the inner service is not called and the
/// answer is a response with an empty body (`ResBody::default()`), the
/// status of [`VerifyError::status`](super::VerifyError::status), an RFC
/// 6750 `WWW-Authenticate` header for 400 and 401, and the
/// [`VerifyError`](super::VerifyError) in the response extensions.
#[derive(Debug, Clone)]
pub struct JwtVerifier<S> {
    inner: S,
    verifier: Verifier,
    source: TokenSource,
}

impl<S> JwtVerifier<S> {
    /// Wraps `inner`; the token is read from `Authorization: Bearer`. To
    /// read it from elsewhere, build a [`JwtVerifierLayer`](super::JwtVerifierLayer)
    /// with [`JwtVerifierLayer::builder`](super::JwtVerifierLayer::builder).
    pub fn new(inner: S, verifier: Verifier) -> Self {
        JwtVerifier::from_parts(inner, verifier, TokenSource::bearer())
    }

    /// Wraps `inner` with a checked token source.
    pub(crate) fn from_parts(inner: S, verifier: Verifier, source: TokenSource) -> Self {
        JwtVerifier {
            inner,
            verifier,
            source,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for JwtVerifier<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let challenge = self.source.challenge().clone();
        match answer::begin(&self.verifier, &self.source, &request) {
            Attempt::Done(Ok(claims)) => {
                request.extensions_mut().insert(claims);
                ResponseFuture::calling(self.inner.call(request))
            }
            Attempt::Done(Err(err)) => ResponseFuture::rejected(&err, &challenge),
            Attempt::Pending(verify) => {
                // The ready service goes into the future; a clone stays
                // here for the next request (tower's "clone and swap").
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::verifying(verify, request, ready, challenge)
            }
        }
    }
}
