//! Forwarding upstream: the gateway's last step (feature `upstream`, on by
//! default).
//!
//! [`Forwarder`] is a tower service that sends each request on to one
//! upstream over HTTP/1.1 (hyper-util's pooled client) and answers with the
//! upstream's response. Put [`JwtSignerLayer`](crate::JwtSignerLayer) in
//! front of it and every request reaches the upstream with a fresh token.
//! Its `Error` is [`Infallible`]: every failure is an HTTP answer, so it
//! mounts in axum as it is (`Router::fallback_service`,
//! `route_service`), with no `HandleErrorLayer`.
//!
//! For each request it:
//!
//! 1. checks the target ([`check_target`]): `CONNECT` is answered 405,
//!    `OPTIONS *` and paths that would climb above the base path (`/..`,
//!    `%2e%2e`, `..;`, `%2f`) 400; other dot-segments are removed;
//! 2. rewrites the URI onto the base URL: `http://upstream:3000/api` and
//!    `/orders?id=7` give `http://upstream:3000/api/orders?id=7`;
//! 3. removes the hop-by-hop headers (RFC 9110, section 7.6.1): every
//!    header `Connection` names, `Connection`, `Keep-Alive`, `TE`,
//!    `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`; the same on the
//!    response;
//! 4. writes `X-Forwarded-For`, `X-Forwarded-Host` and `Forwarded`
//!    ([`ForwardedHeaders`]: the client's own are replaced unless you
//!    trust them) and sets `Host` to the upstream's;
//! 5. streams the request body to the upstream and the upstream's body
//!    back, frame by frame (nothing is buffered);
//! 6. answers `502 Bad Gateway` itself when the upstream cannot be reached
//!    and `504 Gateway Timeout` when its response head does not arrive
//!    within the [timeout](ForwarderBuilder::timeout) (30 s by default),
//!    with a [`ForwardError`] in the response extensions.
//!
//! The client's address comes from the request extensions: a
//! [`ClientAddr`], or, with the `axum` feature, axum's
//! `ConnectInfo<SocketAddr>` (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`). Without either,
//! `X-Forwarded-For` is not written and `Forwarded` has only `host`.
//!
//! # The token header and `Connection`
//!
//! A client that sends `Connection: close, authorization` asks every
//! compliant proxy to drop `Authorization`, the token included. The signer
//! removes its header's name from `Connection` when it writes the token,
//! so this forwarder (which drops what `Connection` names) and any proxy
//! behind it forward the token. Put the signer in front of the forwarder,
//! never behind.
//!
//! # Example
//!
//! A gateway: the JWKS route, and every other request signed and
//! forwarded to an upstream (here a small axum app on 127.0.0.1).
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use axum::Router;
//! use axum::routing::get;
//! use tower_jwt_signer::{
//!     Algorithm, Forwarder, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let upstream_addr = upstream_listener.local_addr()?;
//! # let echo = Router::new().fallback(get(|headers: http::HeaderMap| async move {
//! #     format!("signed: {}", headers.contains_key("authorization"))
//! # }));
//! # tokio::spawn(async move { axum::serve(upstream_listener, echo).await });
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! let signer = JwtSignerLayer::builder(registry.clone()).issuer("gw").build()?;
//! let forwarder = Forwarder::new(format!("http://{upstream_addr}/api"))?;
//!
//! let app = Router::new()
//!     .fallback_service(forwarder)
//!     .layer(signer)
//!     .route_service(JWKS_PATH, JwksService::new(registry));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(async move {
//!     // The client's address, for X-Forwarded-For.
//!     let app = app.into_make_service_with_connect_info::<SocketAddr>();
//!     axum::serve(listener, app).await
//! });
//! # let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//! #     .build_http::<http_body_util::Empty<bytes::Bytes>>();
//! # let response = client.get(format!("http://{addr}/orders").parse()?).await?;
//! # use http_body_util::BodyExt;
//! # let body = response.into_body().collect().await?.to_bytes();
//! # assert_eq!(&body[..], b"signed: true");
//! # Ok(())
//! # }
//! ```

mod body;
mod error;
mod headers;
mod target;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_service::Service;

use body::BoxError;
pub use body::ResponseBody;
pub use error::ForwardError;
pub use headers::ForwardedHeaders;
pub use target::check_target;

use crate::error::ConfigError;

/// The address a request came from, for `X-Forwarded-For` and `Forwarded`:
/// put it in the request extensions where the connection is accepted (a
/// hyper server loop; with axum, `ConnectInfo<SocketAddr>` is read too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The request body the client sends upstream: any body, boxed.
type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Forwards each request to one upstream; see the [module docs](self).
///
/// Cheap to clone: clones share the connection pool. `Error =
/// Infallible`: an unreachable upstream is a 502 answer, a slow one a 504,
/// a refused target a 400 or 405.
#[derive(Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<HttpConnector, UpstreamBody>,
    authority: Authority,
    base_path: String,
    timeout: Duration,
    forwarded: ForwardedHeaders,
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("upstream", &self.inner.authority)
            .field("base_path", &self.inner.base_path)
            .field("timeout", &self.inner.timeout)
            .field("forwarded", &self.inner.forwarded)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder to `url` (`http://host:port[/base-path]`) with the
    /// defaults: a 30 s timeout for the response head, a 5 s connect
    /// timeout, [`ForwardedHeaders::Replace`].
    ///
    /// # Errors
    ///
    /// As [`ForwarderBuilder::build`].
    pub fn new(url: impl AsRef<str>) -> Result<Self, ConfigError> {
        Forwarder::builder(url).build()
    }

    /// A builder for a forwarder to `url`.
    pub fn builder(url: impl AsRef<str>) -> ForwarderBuilder {
        ForwarderBuilder {
            url: url.as_ref().to_owned(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            forwarded: ForwardedHeaders::Replace,
            pool_idle_timeout: Duration::from_secs(90),
        }
    }

    /// The upstream's `host:port`.
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// The base path requests are forwarded under (`""` for none).
    pub fn base_path(&self) -> &str {
        &self.inner.base_path
    }

    /// How long the upstream's response head may take.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The upstream URI of a request's path and query.
    fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let path_and_query = path_and_query.map_or("/", PathAndQuery::as_str);
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.inner.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.inner.base_path))
            .build()
    }
}

