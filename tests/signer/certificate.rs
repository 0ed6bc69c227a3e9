//! A certificate-backed key signs only while its chain is valid: outside
//! it, the signer answers 503 itself (fail closed, the backend never sees
//! the request) with the typed cause in the extensions. The header carries
//! `x5t#S256` only when asked. An independent verifier (Python's
//! `cryptography`, reading `x5c` from the JWKS over HTTP) validates a token
//! with the chain.

use std::process::Command;
use std::time::Duration;

use axum::Router;
use http::{Request, StatusCode};
use serde_json::Value;
use tower::{Layer, ServiceExt};
use tower_jwt_signer::signer::Refusal;
use tower_jwt_signer::{
    Algorithm, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry, SigningKey,
};

use crate::support::certs::{self, Pki, days_from_now};
use crate::support::signer::{Seen, bearer, recording, segment};

fn certified_key(pki: &Pki, alg: Algorithm, from_days: i64, to_days: i64) -> SigningKey {
    let (rc_key, key_pem) = certs::key(alg);
    let chain = pki.chain_pem(&rc_key, days_from_now(from_days), days_from_now(to_days));
    SigningKey::from_pem_with_certificate_chain(key_pem, chain, alg).unwrap()
}

/// One request through `layer` to a recording backend: the status, the
/// refusal in the extensions, and what the backend saw.
async fn send(layer: &JwtSignerLayer) -> (StatusCode, Option<Refusal>, Seen) {
    let seen = Seen::default();
    let service = layer.layer(recording(&seen));
    let response = tokio::time::timeout(Duration::from_secs(10), service.oneshot(Request::new(())))
        .await
        .expect("bounded")
        .expect("infallible");
    let refusal = response.extensions().get::<Refusal>().cloned();
    (response.status(), refusal, seen)
}

#[tokio::test]
async fn an_expired_certificate_never_signs_and_the_request_is_refused_with_503() {
    let pki = Pki::new();
    let key = certified_key(&pki, Algorithm::ES256, -30, -1);
    let kid = key.kid().clone();
    let layer = JwtSignerLayer::new(KeyRegistry::new(key));
    let (status, refusal, seen) = send(&layer).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count(), 0, "never forwarded unsigned");
    let refusal = refusal.expect("the typed cause in the extensions");
    assert_eq!(refusal.error_code(), "certificate_expired");
    assert!(
        matches!(&refusal, Refusal::CertificateExpired { kid: refused, .. } if *refused == kid),
        "{refusal:?}"
    );
}

#[tokio::test]
async fn a_certificate_not_valid_yet_never_signs_either() {
    let pki = Pki::new();
    let key = certified_key(&pki, Algorithm::EdDSA, 2, 30);
    let layer = JwtSignerLayer::new(KeyRegistry::new(key));
    let (status, refusal, seen) = send(&layer).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count(), 0);
    let refusal = refusal.expect("the typed cause in the extensions");
    assert_eq!(refusal.error_code(), "certificate_not_yet_valid");
    assert!(
        matches!(refusal, Refusal::CertificateNotYetValid { .. }),
        "{refusal:?}"
    );
}

