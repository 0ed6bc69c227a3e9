//! Public JWKs (RFC 7517) and their thumbprints (RFC 7638).

use std::fmt;

use openssl::bn::BigNumContext;
use openssl::pkey::{HasPublic, Id, PKeyRef};
use serde::ser::SerializeMap;

use super::{Algorithm, EcCurve, KeyError, KeyKind, Kid};
use crate::b64;

/// The public half of a signing key, as published in the JWKS.
///
/// It carries only the public members (`kty` + `n`, `e` for RSA; `crv`,
/// `x`, `y` for EC; `crv`, `x` for Ed25519) plus `kid`, `alg` and
/// `use: "sig"`. It is built from the public key itself, never by filtering
/// a private JWK, so a private member can never leak into it. EC
/// coordinates are always full length and the RSA modulus has no leading
/// zero octet.
///
/// ```
/// use tower_jwt_signer::{Algorithm, SigningKey};
///
/// let key = SigningKey::generate(Algorithm::ES256).unwrap();
/// let jwk = serde_json::to_value(key.public_jwk()).unwrap();
/// assert_eq!(jwk["kty"], "EC");
/// assert_eq!(jwk["crv"], "P-256");
/// assert_eq!(jwk["use"], "sig");
/// assert_eq!(jwk["kid"], key.kid().as_str());
/// assert!(jwk.get("d").is_none());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PublicJwk {
    kid: Kid,
    alg: Algorithm,
    params: PublicParams,
}

#[derive(Clone, PartialEq, Eq)]
enum PublicParams {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        crv: EcCurve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

impl PublicJwk {
    /// Builds the public JWK of a DER-encoded SubjectPublicKeyInfo, for a
    /// [`SigningBackend`](super::SigningBackend) whose private key lives elsewhere (an HSM,
    /// a KMS). With no `kid`, the RFC 7638 thumbprint is used.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the DER does not parse, or the key does not fit the
    /// algorithm (RSA under 2048 bits, a bad exponent, the wrong curve, ...),
    /// or anyone could forge signatures for it ([`KeyError::WeakKey`]).
    pub fn from_spki_der(
        der: &[u8],
        algorithm: Algorithm,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let pkey =
            openssl::pkey::PKey::public_key_from_der(der).map_err(|err| KeyError::Malformed {
                format: "SPKI DER",
                reason: first_openssl_reason(&err),
            })?;
        Self::from_public_key(&pkey, algorithm, kid)
    }

    /// Builds the JWK of an OpenSSL public key after checking that it fits
    /// `algorithm`. The kid defaults to the thumbprint.
    pub(crate) fn from_public_key<T: HasPublic>(
        pkey: &PKeyRef<T>,
        algorithm: Algorithm,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let params = public_params(pkey, algorithm)?;
        let kid = match kid {
            Some(kid) => kid,
            None => Kid::new(params.thumbprint()).expect("a thumbprint is a valid kid"),
        };
        Ok(PublicJwk {
            kid,
            alg: algorithm,
            params,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// The algorithm this key signs with (`alg`).
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key type (`kty`): `"RSA"`, `"EC"` or `"OKP"`.
    pub fn key_type(&self) -> &'static str {
        match self.params {
            PublicParams::Rsa { .. } => "RSA",
            PublicParams::Ec { .. } => "EC",
            PublicParams::Ed25519 { .. } => "OKP",
        }
    }

    /// The RFC 7638 thumbprint: the base64url SHA-256 of the required
    /// public members in lexicographic order, without whitespace.
    pub fn thumbprint(&self) -> String {
        self.params.thumbprint()
    }

    /// The JWK as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a public JWK always serialises")
    }

    /// Returns a copy with another key id.
    pub fn with_kid(mut self, kid: Kid) -> Self {
        self.kid = kid;
        self
    }
}

impl PublicParams {
    fn thumbprint(&self) -> String {
        let canonical = match self {
            PublicParams::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64::encode(e),
                b64::encode(n)
            ),
            PublicParams::Ec { crv, x, y } => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                crv.name(),
                b64::encode(x),
                b64::encode(y)
            ),
            PublicParams::Ed25519 { x } => {
                format!(
                    r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                    b64::encode(x)
                )
            }
        };
        b64::encode(openssl::sha::sha256(canonical.as_bytes()))
    }
}

impl serde::Serialize for PublicJwk {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kty", self.key_type())?;
        match &self.params {
            PublicParams::Rsa { n, e } => {
                map.serialize_entry("n", &b64::encode(n))?;
                map.serialize_entry("e", &b64::encode(e))?;
            }
            PublicParams::Ec { crv, x, y } => {
                map.serialize_entry("crv", crv.name())?;
                map.serialize_entry("x", &b64::encode(x))?;
                map.serialize_entry("y", &b64::encode(y))?;
            }
            PublicParams::Ed25519 { x } => {
                map.serialize_entry("crv", "Ed25519")?;
                map.serialize_entry("x", &b64::encode(x))?;
            }
        }
        map.serialize_entry("kid", self.kid.as_str())?;
        map.serialize_entry("alg", self.alg.as_str())?;
        map.serialize_entry("use", "sig")?;
        map.end()
    }
}

