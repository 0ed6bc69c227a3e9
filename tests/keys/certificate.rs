//! Certificate-backed keys: a key imported with its PEM chain publishes
//! `x5c` and `x5t#S256` (RFC 7517 sections 4.7, 4.9) and keeps its
//! thumbprint kid; a chain that does not belong to the key, or that cannot
//! be read, is refused with a typed error, never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::x509::X509;
use serde_json::Value;
use tower_jwt_signer::keys::CertificateChain;
use tower_jwt_signer::{Algorithm, KeyError, Kid, SigningKey};

use crate::support::certs::{self, Pki};
use crate::support::jose::{public_key, their_thumbprint, unb64};

fn x5c(jwk: &Value) -> Vec<Vec<u8>> {
    jwk["x5c"]
        .as_array()
        .expect("x5c is an array")
        .iter()
        .map(|entry| STANDARD.decode(entry.as_str().unwrap()).unwrap())
        .collect()
}

#[test]
fn the_published_x5c_parses_and_its_leaf_holds_the_jwks_public_key() {
    let pki = Pki::new();
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
        Algorithm::RS256,
    ] {
        let (rc_key, key_pem) = certs::key(alg);
        let chain_pem = pki.valid_chain_pem(&rc_key);
        let key = SigningKey::from_pem_with_certificate_chain(&key_pem, &chain_pem, alg).unwrap();
        let jwk = key.public_jwk().to_value();

        let chain = x5c(&jwk);
        assert_eq!(chain.len(), 3, "{alg}: leaf, intermediate, root");
        let leaf = X509::from_der(&chain[0]).expect("x5c[0] is a DER certificate");
        for der in &chain {
            X509::from_der(der).expect("every x5c entry is a DER certificate");
        }
        // Leaf first, then the certificates that issued it, in order.
        assert_eq!(chain[1], pki.intermediate_der(), "{alg}");
        assert_eq!(chain[2], pki.root_der(), "{alg}");
        // The leaf's public key is the JWK's (OpenSSL compares them).
        assert!(
            leaf.public_key().unwrap().public_eq(&public_key(&jwk)),
            "{alg}: the leaf holds another key than the JWK"
        );
        // x5t#S256 is the SHA-256 of the leaf's DER.
        let digest = leaf.digest(MessageDigest::sha256()).unwrap();
        assert_eq!(
            unb64(jwk["x5t#S256"].as_str().unwrap()),
            digest.to_vec(),
            "{alg}"
        );
        // The kid stays the RFC 7638 thumbprint of the public key, the same
        // as the key imported without its chain.
        let bare = SigningKey::from_pkcs8_pem(&key_pem, alg).unwrap();
        assert_eq!(key.kid(), bare.kid(), "{alg}");
        assert_eq!(key.kid().as_str(), their_thumbprint(&jwk), "{alg}");
        assert_eq!(
            key.public_jwk().thumbprint(),
            bare.public_jwk().thumbprint()
        );
        // No private member, and nothing else than the public members.
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(jwk.get(private).is_none(), "{alg}: {private} published");
        }
        // The chain's validity is the window where every certificate is valid.
        let chain = key.certificate_chain().unwrap();
        assert_eq!(chain.certificates().len(), 3);
        assert!(chain.is_valid_at(std::time::SystemTime::now()));
    }
}

#[test]
fn a_configured_kid_is_kept_with_the_chain() {
    let pki = Pki::new();
    let (rc_key, key_pem) = certs::key(Algorithm::ES256);
    let key = SigningKey::from_pem_with_certificate_chain(
        &key_pem,
        pki.valid_chain_pem(&rc_key),
        Algorithm::ES256,
    )
    .unwrap()
    .with_kid(Kid::new("gateway-2026").unwrap());
    assert_eq!(key.kid().as_str(), "gateway-2026");
    let jwk = key.public_jwk().to_value();
    assert_eq!(jwk["kid"], "gateway-2026");
    assert!(jwk["x5c"].is_array());
}

#[test]
fn a_key_with_another_keys_certificate_is_refused() {
    let pki = Pki::new();
    let (rc_key, _) = certs::key(Algorithm::ES256);
    let (_, other_pem) = certs::key(Algorithm::ES256);
    let chain = pki.valid_chain_pem(&rc_key);
    let err = SigningKey::from_pem_with_certificate_chain(&other_pem, &chain, Algorithm::ES256)
        .unwrap_err();
    assert!(
        matches!(err, KeyError::CertificateKeyMismatch { .. }),
        "{err:?}"
    );
    // A leaf of another key type: refused the same way, naming it.
    let (ed_key, _) = certs::key(Algorithm::EdDSA);
    let ed_chain = pki.valid_chain_pem(&ed_key);
    let err = SigningKey::from_pem_with_certificate_chain(&other_pem, &ed_chain, Algorithm::ES256)
        .unwrap_err();
    assert!(
        matches!(&err, KeyError::CertificateKeyMismatch { reason } if reason.contains("Ed25519")),
        "{err:?}"
    );
    // And through the JWK importer: an x5c that is not the key's.
    let (key_b, pem_b) = certs::key(Algorithm::ES256);
    let with_chain = SigningKey::from_pem_with_certificate_chain(
        &pem_b,
        pki.valid_chain_pem(&key_b),
        Algorithm::ES256,
    )
    .unwrap();
    let mut private: Value = serde_json::from_str(&with_chain.to_private_jwk().unwrap()).unwrap();
    let foreign = SigningKey::from_pem_with_certificate_chain(
        &other_pem,
        pki.valid_chain_pem(&rcgen::KeyPair::from_pem(&other_pem).unwrap()),
        Algorithm::ES256,
    )
    .unwrap();
    private["x5c"] = foreign.public_jwk().to_value()["x5c"].clone();
    private["x5t#S256"] = foreign.public_jwk().to_value()["x5t#S256"].clone();
    let err = SigningKey::from_jwk(&private.to_string(), None).unwrap_err();
    assert!(
        matches!(err, KeyError::CertificateKeyMismatch { .. }),
        "{err:?}"
    );
}

