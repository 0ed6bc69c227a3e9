//! [`JwtSigner`]: the service. For each request it asks the claims
//! closure, applies the existing-token policy, mints the token and writes
//! it, then calls the inner service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{HeaderValue, Request, Response};
use tokio::sync::oneshot;
use tower_service::Service;

use super::body::ResponseBody;
use super::config::{Config, ExistingToken};
use super::failure::Failure;
use super::future::{Deferred, ResponseFuture};
use super::mint::{Minter, Token};
use super::scrub::clear_the_way;
use crate::registry::KeyRegistry;

/// Signs each request with a fresh JWT, then calls the inner service. Built
/// by [`JwtSignerLayer`](super::JwtSignerLayer); see the
/// [module docs](super).
///
/// The inner service's errors pass through unchanged. Requests the signer
/// refuses get a response of its own (see [`ResponseBody`]) and never reach
/// the inner service.
///
/// Each service built by [`Layer::layer`](tower_layer::Layer::layer) has
/// its own runtime (the encoded header of the active key and, with
/// [`TokenReuse`](super::TokenReuse), the reuse cache); its clones share
/// it. A [`TokenCache`](super::TokenCache) shares one reuse cache across
/// services.
///
/// The inner service must be `Clone` (axum's `Router`, hyper-util's client,
/// `service_fn` closures and tower's `Buffer` are): while a request waits
/// for a signature on the signing threads ([`Offload`](super::Offload)),
/// the inner service that was polled ready for it waits with it, and the
/// signer keeps a clone for the next request.
pub struct JwtSigner<S> {
    inner: S,
    minter: Arc<Minter>,
}

impl<S> JwtSigner<S> {
    /// Wraps `inner` with the default configuration of
    /// [`JwtSignerLayer::new`](super::JwtSignerLayer::new).
    pub fn new(inner: S, registry: KeyRegistry) -> Self {
        JwtSigner::from_minter(inner, Minter::new(Arc::new(Config::new(registry))))
    }

    pub(crate) fn from_minter(inner: S, minter: Minter) -> Self {
        JwtSigner {
            inner,
            minter: Arc::new(minter),
        }
    }

    /// How many tokens this service's reuse cache holds now (0 when reuse
    /// is off): the cache its clones share, or the shared
    /// [`TokenCache`](super::TokenCache) it was given. At most
    /// [`TokenReuse::max_entries`](super::TokenReuse::max_entries).
    pub fn cached_tokens(&self) -> usize {
        self.minter.cached_tokens()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the signer, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for JwtSigner<S> {
    fn clone(&self) -> Self {
        JwtSigner {
            inner: self.inner.clone(),
            minter: Arc::clone(&self.minter),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for JwtSigner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner")
            .field("inner", &self.inner)
            .field("config", self.minter.config())
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for JwtSigner<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        match sign(&self.minter, &mut parts) {
            Ok(Signed::Ready) => {
                ResponseFuture::forwarded(self.inner.call(Request::from_parts(parts, body)))
            }
            Ok(Signed::Offloaded(signing)) => {
                // The ready service goes with the request; this service keeps
                // a clone that will be polled ready again before its next call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::offloaded(
                    signing,
                    Deferred {
                        inner,
                        parts,
                        body,
                        header_name: self.minter.config().header_name.clone(),
                    },
                )
            }
            Err(failure) => ResponseFuture::answered(failure.into_response()),
        }
    }
}

/// What [`sign`] did with a request.
enum Signed {
    /// The header is written (or the client's kept): forward it.
    Ready,
    /// The signature is being computed on the signing threads; the value
    /// arrives here, and every other value of the header is gone.
    Offloaded(oneshot::Receiver<Result<HeaderValue, Failure>>),
}

/// The claims closure's decision, then the existing-token policy, then the
/// token, written into `parts` (or on its way from the signing threads).
/// Whatever goes on carries no look-alike of the header and no
/// `Connection` token naming it.
fn sign(minter: &Arc<Minter>, parts: &mut Parts) -> Result<Signed, Failure> {
    let config = minter.config();
    // Under every policy: a refusal is a refusal, whatever the client sent.
    let per_request = minter.request_claims(parts)?;
    if parts.headers.contains_key(&config.header_name) {
        match config.existing {
            ExistingToken::Keep => {
                clear_the_way(&mut parts.headers, &config.header_name);
                return Ok(Signed::Ready);
            }
            ExistingToken::Reject => return Err(Failure::token_present(&config.header_name)),
            ExistingToken::Replace => {}
        }
    }
    // Templates read the request as the client sent it.
    let token = minter.mint(parts, per_request.as_ref())?;
    clear_the_way(&mut parts.headers, &config.header_name);
    match token {
        Token::Ready(value) => {
            // `insert` replaces every existing value of the header.
            parts.headers.insert(config.header_name.clone(), value);
            Ok(Signed::Ready)
        }
        Token::Offloaded(signing) => {
            // Every existing value goes now; ours is written when the
            // signature is there.
            parts.headers.remove(&config.header_name);
            Ok(Signed::Offloaded(signing))
        }
    }
}
