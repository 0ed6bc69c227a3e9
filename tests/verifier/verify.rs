//! `JwtVerifierLayer` and `Verifier` with local keys: every algorithm,
//! tokens from an independent implementation (the `jsonwebtoken` crate),
//! the failure responses, token sources, allowlist, kid and typ rules.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::{Service, ServiceExt, service_fn};
use tower_jwt_signer::verifier::{JwkSet, KeySource, TokenSource};
use tower_jwt_signer::{
    Algorithm, JwtVerifier, JwtVerifierLayer, KeyRegistry, SigningKey, VerifiedClaims, Verifier,
    VerifyError,
};

use crate::support::jose::jsonwebtoken_alg;
use crate::support::jose::{b64, compact};
use crate::support::verifier::{claims, header_of, sign_with_header};

/// An inner service that counts its calls and echoes the verified claims.
fn echo(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |request: Request<Full<Bytes>>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let claims = request
                .extensions()
                .get::<VerifiedClaims>()
                .expect("claims in the extensions")
                .clone();
            let body = serde_json::to_vec(&claims).unwrap();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        }
    })
}

fn request(token: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::get("/");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Full::default()).unwrap()
}

async fn body(response: Response<Full<Bytes>>) -> Value {
    use http_body_util::BodyExt;
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[derive(Deserialize)]
struct Caller {
    sub: String,
    iss: String,
    exp: u64,
}

#[tokio::test]
async fn every_algorithm_verifies_with_a_local_registry() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).unwrap();
        let registry = KeyRegistry::new(key.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let service =
            JwtVerifierLayer::new(Verifier::new(registry)).layer_service(echo(calls.clone()));
        let token = compact(&key, &claims());
        let response = service.oneshot(request(Some(&token))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{alg}");
        let echoed = body(response).await;
        assert_eq!(echoed["claims"]["sub"], "alice", "{alg}");
        assert_eq!(echoed["kid"], key.kid().as_str());
        assert_eq!(echoed["alg"], alg.as_str());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

/// `tower::Layer::layer`, spelled so the closure type stays inferred.
trait LayerService {
    fn layer_service<S>(self, inner: S) -> JwtVerifier<S>;
}

impl LayerService for JwtVerifierLayer {
    fn layer_service<S>(self, inner: S) -> JwtVerifier<S> {
        tower::Layer::layer(&self, inner)
    }
}

#[tokio::test]
async fn verified_claims_deserialize_into_the_callers_type() {
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let verifier = Verifier::new(KeyRegistry::new(key.clone()));
    let claims = verifier.verify(&compact(&key, &claims())).await.unwrap();
    let caller: Caller = claims.deserialize().unwrap();
    assert_eq!(caller.sub, "alice");
    assert_eq!(caller.iss, "gateway");
    assert!(caller.exp > 0);
    assert_eq!(claims.get("aud"), Some(&json!("api")));
    assert_eq!(claims.kid(), Some(key.kid().as_str()));
    assert_eq!(claims.alg(), Algorithm::EdDSA);
    // Debug shows claim names, not values.
    let debug = format!("{claims:?}");
    assert!(debug.contains("sub") && !debug.contains("alice"), "{debug}");
}

#[tokio::test]
async fn tokens_signed_by_jsonwebtoken_verify() {
    let mut checked = 0;
    for alg in Algorithm::ALL {
        let Some(their_alg) = jsonwebtoken_alg(alg) else {
            continue;
        };
        let key = SigningKey::generate(alg).unwrap();
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

        // Only the published JWKS, as a remote backend would see it.
        let registry = KeyRegistry::new(key.clone());
        let set = JwkSet::parse(registry.current().jwks_bytes()).unwrap();
        let verifier = Verifier::builder(KeySource::fixed(set.clone()))
            .issuer("gateway")
            .audience("api")
            .build()
            .unwrap();
        let verified = verifier
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.subject(), Some("alice"));

        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = b64(br#"{"sub":"mallory","iss":"gateway","aud":"api","exp":4000000000}"#);
        parts[1] = &forged;
        assert_eq!(
            verifier.verify_with(&parts.join("."), &set),
            Err(VerifyError::InvalidSignature),
            "{alg}"
        );
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[tokio::test]
async fn failures_answer_with_rfc_6750_challenges_and_skip_the_inner_service() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = JwtVerifierLayer::new(Verifier::new(KeyRegistry::new(key.clone())))
        .layer_service(echo(calls.clone()));

    // No token at all: 401 with a bare challenge (RFC 6750 section 3.1).
    let response = service.clone().oneshot(request(None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(
        response.extensions().get::<VerifyError>(),
        Some(&VerifyError::MissingToken)
    );

    // A bad token: 401 invalid_token with a fixed description.
    let mut expired = claims();
    expired["exp"] = json!(1);
    let response = service
        .clone()
        .oneshot(request(Some(&compact(&key, &expired))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\", error_description=\"the token has expired\""
    );
    assert_eq!(
        response.extensions().get::<VerifyError>(),
        Some(&VerifyError::Expired)
    );

    // Two Authorization headers: a malformed request, 400.
    let token = compact(&key, &claims());
    let twice = Request::get("/")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::default())
        .unwrap();
    let response = service.clone().oneshot(twice).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_request\""),
        "{challenge}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the inner service never ran"
    );

    let response = service.oneshot(request(Some(&token))).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn token_sources_header_cookie_and_query() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let token = compact(&key, &claims());
    let verifier = Verifier::new(KeyRegistry::new(key.clone()));
    let cases: Vec<(TokenSource, Request<Full<Bytes>>)> = vec![
        (
            TokenSource::header(HeaderName::from_static("x-gateway-jwt"), None),
            Request::get("/")
                .header("x-gateway-jwt", &token)
                .body(Full::default())
                .unwrap(),
        ),
        (
            TokenSource::header(header::AUTHORIZATION, Some("JWT")),
            Request::get("/")
                .header(header::AUTHORIZATION, format!("jwt {token}"))
                .body(Full::default())
                .unwrap(),
        ),
        (
            TokenSource::cookie("gw"),
            Request::get("/")
                .header(header::COOKIE, format!("theme=dark; gw={token}"))
                .body(Full::default())
                .unwrap(),
        ),
        (
            TokenSource::query("access_token"),
            Request::get(format!("/x?a=1&access_token={token}"))
                .body(Full::default())
                .unwrap(),
        ),
    ];
    for (source, request) in cases {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = JwtVerifierLayer::builder(verifier.clone())
            .token_source(source.clone())
            .build()
            .unwrap()
            .layer_service(echo(calls.clone()));
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{source:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
    // The custom scheme is named in the challenge.
    let service = JwtVerifierLayer::builder(verifier)
        .token_source(TokenSource::header(header::AUTHORIZATION, Some("JWT")))
        .build()
        .unwrap()
        .layer_service(echo(Arc::default()));
    let response = service.oneshot(request(Some(&token))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "JWT");
}

#[test]
fn the_allowlist_and_the_key_decide_the_algorithm() {
    let es = SigningKey::generate(Algorithm::ES256).unwrap();
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let set = JwkSet::from_public_jwks([es.public_jwk(), ed.public_jwk()]);
    let only_es256 = Verifier::builder(KeySource::fixed(set.clone()))
        .algorithms([Algorithm::ES256])
        .build()
        .unwrap();
    assert!(
        only_es256
            .verify_with(&compact(&es, &claims()), &set)
            .is_ok()
    );
    assert_eq!(
        only_es256.verify_with(&compact(&ed, &claims()), &set),
        Err(VerifyError::AlgorithmNotAllowed(Algorithm::EdDSA))
    );
    let empty = Verifier::builder(KeySource::fixed(set.clone()))
        .algorithms([])
        .build()
        .unwrap_err();
    assert_eq!(empty.setting(), "algorithms");

    // The header names ES384 but the kid's key is P-256: refused before
    // any signature check.
    let all = Verifier::new(KeySource::fixed(set.clone()));
    let mut header = header_of(&es);
    header["alg"] = json!("ES384");
    let token = sign_with_header(&es, &header, &claims());
    assert_eq!(all.verify_with(&token, &set), Err(VerifyError::KeyMismatch));
    // EdDSA named with the EC key's kid.
    let mut header = header_of(&ed);
    header["kid"] = json!(es.kid().as_str());
    let token = sign_with_header(&ed, &header, &claims());
    assert_eq!(all.verify_with(&token, &set), Err(VerifyError::KeyMismatch));
}

#[test]
fn kid_is_required_only_when_the_set_has_several_keys() {
    let first = SigningKey::generate(Algorithm::ES256).unwrap();
    let second = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut header = header_of(&first);
    header.as_object_mut().unwrap().remove("kid");
    let token = sign_with_header(&first, &header, &claims());

    let one = JwkSet::from_public_jwks([first.public_jwk()]);
    let verifier = Verifier::new(KeySource::fixed(one.clone()));
    assert_eq!(verifier.verify_with(&token, &one).unwrap().kid(), None);

    let two = JwkSet::from_public_jwks([first.public_jwk(), second.public_jwk()]);
    assert_eq!(
        verifier.verify_with(&token, &two),
        Err(VerifyError::KidRequired)
    );
    assert!(
        verifier
            .verify_with(&compact(&first, &claims()), &two)
            .is_ok()
    );
}

#[test]
fn typ_is_checked_when_configured() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let set = JwkSet::from_public_jwks([key.public_jwk()]);
    let verifier = Verifier::builder(KeySource::fixed(set.clone()))
        .typ("JWT")
        .build()
        .unwrap();
    let with_typ = |typ: Option<&str>| {
        let mut header = header_of(&key);
        match typ {
            Some(typ) => header["typ"] = json!(typ),
            None => drop(header.as_object_mut().unwrap().remove("typ")),
        }
        verifier.verify_with(&sign_with_header(&key, &header, &claims()), &set)
    };
    assert!(with_typ(Some("JWT")).is_ok());
    assert!(with_typ(Some("application/jwt")).is_ok());
    assert_eq!(with_typ(Some("at+jwt")), Err(VerifyError::WrongType));
    assert_eq!(with_typ(None), Err(VerifyError::WrongType));
    // Without the rule any typ passes.
    let lax = Verifier::new(KeySource::fixed(set.clone()));
    let mut header = header_of(&key);
    header["typ"] = json!("anything");
    assert!(
        lax.verify_with(&sign_with_header(&key, &header, &claims()), &set)
            .is_ok()
    );
}

#[test]
fn required_claims_and_leeway_are_configurable() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let set = JwkSet::from_public_jwks([key.public_jwk()]);
    let now = crate::support::verifier::now();
    let strict = Verifier::builder(KeySource::fixed(set.clone()))
        .required_claims(["exp", "sub", "jti"])
        .leeway(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(
        strict.verify_with(&compact(&key, &claims()), &set),
        Err(VerifyError::MissingClaim("jti".into()))
    );
    let expired_5s_ago = json!({"sub": "a", "jti": "1", "exp": now - 5});
    assert_eq!(
        strict.verify_with(&compact(&key, &expired_5s_ago), &set),
        Err(VerifyError::Expired)
    );
    let lenient = Verifier::builder(KeySource::fixed(set.clone()))
        .required_claims(["exp", "sub", "jti"])
        .leeway(Duration::from_secs(120))
        .build()
        .unwrap();
    assert!(
        lenient
            .verify_with(&compact(&key, &expired_5s_ago), &set)
            .is_ok()
    );
    // No required claims at all: a token without exp is accepted.
    let none = Verifier::builder(KeySource::fixed(set.clone()))
        .required_claims(Vec::<String>::new())
        .build()
        .unwrap();
    assert!(
        none.verify_with(&compact(&key, &json!({"sub": "a"})), &set)
            .is_ok()
    );
}

#[tokio::test]
async fn a_local_registry_is_followed_across_rotations() {
    let first = SigningKey::generate(Algorithm::ES256).unwrap();
    let registry = KeyRegistry::new(first.clone());
    let verifier = Verifier::new(registry.clone());
    let old = compact(&first, &claims());
    verifier.verify(&old).await.unwrap();

    let second = SigningKey::generate(Algorithm::ES256).unwrap();
    registry
        .rotate_to(second.clone(), Duration::from_secs(60))
        .unwrap();
    verifier.verify(&compact(&second, &claims())).await.unwrap();
    verifier.verify(&old).await.unwrap();

    registry.remove(first.kid()).unwrap();
    assert_eq!(verifier.verify(&old).await, Err(VerifyError::UnknownKid));
}

#[tokio::test]
async fn a_source_without_usable_keys_answers_503_not_401() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let token = compact(&key, &claims());
    let calls = Arc::new(AtomicUsize::new(0));
    let service = JwtVerifierLayer::new(Verifier::new(KeyRegistry::empty()))
        .layer_service(echo(calls.clone()));
    let response = service.oneshot(request(Some(&token))).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get(header::WWW_AUTHENTICATE).is_none());
    assert!(matches!(
        response.extensions().get::<VerifyError>(),
        Some(VerifyError::KeysUnavailable(_))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Bad input is still judged first: a malformed token stays a 401.
    let service = JwtVerifierLayer::new(Verifier::new(KeyRegistry::empty()))
        .layer_service(echo(calls.clone()));
    let response = service.oneshot(request(Some("a.b"))).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
