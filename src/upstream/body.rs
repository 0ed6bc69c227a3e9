//! The response body of [`Forwarder`](super::Forwarder).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project::pin_project;

/// The errors of a [`ResponseBody`]: the upstream's connection failed
/// while its body streamed.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of [`Forwarder`](super::Forwarder): the upstream's
/// body, streamed frame by frame as it arrives (nothing is buffered), or
/// the small JSON body of an answer the forwarder gives itself
/// ([`ForwardError`](super::ForwardError)). `Data = Bytes`, so axum,
/// hyper and tower-http take it as it is.
#[pin_project]
pub struct ResponseBody {
    #[pin]
    kind: Kind,
}

#[pin_project(project = KindProj)]
enum Kind {
    Upstream {
        #[pin]
        body: Incoming,
    },
    Answer {
        #[pin]
        body: Full<Bytes>,
    },
}

impl ResponseBody {
    pub(crate) fn upstream(body: Incoming) -> Self {
        ResponseBody {
            kind: Kind::Upstream { body },
        }
    }

    pub(crate) fn answer(bytes: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Answer {
                body: Full::new(bytes),
            },
        }
    }

    /// Whether this is the forwarder's own answer (the upstream's response
    /// never came).
    pub fn is_forwarder_response(&self) -> bool {
        matches!(self.kind, Kind::Answer { .. })
    }
}

/// An empty body (the forwarder's answer kind): for layers in front of
/// the forwarder that answer with `Default::default()`, as
/// [`JwtVerifierLayer`](crate::JwtVerifierLayer) does.
impl Default for ResponseBody {
    fn default() -> Self {
        ResponseBody::answer(Bytes::new())
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Upstream { .. } => "ResponseBody::Upstream",
            Kind::Answer { .. } => "ResponseBody::Answer",
        })
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Upstream { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Answer { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Answer { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Answer { body } => body.size_hint(),
        }
    }
}
