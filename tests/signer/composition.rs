//! The signer composed with other layers: inside an axum `Router::layer`
//! with tower-http's `TraceLayer` and `SetSensitiveRequestHeadersLayer`,
//! under a plain hyper server, and in a `ServiceBuilder`, over real
//! sockets on 127.0.0.1.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use crate::support::signer::{AbortOnDrop, Seen, bearer, fetch, recording, verify};
use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tower_jwt_signer::signer::ExistingToken;
use tower_jwt_signer::{Algorithm, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry};

async fn listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Serves the tower `service` with plain hyper (HTTP/1, a task per
/// connection) on a free loopback port, until the guard is dropped.
async fn serve_with_hyper<S, B>(service: S) -> (AbortOnDrop, std::net::SocketAddr)
where
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (listener, addr) = listener().await;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (AbortOnDrop(task), addr)
}

fn get_request(uri: String, authorization: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::get(uri);
    if let Some(value) = authorization {
        builder = builder.header(AUTHORIZATION, value);
    }
    builder.body(Full::default()).unwrap()
}

#[tokio::test]
async fn inside_an_axum_router_with_trace_and_sensitive_headers() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let checker = registry.clone();
    let handler = move |headers: HeaderMap| {
        let registry = checker.clone();
        async move {
            let value = &headers[AUTHORIZATION];
            let verified = verify(&bearer(&headers), &registry).unwrap();
            axum::Json(json!({
                "sensitive": value.is_sensitive(),
                "claims": verified.claims,
            }))
        }
    };
    let signer = JwtSignerLayer::builder(registry.clone())
        .issuer("gateway")
        .existing_token(ExistingToken::Reject)
        .build()
        .unwrap();
    // Routes added before `layer` are signed; the JWKS route added after
    // is not.
    let app = Router::new()
        .route("/api", get(handler))
        .layer(signer)
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
        .layer(TraceLayer::new_for_http())
        .route_service(JWKS_PATH, JwksService::new(registry.clone()));
    let (listener, addr) = listener().await;
    let _server = AbortOnDrop(tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    }));

    let (parts, body) = fetch(get_request(format!("http://{addr}/api"), None)).await;
    assert_eq!(parts.status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["sensitive"], true);
    assert_eq!(body["claims"]["iss"], "gateway");

    // The Reject answer crosses axum and the tower-http layers.
    let (parts, body) = fetch(get_request(format!("http://{addr}/api"), Some("Bearer x"))).await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    assert_eq!(parts.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "token_present");

    // The JWKS is served by the same router, outside the signer.
    let (parts, body) = fetch(get_request(
        format!("http://{addr}{JWKS_PATH}"),
        Some("Bearer x"),
    ))
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(&body[..], &registry.current().jwks_bytes()[..]);
}

#[tokio::test]
async fn under_a_plain_hyper_server() {
    let registry = KeyRegistry::generate(Algorithm::EdDSA).unwrap();
    let checker = registry.clone();
    let backend = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let registry = checker.clone();
        async move {
            let verified = verify(&bearer(request.headers()), &registry).unwrap();
            let body = serde_json::to_vec(&verified.claims).unwrap();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        }
    });
    let service = ServiceBuilder::new()
        .layer(
            JwtSignerLayer::builder(registry.clone())
                .template_claim("path", "${req.path}")
                .build()
                .unwrap(),
        )
        .service(backend);
    let (_server, addr) = serve_with_hyper(service).await;
    let (parts, body) = fetch(get_request(format!("http://{addr}/orders/7"), None)).await;
    assert_eq!(parts.status, StatusCode::OK);
    let claims: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(claims["path"], "/orders/7");

    // With no active key the signer's own answer goes over the wire.
    let kid = registry.current().active().unwrap().kid().clone();
    registry.retire(&kid, std::time::SystemTime::now()).unwrap();
    let (parts, body) = fetch(get_request(format!("http://{addr}/orders/7"), None)).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "no_signing_key");
}

#[tokio::test]
async fn order_inside_a_service_builder() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let outer_saw: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = |into: Arc<Mutex<Vec<String>>>| {
        move |request: Request<()>| {
            let value = request
                .headers()
                .get(AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            into.lock().unwrap().push(value);
            request
        }
    };
    let seen = Seen::default();
    let service = ServiceBuilder::new()
        // Outer: runs first, sees the request as the client sent it.
        .map_request(record(Arc::clone(&outer_saw)))
        .layer(JwtSignerLayer::new(registry.clone()))
        // Inner: runs after the signer, sees the token.
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
        .service(recording(&seen));
    let request = Request::get("/")
        .header(AUTHORIZATION, "Bearer from-client")
        .body(())
        .unwrap();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), service.oneshot(request))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(*outer_saw.lock().unwrap(), ["Bearer from-client"]);
    let headers = seen.only().headers;
    assert!(headers[AUTHORIZATION].is_sensitive());
    verify(&bearer(&headers), &registry).unwrap();
}

#[tokio::test]
async fn a_proxy_returning_hyper_incoming_bodies_needs_no_mapping() {
    // Upstream: answers with the token it received.
    let (upstream_listener, upstream_addr) = listener().await;
    let _upstream = AbortOnDrop(tokio::spawn(async move {
        let app = Router::new().fallback(|headers: HeaderMap| async move {
            headers[AUTHORIZATION].to_str().unwrap().to_owned()
        });
        axum::serve(upstream_listener, app).await.unwrap();
    }));
    // Proxy: the inner service returns the upstream's `Response<Incoming>`
    // as it is; the signer's `ResponseBody<Incoming>` goes straight to
    // hyper's server.
    let client = crate::support::signer::client();
    let inner = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        let client = client.clone();
        async move {
            let uri = format!("http://{upstream_addr}{}", request.uri().path());
            let mut forwarded = Request::get(uri).body(Full::<Bytes>::default()).unwrap();
            *forwarded.headers_mut() = request.headers().clone();
            forwarded.headers_mut().remove(http::header::HOST);
            client.request(forwarded).await
        }
    });
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let service = JwtSignerLayer::builder(registry.clone())
        .existing_token(ExistingToken::Reject)
        .build()
        .unwrap()
        .layer(inner);
    let (_proxy, addr) = serve_with_hyper(service).await;
    let (parts, body) = fetch(get_request(format!("http://{addr}/x"), None)).await;
    assert_eq!(parts.status, StatusCode::OK);
    let value = std::str::from_utf8(&body).unwrap();
    verify(value.strip_prefix("Bearer ").unwrap(), &registry).unwrap();

    let (parts, body) = fetch(get_request(format!("http://{addr}/x"), Some("Bearer c"))).await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "token_present");
}
