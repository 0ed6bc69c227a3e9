//! josekit interop (feature `josekit`): our keys as `josekit::jwk::Jwk`
//! and back, and a josekit signer as a [`SigningBackend`].
//!
//! For users who already hold their keys as josekit JWKs, or sign with a
//! josekit signer:
//!
//! | from | to | how |
//! |---|---|---|
//! | [`SigningKey`] | private [`Jwk`] | `Jwk::try_from(&key)` (all private members, `kid`, `alg`) |
//! | private [`Jwk`] | [`SigningKey`] | `SigningKey::try_from(&jwk)`, with every check of [`SigningKey::from_jwk`] |
//! | [`PublicJwk`] | public [`Jwk`] | `Jwk::from(&public)` (`kty`, the public members, `kid`, `alg`, `use`) |
//! | a josekit [`JwsSigner`] and its public [`Jwk`] | [`SigningBackend`] | [`JosekitBackend::new`], or [`JosekitBackend::from_jwk`] for a private `Jwk` |
//!
//! A [`JosekitBackend`] signs through josekit; the token header (`alg`,
//! `kid`) and the published JWK come from its [`PublicJwk`], built from
//! the public key with every check a [`SigningKey`]'s gets, so the tokens
//! it signs are the tokens a [`SigningKey`] would sign, with the same
//! header and the same JWS signature format (ECDSA `r || s`). Our own
//! signing path is faster: use the adapter when josekit must hold the key.
//!
//! # Example
//!
//! ```
//! use josekit::jwk::Jwk;
//! use tower_jwt_signer::josekit::JosekitBackend;
//! use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry, SigningKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A key josekit made, signing through our layer.
//! let mut jwk = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256)?;
//! jwk.set_algorithm("ES256");
//! let backend = JosekitBackend::from_jwk(&jwk)?;
//! assert_eq!(backend.algorithm(), Algorithm::ES256);
//! let registry = KeyRegistry::new(backend);
//! let _signer = JwtSignerLayer::new(registry);
//!
//! // Our key, as a josekit JWK, and back with the same kid.
//! let key = SigningKey::generate(Algorithm::EdDSA)?;
//! let exported = Jwk::try_from(&key)?;
//! assert_eq!(exported.key_id(), Some(key.kid().as_str()));
//! assert_eq!(SigningKey::try_from(&exported)?.kid(), key.kid());
//! assert!(Jwk::from(key.public_jwk()).parameter("d").is_none());
//! # Ok(())
//! # }
//! ```

use std::fmt;

use ::josekit::jwk::Jwk;
use ::josekit::jws::{self, JwsSigner, JwsVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::keys::{Algorithm, KeyError, Kid, PublicJwk, SignError, SigningBackend, SigningKey};

impl TryFrom<&SigningKey> for Jwk {
    type Error = KeyError;

    /// The private JWK of `key` (secret: keep it as you keep key files).
    fn try_from(key: &SigningKey) -> Result<Self, KeyError> {
        let json = key.to_private_jwk()?;
        Jwk::from_bytes(json.as_bytes()).map_err(|err| KeyError::Malformed {
            format: "JWK",
            reason: err.to_string(),
        })
    }
}

impl TryFrom<&Jwk> for SigningKey {
    type Error = KeyError;

    /// Imports a private josekit JWK, as [`SigningKey::from_jwk`] does (its
    /// `alg`, when present, picks the algorithm).
    fn try_from(jwk: &Jwk) -> Result<Self, KeyError> {
        SigningKey::from_jwk_map(jwk.as_ref(), None)
    }
}

impl From<&PublicJwk> for Jwk {
    /// The published JWK, as a josekit JWK (public members only).
    fn from(public: &PublicJwk) -> Self {
        let Value::Object(map) = public.to_value() else {
            unreachable!("a public JWK serialises to a JSON object");
        };
        Jwk::from_map(map).expect("a public JWK is a valid josekit JWK")
    }
}

/// A josekit signer as a [`SigningBackend`]: josekit computes each
/// signature; the kid, the algorithm and the published JWK come from the
/// public key. See the [module docs](self).
pub struct JosekitBackend {
    signer: Box<dyn JwsSigner>,
    jwk: PublicJwk,
}

impl fmt::Debug for JosekitBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signer holds the private key: never shown.
        f.debug_struct("JosekitBackend")
            .field("kid", self.jwk.kid())
            .field("alg", &self.jwk.algorithm())
            .finish_non_exhaustive()
    }
}

