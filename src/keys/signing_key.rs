//! The in-process signing key: generate, import, export, sign.

use std::fmt;

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};
use serde_json::{Map, Value};

use super::jwk::{crypto, first_openssl_reason};
use super::{Algorithm, EcCurve, KeyError, KeyKind, Kid, PublicJwk, SignError, SigningBackend};
use crate::b64;

/// The largest RSA modulus accepted on import, in bits (OpenSSL's own limit).
const MAX_RSA_BITS: u32 = 16_384;

/// One private key, its algorithm and its key id.
///
/// The key is parsed once, when it is created or imported; signing reuses
/// the parsed key. `Debug` shows the kid and the algorithm, never key
/// material.
///
/// # Example
///
/// ```
/// use tower_jwt_signer::{Algorithm, SigningKey};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = SigningKey::generate(Algorithm::EdDSA)?;
/// // The default kid is the RFC 7638 thumbprint of the public key.
/// assert_eq!(key.kid().as_str(), key.public_jwk().thumbprint());
///
/// // Persist it and load it back: same kid.
/// let pem = key.to_pkcs8_pem()?;
/// let again = SigningKey::from_pkcs8_pem(&pem, Algorithm::EdDSA)?;
/// assert_eq!(again.kid(), key.kid());
///
/// // Refused: a key that does not fit the algorithm.
/// assert!(SigningKey::from_pkcs8_pem(&pem, Algorithm::ES256).is_err());
/// # Ok(())
/// # }
/// ```
pub struct SigningKey {
    jwk: PublicJwk,
    pkey: PKey<Private>,
    /// The EC key of an ES* key, taken out of `pkey` once so that signing
    /// goes straight to ECDSA on the digest.
    ec: Option<EcKey<Private>>,
}