#[test]
fn the_chain_survives_a_private_jwk_round_trip_and_a_forged_x5t_is_refused() {
    let pki = Pki::new();
    let (rc_key, key_pem) = certs::key(Algorithm::ES256);
    let key = SigningKey::from_pem_with_certificate_chain(
        &key_pem,
        pki.valid_chain_pem(&rc_key),
        Algorithm::ES256,
    )
    .unwrap();
    let stored = key.to_private_jwk().unwrap();
    let loaded = SigningKey::from_jwk(&stored, None).unwrap();
    assert_eq!(loaded.kid(), key.kid());
    assert_eq!(loaded.public_jwk(), key.public_jwk());
    assert_eq!(loaded.certificate_chain(), key.certificate_chain());

    let mut forged: Value = serde_json::from_str(&stored).unwrap();
    forged["x5t#S256"] = Value::from("AAAA");
    let err = SigningKey::from_jwk(&forged.to_string(), None).unwrap_err();
    assert!(
        matches!(err, KeyError::CertificateMalformed { .. }),
        "{err:?}"
    );
}

#[test]
fn traditional_pkcs1_and_sec1_keys_are_read_with_their_chain() {
    let pki = Pki::new();
    for alg in [Algorithm::ES256, Algorithm::RS256] {
        let (rc_key, pkcs8) = certs::key(alg);
        let pkey = openssl::pkey::PKey::private_key_from_pem(pkcs8.as_bytes()).unwrap();
        let traditional = match alg {
            Algorithm::RS256 => pkey.rsa().unwrap().private_key_to_pem().unwrap(),
            _ => pkey.ec_key().unwrap().private_key_to_pem().unwrap(),
        };
        let label = if alg == Algorithm::RS256 {
            "RSA PRIVATE KEY"
        } else {
            "EC PRIVATE KEY"
        };
        assert!(String::from_utf8_lossy(&traditional).contains(label));
        let key = SigningKey::from_pem_with_certificate_chain(
            &traditional,
            pki.valid_chain_pem(&rc_key),
            alg,
        )
        .unwrap();
        assert_eq!(
            key.kid(),
            SigningKey::from_pkcs8_pem(&pkcs8, alg).unwrap().kid(),
            "{alg}"
        );
    }
}

#[test]
fn unreadable_chains_are_refused_with_a_typed_error() {
    let pki = Pki::new();
    let (rc_key, key_pem) = certs::key(Algorithm::ES256);
    let good = pki.valid_chain_pem(&rc_key);
    let leaf_only = good
        .split_inclusive("-----END CERTIFICATE-----\n")
        .next()
        .unwrap();
    let leaf_der = CertificateChain::from_pem(leaf_only)
        .unwrap()
        .leaf()
        .to_vec();
    let block = |der: &[u8]| {
        let body = STANDARD.encode(der);
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    };
    let huge = "A".repeat(200 * 1024);
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("garbage", "not a certificate at all".to_owned()),
        (
            "bad base64",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned(),
        ),
        (
            "no end line",
            "-----BEGIN CERTIFICATE-----\nMIIB".to_owned(),
        ),
        ("truncated DER", block(&leaf_der[..leaf_der.len() / 2])),
        (
            "trailing bytes",
            block(&[leaf_der.clone(), vec![0]].concat()),
        ),
        ("not X.509", block(b"\x30\x03\x02\x01\x00")),
        (
            "a private key in the chain file",
            format!("{leaf_only}{key_pem}"),
        ),
        (
            "huge",
            format!("-----BEGIN CERTIFICATE-----\n{huge}\n-----END CERTIFICATE-----\n"),
        ),
        ("too many", leaf_only.repeat(9)),
        // Intermediate before leaf: out of order.
        (
            "out of order",
            format!("{}{leaf_only}", block(&pki.intermediate_der())),
        ),
        // Leaf then root, without the intermediate that issued the leaf.
        ("a gap", format!("{leaf_only}{}", block(&pki.root_der()))),
    ];
    for (what, pem) in cases {
        let err = CertificateChain::from_pem(&pem).unwrap_err();
        assert!(
            matches!(err, KeyError::CertificateMalformed { .. }),
            "{what}: {err:?}"
        );
        let err = SigningKey::from_pem_with_certificate_chain(&key_pem, &pem, Algorithm::ES256)
            .unwrap_err();
        assert!(
            matches!(err, KeyError::CertificateMalformed { .. }),
            "{what}: {err:?}"
        );
        // The message quotes no key material.
        let key_body = key_pem.lines().nth(1).unwrap();
        assert!(!err.to_string().contains(&key_body[..16]), "{what}: {err}");
    }
    // Each entry of an x5c in a JWK is checked the same way.
    let key =
        SigningKey::from_pem_with_certificate_chain(&key_pem, &good, Algorithm::ES256).unwrap();
    let mut jwk: Value = serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap();
    for bad in [
        serde_json::json!("not an array"),
        serde_json::json!([]),
        serde_json::json!(["!!!"]),
        serde_json::json!([1]),
        serde_json::json!([huge]),
    ] {
        jwk["x5c"] = bad.clone();
        jwk.as_object_mut().unwrap().remove("x5t#S256");
        let err = SigningKey::from_jwk(&jwk.to_string(), None).unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::CertificateMalformed { .. } | KeyError::Malformed { .. }
            ),
            "{bad}: {err:?}"
        );
    }
}
