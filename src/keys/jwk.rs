//! Public JWKs (RFC 7517) and their thumbprints (RFC 7638).

use std::fmt;
use std::sync::Arc;

use serde::ser::SerializeMap;

use super::asn1::{self, PublicParts};
use super::{Algorithm, CertificateChain, EcCurve, KeyError, KeyKind, Kid};
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
/// A certificate-backed key's JWK also carries its chain: `x5c` (each
/// certificate's DER in standard base64, leaf first) and `x5t#S256` (the
/// base64url SHA-256 of the leaf's DER), RFC 7517 sections 4.7 and 4.9.
/// They are public data; the thumbprint and the default kid cover only the
/// required members (RFC 7638), so attaching a chain never changes them.
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
    /// The certificate chain of a certificate-backed key.
    chain: Option<Arc<CertificateChain>>,
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
        let parts = asn1::parse_spki(der).map_err(|reason| KeyError::Malformed {
            format: "SPKI DER",
            reason,
        })?;
        Self::from_parts(&parts, algorithm, kid)
    }

    /// Builds the JWK of a public key after checking that it fits
    /// `algorithm`. The kid defaults to the thumbprint.
    pub(crate) fn from_parts(
        parts: &PublicParts,
        algorithm: Algorithm,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let params = public_params(parts, algorithm)?;
        let kid = match kid {
            Some(kid) => kid,
            None => Kid::new(params.thumbprint()).expect("a thumbprint is a valid kid"),
        };
        Ok(PublicJwk {
            kid,
            alg: algorithm,
            params,
            chain: None,
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

    /// Whether `parts` (a certificate's public key) is this key: compared
    /// member by member, without the public-key checks (this key passed
    /// them), so a huge modulus in a certificate costs nothing.
    pub(crate) fn holds(&self, parts: &PublicParts) -> bool {
        match (&self.params, parts) {
            (PublicParams::Rsa { n, e }, PublicParts::Rsa { n: n2, e: e2 }) => {
                n.as_slice() == minimal(n2) && e.as_slice() == minimal(e2)
            }
            (PublicParams::Ec { crv, x, y }, PublicParts::Ec { curve, point }) => {
                *curve == Some(*crv)
                    && point.len() == 1 + x.len() + y.len()
                    && point[0] == 0x04
                    && point[1..=x.len()] == x[..]
                    && point[1 + x.len()..] == y[..]
            }
            (PublicParams::Ed25519 { x }, PublicParts::Ed25519 { x: x2 }) => x == x2,
            _ => false,
        }
    }

    /// The certificate chain published with this key (`x5c`), if it is a
    /// certificate-backed key.
    pub fn certificate_chain(&self) -> Option<&CertificateChain> {
        self.chain.as_deref()
    }

    /// Returns a copy that publishes `chain` (`x5c`, `x5t#S256`), after
    /// checking that its leaf certificate holds this public key. The kid is
    /// unchanged. A [`SigningBackend`](super::SigningBackend) whose key has
    /// a certificate builds its JWK this way.
    ///
    /// # Errors
    ///
    /// [`KeyError::CertificateKeyMismatch`] when the leaf holds another
    /// key.
    pub fn with_certificate_chain(mut self, chain: CertificateChain) -> Result<Self, KeyError> {
        chain.check_leaf(&self)?;
        self.chain = Some(Arc::new(chain));
        Ok(self)
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
        b64::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            canonical.as_bytes(),
        ))
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
        if let Some(chain) = &self.chain {
            map.serialize_entry("x5c", &chain.x5c())?;
            map.serialize_entry("x5t#S256", chain.x5t_s256())?;
        }
        map.end()
    }
}

impl fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicJwk")
            .field("kty", &self.key_type())
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field(
                "certificates",
                &self.chain.as_ref().map(|c| c.certificates().len()),
            )
            .finish_non_exhaustive()
    }
}

/// The longest RSA public exponent accepted, in bits: AWS-LC refuses
/// longer ones (a denial-of-service guard; real keys use 65537).
pub(crate) const MAX_RSA_EXPONENT_BITS: usize = 33;

/// Checks that a public key fits `algorithm` and keeps its public members.
fn public_params(parts: &PublicParts, algorithm: Algorithm) -> Result<PublicParams, KeyError> {
    let wrong = |found: String| KeyError::WrongKeyType { algorithm, found };
    match (parts, algorithm.key_kind()) {
        (PublicParts::Rsa { n, e }, KeyKind::Rsa) => {
            let (n, e) = (minimal(n), minimal(e));
            let bits = u32::try_from(bit_len(n)).unwrap_or(u32::MAX);
            if bits < 2048 {
                return Err(KeyError::RsaKeyTooSmall { bits });
            }
            // An exponent of 1 makes the "signature" the message itself; an
            // even one has no inverse modulo lambda(n); AWS-LC refuses one
            // longer than 33 bits.
            let odd = e.last().is_some_and(|b| b & 1 == 1);
            if bit_len(e) <= 1 || !odd || bit_len(e) > MAX_RSA_EXPONENT_BITS {
                return Err(KeyError::RsaBadExponent);
            }
            // A modulus anyone can factor or invert (small factor, prime,
            // ROCA) is never published.
            let Ok(verdict) = super::check_rsa_modulus(n, &super::NoLimit);
            verdict.map_err(KeyError::WeakKey)?;
            Ok(PublicParams::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
            })
        }
        (PublicParts::Ec { curve, point }, KeyKind::Ec(wanted)) => {
            if *curve != Some(wanted) {
                return Err(wrong(match curve {
                    Some(other) => format!("an EC key on {other}"),
                    None => "an EC key on an unsupported curve".to_owned(),
                }));
            }
            // An uncompressed point, checked on the curve by the parser.
            let len = wanted.coordinate_len();
            if point.len() != 1 + 2 * len || point[0] != 0x04 {
                return Err(KeyError::Crypto("not an uncompressed EC point".to_owned()));
            }
            Ok(PublicParams::Ec {
                crv: wanted,
                x: point[1..=len].to_vec(),
                y: point[1 + len..].to_vec(),
            })
        }
        (PublicParts::Ed25519 { x }, KeyKind::Ed25519) => {
            if x.len() != 32 {
                return Err(KeyError::Malformed {
                    format: "Ed25519 public key",
                    reason: format!("{} bytes, not 32", x.len()),
                });
            }
            // A small-order point lets anyone forge; a key generated or
            // imported from a seed never is one, a SPKI can be.
            super::check_ed25519(x).map_err(KeyError::WeakKey)?;
            Ok(PublicParams::Ed25519 { x: x.clone() })
        }
        (parts, _) => Err(wrong(describe(parts))),
    }
}

/// A short human description of a key, for error messages.
pub(crate) fn describe(parts: &PublicParts) -> String {
    match parts {
        PublicParts::Rsa { n, .. } => format!("an RSA key of {} bits", bit_len(minimal(n))),
        PublicParts::Ec {
            curve: Some(curve), ..
        } => format!("an EC key on {curve}"),
        PublicParts::Ec { curve: None, .. } => "an EC key on an unsupported curve".to_owned(),
        PublicParts::Ed25519 { .. } => "an Ed25519 key".to_owned(),
        PublicParts::Other(description) => description.clone(),
    }
}

/// The number of bits of a big-endian number without leading zeros.
pub(crate) fn bit_len(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(&top) => bytes.len() * 8 - top.leading_zeros() as usize,
    }
}

/// A big-endian number without its leading zero octets.
pub(crate) fn minimal(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}
