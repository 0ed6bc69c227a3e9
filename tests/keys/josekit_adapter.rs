//! The `josekit` feature, both ways: a key josekit made signs through our
//! layer (as a `JosekitBackend`) and verifies with our verifier; our key,
//! exported as a josekit JWK, signs with josekit a token our verifier
//! accepts. Conversions keep the kid and never leak private members into
//! a public JWK.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use josekit::jwk::Jwk;
use josekit::jwk::alg::ec::EcCurve;
use josekit::jwk::alg::ed::EdCurve;
use josekit::jws::{self, JwsHeader};
use josekit::jwt::{self, JwtPayload};
use tower::{Layer, ServiceExt, service_fn};
use tower_jwt_signer::josekit::JosekitBackend;
use tower_jwt_signer::keys::SigningBackend;
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyError, KeyRegistry, SigningKey, Verifier};

use crate::support::signer::segment;

/// Signs one request through `JwtSignerLayer` over `registry`; the token.
async fn token_through_the_layer(registry: &KeyRegistry) -> String {
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    let inner = service_fn(move |request: Request<Empty<Bytes>>| {
        let value = request.headers()["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        *record.lock().unwrap() = Some(value);
        async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
    });
    let signer = JwtSignerLayer::builder(registry.clone())
        .issuer("josekit-gw")
        .build()
        .unwrap();
    signer
        .layer(inner)
        .oneshot(Request::get("/").body(Empty::new()).unwrap())
        .await
        .unwrap();
    let value = seen.lock().unwrap().take().unwrap();
    value.strip_prefix("Bearer ").unwrap().to_owned()
}

/// Keys josekit generates, one per key type, with their `alg`.
fn josekit_keys() -> Vec<(Algorithm, Jwk)> {
    let with_alg = |mut jwk: Jwk, alg: &str| {
        jwk.set_algorithm(alg);
        jwk
    };
    vec![
        (
            Algorithm::ES256,
            with_alg(Jwk::generate_ec_key(EcCurve::P256).unwrap(), "ES256"),
        ),
        (
            Algorithm::ES384,
            with_alg(Jwk::generate_ec_key(EcCurve::P384).unwrap(), "ES384"),
        ),
        (
            Algorithm::EdDSA,
            with_alg(Jwk::generate_ed_key(EdCurve::Ed25519).unwrap(), "EdDSA"),
        ),
        (
            Algorithm::PS256,
            with_alg(Jwk::generate_rsa_key(2048).unwrap(), "PS256"),
        ),
    ]
}

#[tokio::test]
async fn a_josekit_key_signs_through_our_layer_and_our_verifier_accepts_it() {
    for (alg, jwk) in josekit_keys() {
        let backend = JosekitBackend::from_jwk(&jwk).unwrap();
        let kid = backend.kid().clone();
        assert_eq!(backend.algorithm(), alg);
        let registry = KeyRegistry::new(backend);
        let token = token_through_the_layer(&registry).await;

        // The header a SigningKey would give: exactly alg, typ, kid.
        let header = segment(token.split('.').next().unwrap());
        assert_eq!(
            header,
            serde_json::json!({"alg": alg.as_str(), "typ": "JWT", "kid": kid.as_str()}),
            "{alg}"
        );
        let claims = Verifier::new(registry).verify(&token).await.unwrap();
        assert_eq!(claims.issuer(), Some("josekit-gw"), "{alg}");

        // And josekit, on its own, verifies what its key signed.
        let verifier = match alg {
            Algorithm::ES256 => {
                Box::new(jws::ES256.verifier_from_jwk(&jwk).unwrap()) as Box<dyn jws::JwsVerifier>
            }
            Algorithm::ES384 => Box::new(jws::ES384.verifier_from_jwk(&jwk).unwrap()),
            Algorithm::EdDSA => Box::new(jws::EdDSA.verifier_from_jwk(&jwk).unwrap()),
            Algorithm::PS256 => Box::new(jws::PS256.verifier_from_jwk(&jwk).unwrap()),
            _ => unreachable!(),
        };
        jwt::decode_with_verifier(&token, &*verifier).unwrap();
    }
}

#[tokio::test]
async fn our_key_exported_to_josekit_signs_a_token_our_verifier_accepts() {
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        let key = SigningKey::generate(alg).unwrap();
        let exported = Jwk::try_from(&key).unwrap();
        assert_eq!(exported.key_id(), Some(key.kid().as_str()));
        assert_eq!(exported.algorithm(), Some(alg.as_str()));

        let signer: Box<dyn jws::JwsSigner> = match alg {
            Algorithm::ES256 => Box::new(jws::ES256.signer_from_jwk(&exported).unwrap()),
            Algorithm::EdDSA => Box::new(jws::EdDSA.signer_from_jwk(&exported).unwrap()),
            Algorithm::RS256 => Box::new(jws::RS256.signer_from_jwk(&exported).unwrap()),
            _ => unreachable!(),
        };
        let mut header = JwsHeader::new();
        header.set_token_type("JWT");
        header.set_key_id(key.kid().as_str());
        let mut payload = JwtPayload::new();
        payload.set_subject("alice");
        let exp = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        payload.set_expires_at(&exp);
        let token = jwt::encode_with_signer(&payload, &header, &*signer).unwrap();

        let registry = KeyRegistry::new(key.clone());
        let claims = Verifier::new(registry).verify(&token).await.unwrap();
        assert_eq!(claims.subject(), Some("alice"), "{alg}");

        // Back to a SigningKey: the same key, the same kid.
        let back = SigningKey::try_from(&exported).unwrap();
        assert_eq!(back.public_jwk(), key.public_jwk());
        // The public JWK as josekit's: public members only.
        let public = Jwk::from(key.public_jwk());
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(public.parameter(private).is_none(), "{alg}: {private}");
        }
        assert_eq!(public.key_id(), Some(key.kid().as_str()));
    }
}

