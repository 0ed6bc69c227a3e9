//! Claims of SECURITY.md's threat model that no other test shows: what the
//! logs never hold, and the limits the crate documents (replay within the
//! lifetime, ECDSA malleability, audience binding).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::EcGroup;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};
use tower_jwt_signer::keys::{PublicJwk, SignError, SigningBackend};
use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::store::{KeyStore, StoredKey};
use tower_jwt_signer::{
    Algorithm, DirKeyStore, JwtSignerLayer, JwtVerifierLayer, KeyRegistry, RemoteJwks, SigningKey,
    Verifier, VerifyError,
};

use crate::support::jose::{b64, unb64};
use crate::support::verifier::{JwksServer, Mode, bounded, claims, header_of, sign_with_header};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A signer whose backend is down.
#[derive(Debug)]
struct BrokenHsm(PublicJwk);

impl SigningBackend for BrokenHsm {
    fn public_jwk(&self) -> &PublicJwk {
        &self.0
    }

    fn sign(&self, _: &[u8]) -> Result<Vec<u8>, SignError> {
        Err(SignError::Other("HSM unreachable".into()))
    }
}

/// The base64url `d` of a key, and the body lines of its PEM.
fn secrets(key: &SigningKey) -> Vec<String> {
    let jwk: Value = serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap();
    let mut secrets = vec![jwk["d"].as_str().unwrap().to_owned()];
    secrets.extend(
        key.to_pkcs8_pem()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::to_owned),
    );
    secrets
}

/// Everything the crate logs at TRACE level while it signs, refuses to
/// sign, verifies, refuses tokens, loads a damaged key file and fetches a
/// JWKS that leaks a private key: no token, no token part, no private key
/// material, no request header value ever appears; and `Debug` of the
/// public types shows none either.
#[test]
fn logs_and_debug_never_hold_tokens_or_key_material() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut forbidden = secrets(&key);
    let marker = "header-value-7f3a9c";
    forbidden.push(marker.to_owned());

    let tokens = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let mut tokens = Vec::new();
            let registry = KeyRegistry::new(key.clone());

            // Signing, and the signer's refusals.
            let forwarded = Arc::new(Mutex::new(Vec::<String>::new()));
            let seen = forwarded.clone();
            let inner = service_fn(move |request: Request<()>| {
                let seen = seen.clone();
                async move {
                    let value = request.headers()["authorization"].to_str().unwrap();
                    seen.lock()
                        .unwrap()
                        .push(value["Bearer ".len()..].to_owned());
                    Ok::<_, std::convert::Infallible>(Response::new(()))
                }
            });
            let layer = JwtSignerLayer::builder(registry.clone())
                .template_claim("t", "${req.headers.x-secret}")
                .build()
                .unwrap();
            let request = Request::get("/")
                .header("x-secret", marker)
                .body(())
                .unwrap();
            let response = layer.layer(inner.clone()).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let missing = Request::get("/").body(()).unwrap();
            let response = layer.layer(inner.clone()).oneshot(missing).await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST);
            let broken = JwtSignerLayer::new(KeyRegistry::new(BrokenHsm(key.public_jwk().clone())));
            let request = Request::get("/")
                .header("x-secret", marker)
                .body(())
                .unwrap();
            let response = broken.layer(inner.clone()).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            tokens.extend(forwarded.lock().unwrap().iter().cloned());
            assert_eq!(tokens.len(), 1);

            // Verifying, and the verifier's refusals.
            let backend = JwtVerifierLayer::new(Verifier::new(registry.clone())).layer(service_fn(
                |_: Request<Full<Bytes>>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
                },
            ));
            let good = tokens[0].clone();
            let (input, signature) = good.rsplit_once('.').unwrap();
            let mut tampered = unb64(signature);
            tampered[5] ^= 1;
            let tampered = format!("{input}.{}", b64(tampered));
            let expired = sign_with_header(
                &key,
                &header_of(&key),
                &json!({"exp": 1_000_000_000, "sub": marker}),
            );
            let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
            let foreign = sign_with_header(&stranger, &header_of(&stranger), &claims());
            for (token, status) in [
                (&good, StatusCode::OK),
                (&tampered, StatusCode::UNAUTHORIZED),
                (&expired, StatusCode::UNAUTHORIZED),
                (&foreign, StatusCode::UNAUTHORIZED),
            ] {
                let request = Request::get("/")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::default())
                    .unwrap();
                let response = backend.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), status);
            }
            tokens.extend([tampered, expired, foreign]);

            // A key file whose key is refused: the error names the file.
            let tmp = tempfile::tempdir().unwrap();
            let store = DirKeyStore::open(tmp.path().join("keys")).unwrap();
            let path = store.key_path(key.kid()).unwrap();
            store
                .save(&StoredKey::new(
                    key.clone(),
                    KeyState::Active,
                    SystemTime::now(),
                ))
                .unwrap();
            let mut file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            file["private_jwk"]["alg"] = "ES384".into();
            std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
            let err = store.load().unwrap_err();
            assert!(err.to_string().contains("key refused"), "{err}");

            // A JWKS that leaks a private key: refused whole, logged
            // without the leak.
            let mut leaked = key.public_jwk().to_value();
            leaked["d"] = secrets(&key)[0].clone().into();
            let server = JwksServer::start(Mode::Body {
                body: Bytes::from(json!({"keys": [leaked]}).to_string()),
                cache_control: None,
            })
            .await;
            let remote = RemoteJwks::new(server.url()).unwrap();
            assert!(bounded(remote.prefetch()).await.is_err());
            let err = bounded(Verifier::new(remote.clone()).verify(&good))
                .await
                .unwrap_err();
            assert!(matches!(err, VerifyError::KeysUnavailable(_)), "{err:?}");

            // Debug of everything that holds a key or a token source.
            for debug in [
                format!("{key:?}"),
                format!("{registry:?}"),
                format!("{layer:?}"),
                format!("{store:?}"),
                format!("{remote:?}"),
                format!("{:?}", registry.current()),
                format!("{err:?}"),
            ] {
                for secret in secrets(&key) {
                    assert!(
                        !debug.contains(&secret),
                        "Debug shows key material: {debug}"
                    );
                }
            }
            tokens
        })
    });

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The checks below would pass on an empty log: make sure the events
    // are there.
    for expected in [
        "request refused",
        "signing failed",
        "cannot load the stored keys",
        "JWKS fetch failed",
    ] {
        assert!(logs.contains(expected), "no {expected:?} event in:\n{logs}");
    }
    for token in &tokens {
        let parts: Vec<&str> = token.split('.').collect();
        forbidden.push(token.clone());
        forbidden.push(parts[1].to_owned());
        forbidden.push(parts[2].to_owned());
    }
    for secret in &forbidden {
        assert!(
            !logs.contains(secret.as_str()),
            "the logs hold {secret:?}:\n{logs}"
        );
    }
}

