//! `JwksService` over a real 127.0.0.1 socket, mounted in axum and served
//! alone by hyper.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tower_jwt_signer::{Algorithm, JWKS_PATH, JwksService, KeyRegistry, SigningKey};

/// Kills the server task when the test ends, however it ends.
struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn axum_server(registry: KeyRegistry) -> Server {
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "app" }))
        .route_service(JWKS_PATH, JwksService::new(registry));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, task }
}

async fn hyper_server(registry: KeyRegistry) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = JwksService::new(registry);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server { addr, task }
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    if_none_match: Option<&str>,
) -> (http::response::Parts, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(tag) = if_none_match {
        request = request.header(header::IF_NONE_MATCH, tag);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(request.body(Empty::new()).unwrap()),
    )
    .await
    .expect("answered in time")
    .unwrap();
    let (parts, body) = response.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

async fn exercise(server: &Server, registry: &KeyRegistry) {
    let addr = server.addr;
    let snapshot = registry.current();

    let (get, body) = send(addr, Method::GET, JWKS_PATH, None).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(body, snapshot.jwks_bytes());
    assert_eq!(get.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(get.headers[header::CACHE_CONTROL], "public, max-age=300");
    assert_eq!(&get.headers[header::ETAG], snapshot.etag());
    let jwks: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let kid = snapshot.active().unwrap().kid().as_str();
    assert_eq!(jwks["keys"][0]["kid"], kid);
    assert!(jwks["keys"][0].get("d").is_none());

    let (head, body) = send(addr, Method::HEAD, JWKS_PATH, None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(
        head.headers[header::CONTENT_LENGTH],
        get.headers[header::CONTENT_LENGTH]
    );
    assert_eq!(head.headers[header::ETAG], get.headers[header::ETAG]);

    let etag = snapshot.etag().to_str().unwrap();
    let (cached, body) = send(addr, Method::GET, JWKS_PATH, Some(etag)).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    let (post, _) = send(addr, Method::POST, JWKS_PATH, None).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers[header::ALLOW], "GET, HEAD");

    // A rotation is visible on the next request; the old tag is stale.
    registry
        .rotate_to(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            Duration::from_secs(60),
        )
        .unwrap();
    let (after, body) = send(addr, Method::GET, JWKS_PATH, Some(etag)).await;
    assert_eq!(after.status, StatusCode::OK);
    let jwks: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_ne!(after.headers[header::ETAG], etag);
}

#[tokio::test]
async fn served_by_axum_route_service() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let server = axum_server(registry.clone()).await;
    exercise(&server, &registry).await;
    // axum routes the rest of the app; the JWKS route is exact.
    let (app, body) = send(server.addr, Method::GET, "/", None).await;
    assert_eq!(app.status, StatusCode::OK);
    assert_eq!(body, "app");
    let (other, _) = send(
        server.addr,
        Method::GET,
        "/.well-known/otoroshi/security",
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn served_alone_by_hyper() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let server = hyper_server(registry.clone()).await;
    exercise(&server, &registry).await;
    for path in [
        "/",
        "/.well-known/otoroshi/security/jwks.json/x",
        "/jwks.json",
    ] {
        let (other, _) = send(server.addr, Method::GET, path, None).await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "{path}");
    }
}
