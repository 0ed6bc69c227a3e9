//! The response future of [`JwtSigner`](super::JwtSigner).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project::pin_project;

use super::ResponseBody;

/// The response future of [`JwtSigner`](super::JwtSigner).
///
/// Either the inner service's future (the request was signed and
/// forwarded) or the signer's own answer, ready at once (the request was
/// refused and never reached the inner service).
#[pin_project]
pub struct ResponseFuture<F, B> {
    #[pin]
    state: State<F, B>,
}

#[pin_project(project = StateProj)]
enum State<F, B> {
    /// The request was signed and handed to the inner service.
    Forwarded {
        #[pin]
        future: F,
    },
    /// The signer answered itself; taken on the first poll.
    Answered {
        response: Option<Response<ResponseBody<B>>>,
    },
}

impl<F, B> ResponseFuture<F, B> {
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
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Forwarded { future } => future
                .poll(cx)
                .map_ok(|response| response.map(ResponseBody::inner)),
            StateProj::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state {
            State::Forwarded { .. } => "ResponseFuture::Forwarded",
            State::Answered { .. } => "ResponseFuture::Answered",
        })
    }
}
