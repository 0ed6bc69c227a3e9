//! Signing keys: generation, the published JWK, import and export, and every
//! refusal the importers owe.

use std::collections::BTreeSet;

use crate::support::jose::{b64, openssl_verifies, their_thumbprint, unb64};
use openssl::bn::BigNum;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower_jwt_signer::keys::InvalidKid;
use tower_jwt_signer::{Algorithm, KeyError, Kid, SigningKey};

fn members(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn private_jwk(key: &SigningKey) -> Value {
    serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap()
}

#[test]
fn every_algorithm_publishes_exactly_the_allowed_members_and_kid_is_the_thumbprint() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).unwrap();
        let jwk = key.public_jwk().to_value();
        let expected: BTreeSet<&str> = match alg.key_type() {
            "RSA" => ["kty", "n", "e", "kid", "alg", "use"].into(),
            "EC" => ["kty", "crv", "x", "y", "kid", "alg", "use"].into(),
            _ => ["kty", "crv", "x", "kid", "alg", "use"].into(),
        };
        assert_eq!(members(&jwk), expected, "{alg}");
        assert_eq!(jwk["alg"], alg.as_str());
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kty"], alg.key_type());
        // The kid is the RFC 7638 thumbprint, as another library computes
        // it from the published JWK.
        assert_eq!(key.kid().as_str(), their_thumbprint(&jwk), "{alg}");
        assert_eq!(key.public_jwk().thumbprint(), key.kid().as_str(), "{alg}");
        assert_eq!(jwk["kid"], key.kid().as_str());
        // The signature verifies with OpenSSL from the published JWK alone.
        let input = b"eyJhbGciOiJFUzI1NiJ9.e30";
        let signature = key.sign(input).unwrap();
        assert!(
            openssl_verifies(&jwk, alg.as_str(), input, &signature),
            "{alg}"
        );
        assert!(
            !openssl_verifies(&jwk, alg.as_str(), b"other", &signature),
            "{alg}"
        );
    }
}

#[test]
fn thumbprint_follows_rfc7638_canonical_form() {
    // Recompute the RFC 7638 input by hand for an EC key.
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwk = key.public_jwk().to_value();
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap()
    );
    assert_eq!(
        key.public_jwk().thumbprint(),
        b64(openssl::sha::sha256(canonical.as_bytes()))
    );
}

#[test]
fn ec_coordinates_are_full_length_and_rsa_modulus_has_no_leading_zero() {
    // About half of all P-521 coordinates have a zero top byte once
    // minimally encoded, so 24 keys exercise the padding with certainty
    // short of 2^-24.
    for (alg, len, rounds) in [
        (Algorithm::ES512, 66, 24),
        (Algorithm::ES256, 32, 24),
        (Algorithm::ES384, 48, 8),
    ] {
        for _ in 0..rounds {
            let key = SigningKey::generate(alg).unwrap();
            let jwk = key.public_jwk().to_value();
            assert_eq!(unb64(jwk["x"].as_str().unwrap()).len(), len, "{alg}");
            assert_eq!(unb64(jwk["y"].as_str().unwrap()).len(), len, "{alg}");
            let private = private_jwk(&key);
            assert_eq!(unb64(private["d"].as_str().unwrap()).len(), len, "{alg}");
        }
    }
    for _ in 0..3 {
        let key = SigningKey::generate(Algorithm::RS256).unwrap();
        let n = unb64(key.public_jwk().to_value()["n"].as_str().unwrap());
        assert_ne!(n[0], 0);
        assert_eq!(n.len(), 256);
    }
}

#[test]
fn rsa_sizes_offered_for_generation() {
    let key = SigningKey::generate_with_rsa_bits(Algorithm::PS256, 3072).unwrap();
    assert_eq!(
        unb64(key.public_jwk().to_value()["n"].as_str().unwrap()).len(),
        384
    );
    for bits in [512, 1024, 2047, 2049, 8192] {
        assert!(matches!(
            SigningKey::generate_with_rsa_bits(Algorithm::RS256, bits),
            Err(KeyError::RsaKeySizeNotOffered { bits: b }) if b == bits
        ));
    }
}