/// Settings of a [`Forwarder`]; [`build`](Self::build) checks them.
#[derive(Debug, Clone)]
pub struct ForwarderBuilder {
    url: String,
    timeout: Duration,
    connect_timeout: Duration,
    forwarded: ForwardedHeaders,
    pool_idle_timeout: Duration,
}

impl ForwarderBuilder {
    /// How long the upstream's response head may take, from the moment the
    /// request is sent (connecting included): after it the forwarder
    /// answers `504 Gateway Timeout` and drops the upstream request. The
    /// body then streams for as long as it takes. 30 s by default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting may take before the upstream counts as
    /// unreachable (502). 5 s by default.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// What to do with the forwarding headers the request arrives with;
    /// [`ForwardedHeaders::Replace`] by default.
    pub fn forwarded_headers(mut self, policy: ForwardedHeaders) -> Self {
        self.forwarded = policy;
        self
    }

    /// How long an idle pooled connection to the upstream is kept. 90 s by
    /// default.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Checks every setting and builds the forwarder.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the setting: `url` when it does not parse, is
    /// not `http://` (https upstreams are not supported yet), has no host,
    /// holds user information or a query; `timeout`, `connect_timeout` or
    /// `pool_idle_timeout` when zero or longer than a day.
    pub fn build(self) -> Result<Forwarder, ConfigError> {
        let text = self.url.as_str();
        let uri: Uri = text
            .parse()
            .map_err(|err| ConfigError::new("url", text, format!("not a URL: {err}")))?;
        match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => {}
            Some(scheme) => {
                return Err(ConfigError::new(
                    "url",
                    text,
                    format!("only http:// upstreams are supported, not {scheme}://"),
                ));
            }
            None => {
                return Err(ConfigError::new(
                    "url",
                    text,
                    "needs a scheme, as in http://127.0.0.1:3000",
                ));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| ConfigError::new("url", text, "has no host"))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(ConfigError::without_value(
                "url",
                "user information is not supported",
            ));
        }
        if uri.query().is_some() {
            return Err(ConfigError::new(
                "url",
                text,
                "an upstream URL cannot have a query",
            ));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        if target::normalise_path(&format!("{base_path}/")).as_deref()
            != Ok(&format!("{base_path}/"))
        {
            return Err(ConfigError::new(
                "url",
                text,
                "the base path must not hold dot-segments, %2f or %5c",
            ));
        }
        for (setting, value) in [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("pool_idle_timeout", self.pool_idle_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(24 * 3600) {
                return Err(ConfigError::new(
                    setting,
                    value,
                    "use more than 0 and at most a day",
                ));
            }
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .build(connector);
        Ok(Forwarder {
            inner: Arc::new(Inner {
                client,
                authority,
                base_path,
                timeout: self.timeout,
                forwarded: self.forwarded,
            }),
        })
    }
}

/// The response future of [`Forwarder`].
pub struct ResponseFuture {
    future: Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upstream::ResponseFuture")
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx).map(Ok)
    }
}

/// The client's address in the request extensions.
fn client_addr(extensions: &http::Extensions) -> Option<SocketAddr> {
    if let Some(ClientAddr(addr)) = extensions.get::<ClientAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    None
}

impl<B> Service<Request<B>> for Forwarder
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        let answer = |err: ForwardError| ResponseFuture {
            future: Box::pin(std::future::ready(err.into_response())),
        };
        let request = match check_target(request) {
            Ok(request) => request,
            Err(err) => return answer(err),
        };
        let (mut parts, body) = request.into_parts();
        parts.uri = match self.uri(parts.uri.path_and_query()) {
            Ok(uri) => uri,
            Err(_) => return answer(ForwardError::bad_target("the target is not a valid URI")),
        };
        parts.version = Version::HTTP_11;
        headers::remove_hop_by_hop(&mut parts.headers);
        let host = parts.headers.remove(header::HOST);
        headers::add_forwarded(
            &mut parts.headers,
            self.inner.forwarded,
            client_addr(&parts.extensions),
            host.as_ref(),
        );
        // The client writes the upstream's Host from the URI.
        let body = body
            .map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
            .map_err(Into::into)
            .boxed_unsync();
        let inner = Arc::clone(&self.inner);
        let sent = inner.client.request(Request::from_parts(parts, body));
        ResponseFuture {
            future: Box::pin(async move {
                match tokio::time::timeout(inner.timeout, sent).await {
                    Ok(Ok(response)) => {
                        let (mut parts, body) = response.into_parts();
                        headers::remove_hop_by_hop(&mut parts.headers);
                        Response::from_parts(parts, ResponseBody::upstream(body))
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(
                            upstream = %inner.authority,
                            error = %error_chain(&err),
                            "upstream request failed: answered 502"
                        );
                        ForwardError::Unreachable.into_response()
                    }
                    Err(_) => {
                        tracing::warn!(
                            upstream = %inner.authority,
                            timeout_ms = inner.timeout.as_millis() as u64,
                            "upstream did not answer in time: answered 504"
                        );
                        ForwardError::Timeout {
                            after: inner.timeout,
                        }
                        .into_response()
                    }
                }
            }),
        }
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
