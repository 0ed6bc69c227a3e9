//! Misconfigurations listed in SECURITY.md ("Bad configuration") for keys,
//! one test each: the exact typed error it gives, and no panic. The other
//! areas' are in the other test binaries' `config.rs`.

use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::{Value, json};
use tower_jwt_signer::keys::InvalidKid;
use tower_jwt_signer::verifier::JwkSet;
use tower_jwt_signer::{Algorithm, KeyError, Kid, SigningKey};

fn rsa_pem(bits: u32) -> Vec<u8> {
    let key = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
    key.private_key_to_pem_pkcs8().unwrap()
}

fn es256() -> SigningKey {
    SigningKey::generate(Algorithm::ES256).unwrap()
}

// --- Keys -------------------------------------------------------------------

#[test]
fn rsa_1024_key_is_refused_on_import() {
    let pem = rsa_pem(1024);
    for alg in [Algorithm::RS256, Algorithm::PS512] {
        let err = SigningKey::from_pkcs8_pem(&pem, alg).unwrap_err();
        assert!(
            matches!(err, KeyError::RsaKeyTooSmall { bits: 1024 }),
            "{err:?}"
        );
    }
}

#[test]
fn rsa_512_key_is_refused_on_import() {
    let err = SigningKey::from_pkcs8_pem(rsa_pem(512), Algorithm::RS256).unwrap_err();
    assert!(
        matches!(err, KeyError::RsaKeyTooSmall { bits: 512 }),
        "{err:?}"
    );
}

#[test]
fn rsa_1024_key_is_refused_as_a_private_jwk() {
    // A 2048-bit JWK export with its members replaced by a 1024-bit key's.
    let rsa = Rsa::generate(1024).unwrap();
    let b64 = |n: &openssl::bn::BigNumRef| crate::support::jose::b64(n.to_vec());
    let jwk = json!({
        "kty": "RSA", "alg": "RS256",
        "n": b64(rsa.n()), "e": b64(rsa.e()), "d": b64(rsa.d()),
        "p": b64(rsa.p().unwrap()), "q": b64(rsa.q().unwrap()),
        "dp": b64(rsa.dmp1().unwrap()), "dq": b64(rsa.dmq1().unwrap()),
        "qi": b64(rsa.iqmp().unwrap()),
    });
    let err = SigningKey::from_jwk(&jwk.to_string(), None).unwrap_err();
    assert!(
        matches!(err, KeyError::RsaKeyTooSmall { bits: 1024 }),
        "{err:?}"
    );
}

#[test]
fn rsa_1024_key_in_a_jwks_is_skipped_by_verifiers() {
    let rsa = Rsa::generate(1024).unwrap();
    let b64 = |n: &openssl::bn::BigNumRef| crate::support::jose::b64(n.to_vec());
    let set =
        json!({"keys": [{"kty": "RSA", "kid": "weak", "n": b64(rsa.n()), "e": b64(rsa.e())}]});
    let set = JwkSet::parse(set.to_string().as_bytes()).unwrap();
    assert!(set.is_empty());
    assert_eq!(set.skipped().len(), 1);
    assert_eq!(set.skipped()[0].kid(), Some("\"weak\""));
    assert!(
        set.skipped()[0].reason().contains("1024"),
        "{:?}",
        set.skipped()
    );
}

#[test]
fn rsa_generation_sizes_other_than_2048_3072_4096_are_refused() {
    for bits in [512, 1024, 2047, 8192] {
        let err = SigningKey::generate_with_rsa_bits(Algorithm::RS256, bits).unwrap_err();
        assert!(
            matches!(err, KeyError::RsaKeySizeNotOffered { bits: b } if b == bits),
            "{err:?}"
        );
    }
}

#[test]
fn algorithm_that_does_not_fit_the_key_is_refused() {
    let p256 = es256().to_pkcs8_pem().unwrap();
    for alg in [
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::RS256,
        Algorithm::EdDSA,
    ] {
        let err = SigningKey::from_pkcs8_pem(&p256, alg).unwrap_err();
        assert!(
            matches!(err, KeyError::WrongKeyType { algorithm, .. } if algorithm == alg),
            "{alg}: {err:?}"
        );
    }
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let err =
        SigningKey::from_pkcs8_der(&ed.to_pkcs8_der().unwrap(), Algorithm::ES256).unwrap_err();
    assert!(matches!(err, KeyError::WrongKeyType { .. }), "{err:?}");
    let rsa = rsa_pem(2048);
    let err = SigningKey::from_pkcs8_pem(&rsa, Algorithm::ES256).unwrap_err();
    assert!(matches!(err, KeyError::WrongKeyType { .. }), "{err:?}");
}

