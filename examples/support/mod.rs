//! Code shared by the examples (not an example itself): a small HTTP/1
//! forwarder built on hyper-util's client, request-target checks (dot
//! segments, `OPTIONS *`, `CONNECT`), hop-by-hop header handling, and
//! command-line parsing.
#![allow(dead_code)] // each example uses a part

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Errors carried by the examples' bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body of any origin (upstream, JWKS, the signer, an error).
pub(crate) type AnyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body whose data is `Bytes`.
pub(crate) fn boxed<B>(body: B) -> AnyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A small JSON response.
pub(crate) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<AnyBody> {
    let mut response = Response::new(boxed(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Removes the hop-by-hop headers (RFC 9110 section 7.6.1): `Connection`
/// and every header it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
/// `Transfer-Encoding` and `Upgrade`.
///
/// On requests, run it *before* the signer: a client that names the token
/// header in `Connection` must not be able to strip the token after it was
/// added.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// [`remove_hop_by_hop`] on a request, for `ServiceBuilder::map_request`.
pub(crate) fn strip_request<B>(mut request: Request<B>) -> Request<B> {
    remove_hop_by_hop(request.headers_mut());
    request
}

/// A request path with its dot-segments removed (RFC 3986 section 5.2.4),
/// `%2e` read as `.` (section 6.2.2.2), or why it is refused:
///
/// * a dot-segment that would climb above the root: forwarded under the
///   upstream's base path, `/../admin` would leave it (`/api/../admin` is
///   `/admin` to the upstream);
/// * an encoded slash or backslash (`%2f`, `%5c`) or a backslash: an
///   upstream that decodes them sees other segments than this check did;
/// * a dot-segment with parameters (`..;/`), which some servers read as
///   `..`;
/// * a target that is not a path (`*`).
///
/// The query is not part of `path` and is left alone.
pub(crate) fn normalise_path(path: &str) -> Result<String, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the request target is not a path");
    };
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err("the path holds an encoded slash or a backslash");
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        let name = decoded.split(';').next().unwrap_or_default();
        match (name, decoded.contains(';')) {
            ("." | "..", true) => return Err("the path holds a dot-segment with parameters"),
            (".", false) => {}
            ("..", false) => {
                if kept.pop().is_none() {
                    return Err("the path climbs above the base path");
                }
            }
            _ => {
                kept.push(segment);
                continue;
            }
        }
        // A final `.` or `..` leaves the path ending in `/`.
        if i == last {
            kept.push("");
        }
    }
    Ok(format!("/{}", kept.join("/")))
}

/// Why [`checked_target`] does not forward a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    status: StatusCode,
    reason: &'static str,
}

impl Refused {
    /// The answer: `400` (`bad_request`) or `405` (`method_not_allowed`,
    /// with `Allow`), the reason as JSON.
    pub(crate) fn into_response(self) -> Response<AnyBody> {
        let error = if self.status == StatusCode::METHOD_NOT_ALLOWED {
            "method_not_allowed"
        } else {
            "bad_request"
        };
        let mut response = json_response(
            self.status,
            &serde_json::json!({"error": error, "reason": self.reason}),
        );
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        response
    }
}

/// The request, its path normalised by [`normalise_path`], or why it is
/// refused: `405` for `CONNECT` (a tunnel is not a request to forward),
/// `400` for a target that is not a path (`OPTIONS *`) or a path
/// [`normalise_path`] refuses. Run it before the signer, so that what is
/// signed (`${req.path}`) is what is forwarded and nothing refused is
/// signed.
pub(crate) fn checked_target<B>(request: Request<B>) -> Result<Request<B>, Refused> {
    if request.method() == Method::CONNECT {
        return Err(Refused {
            status: StatusCode::METHOD_NOT_ALLOWED,
            reason: "CONNECT is not forwarded",
        });
    }
    let refuse = |reason| Refused {
        status: StatusCode::BAD_REQUEST,
        reason,
    };
    let path = normalise_path(request.uri().path()).map_err(refuse)?;
    if path == request.uri().path() {
        return Ok(request);
    }
    let (mut parts, body) = request.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut uri = Uri::builder();
    if let Some(scheme) = parts.uri.scheme() {
        uri = uri.scheme(scheme.clone());
    }
    if let Some(authority) = parts.uri.authority() {
        uri = uri.authority(authority.clone());
    }
    parts.uri = uri
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| refuse("the normalised path is not a valid URI"))?;
    Ok(Request::from_parts(parts, body))
}

/// Where requests are forwarded: `http://host:port` and an optional base
/// path.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    authority: Authority,
    base_path: String,
}

