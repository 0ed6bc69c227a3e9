//! The response body of [`JwtSigner`](super::JwtSigner): the inner
//! service's body, or the signer's own small JSON error body.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project::pin_project;

/// The response body of [`JwtSigner`](super::JwtSigner).
///
/// Either the inner service's body, passed through untouched, or the small
/// JSON body of an answer the signer gives itself (a refused request, a
/// missing key, a failed signature). It is a [`Body`] whenever the inner
/// body is a `Body<Data = Bytes>`, which covers axum's `Body`, hyper's
/// `Incoming`, `http_body_util::Full<Bytes>` and the boxed bodies, so no
/// bound on the inner body type is needed and nothing has to be mapped.
#[pin_project]
pub struct ResponseBody<B> {
    #[pin]
    kind: Kind<B>,
}

#[pin_project(project = KindProj)]
enum Kind<B> {
    Inner {
        #[pin]
        body: B,
    },
    Signer {
        #[pin]
        body: Full<Bytes>,
    },
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn signer(bytes: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Signer {
                body: Full::new(bytes),
            },
        }
    }

    /// Whether this is the signer's own body (the request was not
    /// forwarded).
    pub fn is_signer_response(&self) -> bool {
        matches!(self.kind, Kind::Signer { .. })
    }
}

impl<B: Default> Default for ResponseBody<B> {
    fn default() -> Self {
        ResponseBody::inner(B::default())
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Inner { .. } => "ResponseBody::Inner",
            Kind::Signer { .. } => "ResponseBody::Signer",
        })
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Signer { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Signer { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Signer { body } => body.size_hint(),
        }
    }
}