#[test]
fn every_export_imports_back_to_the_same_key() {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{alg}");
        let from_pem = SigningKey::from_pkcs8_pem(&pem, alg).unwrap();
        let from_der = SigningKey::from_pkcs8_der(&key.to_pkcs8_der().unwrap(), alg).unwrap();
        let from_jwk = SigningKey::from_jwk(&key.to_private_jwk().unwrap(), None).unwrap();
        for again in [from_pem, from_der, from_jwk] {
            assert_eq!(again.public_jwk(), key.public_jwk(), "{alg}");
            // The imported private key signs for the original public key.
            let signature = again.sign(b"input").unwrap();
            assert!(openssl_verifies(
                &key.public_jwk().to_value(),
                alg.as_str(),
                b"input",
                &signature
            ));
        }
    }
}

#[test]
fn private_jwk_export_has_every_member_and_keeps_a_custom_kid() {
    let key = SigningKey::generate(Algorithm::ES384)
        .unwrap()
        .with_kid(Kid::new("gateway-2026.11").unwrap());
    let jwk = private_jwk(&key);
    assert_eq!(
        members(&jwk),
        ["kty", "crv", "x", "y", "d", "kid", "alg"].into()
    );
    assert_eq!(jwk["kid"], "gateway-2026.11");
    let again = SigningKey::from_jwk(&jwk.to_string(), None).unwrap();
    assert_eq!(again.kid().as_str(), "gateway-2026.11");
    assert_eq!(again.public_jwk().to_value()["kid"], "gateway-2026.11");

    let rsa = private_jwk(&SigningKey::generate(Algorithm::RS512).unwrap());
    assert_eq!(
        members(&rsa),
        [
            "kty", "n", "e", "d", "p", "q", "dp", "dq", "qi", "kid", "alg"
        ]
        .into()
    );
    let ed = private_jwk(&SigningKey::generate(Algorithm::EdDSA).unwrap());
    assert_eq!(members(&ed), ["kty", "crv", "x", "d", "kid", "alg"].into());
}

#[test]
fn custom_kids_are_validated_on_jwk_import() {
    let mut jwk = private_jwk(&SigningKey::generate(Algorithm::ES256).unwrap());
    for bad in ["", "../../etc/passwd", "bilbo@hobbiton", "a b"] {
        jwk["kid"] = json!(bad);
        assert!(
            matches!(
                SigningKey::from_jwk(&jwk.to_string(), None),
                Err(KeyError::InvalidKid(_))
            ),
            "{bad:?}"
        );
    }
    jwk["kid"] = json!("k".repeat(129));
    assert!(matches!(
        SigningKey::from_jwk(&jwk.to_string(), None),
        Err(KeyError::InvalidKid(InvalidKid::TooLong { .. }))
    ));
}

fn rsa_pkcs8_der(bits: u32) -> Vec<u8> {
    PKey::from_rsa(Rsa::generate(bits).unwrap())
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap()
}

/// A 2048-bit RSA key with its public exponent replaced (the other
/// components left as they are: the exponent check comes first).
fn rsa_with_exponent(e: u32) -> Vec<u8> {
    let rsa = Rsa::generate(2048).unwrap();
    let copy = |n: &openssl::bn::BigNumRef| n.to_owned().unwrap();
    let odd = Rsa::from_private_components(
        copy(rsa.n()),
        BigNum::from_u32(e).unwrap(),
        copy(rsa.d()),
        copy(rsa.p().unwrap()),
        copy(rsa.q().unwrap()),
        copy(rsa.dmp1().unwrap()),
        copy(rsa.dmq1().unwrap()),
        copy(rsa.iqmp().unwrap()),
    )
    .unwrap();
    PKey::from_rsa(odd).unwrap().private_key_to_pkcs8().unwrap()
}

#[test]
fn refuses_rsa_keys_under_2048_bits() {
    let der = rsa_pkcs8_der(1024);
    let err = SigningKey::from_pkcs8_der(&der, Algorithm::RS256).unwrap_err();
    assert!(
        matches!(err, KeyError::RsaKeyTooSmall { bits: 1024 }),
        "{err}"
    );
    assert!(err.to_string().contains("2048"), "{err}");

    let pem = String::from_utf8(
        PKey::private_key_from_der(&der)
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap(),
    )
    .unwrap();
    assert!(matches!(
        SigningKey::from_pkcs8_pem(&pem, Algorithm::PS256),
        Err(KeyError::RsaKeyTooSmall { bits: 1024 })
    ));

    // The same key as a JWK.
    let rsa = Rsa::generate(1024).unwrap();
    let jwk = json!({
        "kty": "RSA", "alg": "RS256",
        "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec()), "d": b64(rsa.d().to_vec()),
        "p": b64(rsa.p().unwrap().to_vec()), "q": b64(rsa.q().unwrap().to_vec()),
        "dp": b64(rsa.dmp1().unwrap().to_vec()), "dq": b64(rsa.dmq1().unwrap().to_vec()),
        "qi": b64(rsa.iqmp().unwrap().to_vec()),
    });
    assert!(matches!(
        SigningKey::from_jwk(&jwk.to_string(), None),
        Err(KeyError::RsaKeyTooSmall { bits: 1024 })
    ));
}

