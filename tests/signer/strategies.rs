//! Otoroshi's other verifier strategies as compositions of this crate's
//! layers, end to end over real sockets on 127.0.0.1: an identity provider
//! (its own registry and `JwksService` on a socket) issues tokens; a
//! gateway verifies them with `JwtVerifierLayer` over the provider's JWKS
//! and either forwards them unchanged (`PassThrough`) or forwards a token of
//! its own, signed by `JwtSignerLayer` with claims copied by `CopyClaims`
//! (`Sign`/`Transform`); a backend verifies what arrives.

use std::net::SocketAddr;

use axum::Router;
use http::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_jwt_signer::signer::CopyClaims;
use tower_jwt_signer::{
    Algorithm, JWKS_PATH, JwksService, JwtSignerLayer, JwtVerifierLayer, KeyRegistry, RemoteJwks,
    SigningKey, Verifier, VerifyError,
};

use crate::support::chain::{Backend, forwarder};
use crate::support::jose::compact;
use crate::support::signer::{AbortOnDrop, segment, verify};
use crate::support::verifier::{Reply, bounded, get, get_bearer, now};

const PROVIDER: &str = "https://idp.example";
const GATEWAY: &str = "https://gateway.example";
const BACKEND: &str = "orders-api";

/// The identity provider: a key and its JWKS, served on a socket.
struct Provider {
    key: SigningKey,
    registry: KeyRegistry,
    addr: SocketAddr,
    _task: AbortOnDrop,
}

impl Provider {
    async fn start() -> Self {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let registry = KeyRegistry::new(key.clone());
        let app = Router::new().route_service(JWKS_PATH, JwksService::new(registry.clone()));
        let (addr, task) = serve(app).await;
        Provider {
            key,
            registry,
            addr,
            _task: task,
        }
    }

    fn jwks_url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    /// A token for the gateway, with `changes` over the usual claims.
    fn token(&self, changes: Value) -> String {
        let mut claims = json!({
            "iss": PROVIDER, "aud": "gateway", "sub": "alice", "email": "alice@example.com",
            "groups": ["orders"], "jti": "idp-1", "iat": now(), "exp": now() + 600,
        });
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        compact(&self.key, &claims)
    }

    /// The gateway's verifier of the provider's tokens.
    fn verifier(&self) -> Verifier {
        Verifier::builder(RemoteJwks::new(self.jwks_url()).unwrap())
            .issuer(PROVIDER)
            .audience("gateway")
            .required_claims(["exp", "sub", "email"])
            .build()
            .unwrap()
    }
}

async fn serve(app: Router) -> (SocketAddr, AbortOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, AbortOnDrop(task))
}

/// Tokens the gateway must refuse, and never forward: the provider's
/// verifier refuses them all with 401.
fn refused_tokens(
    provider: &Provider,
    gateway_key: Option<&SigningKey>,
) -> Vec<(&'static str, String)> {
    let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
    let without_email = {
        let mut claims = json!({"iss": PROVIDER, "aud": "gateway", "sub": "alice",
                                "iat": now(), "exp": now() + 600});
        claims.as_object_mut().unwrap().remove("email");
        compact(&provider.key, &claims)
    };
    let mut tokens = vec![
        (
            "signed by another key",
            compact(
                &stranger,
                &json!({"iss": PROVIDER, "aud": "gateway", "sub": "mallory",
                                       "email": "m@example.com", "exp": now() + 600}),
            ),
        ),
        (
            "expired",
            provider.token(json!({"iat": now() - 900, "exp": now() - 300})),
        ),
        (
            "another issuer",
            provider.token(json!({"iss": "https://other.example"})),
        ),
        ("another audience", provider.token(json!({"aud": BACKEND}))),
        ("without a required claim", without_email),
        ("not a JWS", "a.b.c".to_owned()),
    ];
    if let Some(key) = gateway_key {
        // The gateway's own key is not the provider's.
        tokens.push((
            "signed by the gateway",
            compact(
                key,
                &json!({"iss": PROVIDER, "aud": "gateway", "sub": "alice",
                                 "email": "a@example.com", "exp": now() + 600}),
            ),
        ));
    }
    tokens
}

fn assert_refused(reply: &Reply, case: &str) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}");
    let challenge = reply.challenge().unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{case}: {challenge}"
    );
}