#[tokio::test]
async fn a_valid_certificate_signs_with_the_plain_header_unless_x5t_is_asked_for() {
    let pki = Pki::new();
    let key = certified_key(&pki, Algorithm::ES256, -1, 30);
    let x5t = key.certificate_chain().unwrap().x5t_s256().to_owned();
    let registry = KeyRegistry::new(key);

    let (status, _, seen) = send(&JwtSignerLayer::new(registry.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let token = bearer(&seen.only().headers);
    let header = segment(token.split('.').next().unwrap());
    let members: Vec<&str> = header
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(members.len(), 3, "{header}");
    for name in ["alg", "typ", "kid"] {
        assert!(header.get(name).is_some(), "{header}");
    }

    let layer = JwtSignerLayer::builder(registry.clone())
        .header_x5t_s256(true)
        .build()
        .unwrap();
    let (status, _, seen) = send(&layer).await;
    assert_eq!(status, StatusCode::OK);
    let token = bearer(&seen.only().headers);
    let header = segment(token.split('.').next().unwrap());
    assert_eq!(header["x5t#S256"], x5t.as_str(), "{header}");
    assert_eq!(header.as_object().unwrap().len(), 4);
    // The published JWK carries the same thumbprint.
    let jwks: Value = serde_json::from_slice(registry.current().jwks_bytes()).unwrap();
    assert_eq!(jwks["keys"][0]["x5t#S256"], x5t.as_str());

    // The option on a key without a certificate: the plain header.
    let plain = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(plain)
        .header_x5t_s256(true)
        .build()
        .unwrap();
    let (_, _, seen) = send(&layer).await;
    let token = bearer(&seen.only().headers);
    let header = segment(token.split('.').next().unwrap());
    assert!(header.get("x5t#S256").is_none(), "{header}");
}

/// The Python side: fetches the JWKS over HTTP, loads the chain from
/// `x5c`, checks that each certificate is issued (signed) by the next, and
/// verifies the token's signature with the leaf's public key. Prints
/// `verified <kid>`.
const PYTHON_VERIFIER: &str = r#"
import base64, json, sys, urllib.request
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

url, token = sys.argv[1], sys.argv[2]
def unb64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
header_b64, payload_b64, signature_b64 = token.split(".")
header = json.loads(unb64(header_b64))
jwks = json.load(urllib.request.urlopen(url, timeout=10))
jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in jwk["x5c"]]
for cert, issuer in zip(chain, chain[1:]):
    cert.verify_directly_issued_by(issuer)
chain[-1].verify_directly_issued_by(chain[-1])
digest = hashes.Hash(hashes.SHA256())
digest.update(base64.b64decode(jwk["x5c"][0]))
assert unb64(jwk["x5t#S256"]) == digest.finalize(), "x5t#S256"
public = chain[0].public_key()
data = (header_b64 + "." + payload_b64).encode()
signature = unb64(signature_b64)
alg = header["alg"]
if alg == "EdDSA":
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(signature, data)
elif alg.startswith("ES"):
    half = len(signature) // 2
    der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
    public.verify(der, data, ec.ECDSA({"ES256": hashes.SHA256(), "ES384": hashes.SHA384()}[alg]))
elif alg == "RS256":
    public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
else:
    sys.exit("unexpected alg " + alg)
print("verified", header["kid"])
"#;

/// Runs the Python verifier, failing (never skipping) when python3 or its
/// `cryptography` module is missing.
fn python_verifies(url: &str, token: &str) -> Result<String, String> {
    let probe = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "python3 with the `cryptography` module is required for the independent x5c verifier: apt-get install python3-cryptography"
        ),
    }
    let out = Command::new("python3")
        .args(["-c", PYTHON_VERIFIER, url, token])
        .output()
        .expect("python3 runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythons_cryptography_verifies_a_token_with_the_published_chain() {
    let pki = Pki::new();
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        let key = certified_key(&pki, alg, -1, 30);
        let kid = key.kid().clone();
        let registry = KeyRegistry::new(key);
        let app: Router =
            Router::new().route_service(JWKS_PATH, JwksService::new(registry.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let (_, _, seen) = send(&JwtSignerLayer::new(registry)).await;
        let token = bearer(&seen.only().headers);
        let url = format!("http://{addr}{JWKS_PATH}");
        let verdict = {
            let (url, token) = (url.clone(), token.clone());
            tokio::task::spawn_blocking(move || python_verifies(&url, &token))
                .await
                .unwrap()
        };
        assert_eq!(verdict, Ok(format!("verified {kid}")), "{alg}");

        // The same verifier refuses a token whose signature is not the leaf's.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = certified_key(&pki, alg, -1, 30);
        let forged_sig = tower_jwt_signer::keys::SigningBackend::sign(
            &other,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
        )
        .unwrap();
        let forged_sig = crate::support::jose::b64(forged_sig);
        parts[2] = &forged_sig;
        let forged = parts.join(".");
        let verdict = tokio::task::spawn_blocking(move || python_verifies(&url, &forged))
            .await
            .unwrap();
        assert!(verdict.is_err(), "{alg}: a forged token verified");
        server.abort();
    }
}