#[test]
fn refuses_rsa_exponent_one_or_even() {
    for e in [1, 2, 65536] {
        let err = SigningKey::from_pkcs8_der(&rsa_with_exponent(e), Algorithm::RS256).unwrap_err();
        assert!(matches!(err, KeyError::RsaBadExponent), "e={e}: {err}");
    }
    // A consistent key with another odd exponent is fine (e = 3).
    let rsa = Rsa::generate_with_e(2048, &BigNum::from_u32(3).unwrap()).unwrap();
    let der = PKey::from_rsa(rsa).unwrap().private_key_to_pkcs8().unwrap();
    SigningKey::from_pkcs8_der(&der, Algorithm::RS256).unwrap();
}

#[test]
fn refuses_keys_that_do_not_fit_the_algorithm() {
    let p256 = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .to_pkcs8_der()
        .unwrap();
    let rsa = SigningKey::generate(Algorithm::RS256)
        .unwrap()
        .to_pkcs8_der()
        .unwrap();
    let ed25519 = SigningKey::generate(Algorithm::EdDSA)
        .unwrap()
        .to_pkcs8_der()
        .unwrap();
    let ed448 = PKey::generate_ed448()
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap();
    let x25519 = PKey::generate_x25519()
        .unwrap()
        .private_key_to_pkcs8()
        .unwrap();
    let cases: [(&[u8], Algorithm, &str); 7] = [
        (&p256, Algorithm::ES384, "P-256"),
        (&p256, Algorithm::RS256, "P-256"),
        (&rsa, Algorithm::ES256, "RSA"),
        (&ed25519, Algorithm::ES256, "Ed25519"),
        (&ed448, Algorithm::EdDSA, "Ed448"),
        (&x25519, Algorithm::EdDSA, "X25519"),
        (&rsa, Algorithm::EdDSA, "RSA"),
    ];
    for (der, alg, found) in cases {
        let err = SigningKey::from_pkcs8_der(der, alg).unwrap_err();
        assert!(matches!(err, KeyError::WrongKeyType { .. }), "{alg}: {err}");
        let message = err.to_string();
        assert!(message.contains(found), "{message}");
        assert!(message.contains(alg.as_str()), "{message}");
    }
}

#[test]
fn refuses_jwks_whose_alg_disagrees_or_is_not_ours() {
    let mut jwk = private_jwk(&SigningKey::generate(Algorithm::ES256).unwrap());
    let text = jwk.to_string();
    assert!(matches!(
        SigningKey::from_jwk(&text, Some(Algorithm::ES384)),
        Err(KeyError::AlgorithmMismatch { .. })
    ));
    for alg in ["ES384", "RS256"] {
        jwk["alg"] = json!(alg);
        assert!(matches!(
            SigningKey::from_jwk(&jwk.to_string(), Some(Algorithm::ES256)),
            Err(KeyError::AlgorithmMismatch { .. })
        ));
    }
    // The JWK's own alg is checked against the key even with no request.
    jwk["alg"] = json!("ES384");
    assert!(matches!(
        SigningKey::from_jwk(&jwk.to_string(), None),
        Err(KeyError::WrongKeyType { .. })
    ));
    for alg in ["HS256", "none", "RSA-OAEP"] {
        jwk["alg"] = json!(alg);
        assert!(matches!(
            SigningKey::from_jwk(&jwk.to_string(), None),
            Err(KeyError::AlgorithmMismatch {
                requested: None,
                ..
            })
        ));
    }
    // An RSA JWK without alg needs one to be named.
    let mut rsa = private_jwk(&SigningKey::generate(Algorithm::RS256).unwrap());
    rsa.as_object_mut().unwrap().remove("alg");
    assert!(matches!(
        SigningKey::from_jwk(&rsa.to_string(), None),
        Err(KeyError::AlgorithmRequired)
    ));
    let key = SigningKey::from_jwk(&rsa.to_string(), Some(Algorithm::PS512)).unwrap();
    assert_eq!(key.algorithm(), Algorithm::PS512);
}