impl FromStr for Upstream {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uri: Uri = text
            .parse()
            .map_err(|err| format!("{text:?} is not a URL: {err}"))?;
        match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => {}
            Some(scheme) => {
                return Err(format!(
                    "{text:?}: only http:// upstreams are supported, not {scheme}://"
                ));
            }
            None => {
                return Err(format!(
                    "{text:?} needs a scheme, as in http://127.0.0.1:3000"
                ));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("{text:?} has no host"))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(format!("{text:?}: user information is not supported"));
        }
        if uri.query().is_some() {
            return Err(format!("{text:?}: an upstream URL cannot have a query"));
        }
        Ok(Upstream {
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

impl Upstream {
    /// The upstream URI for a request's path and query.
    fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let path_and_query = path_and_query.map_or("/", PathAndQuery::as_str);
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.base_path))
            .build()
    }

    /// `host:port`.
    pub(crate) fn authority(&self) -> &Authority {
        &self.authority
    }
}

/// Forwards each request to an [`Upstream`] (method, path, query, headers,
/// body) and returns its response, minus hop-by-hop headers. The `Host`
/// header becomes the upstream's. An upstream that cannot be reached gives
/// `502 Bad Gateway`; the service keeps working.
///
/// Request hop-by-hop headers are not touched here: remove them with
/// [`strip_request`] before the signer.
#[derive(Debug)]
pub(crate) struct Forwarder<B> {
    client: Client<HttpConnector, B>,
    upstream: Upstream,
}

impl<B> Clone for Forwarder<B> {
    fn clone(&self) -> Self {
        Forwarder {
            client: self.client.clone(),
            upstream: self.upstream.clone(),
        }
    }
}

impl<B> Forwarder<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(upstream: Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Forwarder { client, upstream }
    }
}

impl<B> tower::Service<Request<B>> for Forwarder<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<AnyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<AnyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Also here, for a forwarder with no check in front of it.
        let request = match checked_target(request) {
            Ok(request) => request,
            Err(refused) => {
                let response = refused.into_response();
                return Box::pin(async move { Ok(response) });
            }
        };
        let (mut parts, body) = request.into_parts();
        let uri = match self.upstream.uri(parts.uri.path_and_query()) {
            Ok(uri) => uri,
            Err(err) => {
                let response = json_response(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "bad_request", "reason": err.to_string()}),
                );
                return Box::pin(async move { Ok(response) });
            }
        };
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        // The client writes the upstream's Host from the URI.
        parts.headers.remove(header::HOST);
        let upstream = self.upstream.authority.clone();
        let sent = self.client.request(Request::from_parts(parts, body));
        Box::pin(async move {
            match sent.await {
                Ok(response) => {
                    let (mut parts, body) = response.into_parts();
                    remove_hop_by_hop(&mut parts.headers);
                    Ok(Response::from_parts(parts, boxed(body)))
                }
                Err(err) => {
                    eprintln!("upstream {upstream} failed: {err}");
                    Ok(json_response(
                        StatusCode::BAD_GATEWAY,
                        &serde_json::json!({
                            "error": "bad_gateway",
                            "reason": "the upstream could not be reached",
                        }),
                    ))
                }
            }
        })
    }
}

/// Command-line arguments, read flag by flag: `--name value` or
/// `--name=value`.
pub(crate) struct Args {
    rest: std::vec::IntoIter<String>,
}

impl Args {
    pub(crate) fn new(args: impl IntoIterator<Item = String>) -> Self {
        Args {
            rest: args.into_iter().collect::<Vec<_>>().into_iter(),
        }
    }

    /// The next flag and its inline value, if any.
    ///
    /// # Errors
    ///
    /// An argument that is not a flag.
    pub(crate) fn next_flag(&mut self) -> Result<Option<(String, Option<String>)>, String> {
        let Some(arg) = self.rest.next() else {
            return Ok(None);
        };
        if !arg.starts_with("--") && arg != "-h" {
            return Err(format!("unexpected argument {arg:?}"));
        }
        Ok(Some(match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        }))
    }

    /// The value of `flag`: inline, or the next argument.
    ///
    /// # Errors
    ///
    /// When there is none.
    pub(crate) fn value(&mut self, flag: &str, inline: Option<String>) -> Result<String, String> {
        inline
            .or_else(|| self.rest.next())
            .ok_or_else(|| format!("{flag} needs a value"))
    }

    /// The value of `flag`, parsed.
    ///
    /// # Errors
    ///
    /// When there is none or it does not parse.
    pub(crate) fn parsed<T>(&mut self, flag: &str, inline: Option<String>) -> Result<T, String>
    where
        T: FromStr,
        T::Err: Display,
    {
        let text = self.value(flag, inline)?;
        text.parse()
            .map_err(|err| format!("invalid value {text:?} for {flag}: {err}"))
    }
}

/// A flag that is not a flag of this program.
pub(crate) fn unknown_flag(flag: &str) -> String {
    format!("unknown flag {flag}")
}