impl SigningKey {
    /// Generates a fresh key for `algorithm` (RSA keys are 2048 bits).
    ///
    /// RSA generation takes tens to hundreds of milliseconds: call it from a
    /// blocking thread in async code.
    ///
    /// # Errors
    ///
    /// [`KeyError::Crypto`] if the cryptographic library fails.
    pub fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        Self::generate_with_rsa_bits(algorithm, 2048)
    }

    /// Generates a fresh key; for RSA algorithms, with a modulus of `bits`
    /// (2048, 3072 or 4096). `bits` is ignored for EC and Ed25519.
    ///
    /// # Errors
    ///
    /// [`KeyError::RsaKeySizeNotOffered`] for another RSA size,
    /// [`KeyError::Crypto`] if the cryptographic library fails.
    pub fn generate_with_rsa_bits(algorithm: Algorithm, bits: u32) -> Result<Self, KeyError> {
        let pkey = match algorithm.key_kind() {
            KeyKind::Rsa => {
                if !matches!(bits, 2048 | 3072 | 4096) {
                    return Err(KeyError::RsaKeySizeNotOffered { bits });
                }
                PKey::from_rsa(Rsa::generate(bits).map_err(crypto)?).map_err(crypto)?
            }
            KeyKind::Ec(curve) => {
                let group = EcGroup::from_curve_name(curve.nid()).map_err(crypto)?;
                PKey::from_ec_key(EcKey::generate(&group).map_err(crypto)?).map_err(crypto)?
            }
            KeyKind::Ed25519 => PKey::generate_ed25519().map_err(crypto)?,
        };
        Self::from_pkey(pkey, algorithm, None)
    }

    /// Imports a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// Encrypted keys and the traditional PKCS#1/SEC1 forms are refused with
    /// a message that says how to convert them.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] saying why the key was refused: not PEM, public only,
    /// too small, the wrong type for `algorithm`, inconsistent.
    pub fn from_pkcs8_pem(pem: impl AsRef<[u8]>, algorithm: Algorithm) -> Result<Self, KeyError> {
        const FORMAT: &str = "PKCS#8 PEM";
        let pem = pem.as_ref();
        let malformed = |reason: &str| KeyError::Malformed {
            format: FORMAT,
            reason: reason.to_owned(),
        };
        let label = pem_label(pem).ok_or_else(|| malformed("no \"-----BEGIN ...-----\" line"))?;
        match label {
            "PRIVATE KEY" => {}
            "PUBLIC KEY" | "RSA PUBLIC KEY" | "CERTIFICATE" | "TRUSTED CERTIFICATE" => {
                return Err(KeyError::PublicOnly { format: FORMAT });
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(malformed(
                    "encrypted keys are not supported; decrypt with `openssl pkcs8 -nocrypt`",
                ));
            }
            "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                return Err(malformed(
                    "a traditional PKCS#1/SEC1 key; convert it with `openssl pkcs8 -topk8 -nocrypt`",
                ));
            }
            _ => return Err(malformed("the PEM block is not a PRIVATE KEY")),
        }
        // The callback refuses any passphrase prompt: OpenSSL's default one
        // would read from the terminal.
        let pkey = PKey::private_key_from_pem_callback(pem, |_| Ok(0)).map_err(|err| {
            KeyError::Malformed {
                format: FORMAT,
                reason: first_openssl_reason(&err),
            }
        })?;
        Self::from_pkey(pkey, algorithm, None)
    }

    /// Imports a DER-encoded PKCS#8 `PrivateKeyInfo`.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] saying why the key was refused.
    pub fn from_pkcs8_der(der: &[u8], algorithm: Algorithm) -> Result<Self, KeyError> {
        const FORMAT: &str = "PKCS#8 DER";
        match PKey::private_key_from_pkcs8(der) {
            Ok(pkey) => Self::from_pkey(pkey, algorithm, None),
            Err(err) => {
                if PKey::public_key_from_der(der).is_ok()
                    || openssl::x509::X509::from_der(der).is_ok()
                {
                    Err(KeyError::PublicOnly { format: FORMAT })
                } else {
                    Err(KeyError::Malformed {
                        format: FORMAT,
                        reason: first_openssl_reason(&err),
                    })
                }
            }
        }
    }

    /// Imports a private JWK (RFC 7517, RFC 7518 section 6, RFC 8037).
    ///
    /// The algorithm is `algorithm` when given, else the JWK's `alg`, else
    /// inferred from the curve (EC, Ed25519); an RSA JWK needs one of the
    /// two. The JWK's `kid`, when present, is kept (and validated);
    /// otherwise the kid is the thumbprint.
    ///
    /// RSA JWKs need all of `n e d p q dp dq qi`; EC JWKs need full-length
    /// `x y d`; Ed25519 JWKs need `x d`. The public members must match the
    /// private key.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] saying why the key was refused, including
    /// [`KeyError::AlgorithmMismatch`] when the JWK's `alg` disagrees with
    /// `algorithm` and [`KeyError::PublicOnly`] when it has no `d`.
    pub fn from_jwk(jwk: &str, algorithm: Option<Algorithm>) -> Result<Self, KeyError> {
        let value: Value =
            serde_json::from_str(jwk).map_err(|err| jwk_malformed(err.to_string()))?;
        let Value::Object(map) = value else {
            return Err(jwk_malformed("not a JSON object"));
        };
        Self::from_jwk_map(&map, algorithm)
    }

    /// Imports a private JWK already parsed as a JSON object; see
    /// [`from_jwk`](Self::from_jwk).
    ///
    /// # Errors
    ///
    /// As [`from_jwk`](Self::from_jwk).
    pub fn from_jwk_map(
        map: &Map<String, Value>,
        algorithm: Option<Algorithm>,
    ) -> Result<Self, KeyError> {
        let kty = str_member(map, "kty")?.ok_or_else(|| jwk_malformed("\"kty\" is missing"))?;
        let jwk_alg = match str_member(map, "alg")? {
            None => None,
            Some(name) => match name.parse::<Algorithm>() {
                Ok(alg) => Some(alg),
                Err(_) => {
                    return Err(KeyError::AlgorithmMismatch {
                        jwk_alg: name.chars().take(64).collect(),
                        requested: algorithm,
                    });
                }
            },
        };
        if let (Some(requested), Some(jwk_alg)) = (algorithm, jwk_alg)
            && requested != jwk_alg
        {
            return Err(KeyError::AlgorithmMismatch {
                jwk_alg: jwk_alg.to_string(),
                requested: Some(requested),
            });
        }
        let kid = str_member(map, "kid")?.map(Kid::new).transpose()?;
        if let Some(key_use) = str_member(map, "use")?
            && key_use != "sig"
        {
            return Err(jwk_malformed("\"use\" is not \"sig\""));
        }
        let crv = str_member(map, "crv")?;
        let algorithm = match (algorithm.or(jwk_alg), kty, crv) {
            (Some(alg), _, _) => alg,
            (None, "EC", Some("P-256")) => Algorithm::ES256,
            (None, "EC", Some("P-384")) => Algorithm::ES384,
            (None, "EC", Some("P-521")) => Algorithm::ES512,
            (None, "OKP", Some("Ed25519")) => Algorithm::EdDSA,
            (None, "RSA", _) => return Err(KeyError::AlgorithmRequired),
            (None, _, _) => {
                return Err(KeyError::Malformed {
                    format: "JWK",
                    reason: format!(
                        "cannot infer an algorithm for kty {:?} crv {:?}",
                        truncate(kty),
                        crv.map(truncate)
                    ),
                });
            }
        };
        if kty == "oct" {
            // A symmetric key, not a public one: say so before looking for `d`.
            return Err(KeyError::WrongKeyType {
                algorithm,
                found: "a symmetric (oct) key".to_owned(),
            });
        }
        if map.get("d").is_none() {
            return Err(KeyError::PublicOnly { format: "JWK" });
        }
        let pkey = match kty {
            "RSA" => rsa_from_jwk(map)?,
            "EC" => {
                let crv = crv.ok_or_else(|| jwk_malformed("\"crv\" is missing"))?;
                let Some(curve) = EcCurve::from_name(crv) else {
                    return Err(KeyError::WrongKeyType {
                        algorithm,
                        found: format!("an EC key on {:?}", truncate(crv)),
                    });
                };
                ec_from_jwk(map, curve)?
            }
            "OKP" => match crv {
                Some("Ed25519") => ed25519_from_jwk(map)?,
                Some(other) => {
                    return Err(KeyError::WrongKeyType {
                        algorithm,
                        found: format!("an OKP key on {:?}", truncate(other)),
                    });
                }
                None => return Err(jwk_malformed("\"crv\" is missing")),
            },
            other => {
                return Err(KeyError::Malformed {
                    format: "JWK",
                    reason: format!("unknown kty {:?}", truncate(other)),
                });
            }
        };
        Self::from_pkey(pkey, algorithm, kid)
    }

    /// Validates an OpenSSL key against `algorithm` and builds the signer.
    fn from_pkey(
        pkey: PKey<Private>,
        algorithm: Algorithm,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        if pkey.id() == Id::RSA && pkey.bits() > MAX_RSA_BITS {
            return Err(KeyError::Malformed {
                format: "RSA key",
                reason: format!(
                    "a modulus of {} bits is larger than the {MAX_RSA_BITS} supported",
                    pkey.bits()
                ),
            });
        }
        // Type, curve, size and exponent checks, and the public members.
        let jwk = PublicJwk::from_public_key(&pkey, algorithm, kid)?;
        check_consistency(&pkey)?;
        let ec = match algorithm.key_kind() {
            KeyKind::Ec(_) => Some(pkey.ec_key().map_err(crypto)?),
            _ => None,
        };
        Ok(SigningKey { jwk, pkey, ec })
    }

    /// Returns this key with a custom key id instead of the thumbprint.
    ///
    /// Use [`Kid::new`] to validate the id first.
    #[must_use]
    pub fn with_kid(mut self, kid: Kid) -> Self {
        self.jwk = self.jwk.with_kid(kid);
        self
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        self.jwk.kid()
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.jwk.algorithm()
    }

    /// The public JWK, as published in the JWKS.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// Signs the JWS signing input; see [`SigningBackend::sign`].
    ///
    /// # Errors
    ///
    /// [`SignError::Crypto`] if OpenSSL fails.
    pub fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.sign_raw(signing_input)
            .map_err(|err| SignError::Crypto(first_openssl_reason(&err)))
    }

    /// Signs with OpenSSL directly, on the key parsed once: ECDSA on the
    /// digest (then `r || s`, each padded to the curve's length), EdDSA and
    /// RSA through one-shot `EVP_DigestSign`.
    fn sign_raw(&self, input: &[u8]) -> Result<Vec<u8>, ErrorStack> {
        let algorithm = self.algorithm();
        match (algorithm.key_kind(), &self.ec) {
            (KeyKind::Ec(curve), Some(ec)) => {
                let signature = match curve {
                    EcCurve::P256 => EcdsaSig::sign(&openssl::sha::sha256(input), ec)?,
                    EcCurve::P384 => EcdsaSig::sign(&openssl::sha::sha384(input), ec)?,
                    EcCurve::P521 => EcdsaSig::sign(&openssl::sha::sha512(input), ec)?,
                };
                let len = i32::try_from(curve.coordinate_len()).expect("small");
                let mut out = signature.r().to_vec_padded(len)?;
                out.extend_from_slice(&signature.s().to_vec_padded(len)?);
                Ok(out)
            }
            (KeyKind::Ed25519, _) => {
                Signer::new_without_digest(&self.pkey)?.sign_oneshot_to_vec(input)
            }
            _ => {
                let (digest, pss) = match algorithm {
                    Algorithm::RS256 => (MessageDigest::sha256(), false),
                    Algorithm::RS384 => (MessageDigest::sha384(), false),
                    Algorithm::RS512 => (MessageDigest::sha512(), false),
                    Algorithm::PS256 => (MessageDigest::sha256(), true),
                    Algorithm::PS384 => (MessageDigest::sha384(), true),
                    _ => (MessageDigest::sha512(), true),
                };
                let mut signer = Signer::new(digest, &self.pkey)?;
                if pss {
                    // RFC 7518 section 3.5: MGF1 with the same hash, a salt
                    // as long as the hash.
                    signer.set_rsa_padding(Padding::PKCS1_PSS)?;
                    signer.set_rsa_mgf1_md(digest)?;
                    signer.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
                }
                signer.sign_oneshot_to_vec(input)
            }
        }
    }

    /// Exports the private key as PKCS#8 PEM, for persistence. The kid is
    /// not part of PEM: keep it alongside if it is not the thumbprint.
    ///
    /// The result is secret: store it with restrictive permissions.
    ///
    /// # Errors
    ///
    /// [`KeyError::Crypto`] if OpenSSL fails.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let pem = self.pkey.private_key_to_pem_pkcs8().map_err(crypto)?;
        String::from_utf8(pem).map_err(|_| KeyError::Crypto("PEM is not ASCII".to_owned()))
    }

    /// Exports the private key as DER-encoded PKCS#8.
    ///
    /// # Errors
    ///
    /// [`KeyError::Crypto`] if OpenSSL fails.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, KeyError> {
        self.pkey.private_key_to_pkcs8().map_err(crypto)
    }

    /// Exports the private key as a JWK with its `kid` and `alg`, for
    /// persistence; [`from_jwk`](Self::from_jwk) reads it back with the same
    /// kid. EC keys include `x` and `y`.
    ///
    /// The result is secret: store it with restrictive permissions.
    ///
    /// # Errors
    ///
    /// [`KeyError::Crypto`] if OpenSSL fails.
    pub fn to_private_jwk(&self) -> Result<String, KeyError> {
        let mut map = match self.jwk.to_value() {
            Value::Object(map) => map,
            _ => return Err(KeyError::Crypto("public JWK is not an object".to_owned())),
        };
        match self.algorithm().key_kind() {
            KeyKind::Rsa => {
                let rsa = self.pkey.rsa().map_err(crypto)?;
                let missing = || KeyError::Crypto("RSA key lacks CRT parameters".to_owned());
                map.insert("d".into(), b64::encode(rsa.d().to_vec()).into());
                for (name, value) in [
                    ("p", rsa.p()),
                    ("q", rsa.q()),
                    ("dp", rsa.dmp1()),
                    ("dq", rsa.dmq1()),
                    ("qi", rsa.iqmp()),
                ] {
                    let value = value.ok_or_else(missing)?;
                    map.insert(name.into(), b64::encode(value.to_vec()).into());
                }
            }
            KeyKind::Ec(curve) => {
                let ec = self.pkey.ec_key().map_err(crypto)?;
                let len = i32::try_from(curve.coordinate_len()).expect("small");
                let d = ec.private_key().to_vec_padded(len).map_err(crypto)?;
                map.insert("d".into(), b64::encode(d).into());
            }
            KeyKind::Ed25519 => {
                let d = self.pkey.raw_private_key().map_err(crypto)?;
                map.insert("d".into(), b64::encode(d).into());
            }
        }
        // "use" belongs to published keys; a stored key does not need it.
        map.remove("use");
        serde_json::to_string(&map).map_err(|err| KeyError::Crypto(err.to_string()))
    }
}

