//! Building and checking compact JWS in tests, independently of the crate's
//! own signer: OpenSSL verifies signatures from the published JWK alone.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};
use serde_json::{Value, json};
use tower_jwt_signer::{Algorithm, SigningKey};

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// A compact JWS with header `{alg, typ, kid}` signed by `key`.
pub fn compact(key: &SigningKey, claims: &Value) -> String {
    let header = json!({"alg": key.algorithm().as_str(), "typ": "JWT", "kid": key.kid().as_str()});
    let mut input = b64(serde_json::to_vec(&header).unwrap());
    input.push('.');
    input.push_str(&b64(serde_json::to_vec(claims).unwrap()));
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(signature))
}

/// The OpenSSL public key described by a public JWK (RSA, EC or OKP).
pub fn public_key(jwk: &Value) -> PKey<Public> {
    let member = |name: &str| unb64(jwk[name].as_str().unwrap_or_else(|| panic!("{name}")));
    match jwk["kty"].as_str().unwrap() {
        "RSA" => {
            let rsa = openssl::rsa::Rsa::from_public_components(
                BigNum::from_slice(&member("n")).unwrap(),
                BigNum::from_slice(&member("e")).unwrap(),
            )
            .unwrap();
            PKey::from_rsa(rsa).unwrap()
        }
        "EC" => {
            let nid = match jwk["crv"].as_str().unwrap() {
                "P-256" => openssl::nid::Nid::X9_62_PRIME256V1,
                "P-384" => openssl::nid::Nid::SECP384R1,
                "P-521" => openssl::nid::Nid::SECP521R1,
                other => panic!("curve {other}"),
            };
            let group = openssl::ec::EcGroup::from_curve_name(nid).unwrap();
            let ec = openssl::ec::EcKey::from_public_key_affine_coordinates(
                &group,
                &BigNum::from_slice(&member("x")).unwrap(),
                &BigNum::from_slice(&member("y")).unwrap(),
            )
            .unwrap();
            PKey::from_ec_key(ec).unwrap()
        }
        "OKP" => {
            assert_eq!(jwk["crv"], "Ed25519");
            PKey::public_key_from_raw_bytes(&member("x"), Id::ED25519).unwrap()
        }
        other => panic!("kty {other}"),
    }
}

/// Verifies a raw JWS signature with OpenSSL alone, from the public JWK.
pub fn openssl_verifies(jwk: &Value, alg: &str, signing_input: &[u8], signature: &[u8]) -> bool {
    let pkey = public_key(jwk);
    let digest = match &alg[2..] {
        "256" => MessageDigest::sha256(),
        "384" => MessageDigest::sha384(),
        "512" => MessageDigest::sha512(),
        _ => MessageDigest::null(),
    };
    match &alg[..2] {
        "RS" | "PS" => {
            let mut verifier = Verifier::new(digest, &pkey).unwrap();
            if alg.starts_with("PS") {
                verifier.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
                verifier
                    .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
                    .unwrap();
                verifier.set_rsa_mgf1_md(digest).unwrap();
            }
            verifier.update(signing_input).unwrap();
            verifier.verify(signature).unwrap_or(false)
        }
        "ES" => {
            let half = signature.len() / 2;
            let Ok(sig) = EcdsaSig::from_private_components(
                BigNum::from_slice(&signature[..half]).unwrap(),
                BigNum::from_slice(&signature[half..]).unwrap(),
            ) else {
                return false;
            };
            let der = sig.to_der().unwrap();
            let mut verifier = Verifier::new(digest, &pkey).unwrap();
            verifier.update(signing_input).unwrap();
            verifier.verify(&der).unwrap_or(false)
        }
        "Ed" => {
            let mut verifier = Verifier::new_without_digest(&pkey).unwrap();
            verifier
                .verify_oneshot(signature, signing_input)
                .unwrap_or(false)
        }
        other => panic!("alg {other}"),
    }
}

/// The `jsonwebtoken` crate's name for `alg`, or `None` for ES512, which it
/// does not implement (tests check ES512 with OpenSSL instead).
pub fn jsonwebtoken_alg(alg: Algorithm) -> Option<jsonwebtoken::Algorithm> {
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
        Algorithm::ES512 => return None,
    })
}

/// A JSON file of known answers in `tests/data/` (see its README).
pub fn test_data(path: &str) -> Value {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(path);
    let text =
        std::fs::read_to_string(&full).unwrap_or_else(|err| panic!("{}: {err}", full.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", full.display()))
}

/// `../shared/vectors` next to the crate (the Wycheproof vectors, too large
/// to copy into `tests/data`), or the directory `TOWER_JWT_SIGNER_VECTORS`
/// names (a worktree that is not next to `../shared`).
pub fn shared_vectors() -> std::path::PathBuf {
    match std::env::var_os("TOWER_JWT_SIGNER_VECTORS") {
        Some(dir) => dir.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("shared")
            .join("vectors"),
    }
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK, computed by
/// jsonwebtoken (not by this crate): the independent answer for "the kid is
/// the thumbprint". Checked against the RFCs' own examples in
/// `keys::vectors`.
pub fn their_thumbprint(jwk: &Value) -> String {
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("a JWK");
    jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
        .expect("a thumbprint")
}