impl JosekitBackend {
    /// `signer`, whose key's public half is `public`. The algorithm is
    /// `public`'s `alg`, else the signer's; the kid is `public`'s `kid`,
    /// else the signer's key id, else the RFC 7638 thumbprint.
    ///
    /// # Errors
    ///
    /// A [`KeyError`]: the algorithm is not one of ours (HMAC, `ES256K`)
    /// or the signer's and the JWK's disagree
    /// ([`KeyError::AlgorithmMismatch`]); the public key does not fit the
    /// algorithm or is weak (the checks of [`PublicJwk::from_spki_der`]);
    /// the kid is invalid; or a probe signature of the signer does not
    /// verify with `public` ([`KeyError::InconsistentKey`]).
    pub fn new(signer: Box<dyn JwsSigner>, public: &Jwk) -> Result<Self, KeyError> {
        let signer_alg = signer.algorithm().name().to_owned();
        let name = public.algorithm().unwrap_or(&signer_alg);
        if name != signer_alg {
            return Err(KeyError::AlgorithmMismatch {
                jwk_alg: name.to_owned(),
                requested: signer_alg.parse().ok(),
            });
        }
        let algorithm: Algorithm = name.parse().map_err(|_| KeyError::AlgorithmMismatch {
            jwk_alg: name.chars().take(64).collect(),
            requested: None,
        })?;
        let kid = match public.key_id().or(signer.key_id()) {
            Some(kid) => Some(Kid::new(kid)?),
            None => None,
        };
        let der = spki_der(public, algorithm)?;
        let jwk = PublicJwk::from_spki_der(&der, algorithm, kid)?;
        // The signer must hold the private half of this public key.
        let probe = b"tower-jwt-signer: does the signer hold this key?";
        let signature = signer
            .sign(probe)
            .map_err(|err| KeyError::Crypto(err.to_string()))?;
        let verifies = verifier_for(algorithm, public)
            .and_then(|verifier| verifier.verify(probe, &signature))
            .is_ok();
        if !verifies {
            return Err(KeyError::InconsistentKey {
                reason: "a signature of the josekit signer does not verify with the public JWK"
                    .to_owned(),
            });
        }
        Ok(JosekitBackend { signer, jwk })
    }

    /// A josekit signer for the private JWK `jwk` (its `alg` is required),
    /// with [`new`](Self::new)'s checks.
    ///
    /// # Errors
    ///
    /// [`KeyError::AlgorithmRequired`] without `alg`, else as
    /// [`new`](Self::new); josekit's refusals of the key as
    /// [`KeyError::Malformed`].
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let name = jwk.algorithm().ok_or(KeyError::AlgorithmRequired)?;
        let algorithm: Algorithm = name.parse().map_err(|_| KeyError::AlgorithmMismatch {
            jwk_alg: name.chars().take(64).collect(),
            requested: None,
        })?;
        let malformed = |err: ::josekit::JoseError| KeyError::Malformed {
            format: "JWK",
            reason: err.to_string(),
        };
        let signer = signer_for(algorithm, jwk).map_err(malformed)?;
        let public = jwk.to_public_key().map_err(malformed)?;
        JosekitBackend::new(signer, &public)
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        self.jwk.kid()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.jwk.algorithm()
    }
}

impl SigningBackend for JosekitBackend {
    fn public_jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signer
            .sign(signing_input)
            .map_err(|err| SignError::Other(Box::new(err)))
    }
}

/// josekit's signer of `algorithm` for the private JWK `jwk`.
fn signer_for(algorithm: Algorithm, jwk: &Jwk) -> Result<Box<dyn JwsSigner>, ::josekit::JoseError> {
    Ok(match algorithm {
        Algorithm::RS256 => Box::new(jws::RS256.signer_from_jwk(jwk)?),
        Algorithm::RS384 => Box::new(jws::RS384.signer_from_jwk(jwk)?),
        Algorithm::RS512 => Box::new(jws::RS512.signer_from_jwk(jwk)?),
        Algorithm::PS256 => Box::new(jws::PS256.signer_from_jwk(jwk)?),
        Algorithm::PS384 => Box::new(jws::PS384.signer_from_jwk(jwk)?),
        Algorithm::PS512 => Box::new(jws::PS512.signer_from_jwk(jwk)?),
        Algorithm::ES256 => Box::new(jws::ES256.signer_from_jwk(jwk)?),
        Algorithm::ES384 => Box::new(jws::ES384.signer_from_jwk(jwk)?),
        Algorithm::ES512 => Box::new(jws::ES512.signer_from_jwk(jwk)?),
        Algorithm::EdDSA => Box::new(jws::EdDSA.signer_from_jwk(jwk)?),
    })
}

