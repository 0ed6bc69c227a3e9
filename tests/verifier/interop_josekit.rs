//! A second independent implementation, josekit (its own JWK parsing and
//! JWS verification), checks tokens made by `JwtSignerLayer` for all ten
//! algorithms, ES512 included, using only the published JWK Set.

use http::{Request, Response};
use josekit::jws::JwsVerifier;
use serde_json::Value;
use tower::{ServiceExt, service_fn};
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};

fn verifier(alg: Algorithm, jwk: &josekit::jwk::Jwk) -> Box<dyn JwsVerifier> {
    use josekit::jws;
    match alg {
        Algorithm::RS256 => Box::new(jws::RS256.verifier_from_jwk(jwk).unwrap()),
        Algorithm::RS384 => Box::new(jws::RS384.verifier_from_jwk(jwk).unwrap()),
        Algorithm::RS512 => Box::new(jws::RS512.verifier_from_jwk(jwk).unwrap()),
        Algorithm::PS256 => Box::new(jws::PS256.verifier_from_jwk(jwk).unwrap()),
        Algorithm::PS384 => Box::new(jws::PS384.verifier_from_jwk(jwk).unwrap()),
        Algorithm::PS512 => Box::new(jws::PS512.verifier_from_jwk(jwk).unwrap()),
        Algorithm::ES256 => Box::new(jws::ES256.verifier_from_jwk(jwk).unwrap()),
        Algorithm::ES384 => Box::new(jws::ES384.verifier_from_jwk(jwk).unwrap()),
        Algorithm::ES512 => Box::new(jws::ES512.verifier_from_jwk(jwk).unwrap()),
        Algorithm::EdDSA => Box::new(jws::EdDSA.verifier_from_jwk(jwk).unwrap()),
    }
}

/// The token a `service_fn` behind the signer receives.
async fn signed_token(registry: &KeyRegistry) -> String {
    let signer = JwtSignerLayer::builder(registry.clone())
        .issuer("gateway")
        .audience("orders")
        .template_claim("tenant", "${req.headers.x-tenant:public}")
        .build()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let record = seen.clone();
    let inner = service_fn(move |request: Request<()>| {
        let value = request.headers()["authorization"]
            .to_str()
            .unwrap()
            .to_owned();
        *record.lock().unwrap() = Some(value);
        async { Ok::<_, std::convert::Infallible>(Response::new(String::new())) }
    });
    let request = Request::get("/orders/1")
        .header("x-tenant", "acme")
        .body(())
        .unwrap();
    let response = tower::Layer::layer(&signer, inner)
        .oneshot(request)
        .await
        .unwrap();
    assert!(!response.body().is_signer_response(), "forwarded");
    let value = seen.lock().unwrap().take().expect("the inner service ran");
    value.strip_prefix("Bearer ").unwrap().to_owned()
}

#[tokio::test]
async fn josekit_verifies_every_algorithm_from_the_published_jwks() {
    for alg in Algorithm::ALL {
        let registry = KeyRegistry::generate(alg).unwrap();
        let token = signed_token(&registry).await;

        let set = josekit::jwk::JwkSet::from_bytes(registry.current().jwks_bytes()).unwrap();
        let header: Value = serde_json::from_slice(&crate::support::jose::unb64(
            token.split('.').next().unwrap(),
        ))
        .unwrap();
        let kid = header["kid"].as_str().unwrap();
        let jwk = set.get(kid).into_iter().next().expect("kid published");
        let verifier = verifier(alg, jwk);

        let (payload, jws_header) = josekit::jwt::decode_with_verifier(&token, &*verifier)
            .unwrap_or_else(|err| panic!("{alg}: {err}"));
        assert_eq!(jws_header.algorithm(), Some(alg.as_str()));
        assert_eq!(jws_header.key_id(), Some(kid));
        assert_eq!(payload.issuer(), Some("gateway"));
        assert_eq!(payload.claim("tenant"), Some(&Value::from("acme")));
        // Dates are JSON integers.
        for date in ["iat", "nbf", "exp"] {
            assert!(payload.claim(date).unwrap().is_u64(), "{alg}: {date}");
        }

        // A changed payload no longer verifies.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = crate::support::jose::b64(br#"{"iss":"gateway","sub":"mallory"}"#);
        parts[1] = &forged;
        assert!(
            josekit::jwt::decode_with_verifier(parts.join("."), &*verifier).is_err(),
            "{alg}: tampered token accepted"
        );
    }
}
