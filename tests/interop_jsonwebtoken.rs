//! An independent implementation (the `jsonwebtoken` crate, aws-lc-rs
//! backend) verifies tokens signed by our keys, using only our published
//! JWK. It has no ES512, so that algorithm is checked with OpenSSL
//! directly in `tests/keys.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tower_jwt_signer::{Algorithm, KeyRegistry, SigningKey};

fn token(key: &SigningKey, claims: &Value) -> String {
    let header = json!({"alg": key.algorithm().as_str(), "typ": "JWT", "kid": key.kid().as_str()});
    let mut input = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    input.push('.');
    input.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap()));
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn theirs(alg: Algorithm) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm as J;
    Some(match alg {
        Algorithm::RS256 => J::RS256,
        Algorithm::RS384 => J::RS384,
        Algorithm::RS512 => J::RS512,
        Algorithm::PS256 => J::PS256,
        Algorithm::PS384 => J::PS384,
        Algorithm::PS512 => J::PS512,
        Algorithm::ES256 => J::ES256,
        Algorithm::ES384 => J::ES384,
        Algorithm::EdDSA => J::EdDSA,
        // jsonwebtoken has no ES512.
        Algorithm::ES512 => return None,
    })
}

#[test]
fn jsonwebtoken_verifies_our_tokens_with_our_published_jwk() {
    let claims = json!({"sub": "alice", "iss": "gateway", "exp": 4_000_000_000u64});
    let mut checked = Vec::new();
    for alg in Algorithm::ALL {
        let Some(their_alg) = theirs(alg) else {
            continue;
        };
        let key = SigningKey::generate(alg).unwrap();
        let registry = KeyRegistry::new(key.clone());
        // Take the JWK from the published set, as a backend would.
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(registry.current().jwks_bytes()).unwrap();
        let jwk = jwks.find(key.kid().as_str()).expect("kid published");
        let decoding = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(their_alg);
        validation.set_required_spec_claims(&["exp"]);
        let token = token(&key, &claims);
        let data = jsonwebtoken::decode::<Value>(&token, &decoding, &validation)
            .unwrap_or_else(|err| panic!("{alg}: {err}"));
        assert_eq!(data.claims, claims, "{alg}");
        assert_eq!(data.header.kid.as_deref(), Some(key.kid().as_str()));

        // A tampered payload is refused: the check is real.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory","exp":4000000000}"#);
        assert!(
            jsonwebtoken::decode::<Value>(&parts.join("."), &decoding, &validation).is_err(),
            "{alg}: tampered token accepted"
        );
        checked.push(alg);
    }
    assert_eq!(checked.len(), 9);
}