/// josekit's verifier of `algorithm` for the public JWK `jwk`.
fn verifier_for(
    algorithm: Algorithm,
    jwk: &Jwk,
) -> Result<Box<dyn JwsVerifier>, ::josekit::JoseError> {
    Ok(match algorithm {
        Algorithm::RS256 => Box::new(jws::RS256.verifier_from_jwk(jwk)?),
        Algorithm::RS384 => Box::new(jws::RS384.verifier_from_jwk(jwk)?),
        Algorithm::RS512 => Box::new(jws::RS512.verifier_from_jwk(jwk)?),
        Algorithm::PS256 => Box::new(jws::PS256.verifier_from_jwk(jwk)?),
        Algorithm::PS384 => Box::new(jws::PS384.verifier_from_jwk(jwk)?),
        Algorithm::PS512 => Box::new(jws::PS512.verifier_from_jwk(jwk)?),
        Algorithm::ES256 => Box::new(jws::ES256.verifier_from_jwk(jwk)?),
        Algorithm::ES384 => Box::new(jws::ES384.verifier_from_jwk(jwk)?),
        Algorithm::ES512 => Box::new(jws::ES512.verifier_from_jwk(jwk)?),
        Algorithm::EdDSA => Box::new(jws::EdDSA.verifier_from_jwk(jwk)?),
    })
}

/// A base64url member of a JWK, decoded.
fn member(jwk: &Jwk, name: &str) -> Result<Vec<u8>, KeyError> {
    let malformed = |reason: String| KeyError::Malformed {
        format: "JWK",
        reason,
    };
    let text = jwk
        .parameter(name)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(format!("{name:?} is missing")))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| malformed(format!("{name:?} is not base64url")))
}

/// The DER SubjectPublicKeyInfo of a public JWK (RFC 5280, 3279, 5480,
/// 8410), for [`PublicJwk::from_spki_der`], which checks it.
fn spki_der(jwk: &Jwk, algorithm: Algorithm) -> Result<Vec<u8>, KeyError> {
    const RSA: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
    const EC: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    const P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x22];
    const P521: &[u8] = &[0x2B, 0x81, 0x04, 0x00, 0x23];
    const ED25519: &[u8] = &[0x2B, 0x65, 0x70];
    let wrong_type = || KeyError::WrongKeyType {
        algorithm,
        found: format!("{} {}", jwk.key_type(), jwk.curve().unwrap_or_default()),
    };
    let (identifier, key) = match (jwk.key_type(), jwk.curve()) {
        ("RSA", _) => {
            let rsa = tlv(
                0x30,
                &[integer(&member(jwk, "n")?), integer(&member(jwk, "e")?)].concat(),
            );
            (tlv(0x30, &[tlv(0x06, RSA), vec![0x05, 0x00]].concat()), rsa)
        }
        ("EC", Some(curve)) => {
            let oid = match curve {
                "P-256" => P256,
                "P-384" => P384,
                "P-521" => P521,
                _ => return Err(wrong_type()),
            };
            let point = [&[0x04][..], &member(jwk, "x")?, &member(jwk, "y")?].concat();
            (tlv(0x30, &[tlv(0x06, EC), tlv(0x06, oid)].concat()), point)
        }
        ("OKP", Some("Ed25519")) => (tlv(0x30, &tlv(0x06, ED25519)), member(jwk, "x")?),
        _ => return Err(wrong_type()),
    };
    let bits = tlv(0x03, &[&[0x00][..], &key].concat());
    Ok(tlv(0x30, &[identifier, bits].concat()))
}

/// A DER INTEGER of unsigned big-endian bytes.
fn integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let mut content = bytes[start..].to_vec();
    if content.first().is_none_or(|&b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    tlv(0x02, &content)
}

/// A DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_and_integers() {
        assert_eq!(tlv(0x04, &[1, 2]), [0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2C]);
        assert_eq!(integer(&[0x00, 0x00, 0x7F]), [0x02, 1, 0x7F]);
        assert_eq!(integer(&[0x80]), [0x02, 2, 0x00, 0x80]);
        assert_eq!(integer(&[0x01, 0x00, 0x01]), [0x02, 3, 0x01, 0x00, 0x01]);
    }

    #[test]
    fn every_algorithm_round_trips_through_josekit() {
        for algorithm in [
            Algorithm::RS256,
            Algorithm::PS384,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::ES512,
            Algorithm::EdDSA,
        ] {
            let key = SigningKey::generate(algorithm).unwrap();
            let private = Jwk::try_from(&key).unwrap();
            let backend = JosekitBackend::from_jwk(&private).unwrap();
            assert_eq!(backend.public_jwk(), key.public_jwk(), "{algorithm}");
            let public = Jwk::from(key.public_jwk());
            assert!(public.parameter("d").is_none());
            let der = spki_der(&public, algorithm).unwrap();
            assert_eq!(
                &PublicJwk::from_spki_der(&der, algorithm, Some(key.kid().clone())).unwrap(),
                key.public_jwk()
            );
        }
    }
}
