//! The response future of [`JwtSigner`](super::JwtSigner).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response};
use pin_project::pin_project;
use tokio::sync::oneshot;
use tower_service::Service;

use super::body::ResponseBody;
use super::failure::Failure;

/// The response future of [`JwtSigner`](super::JwtSigner).
///
/// The inner service's future (the request was signed and forwarded), the
/// signer's own answer, ready at once (the request was refused and never
/// reached the inner service), or a signature being computed on the
/// signing threads ([`Offload`](super::Offload)), after which the request
/// goes to the inner service (`S`, with request body `R`) or, if signing
/// failed, is answered `500`.
#[pin_project]
pub struct ResponseFuture<F, B, S, R> {
    #[pin]
    state: State<F, B, S, R>,
}

#[pin_project(project = StateProj)]
enum State<F, B, S, R> {
    /// The request was signed and handed to the inner service.
    Forwarded {
        #[pin]
        future: F,
    },
    /// The signer answered itself; taken on the first poll.
    Answered {
        response: Option<Response<ResponseBody<B>>>,
    },
    /// The signature is being computed on the signing threads; the ready
    /// inner service waits with the request.
    Offloaded {
        signing: oneshot::Receiver<Result<HeaderValue, Failure>>,
        deferred: Option<Deferred<S, R>>,
    },
}

/// A request waiting for its token, with the inner service that was polled
/// ready for it.
pub(crate) struct Deferred<S, R> {
    pub(crate) inner: S,
    pub(crate) parts: Parts,
    pub(crate) body: R,
    pub(crate) header_name: HeaderName,
}

impl<F, B, S, R> ResponseFuture<F, B, S, R> {
    pub(crate) fn forwarded(future: F) -> Self {
        ResponseFuture {
            state: State::Forwarded { future },
        }
    }

    pub(crate) fn answered(response: Response<ResponseBody<B>>) -> Self {
        ResponseFuture {
            state: State::Answered {
                response: Some(response),
            },
        }
    }

    pub(crate) fn offloaded(
        signing: oneshot::Receiver<Result<HeaderValue, Failure>>,
        deferred: Deferred<S, R>,
    ) -> Self {
        ResponseFuture {
            state: State::Offloaded {
                signing,
                deferred: Some(deferred),
            },
        }
    }
}

impl<F, B, S, R, E> Future for ResponseFuture<F, B, S, R>
where
    F: Future<Output = Result<Response<B>, E>>,
    S: Service<Request<R>, Future = F, Response = Response<B>, Error = E>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Forwarded { future } => {
                    return future
                        .poll(cx)
                        .map_ok(|response| response.map(ResponseBody::inner));
                }
                StateProj::Answered { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
                StateProj::Offloaded { signing, deferred } => {
                    let result = ready!(Pin::new(signing).poll(cx));
                    let Deferred {
                        mut inner,
                        mut parts,
                        body,
                        header_name,
                    } = deferred
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let value = match result {
                        Ok(Ok(value)) => value,
                        Ok(Err(failure)) => {
                            this.state.set(State::Answered { response: None });
                            return Poll::Ready(Ok(failure.into_response()));
                        }
                        Err(_) => {
                            tracing::error!(
                                "request refused: the signing thread dropped the request (the signer panicked)"
                            );
                            this.state.set(State::Answered { response: None });
                            return Poll::Ready(Ok(Failure::signing().into_response()));
                        }
                    };
                    parts.headers.insert(header_name, value);
                    let future = inner.call(Request::from_parts(parts, body));
                    this.state.set(State::Forwarded { future });
                }
            }
        }
    }
}

impl<F, B, S, R> fmt::Debug for ResponseFuture<F, B, S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state {
            State::Forwarded { .. } => "ResponseFuture::Forwarded",
            State::Answered { .. } => "ResponseFuture::Answered",
            State::Offloaded { .. } => "ResponseFuture::Offloaded",
        })
    }
}
