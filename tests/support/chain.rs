//! The seed's whole chain with the crate's own pieces on both ends, over
//! real sockets on 127.0.0.1: a signing gateway (`JwtSignerLayer` in front
//! of a forwarder, `JwksService` at `JWKS_PATH` on the same listener, with
//! a counter on the JWKS route) and a backend (`JwtVerifierLayer` over a
//! `RemoteJwks` pointed at the gateway) that answers with the claims it
//! verified and records the tokens it received. Servers stop when their
//! handle is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::response::IntoResponse as _;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_jwt_signer::signer::JwtSignerLayerBuilder;
use tower_jwt_signer::{
    JWKS_PATH, JwksService, JwtSignerLayer, JwtVerifierLayer, KeyRegistry, VerifiedClaims, Verifier,
};

use super::signer::AbortOnDrop;

/// The `iss` the gateway writes and the backend requires.
pub const ISSUER: &str = "chain-gateway";
/// The `aud` the gateway writes and the backend requires.
pub const AUDIENCE: &str = "chain-backend";

/// The gateway's signer: static `iss` and `aud`, `sub` from the `x-user`
/// header (required), `tenant` from `x-tenant` (default `public`), a typed
/// `priority` from the query (default 0) and the request path.
pub fn signer(registry: KeyRegistry) -> JwtSignerLayerBuilder {
    JwtSignerLayer::builder(registry)
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .template_claim("sub", "${req.headers.x-user}")
        .template_claim("tenant", "${req.headers.x-tenant:public}")
        .template_claim("priority", "${number:req.query.priority:0}")
        .template_claim("path", "${req.path}")
}

/// A running signing gateway.
pub struct Gateway {
    pub addr: SocketAddr,
    jwks_requests: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl Gateway {
    /// Serves on `listener`: the registry's JWKS at `JWKS_PATH` (counted),
    /// everything else signed by [`signer`] and forwarded to `upstream`.
    pub fn start(registry: KeyRegistry, listener: TcpListener, upstream: SocketAddr) -> Self {
        let signer = signer(registry.clone()).build().expect("a valid signer");
        Self::start_with(signer, registry, listener, upstream)
    }

    /// As [`start`](Self::start), with another signer configuration (a
    /// shorter ttl, for example).
    pub fn start_with(
        signer: JwtSignerLayer,
        registry: KeyRegistry,
        listener: TcpListener,
        upstream: SocketAddr,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let jwks_requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&jwks_requests);
        let jwks = ServiceBuilder::new()
            .map_request(move |request: Request<Body>| {
                counter.fetch_add(1, Ordering::SeqCst);
                request
            })
            .service(JwksService::new(registry.clone()));
        let forward = ServiceBuilder::new()
            .layer(signer)
            .service(forwarder(upstream));
        let app = axum::Router::new()
            .route_service(JWKS_PATH, jwks)
            .fallback_service(forward);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Gateway {
            addr,
            jwks_requests,
            _task: AbortOnDrop(task),
        }
    }

    /// How many requests the JWKS route has answered.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_requests.load(Ordering::SeqCst)
    }
}

/// The JWKS URL of a gateway that will listen on `listener`.
pub fn jwks_url(listener: &TcpListener) -> String {
    format!("http://{}{JWKS_PATH}", listener.local_addr().unwrap())
}

/// Forwards method, path, query, headers and body to `upstream` and
/// returns its answer (502 when it cannot be reached).
pub fn forwarder(
    upstream: SocketAddr,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    tower::service_fn(move |request: Request<Body>| {
        let client = client.clone();
        async move {
            let (mut parts, body) = request.into_parts();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = format!("http://{upstream}{path}").parse::<Uri>().unwrap();
            parts.headers.remove(header::HOST);
            let sent = tokio::time::timeout(
                Duration::from_secs(10),
                client.request(Request::from_parts(parts, body)),
            )
            .await;
            let Ok(Ok(response)) = sent else {
                let mut response = Response::new(Full::default());
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                return Ok(response);
            };
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_or_else(|_| Bytes::new(), |b| b.to_bytes());
            Ok(Response::from_parts(parts, Full::new(body)))
        }
    })
}

/// A running backend behind `JwtVerifierLayer`: every path answers 200 with
/// the `VerifiedClaims` as JSON (`{"claims", "kid", "alg"}`).
pub struct Backend {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
    _task: AbortOnDrop,
}

impl Backend {
    pub async fn start(verifier: Verifier) -> Self {
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&received);
        let app = axum::Router::new()
            .fallback(
                move |Extension(claims): Extension<VerifiedClaims>, headers: HeaderMap| {
                    let log = Arc::clone(&log);
                    async move {
                        let token = headers[header::AUTHORIZATION]
                            .to_str()
                            .unwrap()
                            .strip_prefix("Bearer ")
                            .unwrap()
                            .to_owned();
                        log.lock().unwrap().push(token);
                        axum::Json(claims).into_response()
                    }
                },
            )
            .layer(JwtVerifierLayer::new(verifier));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Backend {
            addr,
            received,
            _task: AbortOnDrop(task),
        }
    }

    /// How many requests reached the handler (passed verification).
    pub fn calls(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The token of the last request that reached the handler.
    pub fn last_token(&self) -> String {
        self.received
            .lock()
            .unwrap()
            .last()
            .expect("a request reached the backend")
            .clone()
    }
}