#[test]
fn refuses_public_only_keys() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let pkey = PKey::private_key_from_der(&key.to_pkcs8_der().unwrap()).unwrap();
    let spki_der = pkey.public_key_to_der().unwrap();
    let spki_pem = pkey.public_key_to_pem().unwrap();
    assert!(matches!(
        SigningKey::from_pkcs8_der(&spki_der, Algorithm::ES256),
        Err(KeyError::PublicOnly { .. })
    ));
    assert!(matches!(
        SigningKey::from_pkcs8_pem(&spki_pem, Algorithm::ES256),
        Err(KeyError::PublicOnly { .. })
    ));
    let public = key.public_jwk().to_value().to_string();
    assert!(matches!(
        SigningKey::from_jwk(&public, None),
        Err(KeyError::PublicOnly { .. })
    ));
}

#[test]
fn refuses_garbage_with_a_reason() {
    let good = SigningKey::generate(Algorithm::ES256).unwrap();
    let pem = good.to_pkcs8_pem().unwrap();
    let der = good.to_pkcs8_der().unwrap();
    let truncated_pem = pem[..pem.len() / 2].to_owned();
    let body_damaged = pem.replacen('A', "!", 3);
    for input in [
        "".as_bytes(),
        b"hello",
        b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        truncated_pem.as_bytes(),
        body_damaged.as_bytes(),
        b"-----BEGIN SOMETHING-----\nAAAA\n-----END SOMETHING-----\n",
        b"\xff\xfe\x00",
    ] {
        let err = SigningKey::from_pkcs8_pem(input, Algorithm::ES256).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
    }
    for input in [&der[..der.len() - 1], &der[..10], b"", b"\x30\x00"] {
        let err = SigningKey::from_pkcs8_der(input, Algorithm::ES256).unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
    }
    for input in [
        "",
        "[]",
        "null",
        "{}",
        r#"{"kty":1}"#,
        r#"{"kty":"EC","crv":"P-256","d":"%%%","x":"AA","y":"AA"}"#,
        r#"{"kty":"EC","crv":"P-256","d":"AAAA"}"#,
        r#"{"kty":"RSA","alg":"RS256","n":"AQAB","e":"AQAB","d":"AQAB"}"#,
        r#"{"kty":"OKP","crv":"Ed25519","d":"AAAA","x":"AAAA"}"#,
        r#"{"kty":"XYZ","alg":"ES256","d":"AAAA"}"#,
    ] {
        let err = SigningKey::from_jwk(input, None).unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::Malformed { .. } | KeyError::RsaKeyTooSmall { .. }
            ),
            "{input}: {err}"
        );
    }
}

#[test]
fn refuses_traditional_and_encrypted_pem_saying_how_to_convert() {
    let rsa = Rsa::generate(2048).unwrap();
    let traditional = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
    let err = SigningKey::from_pkcs8_pem(&traditional, Algorithm::RS256).unwrap_err();
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");

    let pkey = PKey::from_rsa(rsa).unwrap();
    let encrypted = pkey
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"secret")
        .unwrap();
    let err = SigningKey::from_pkcs8_pem(&encrypted, Algorithm::RS256).unwrap_err();
    assert!(matches!(err, KeyError::Malformed { .. }));
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[test]
fn refuses_inconsistent_keys() {
    let a = private_jwk(&SigningKey::generate(Algorithm::ES256).unwrap());
    let b = private_jwk(&SigningKey::generate(Algorithm::ES256).unwrap());
    let mut mixed = a.clone();
    mixed["x"] = b["x"].clone();
    mixed["y"] = b["y"].clone();
    assert!(matches!(
        SigningKey::from_jwk(&mixed.to_string(), None),
        Err(KeyError::InconsistentKey { .. })
    ));

    let a = private_jwk(&SigningKey::generate(Algorithm::EdDSA).unwrap());
    let b = private_jwk(&SigningKey::generate(Algorithm::EdDSA).unwrap());
    let mut mixed = a.clone();
    mixed["x"] = b["x"].clone();
    assert!(matches!(
        SigningKey::from_jwk(&mixed.to_string(), None),
        Err(KeyError::InconsistentKey { .. })
    ));

    let a = private_jwk(&SigningKey::generate(Algorithm::RS256).unwrap());
    let b = private_jwk(&SigningKey::generate(Algorithm::RS256).unwrap());
    let mut mixed = a.clone();
    mixed["d"] = b["d"].clone();
    let err = SigningKey::from_jwk(&mixed.to_string(), None).unwrap_err();
    assert!(
        matches!(err, KeyError::InconsistentKey { .. } | KeyError::Crypto(_)),
        "{err}"
    );

    // A zero EC scalar is no key at all.
    let mut zero = private_jwk(&SigningKey::generate(Algorithm::ES256).unwrap());
    zero["d"] = json!(b64([0u8; 32]));
    assert!(SigningKey::from_jwk(&zero.to_string(), None).is_err());
}

