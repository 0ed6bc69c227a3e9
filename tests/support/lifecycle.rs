//! Helpers shared by the key lifecycle tests: compact JWS tokens made with
//! a snapshot's active key, verification with `jsonwebtoken` against the
//! published JWKS bytes, and a picture of a directory to prove nothing
//! changed on disk.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tower_jwt_signer::Algorithm;
use tower_jwt_signer::keys::SigningBackend;
use tower_jwt_signer::registry::KeySnapshot;

/// A token signed by the snapshot's active key (header `alg`, `typ`, `kid`).
pub fn sign(snapshot: &KeySnapshot, iat: u64, ttl: u64) -> (String, String) {
    let active = snapshot.active().expect("an active key");
    let kid = active.kid().to_string();
    let header = json!({"alg": active.algorithm().as_str(), "typ": "JWT", "kid": kid});
    let claims = json!({"sub": "lifecycle", "iat": iat, "exp": iat + ttl});
    let mut input = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    input.push('.');
    input.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()));
    let signature = SigningBackend::sign(active.backend().as_ref(), input.as_bytes()).unwrap();
    (
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)),
        kid,
    )
}

/// The kids in JWKS bytes.
pub fn published_kids(jwks: &[u8]) -> Vec<String> {
    let jwks: Value = serde_json::from_slice(jwks).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn theirs(alg: &str) -> jsonwebtoken::Algorithm {
    alg.parse().expect("jsonwebtoken knows this algorithm")
}

/// Verifies `token` with `jsonwebtoken`, taking the key by the token's kid
/// from the JWKS bytes, as a backend would. `Err` when the kid is not
/// published or the signature does not verify. Dates are not checked (the
/// tests run on tokio's clock, not the wall clock).
pub fn verify_with_jwks(token: &str, jwks: &[u8]) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(jwks).map_err(|e| e.to_string())?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} is not published"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let alg = jwk
        .common
        .key_algorithm
        .map(|a| theirs(&a.to_string()))
        .ok_or("the JWK has no alg")?;
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.validate_exp = false;
    validation.set_required_spec_claims::<&str>(&[]);
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

/// Every entry of a directory: name -> (mode, bytes).
pub fn dir_picture(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            let bytes = if meta.is_file() {
                std::fs::read(entry.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                entry.file_name().into_string().unwrap(),
                (meta.permissions().mode(), bytes),
            )
        })
        .collect()
}

/// The algorithms `jsonwebtoken` verifies (it has no ES512).
pub fn verifiable(alg: Algorithm) -> bool {
    alg != Algorithm::ES512
}
