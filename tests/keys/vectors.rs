//! Known answers (RFC 7520 cookbook, RFC 8037, RFC 7638) from the copies in
//! `tests/data/` (see its README for their source), so that plain
//! `cargo test` checks them.

use serde_json::Value;
use tower_jwt_signer::keys::PublicJwk;
use tower_jwt_signer::{Algorithm, KeyError, SigningKey};

use crate::support::jose::{b64, openssl_verifies, public_key, test_data, their_thumbprint, unb64};

fn vector(path: &str) -> Value {
    test_data(&format!("jose-cookbook/{path}"))
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
fn rfc7520_4_1_rs256_signature_is_byte_for_byte_the_cookbooks() {
    let case = vector("jws/4_1.rsa_v15_signature.json");
    let key = import_cookbook_key(&case);
    assert_eq!(key.algorithm(), Algorithm::RS256);
    let input = case["signing"]["sig-input"].as_str().unwrap();
    let signature = key.sign(input.as_bytes()).unwrap();
    assert_eq!(b64(&signature), case["signing"]["sig"].as_str().unwrap());
    assert_eq!(
        format!("{input}.{}", b64(&signature)),
        case["output"]["compact"].as_str().unwrap()
    );
    // The kid is the key's RFC 7638 thumbprint, as jsonwebtoken computes it.
    assert_eq!(
        key.kid().as_str(),
        their_thumbprint(&case["input"]["key"]),
        "computed from the cookbook's JWK, not ours"
    );
}

#[test]
fn rfc7520_ps384_and_es512_signatures_verify_with_our_public_jwks() {
    for (file, alg) in [
        ("jws/4_2.rsa-pss_signature.json", Algorithm::PS384),
        ("jws/4_3.ecdsa_signature.json", Algorithm::ES512),
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
fn rfc8037_ed25519_signature_and_thumbprint() {
    let case = vector("curve25519/jws.json");
    let key = import_cookbook_key(&case);
    assert_eq!(key.algorithm(), Algorithm::EdDSA);
    // RFC 8037 appendix A.3.
    const THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
    assert_eq!(key.kid().as_str(), THUMBPRINT);
    assert_eq!(key.public_jwk().thumbprint(), THUMBPRINT);
    // The independent thumbprint the other tests rely on agrees with the
    // RFC.
    assert_eq!(their_thumbprint(&case["input"]["key"]), THUMBPRINT);
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

#[test]
fn rfc7638_section_3_1_thumbprint() {
    // The RSA public key of RFC 7638 section 3.1 (RFC 7517 appendix A.1),
    // imported from its SubjectPublicKeyInfo made by OpenSSL.
    let case = test_data("rfc7638_3_1.json");
    let expected = case["thumbprint"].as_str().unwrap();
    let der = public_key(&case["jwk"]).public_key_to_der().unwrap();
    let jwk = PublicJwk::from_spki_der(&der, Algorithm::RS256, None).unwrap();
    assert_eq!(jwk.thumbprint(), expected);
    assert_eq!(jwk.kid().as_str(), expected);
    assert_eq!(jwk.to_value()["n"], case["jwk"]["n"]);
    assert_eq!(jwk.to_value()["e"], case["jwk"]["e"]);
    // The independent thumbprint the other tests rely on agrees with the
    // RFC (members other than kty, n and e do not count).
    assert_eq!(their_thumbprint(&case["jwk"]), expected);
}
