//! The verifier as a tower-http authorizer (feature `tower-http`): an axum
//! backend behind `AsyncRequireAuthorizationLayer::new(verifier.authorizer())`,
//! over real sockets on 127.0.0.1, with its keys from a `RemoteJwks` (the
//! first request waits for the fetch). Every answer is the one
//! `JwtVerifierLayer` gives to the same request.

use std::net::SocketAddr;

use axum::{Extension, Router};
use http::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::auth::AsyncRequireAuthorizationLayer;
use tower_jwt_signer::{
    Algorithm, JwksService, JwtVerifierLayer, KeyRegistry, RemoteJwks, SigningKey, VerifiedClaims,
    Verifier,
};

use crate::support::jose::compact;
use crate::support::signer::AbortOnDrop;
use crate::support::verifier::{JwksServer, Mode, Reply, bounded, get, get_bearer, now};

/// A backend that answers `<sub> <aud...>` from the claims in the request
/// extensions, behind `layer`.
async fn backend<L>(layer: L) -> (SocketAddr, AbortOnDrop)
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<axum::extract::Request> + Clone + Send + Sync + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Response:
        axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Error:
        Into<std::convert::Infallible> + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
{
    let app = Router::new()
        .fallback(|Extension(claims): Extension<VerifiedClaims>| async move {
            let audiences: Vec<&str> = claims.audience().collect();
            format!(
                "{} {}",
                claims.subject().unwrap_or("?"),
                audiences.join(",")
            )
        })
        .layer(layer);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, AbortOnDrop(task))
}

/// A verifier of the provider's keys, fetched from `jwks`; a fresh cache.
fn verifier(jwks: &JwksServer) -> Verifier {
    Verifier::builder(RemoteJwks::new(jwks.url()).unwrap())
        .issuer("gateway")
        .audience("api")
        .build()
        .unwrap()
}

fn challenge(reply: &Reply) -> Option<String> {
    reply.challenge().map(str::to_owned)
}

#[tokio::test]
async fn an_axum_backend_behind_async_require_authorization() {
    bounded(async {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let jwks =
            JwksServer::start(Mode::Jwks(JwksService::new(KeyRegistry::new(key.clone())))).await;
        let (authorized, _a) = backend(AsyncRequireAuthorizationLayer::new(
            verifier(&jwks).authorizer(),
        ))
        .await;
        let (layered, _b) = backend(JwtVerifierLayer::new(verifier(&jwks))).await;

        let claims = |changes: serde_json::Value| {
            let mut claims = json!({"sub": "alice", "iss": "gateway", "aud": ["api", "billing"],
                                    "iat": now(), "exp": now() + 600});
            for (name, value) in changes.as_object().unwrap() {
                claims[name] = value.clone();
            }
            compact(&key, &claims)
        };

        // Valid: the first request waits for the JWKS fetch, then the
        // handler sees the verified claims.
        let valid = claims(json!({}));
        let reply = get_bearer(authorized, &valid).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "alice api,billing");
        assert_eq!(get_bearer(layered, &valid).await.body, reply.body);

        let cases = [
            (
                "expired",
                claims(json!({"iat": now() - 700, "exp": now() - 100})),
                StatusCode::UNAUTHORIZED,
                Some("Bearer error=\"invalid_token\", error_description=\"the token has expired\""),
            ),
            (
                "wrong audience",
                claims(json!({"aud": "other-api"})),
                StatusCode::UNAUTHORIZED,
                Some(
                    "Bearer error=\"invalid_token\", \
                     error_description=\"the token is not meant for this audience\"",
                ),
            ),
            (
                "signed by another key",
                compact(
                    &SigningKey::generate(Algorithm::ES256).unwrap(),
                    &json!({"sub": "mallory", "iss": "gateway", "aud": "api", "exp": now() + 600}),
                ),
                StatusCode::UNAUTHORIZED,
                None,
            ),
        ];
        for (case, token, status, expected) in cases {
            let reply = get_bearer(authorized, &token).await;
            assert_eq!(reply.status, status, "{case}");
            if let Some(expected) = expected {
                assert_eq!(reply.challenge(), Some(expected), "{case}");
            }
            assert!(reply.body.is_empty(), "{case}: no body");
            let own = get_bearer(layered, &token).await;
            assert_eq!(
                (own.status, challenge(&own)),
                (reply.status, challenge(&reply)),
                "{case}: the layer's answer"
            );
        }

        // No token: 401 with the bare challenge (RFC 6750 section 3.1);
        // a scheme without a token: 400 invalid_request.
        for (case, headers, status, expected) in [
            ("missing token", &[][..], 401, "Bearer"),
            (
                "scheme without a token",
                &[("authorization", "Bearer")][..],
                400,
                "Bearer error=\"invalid_request\", error_description=\"malformed request: no token after the scheme\"",
            ),
        ] {
            let reply = get(authorized, "/", headers).await;
            assert_eq!(reply.status.as_u16(), status, "{case}");
            assert_eq!(reply.challenge(), Some(expected), "{case}");
            let own = get(layered, "/", headers).await;
            assert_eq!(
                (own.status, challenge(&own)),
                (reply.status, challenge(&reply)),
                "{case}: the layer's answer"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn no_keys_answers_503_without_a_challenge() {
    bounded(async {
        // A JWKS URL that refuses connections: no set, ever.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
        drop(closed);
        let verifier = Verifier::new(RemoteJwks::new(url).unwrap());
        let (authorized, _a) =
            backend(AsyncRequireAuthorizationLayer::new(verifier.authorizer())).await;
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let token = compact(&key, &json!({"sub": "alice", "exp": now() + 600}));
        let reply = get_bearer(authorized, &token).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.challenge(), None);
    })
    .await;
}