#[tokio::test]
async fn sign_verifies_the_providers_token_and_forwards_the_gateways() {
    bounded(async {
        let provider = Provider::start().await;

        // The gateway: its own key and JWKS; the provider's verifier in
        // front of its signer.
        let gateway_key = SigningKey::generate(Algorithm::ES256).unwrap();
        let gateway = KeyRegistry::new(gateway_key.clone());
        let gateway_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_jwks = format!(
            "http://{}{JWKS_PATH}",
            gateway_listener.local_addr().unwrap()
        );

        // The backend trusts the gateway's keys only.
        let backend = Backend::start(
            Verifier::builder(RemoteJwks::new(&gateway_jwks).unwrap())
                .issuer(GATEWAY)
                .audience(BACKEND)
                .build()
                .unwrap(),
        )
        .await;

        let copy = CopyClaims::builder()
            .claim("sub")
            .claim("groups")
            .rename("email", "user_email")
            .rename("jti", "idp_jti")
            .build()
            .unwrap();
        let signer = JwtSignerLayer::builder(gateway.clone())
            .issuer(GATEWAY)
            .audience(BACKEND)
            .request_claims(move |parts| copy.claims_for(parts))
            .build()
            .unwrap();
        let resign = ServiceBuilder::new()
            .layer(JwtVerifierLayer::new(provider.verifier()))
            .layer(signer)
            .service(forwarder(backend.addr));
        let app = Router::new()
            .route_service(JWKS_PATH, JwksService::new(gateway.clone()))
            .fallback_service(resign);
        let gateway_addr = gateway_listener.local_addr().unwrap();
        let _gateway = AbortOnDrop(tokio::spawn(async move {
            axum::serve(gateway_listener, app).await.unwrap()
        }));

        // Refused at the gateway, never forwarded.
        for (case, token) in refused_tokens(&provider, Some(&gateway_key)) {
            assert_refused(&get_bearer(gateway_addr, &token).await, case);
        }
        let reply = get(gateway_addr, "/orders", &[]).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.challenge(), Some("Bearer"));
        assert_eq!(backend.calls(), 0, "no refused request reached the backend");

        // A valid provider token: the backend gets the gateway's token, with
        // the mapped claims and none of the provider's others.
        let provider_token = provider.token(json!({}));
        let reply = get(
            gateway_addr,
            "/orders",
            &[("authorization", &format!("Bearer {provider_token}"))],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(backend.calls(), 1);
        let verified = reply.json();
        let claims = &verified["claims"];
        assert_eq!(claims["iss"], GATEWAY);
        assert_eq!(claims["aud"], BACKEND);
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["groups"], json!(["orders"]));
        assert_eq!(claims["user_email"], "alice@example.com");
        assert_eq!(claims["idp_jti"], "idp-1");
        assert!(claims.get("email").is_none(), "{claims}");
        assert_ne!(claims["jti"], "idp-1", "the gateway's own jti");
        assert_eq!(verified["kid"], gateway_key.kid().as_str());

        // What arrived is the gateway's token, never the provider's: it
        // verifies against the gateway's JWKS, and not against the
        // provider's.
        let received = backend.last_token();
        assert_ne!(received, provider_token);
        assert_eq!(
            segment(received.split('.').next().unwrap())["kid"],
            gateway_key.kid().as_str()
        );
        verify(&received, &gateway).expect("verifies against the gateway's JWKS");
        assert!(verify(&received, &provider.registry).is_err());
        let providers = Verifier::new(RemoteJwks::new(provider.jwks_url()).unwrap());
        assert!(matches!(
            providers.verify(&received).await,
            Err(VerifyError::UnknownKid)
        ));
        assert_eq!(backend.calls(), 1);
    })
    .await;
}

#[tokio::test]
async fn pass_through_verifies_the_providers_token_and_forwards_it_unchanged() {
    bounded(async {
        let provider = Provider::start().await;

        // The backend trusts the provider: it receives the provider's tokens.
        let backend = Backend::start(
            Verifier::builder(RemoteJwks::new(provider.jwks_url()).unwrap())
                .issuer(PROVIDER)
                .audience("gateway")
                .build()
                .unwrap(),
        )
        .await;
        let pass_through = ServiceBuilder::new()
            .layer(JwtVerifierLayer::new(provider.verifier()))
            .service(forwarder(backend.addr));
        let (gateway_addr, _gateway) = serve(Router::new().fallback_service(pass_through)).await;

        for (case, token) in refused_tokens(&provider, None) {
            assert_refused(&get_bearer(gateway_addr, &token).await, case);
        }
        assert_eq!(backend.calls(), 0, "no refused request reached the backend");

        let provider_token = provider.token(json!({}));
        let reply = get_bearer(gateway_addr, &provider_token).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(backend.last_token(), provider_token, "forwarded unchanged");
        let verified = reply.json();
        assert_eq!(verified["claims"]["iss"], PROVIDER);
        assert_eq!(verified["claims"]["email"], "alice@example.com");
        // The backend trusts the provider's JWKS only: what it verified is
        // the provider's token.
        assert_eq!(verified["kid"], provider.key.kid().as_str());
    })
    .await;
}