/// The crate does not stop replay: a token verifies as often as it is
/// presented until it expires. What limits it is the short lifetime, `aud`
/// (a token for one backend is refused by another) and, for one-time use,
/// a cache of `jti` values kept by the backend until `exp`.
#[tokio::test]
async fn replay_within_the_lifetime_is_not_prevented_but_aud_binds_a_backend() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let inner = service_fn(move |request: Request<()>| {
        let record = record.clone();
        async move {
            let value = request.headers()["authorization"].to_str().unwrap();
            record
                .lock()
                .unwrap()
                .push(value["Bearer ".len()..].to_owned());
            Ok::<_, std::convert::Infallible>(Response::new(()))
        }
    });
    let layer = JwtSignerLayer::builder(registry.clone())
        .audience("orders-api")
        .build()
        .unwrap();
    for _ in 0..2 {
        let request = Request::get("/").body(()).unwrap();
        layer.layer(inner.clone()).oneshot(request).await.unwrap();
    }
    let tokens = seen.lock().unwrap().clone();
    let orders = Verifier::builder(registry.clone())
        .audience("orders-api")
        .build()
        .unwrap();
    let first = orders.verify(&tokens[0]).await.unwrap();
    // The same token, presented again: accepted again.
    let again = orders.verify(&tokens[0]).await.unwrap();
    assert_eq!(first, again);
    // Every token has its own jti: the key for a replay cache.
    let second = orders.verify(&tokens[1]).await.unwrap();
    assert_ne!(first.get("jti"), second.get("jti"));
    assert_eq!(
        first.get("jti").and_then(Value::as_str).map(str::len),
        Some(22)
    );
    // Another backend that checks its own audience refuses it.
    let billing = Verifier::builder(registry)
        .audience("billing-api")
        .build()
        .unwrap();
    assert_eq!(
        billing.verify(&tokens[0]).await.unwrap_err(),
        VerifyError::WrongAudience
    );
}

/// ECDSA signatures are malleable (RFC 7518 allows it): `(r, n - s)`
/// verifies as well as `(r, s)`, so the token's bytes change while its
/// claims (and `jti`) do not. A replay cache must key on `jti`, never on
/// the token text.
#[tokio::test]
async fn ecdsa_signatures_are_malleable_so_replay_caches_key_on_jti() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let registry = KeyRegistry::new(key.clone());
    let claims = json!({"exp": crate::support::verifier::now() + 600, "jti": "j-1"});
    let token = sign_with_header(&key, &header_of(&key), &claims);
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = unb64(signature);
    let group = EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    let mut order = BigNum::new().unwrap();
    group
        .order(&mut order, &mut BigNumContext::new().unwrap())
        .unwrap();
    let s = BigNum::from_slice(&signature[32..]).unwrap();
    let mut flipped = BigNum::new().unwrap();
    flipped.checked_sub(&order, &s).unwrap();
    let mut other = signature[..32].to_vec();
    other.extend(flipped.to_vec_padded(32).unwrap());
    let twin = format!("{input}.{}", b64(other));
    assert_ne!(twin, token);
    let verifier = Verifier::new(registry);
    let a = verifier.verify(&token).await.unwrap();
    let b = verifier.verify(&twin).await.unwrap();
    assert_eq!(a.get("jti"), b.get("jti"));
}