impl fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicJwk")
            .field("kty", &self.key_type())
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Checks that `pkey` fits `algorithm` and extracts its public members.
fn public_params<T: HasPublic>(
    pkey: &PKeyRef<T>,
    algorithm: Algorithm,
) -> Result<PublicParams, KeyError> {
    let wrong = |found: String| KeyError::WrongKeyType { algorithm, found };
    match (pkey.id(), algorithm.key_kind()) {
        (Id::RSA, KeyKind::Rsa) => {
            let rsa = pkey.rsa().map_err(crypto)?;
            let bits = u32::try_from(rsa.n().num_bits()).unwrap_or(0);
            if bits < 2048 {
                return Err(KeyError::RsaKeyTooSmall { bits });
            }
            let e = rsa.e();
            // An exponent of 1 makes the "signature" the message itself; an
            // even one has no inverse modulo lambda(n).
            if e.num_bits() <= 1 || !e.is_bit_set(0) {
                return Err(KeyError::RsaBadExponent);
            }
            // A modulus anyone can factor or invert (small factor, prime,
            // ROCA) is never published.
            let Ok(verdict) = super::check_rsa_modulus(rsa.n(), &super::NoLimit);
            verdict.map_err(KeyError::WeakKey)?;
            // BigNum::to_vec is minimal big-endian: no leading zero octet.
            Ok(PublicParams::Rsa {
                n: rsa.n().to_vec(),
                e: e.to_vec(),
            })
        }
        (Id::EC, KeyKind::Ec(curve)) => {
            let ec = pkey.ec_key().map_err(crypto)?;
            let found = ec.group().curve_name().and_then(EcCurve::from_nid);
            if found != Some(curve) {
                return Err(wrong(match found {
                    Some(other) => format!("an EC key on {other}"),
                    None => "an EC key on an unsupported curve".to_owned(),
                }));
            }
            let mut ctx = BigNumContext::new().map_err(crypto)?;
            let mut x = openssl::bn::BigNum::new().map_err(crypto)?;
            let mut y = openssl::bn::BigNum::new().map_err(crypto)?;
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .map_err(crypto)?;
            let len = i32::try_from(curve.coordinate_len()).expect("small");
            Ok(PublicParams::Ec {
                crv: curve,
                x: x.to_vec_padded(len).map_err(crypto)?,
                y: y.to_vec_padded(len).map_err(crypto)?,
            })
        }
        (Id::ED25519, KeyKind::Ed25519) => {
            let x = pkey.raw_public_key().map_err(crypto)?;
            // A small-order point lets anyone forge; a key generated or
            // imported from a seed never is one, a SPKI can be.
            super::check_ed25519(&x).map_err(KeyError::WeakKey)?;
            Ok(PublicParams::Ed25519 { x })
        }
        (id, _) => Err(wrong(describe_key(pkey, id))),
    }
}

/// A short human description of a key, for error messages.
pub(crate) fn describe_key<T: HasPublic>(pkey: &PKeyRef<T>, id: Id) -> String {
    match id {
        Id::RSA => format!("an RSA key of {} bits", pkey.bits()),
        Id::RSA_PSS => "an RSA-PSS restricted key (use a plain rsaEncryption key)".to_owned(),
        Id::EC => match pkey
            .ec_key()
            .ok()
            .and_then(|ec| ec.group().curve_name())
            .and_then(EcCurve::from_nid)
        {
            Some(curve) => format!("an EC key on {curve}"),
            None => "an EC key on an unsupported curve".to_owned(),
        },
        Id::ED25519 => "an Ed25519 key".to_owned(),
        Id::ED448 => "an Ed448 key (not supported)".to_owned(),
        Id::X25519 | Id::X448 => "a key-agreement key (X25519/X448), not a signing key".to_owned(),
        Id::DSA => "a DSA key".to_owned(),
        Id::DH => "a Diffie-Hellman key".to_owned(),
        other => format!("a key of unsupported type (OpenSSL id {})", other.as_raw()),
    }
}

pub(crate) fn crypto(err: openssl::error::ErrorStack) -> KeyError {
    KeyError::Crypto(first_openssl_reason(&err))
}

/// The first reason OpenSSL gives, without file names or addresses.
pub(crate) fn first_openssl_reason(err: &openssl::error::ErrorStack) -> String {
    err.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_owned))
        .unwrap_or_else(|| "unrecognised data".to_owned())
}