#[test]
fn ed448_key_for_eddsa_is_refused() {
    let pem = PKey::generate_ed448()
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    let err = SigningKey::from_pkcs8_pem(&pem, Algorithm::EdDSA).unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::WrongKeyType {
                algorithm: Algorithm::EdDSA,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn jwk_whose_alg_disagrees_with_the_requested_one_is_refused() {
    let jwk = es256().to_private_jwk().unwrap();
    let err = SigningKey::from_jwk(&jwk, Some(Algorithm::ES384)).unwrap_err();
    assert!(
        matches!(
            &err,
            KeyError::AlgorithmMismatch { jwk_alg, requested: Some(Algorithm::ES384) } if jwk_alg == "ES256"
        ),
        "{err:?}"
    );
}

#[test]
fn jwk_with_a_symmetric_or_none_alg_is_refused() {
    let mut jwk: Value = serde_json::from_str(&es256().to_private_jwk().unwrap()).unwrap();
    for alg in ["HS256", "none"] {
        jwk["alg"] = alg.into();
        let err = SigningKey::from_jwk(&jwk.to_string(), None).unwrap_err();
        assert!(
            matches!(&err, KeyError::AlgorithmMismatch { jwk_alg, requested: None } if jwk_alg == alg),
            "{err:?}"
        );
    }
    let oct = json!({"kty": "oct", "k": "c2VjcmV0", "alg": "ES256"});
    let err = SigningKey::from_jwk(&oct.to_string(), None).unwrap_err();
    assert!(matches!(err, KeyError::WrongKeyType { .. }), "{err:?}");
}

#[test]
fn rsa_jwk_without_an_algorithm_is_refused() {
    let key = SigningKey::generate(Algorithm::RS256).unwrap();
    let mut jwk: Value = serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap();
    jwk.as_object_mut().unwrap().remove("alg");
    let err = SigningKey::from_jwk(&jwk.to_string(), None).unwrap_err();
    assert!(matches!(err, KeyError::AlgorithmRequired), "{err:?}");
}

#[test]
fn public_keys_and_certificates_are_refused_as_signing_keys() {
    let key = PKey::private_key_from_pem(es256().to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    let public = key.public_key_to_pem().unwrap();
    let err = SigningKey::from_pkcs8_pem(&public, Algorithm::ES256).unwrap_err();
    assert!(matches!(err, KeyError::PublicOnly { .. }), "{err:?}");
    let der = key.public_key_to_der().unwrap();
    let err = SigningKey::from_pkcs8_der(&der, Algorithm::ES256).unwrap_err();
    assert!(matches!(err, KeyError::PublicOnly { .. }), "{err:?}");
    let public_jwk = serde_json::to_string(es256().public_jwk()).unwrap();
    let err = SigningKey::from_jwk(&public_jwk, None).unwrap_err();
    assert!(matches!(err, KeyError::PublicOnly { .. }), "{err:?}");
}

#[test]
fn encrypted_and_traditional_pem_keys_are_refused_with_a_hint() {
    let key = PKey::private_key_from_pem(&rsa_pem(2048)).unwrap();
    let traditional = key.rsa().unwrap().private_key_to_pem().unwrap();
    let err = SigningKey::from_pkcs8_pem(&traditional, Algorithm::RS256).unwrap_err();
    assert!(
        matches!(&err, KeyError::Malformed { reason, .. } if reason.contains("openssl pkcs8")),
        "{err:?}"
    );
    let encrypted = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"pass")
        .unwrap();
    let err = SigningKey::from_pkcs8_pem(&encrypted, Algorithm::RS256).unwrap_err();
    assert!(
        matches!(&err, KeyError::Malformed { reason, .. } if reason.contains("encrypted")),
        "{err:?}"
    );
}

#[test]
fn kid_with_a_slash_or_other_unsafe_characters_is_refused() {
    assert_eq!(
        Kid::new("keys/2026").unwrap_err(),
        InvalidKid::BadCharacter { found: '/' }
    );
    assert_eq!(
        Kid::new("../etc/passwd").unwrap_err(),
        InvalidKid::BadCharacter { found: '/' }
    );
    assert_eq!(
        Kid::new("a\r\nb").unwrap_err(),
        InvalidKid::BadCharacter { found: '\r' }
    );
    assert_eq!(Kid::new("").unwrap_err(), InvalidKid::Empty);
    assert_eq!(
        Kid::new("k".repeat(129)).unwrap_err(),
        InvalidKid::TooLong { len: 129 }
    );
    // The same rule on import: a JWK's kid with a slash.
    let mut jwk: Value = serde_json::from_str(&es256().to_private_jwk().unwrap()).unwrap();
    jwk["kid"] = "../../etc/passwd".into();
    let err = SigningKey::from_jwk(&jwk.to_string(), None).unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::InvalidKid(InvalidKid::BadCharacter { found: '/' })
        ),
        "{err:?}"
    );
}

#[test]
fn symmetric_and_none_algorithms_do_not_exist() {
    for name in ["none", "HS256", "HS512", "es256", "RSA-OAEP", ""] {
        assert!(name.parse::<Algorithm>().is_err(), "{name}");
    }
}
