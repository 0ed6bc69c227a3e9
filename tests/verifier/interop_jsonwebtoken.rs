//! An independent implementation (the `jsonwebtoken` crate, aws-lc-rs
//! backend) verifies tokens signed by our keys, using only our published
//! JWK. It has no ES512, so that algorithm is checked with OpenSSL
//! directly in `tests/keys.rs`.

use serde_json::{Value, json};
use tower_jwt_signer::{Algorithm, KeyRegistry, SigningKey};

use crate::support::jose::{b64, compact as token, jsonwebtoken_alg};

#[test]
fn jsonwebtoken_verifies_our_tokens_with_our_published_jwk() {
    let claims = json!({"sub": "alice", "iss": "gateway", "exp": 4_000_000_000u64});
    let mut checked = Vec::new();
    for alg in Algorithm::ALL {
        let Some(their_alg) = jsonwebtoken_alg(alg) else {
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
        parts[1] = b64(br#"{"sub":"mallory","exp":4000000000}"#);
        assert!(
            jsonwebtoken::decode::<Value>(&parts.join("."), &decoding, &validation).is_err(),
            "{alg}: tampered token accepted"
        );
        checked.push(alg);
    }
    assert_eq!(checked.len(), 9);
}
