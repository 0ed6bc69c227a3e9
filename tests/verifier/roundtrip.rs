//! The whole chain over real sockets, for every algorithm: a client calls a
//! gateway on 127.0.0.1 that serves its JWKS and forwards each request to a
//! backend with a freshly signed token; the backend verifies it with
//! `RemoteJwks` pointed at the gateway and answers with the claims.
//!
//! The gateway here mints tokens in test code (header `{alg, typ, kid}` and
//! `SigningKey::sign`); tokens signed by the `jsonwebtoken` crate go through
//! the same backend as an independent signer.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::task::JoinHandle;
use tower_jwt_signer::{
    Algorithm, JWKS_PATH, JwksService, KeyRegistry, RemoteJwks, SigningKey, Verifier,
};

use crate::support::jose::jsonwebtoken_alg;
use crate::support::verifier::{
    Backend, claims, get, get_bearer, header_of, now, sign_with_header,
};

struct Gateway {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Forward {
    registry: KeyRegistry,
    backend: SocketAddr,
}

/// Signs with the registry's active key and forwards to the backend.
async fn forward(State(state): State<Forward>, request: Request) -> impl IntoResponse {
    let snapshot = state.registry.current();
    let active = snapshot.active().expect("an active key");
    let user = request
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned();
    let header =
        json!({"alg": active.algorithm().as_str(), "typ": "JWT", "kid": active.kid().as_str()});
    let claims =
        json!({"iss": "gateway", "sub": user, "aud": "api", "iat": now(), "exp": now() + 60});
    let mut input = crate::support::jose::b64(header.to_string());
    input.push('.');
    input.push_str(&crate::support::jose::b64(claims.to_string()));
    let signature = active.backend().sign(input.as_bytes()).unwrap();
    let token = format!("{input}.{}", crate::support::jose::b64(signature));

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let upstream = http::Request::get(format!("http://{}{}", state.backend, request.uri().path()))
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .unwrap();
    let response = client.request(upstream).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// A gateway that serves `registry`'s JWKS and forwards to `backend`.
async fn gateway(
    registry: KeyRegistry,
    listener: tokio::net::TcpListener,
    backend: SocketAddr,
) -> Gateway {
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route_service(JWKS_PATH, JwksService::new(registry.clone()))
        .fallback(forward)
        .with_state(Forward { registry, backend });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Gateway { addr, task }
}

#[tokio::test]
async fn every_algorithm_round_trips_through_a_gateway_and_a_remote_jwks() {
    for alg in Algorithm::ALL {
        let registry = KeyRegistry::generate(alg).unwrap();
        let kid = registry.current().active().unwrap().kid().clone();
        // The gateway's address is known before the backend starts.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks_url = format!("http://{}{JWKS_PATH}", listener.local_addr().unwrap());
        let remote = RemoteJwks::new(&jwks_url).unwrap();
        let backend = Backend::start(
            Verifier::builder(remote.clone())
                .issuer("gateway")
                .audience("api")
                .algorithms([alg])
                .build()
                .unwrap(),
        )
        .await;
        let gateway = gateway(registry, listener, backend.addr).await;

        for user in ["alice", "bob"] {
            let reply = get(gateway.addr, "/orders/42", &[("x-user", user)]).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{alg}: {:?}",
                reply.challenge()
            );
            let body = reply.json();
            assert_eq!(body["claims"]["sub"], user, "{alg}");
            assert_eq!(body["claims"]["iss"], "gateway");
            assert_eq!(body["kid"], kid.as_str());
            assert_eq!(body["alg"], alg.as_str());
        }
        assert_eq!(backend.calls(), 2);
        // Straight to the backend, without the gateway: refused.
        let reply = get(backend.addr, "/orders/42", &[]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(remote.current().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn rotation_at_the_gateway_is_learned_by_the_backend() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}{JWKS_PATH}", listener.local_addr().unwrap());
    let remote = RemoteJwks::new(&jwks_url).unwrap();
    let backend = Backend::start(Verifier::new(remote.clone())).await;
    let gateway = gateway(registry.clone(), listener, backend.addr).await;
    remote.prefetch().await.unwrap();

    let reply = get(gateway.addr, "/", &[("x-user", "alice")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let first_kid = reply.json()["kid"].clone();

    for _ in 0..3 {
        // Past the unknown-kid cooldown of the previous rotation.
        crate::support::verifier::advance(Duration::from_secs(31)).await;
        registry
            .rotate_to(
                SigningKey::generate(Algorithm::EdDSA).unwrap(),
                Duration::from_secs(120),
            )
            .unwrap();
        let reply = get(gateway.addr, "/", &[("x-user", "alice")]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.json()["kid"],
            registry.current().active().unwrap().kid().as_str()
        );
        assert_eq!(reply.json()["alg"], "EdDSA");
    }
    assert_ne!(
        first_kid,
        registry.current().active().unwrap().kid().as_str()
    );
    assert_eq!(
        remote.current().unwrap().len(),
        4,
        "all four keys published"
    );
}

#[tokio::test]
async fn tokens_from_jsonwebtoken_pass_the_http_backend() {
    for alg in Algorithm::ALL {
        let Some(their_alg) = jsonwebtoken_alg(alg) else {
            continue;
        };
        let key = SigningKey::generate(alg).unwrap();
        let registry = KeyRegistry::new(key.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks_url = format!("http://{}{JWKS_PATH}", listener.local_addr().unwrap());
        let backend = Backend::start(Verifier::new(RemoteJwks::new(&jwks_url).unwrap())).await;
        let _gateway = gateway(registry, listener, backend.addr).await;

        let pem = key.to_pkcs8_pem().unwrap();
        let encoding = match alg.key_type() {
            "RSA" => jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()),
            "EC" => jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()),
        }
        .unwrap();
        let mut header = jsonwebtoken::Header::new(their_alg);
        header.kid = Some(key.kid().to_string());
        let token = jsonwebtoken::encode(&header, &claims(), &encoding).unwrap();
        let reply = get_bearer(backend.addr, &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{alg}");
        assert_eq!(reply.json()["claims"]["sub"], "alice");

        // The same kid with our own signer: also accepted (same key).
        let ours = sign_with_header(&key, &header_of(&key), &claims());
        assert_eq!(get_bearer(backend.addr, &ours).await.status, StatusCode::OK);
    }
}