#[test]
fn mismatched_or_foreign_josekit_keys_are_refused() {
    // A signer whose key is not the public JWK's.
    let signing = Jwk::generate_ec_key(EcCurve::P256).unwrap();
    let other = Jwk::generate_ec_key(EcCurve::P256).unwrap();
    let signer = Box::new(jws::ES256.signer_from_jwk(&signing).unwrap());
    let err = JosekitBackend::new(signer, &other.to_public_key().unwrap()).unwrap_err();
    assert!(matches!(err, KeyError::InconsistentKey { .. }), "{err}");

    // The signer's algorithm and the JWK's disagree.
    let mut es384 = other.to_public_key().unwrap();
    es384.set_algorithm("ES384");
    let signer = Box::new(jws::ES256.signer_from_jwk(&signing).unwrap());
    let err = JosekitBackend::new(signer, &es384).unwrap_err();
    assert!(matches!(err, KeyError::AlgorithmMismatch { .. }), "{err}");

    // HMAC is not ours, nor is a JWK without alg for from_jwk.
    let secret = Jwk::generate_oct_key(32).unwrap();
    let signer = Box::new(jws::HS256.signer_from_jwk(&secret).unwrap());
    assert!(JosekitBackend::new(signer, &secret).is_err());
    let err = JosekitBackend::from_jwk(&Jwk::generate_ec_key(EcCurve::P256).unwrap()).unwrap_err();
    assert!(matches!(err, KeyError::AlgorithmRequired), "{err}");

    // Debug never shows the private key.
    let mut jwk = Jwk::generate_ec_key(EcCurve::P256).unwrap();
    jwk.set_algorithm("ES256");
    let d = jwk.parameter("d").unwrap().as_str().unwrap().to_owned();
    let backend = JosekitBackend::from_jwk(&jwk).unwrap();
    assert!(!format!("{backend:?}").contains(&d));
    assert_eq!(backend.public_jwk().algorithm(), Algorithm::ES256);
}