impl SigningBackend for SigningKey {
    fn public_jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        SigningKey::sign(self, signing_input)
    }
}

impl Clone for SigningKey {
    fn clone(&self) -> Self {
        SigningKey {
            jwk: self.jwk.clone(),
            pkey: self.pkey.clone(),
            ec: self.ec.clone(),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", self.kid())
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// Checks that the private and public halves belong together.
fn check_consistency(pkey: &PKey<Private>) -> Result<(), KeyError> {
    let inconsistent = |reason: &str| KeyError::InconsistentKey {
        reason: reason.to_owned(),
    };
    match pkey.id() {
        Id::RSA => {
            let rsa = pkey.rsa().map_err(crypto)?;
            match rsa.check_key() {
                Ok(true) => Ok(()),
                _ => Err(inconsistent(
                    "the RSA private components do not match the modulus",
                )),
            }
        }
        Id::EC => {
            let ec = pkey.ec_key().map_err(crypto)?;
            ec.check_key()
                .map_err(|_| inconsistent("the EC public point does not match the private scalar"))
        }
        // Ed25519 public keys are derived from the seed when parsed from
        // PKCS#8; JWK import compares `x` explicitly.
        _ => Ok(()),
    }
}

/// The label of the first PEM block, if any.
fn pem_label(pem: &[u8]) -> Option<&str> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = pem.windows(BEGIN.len()).position(|w| w == BEGIN)? + BEGIN.len();
    let rest = &pem[start..];
    let end = rest.windows(5).position(|w| w == b"-----")?;
    std::str::from_utf8(&rest[..end]).ok()
}

fn jwk_malformed(reason: impl Into<String>) -> KeyError {
    KeyError::Malformed {
        format: "JWK",
        reason: reason.into(),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// A string member, `None` when absent, an error when not a string.
fn str_member<'a>(map: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, KeyError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(jwk_malformed(format!("\"{name}\" is not a string"))),
    }
}

/// A required base64url member, decoded.
fn bytes_member(map: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    let text =
        str_member(map, name)?.ok_or_else(|| jwk_malformed(format!("\"{name}\" is missing")))?;
    b64::decode(text).map_err(|_| jwk_malformed(format!("\"{name}\" is not base64url")))
}

fn bignum_member(map: &Map<String, Value>, name: &str) -> Result<BigNum, KeyError> {
    BigNum::from_slice(&bytes_member(map, name)?).map_err(crypto)
}

fn rsa_from_jwk(map: &Map<String, Value>) -> Result<PKey<Private>, KeyError> {
    let n = bignum_member(map, "n")?;
    if n.num_bits() > MAX_RSA_BITS as i32 {
        return Err(jwk_malformed(format!(
            "a modulus of {} bits is larger than the {MAX_RSA_BITS} supported",
            n.num_bits()
        )));
    }
    if n.num_bits() < 2048 {
        return Err(KeyError::RsaKeyTooSmall {
            bits: u32::try_from(n.num_bits()).unwrap_or(0),
        });
    }
    let rsa = Rsa::from_private_components(
        n,
        bignum_member(map, "e")?,
        bignum_member(map, "d")?,
        bignum_member(map, "p")?,
        bignum_member(map, "q")?,
        bignum_member(map, "dp")?,
        bignum_member(map, "dq")?,
        bignum_member(map, "qi")?,
    )
    .map_err(crypto)?;
    PKey::from_rsa(rsa).map_err(crypto)
}

fn ec_from_jwk(map: &Map<String, Value>, curve: EcCurve) -> Result<PKey<Private>, KeyError> {
    let len = curve.coordinate_len();
    let [d, x, y] = ["d", "x", "y"].map(|name| bytes_member(map, name));
    let (d, x, y) = (d?, x?, y?);
    for (name, value) in [("d", &d), ("x", &x), ("y", &y)] {
        if value.len() != len {
            return Err(jwk_malformed(format!(
                "\"{name}\" is {} bytes, {curve} needs exactly {len}",
                value.len()
            )));
        }
    }
    let group = EcGroup::from_curve_name(curve.nid()).map_err(crypto)?;
    let d = BigNum::from_slice(&d).map_err(crypto)?;
    let mut ctx = BigNumContext::new().map_err(crypto)?;
    let mut point = EcPoint::new(&group).map_err(crypto)?;
    point.mul_generator2(&group, &d, &mut ctx).map_err(crypto)?;
    let ec = EcKey::from_private_components(&group, &d, &point).map_err(crypto)?;
    ec.check_key().map_err(|_| KeyError::InconsistentKey {
        reason: format!("\"d\" is not a valid {curve} private scalar"),
    })?;
    let pkey = PKey::from_ec_key(ec).map_err(crypto)?;
    let derived = PublicJwk::from_public_key(&pkey, curve_alg(curve), None)?.to_value();
    if derived["x"] != b64::encode(&x) || derived["y"] != b64::encode(&y) {
        return Err(KeyError::InconsistentKey {
            reason: "\"x\"/\"y\" do not match the private key \"d\"".to_owned(),
        });
    }
    Ok(pkey)
}

fn curve_alg(curve: EcCurve) -> Algorithm {
    match curve {
        EcCurve::P256 => Algorithm::ES256,
        EcCurve::P384 => Algorithm::ES384,
        EcCurve::P521 => Algorithm::ES512,
    }
}

fn ed25519_from_jwk(map: &Map<String, Value>) -> Result<PKey<Private>, KeyError> {
    let d = bytes_member(map, "d")?;
    let x = bytes_member(map, "x")?;
    if d.len() != 32 || x.len() != 32 {
        return Err(jwk_malformed(
            "Ed25519 \"d\" and \"x\" must be 32 bytes each",
        ));
    }
    let pkey = PKey::private_key_from_raw_bytes(&d, Id::ED25519).map_err(crypto)?;
    if pkey.raw_public_key().map_err(crypto)? != x {
        return Err(KeyError::InconsistentKey {
            reason: "\"x\" does not match the private key \"d\"".to_owned(),
        });
    }
    Ok(pkey)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symmetric JWK used to be refused as "holds only a public key".
    #[test]
    fn symmetric_jwk_is_refused_as_symmetric() {
        let oct = r#"{"kty":"oct","k":"c2VjcmV0","alg":"ES256"}"#;
        let err = SigningKey::from_jwk(oct, None).unwrap_err();
        assert!(
            matches!(&err, KeyError::WrongKeyType { algorithm: Algorithm::ES256, found } if found.contains("oct")),
            "{err:?}"
        );
    }
}
