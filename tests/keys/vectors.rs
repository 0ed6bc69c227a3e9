//! Known answers from `../shared/vectors/` (RFC 7520 cookbook, RFC 8037).
//!
//! These read files outside the crate, so they are `#[ignore]`d: a fresh
//! clone's `cargo test` stays honest, and `.ci/run` runs them with
//! `cargo test -- --ignored`.

use std::path::PathBuf;

use crate::support::jose::{b64, openssl_verifies, unb64};
use serde_json::Value;
use tower_jwt_signer::{Algorithm, KeyError, SigningKey};

fn vector(path: &str) -> Value {
    let full: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "shared", "vectors", path]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&full).unwrap_or_else(|err| {
        panic!(
            "{}: {err} (run from a checkout next to ../shared)",
            full.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The cookbook's kid, `bilbo.baggins@hobbiton.example`, holds an `@`,
/// which our kid rules refuse (kids end up in file names and logs). The
/// importer says so; without the kid the key imports and gets its
/// thumbprint as kid.
fn import_cookbook_key(case: &Value) -> SigningKey {
    let mut jwk = case["input"]["key"].clone();
    let alg: Algorithm = case["input"]["alg"].as_str().unwrap().parse().unwrap();
    if jwk.get("kid").is_some() {
        let err = SigningKey::from_jwk(&jwk.to_string(), Some(alg)).unwrap_err();
        assert!(matches!(err, KeyError::InvalidKid(_)), "{err}");
        jwk.as_object_mut().unwrap().remove("kid");
    }
    SigningKey::from_jwk(&jwk.to_string(), Some(alg)).unwrap()
}

#[test]
#[ignore = "reads ../shared/vectors; run by .ci/run with --ignored"]
fn rfc7520_4_1_rs256_signature_is_byte_for_byte_the_cookbooks() {
    let case = vector("jose-cookbook/jws/4_1.rsa_v15_signature.json");
    let key = import_cookbook_key(&case);
    assert_eq!(key.algorithm(), Algorithm::RS256);
    let input = case["signing"]["sig-input"].as_str().unwrap();
    let signature = key.sign(input.as_bytes()).unwrap();
    assert_eq!(b64(&signature), case["signing"]["sig"].as_str().unwrap());
    assert_eq!(
        format!("{input}.{}", b64(&signature)),
        case["output"]["compact"].as_str().unwrap()
    );
}

#[test]
#[ignore = "reads ../shared/vectors; run by .ci/run with --ignored"]
fn rfc7520_ps384_and_es512_signatures_verify_with_our_public_jwks() {
    for (file, alg) in [
        (
            "jose-cookbook/jws/4_2.rsa-pss_signature.json",
            Algorithm::PS384,
        ),
        (
            "jose-cookbook/jws/4_3.ecdsa_signature.json",
            Algorithm::ES512,
        ),
    ] {
        let case = vector(file);
        let key = import_cookbook_key(&case);
        assert_eq!(key.algorithm(), alg);
        let jwk = key.public_jwk().to_value();
        // Our public JWK carries the cookbook's public members unchanged.
        for member in ["n", "e", "crv", "x", "y"] {
            if let Some(theirs) = case["input"]["key"].get(member) {
                assert_eq!(&jwk[member], theirs, "{file}: {member}");
            }
        }
        let input = case["signing"]["sig-input"].as_str().unwrap();
        let signature = unb64(case["signing"]["sig"].as_str().unwrap());
        assert!(
            openssl_verifies(&jwk, alg.as_str(), input.as_bytes(), &signature),
            "{file}"
        );
        // And our own fresh signature verifies too (PSS and ECDSA are
        // randomised, so they cannot match the cookbook's bytes).
        let ours = key.sign(input.as_bytes()).unwrap();
        assert!(openssl_verifies(
            &jwk,
            alg.as_str(),
            input.as_bytes(),
            &ours
        ));
        assert!(!openssl_verifies(
            &jwk,
            alg.as_str(),
            b"tampered",
            &signature
        ));
    }
}

#[test]
#[ignore = "reads ../shared/vectors; run by .ci/run with --ignored"]
fn rfc8037_ed25519_signature_and_thumbprint() {
    let case = vector("jose-cookbook/curve25519/jws.json");
    let key = import_cookbook_key(&case);
    assert_eq!(key.algorithm(), Algorithm::EdDSA);
    // RFC 8037 appendix A.3.
    assert_eq!(
        key.kid().as_str(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
    let jwk = key.public_jwk().to_value();
    assert_eq!(jwk["x"], case["input"]["key"]["x"]);
    let input = case["signing"]["sig-input"].as_str().unwrap();
    // Ed25519 is deterministic: our signature equals the RFC's.
    let signature = key.sign(input.as_bytes()).unwrap();
    assert_eq!(b64(&signature), case["signing"]["sig"].as_str().unwrap());
    assert!(openssl_verifies(
        &jwk,
        "EdDSA",
        input.as_bytes(),
        &signature
    ));
}
