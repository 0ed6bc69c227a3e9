//! The response future of [`JwtVerifier`](super::JwtVerifier).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use pin_project::pin_project;
use tower_service::Service;

use super::answer::refusal;
use super::claims::VerifiedClaims;
use super::token::VerifyError;

/// The response future of [`JwtVerifier`](super::JwtVerifier).
#[pin_project]
pub struct ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    #[pin]
    state: State<S, ReqBody>,
}

#[pin_project(project = StateProj)]
enum State<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    /// Waiting for a remote key fetch before the token can be checked (the
    /// rare path: boxed, so the common states stay small).
    Verifying { pending: Box<Pending<S, ReqBody>> },
    /// The token is good; the inner service answers.
    Calling {
        #[pin]
        future: S::Future,
    },
    /// The token is refused; this is the answer.
    Rejected { response: Option<S::Response> },
}

struct Pending<S, ReqBody> {
    verify: BoxFuture<'static, Result<VerifiedClaims, VerifyError>>,
    request: Option<Request<ReqBody>>,
    inner: S,
    challenge: Arc<str>,
}

impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    pub(crate) fn calling(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { future },
        }
    }

    pub(crate) fn rejected(err: &VerifyError, challenge: &str) -> Self {
        ResponseFuture {
            state: State::Rejected {
                response: Some(refusal(err, challenge)),
            },
        }
    }

    pub(crate) fn verifying(
        verify: BoxFuture<'static, Result<VerifiedClaims, VerifyError>>,
        request: Request<ReqBody>,
        inner: S,
        challenge: Arc<str>,
    ) -> Self {
        ResponseFuture {
            state: State::Verifying {
                pending: Box::new(Pending {
                    verify,
                    request: Some(request),
                    inner,
                    challenge,
                }),
            },
        }
    }
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Verifying { pending } => {
                    let result = ready!(pending.verify.as_mut().poll(cx));
                    let mut request = pending.request.take().expect("polled after completion");
                    match result {
                        Ok(claims) => {
                            request.extensions_mut().insert(claims);
                            let future = pending.inner.call(request);
                            this.state.set(State::Calling { future });
                        }
                        Err(err) => {
                            let response = refusal(&err, &pending.challenge);
                            this.state.set(State::Rejected { response: None });
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::Calling { future } => return future.poll(cx),
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
            }
        }
    }
}

impl<S, ReqBody> fmt::Debug for ResponseFuture<S, ReqBody>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Verifying { .. } => "Verifying",
            State::Calling { .. } => "Calling",
            State::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