#[test]
fn debug_and_errors_never_show_key_material() {
    for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
        let key = SigningKey::generate(alg).unwrap();
        let secret = private_jwk(&key)["d"].as_str().unwrap().to_owned();
        let pem = key.to_pkcs8_pem().unwrap();
        let pem_body: String = pem.lines().nth(1).unwrap().to_owned();
        for shown in [
            format!("{key:?}"),
            format!("{key:#?}"),
            format!("{:?}", key.public_jwk()),
        ] {
            assert!(!shown.contains(&secret[..16]), "{shown}");
            assert!(!shown.contains(&pem_body[..16]), "{shown}");
            assert!(shown.contains(key.kid().as_str()));
        }
        // An error about this key (asked for the wrong algorithm) does not
        // quote it either.
        let err = SigningKey::from_pkcs8_pem(&pem, Algorithm::ES512).unwrap_err();
        assert!(!err.to_string().contains(&pem_body[..16]));
    }
}

#[test]
fn es512_signature_verifies_with_openssl_from_the_public_jwk() {
    // jsonwebtoken has no ES512, so OpenSSL is the independent check here.
    let key = SigningKey::generate(Algorithm::ES512).unwrap();
    let token = crate::support::jose::compact(&key, &json!({"sub": "alice"}));
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = unb64(signature);
    assert_eq!(signature.len(), 132);
    assert!(openssl_verifies(
        &key.public_jwk().to_value(),
        "ES512",
        input.as_bytes(),
        &signature
    ));
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[A-Za-z0-9_-]{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("kty".to_owned()),
                    Just("crv".to_owned()),
                    Just("alg".to_owned()),
                    Just("d".to_owned()),
                    Just("x".to_owned()),
                    Just("n".to_owned()),
                    "[a-z]{1,3}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn importers_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        for alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA] {
            let _ = SigningKey::from_pkcs8_der(&bytes, alg);
            let _ = SigningKey::from_pkcs8_pem(&bytes, alg);
        }
        let _ = SigningKey::from_jwk(&String::from_utf8_lossy(&bytes), None);
    }

    #[test]
    fn pem_importer_never_panics_on_damaged_pem(
        body in prop::collection::vec(any::<u8>(), 0..600),
        label in prop_oneof![Just("PRIVATE KEY".to_owned()), Just("PUBLIC KEY".to_owned()), Just("EC PRIVATE KEY".to_owned()), "[A-Z ]{0,20}"],
    ) {
        let pem = format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &body)
        );
        let _ = SigningKey::from_pkcs8_pem(&pem, Algorithm::ES256);
    }

    #[test]
    fn jwk_importer_never_panics_on_arbitrary_json(value in any_json(), alg in prop::sample::select(Algorithm::ALL.to_vec())) {
        let _ = SigningKey::from_jwk(&value.to_string(), None);
        let _ = SigningKey::from_jwk(&value.to_string(), Some(alg));
    }

    #[test]
    fn jwk_importer_never_panics_on_mutated_keys(
        alg in prop::sample::select(vec![Algorithm::ES256, Algorithm::ES512, Algorithm::EdDSA]),
        member in prop::sample::select(vec!["d", "x", "y", "crv", "kty", "alg", "kid"]),
        replacement in prop_oneof![
            "[A-Za-z0-9_-]{0,100}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            Just(Value::Null),
        ],
    ) {
        let mut jwk = private_jwk(&SigningKey::generate(alg).unwrap());
        jwk[member] = replacement;
        let _ = SigningKey::from_jwk(&jwk.to_string(), None);
    }

    #[test]
    fn der_importer_never_panics_on_flipped_bytes(index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut der = SigningKey::generate(Algorithm::ES256).unwrap().to_pkcs8_der().unwrap();
        let i = index.index(der.len());
        der[i] = byte;
        if let Ok(key) = SigningKey::from_pkcs8_der(&der, Algorithm::ES256) {
            // Whatever was accepted is a working, consistent key.
            let signature = key.sign(b"x").unwrap();
            prop_assert!(openssl_verifies(&key.public_jwk().to_value(), "ES256", b"x", &signature));
        }
    }
}
