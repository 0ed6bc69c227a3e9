//! The in-process signing key: generate, import, export, sign.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::{AsBigEndian, AsDer};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Map, Value};

use super::asn1::{self, PrivateParts, PublicParts};
use super::jwk::{MAX_RSA_EXPONENT_BITS, bit_len, describe, minimal};
use super::{
    Algorithm, CertificateChain, EcCurve, KeyError, KeyKind, Kid, PublicJwk, SignError,
    SigningBackend,
};
use crate::b64;

/// The largest RSA modulus accepted on import, in bits: aws-lc-rs signs
/// with moduli of 2048 to 8192 bits.
const MAX_RSA_BITS: u32 = 8192;

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
#[derive(Clone)]
pub struct SigningKey {
    jwk: PublicJwk,
    /// The key as aws-lc-rs holds it, parsed once: what signs.
    signer: Arc<Signer>,
}

/// An aws-lc-rs key pair with what its algorithm needs to sign.
enum Signer {
    Rsa {
        pair: aws_lc_rs::signature::RsaKeyPair,
        /// PKCS#1 v1.5 or PSS (salt as long as the hash, MGF1 with the
        /// same hash: RFC 7518 section 3.5) with the algorithm's hash.
        encoding: &'static aws_lc_rs::signature::RsaSignatureEncoding,
    },
    /// ECDSA with the fixed-length `r || s` signature JWS uses.
    Ecdsa(aws_lc_rs::signature::EcdsaKeyPair),
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
}

impl Signer {
    /// The RSA encoding of an RS* or PS* algorithm: PKCS#1 v1.5, or PSS
    /// with MGF1 and a salt as long as the hash (RFC 7518 section 3.5).
    fn rsa_encoding(algorithm: Algorithm) -> &'static sig::RsaSignatureEncoding {
        match algorithm {
            Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
            Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
            Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
            Algorithm::PS256 => &sig::RSA_PSS_SHA256,
            Algorithm::PS384 => &sig::RSA_PSS_SHA384,
            _ => &sig::RSA_PSS_SHA512,
        }
    }

    /// The fixed-signature ECDSA algorithm of a curve.
    fn ecdsa_algorithm(curve: EcCurve) -> &'static sig::EcdsaSigningAlgorithm {
        match curve {
            EcCurve::P256 => &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            EcCurve::P384 => &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            EcCurve::P521 => &sig::ECDSA_P521_SHA512_FIXED_SIGNING,
        }
    }

    /// The public key, as a `SubjectPublicKeyInfo` would hold it.
    fn public_parts(&self) -> Result<PublicParts, KeyError> {
        Ok(match self {
            Signer::Rsa { pair, .. } => {
                // aws-lc-rs's public key is the DER RSAPublicKey (RFC 8017).
                let failed = |_| KeyError::Crypto("cannot read the RSA public key".to_owned());
                let public =
                    pkcs1::RsaPublicKey::try_from(pair.public_key().as_ref()).map_err(failed)?;
                PublicParts::Rsa {
                    n: public.modulus.as_bytes().to_vec(),
                    e: public.public_exponent.as_bytes().to_vec(),
                }
            }
            Signer::Ecdsa(pair) => PublicParts::Ec {
                curve: Some(match pair.algorithm() {
                    a if std::ptr::eq(a, &sig::ECDSA_P256_SHA256_FIXED_SIGNING) => EcCurve::P256,
                    a if std::ptr::eq(a, &sig::ECDSA_P384_SHA384_FIXED_SIGNING) => EcCurve::P384,
                    _ => EcCurve::P521,
                }),
                point: pair.public_key().as_ref().to_vec(),
            },
            Signer::Ed25519(pair) => PublicParts::Ed25519 {
                x: pair.public_key().as_ref().to_vec(),
            },
        })
    }

    /// The private key as a PKCS#8 `PrivateKeyInfo` (v1).
    fn to_pkcs8(&self) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        Ok(match self {
            Signer::Rsa { pair, .. } => pair.as_der()?.as_ref().to_vec(),
            Signer::Ecdsa(pair) => pair.to_pkcs8v1()?.as_ref().to_vec(),
            Signer::Ed25519(pair) => pair.to_pkcs8v1()?.as_ref().to_vec(),
        })
    }

    /// The JWS signature of `input`: RSA as long as the modulus, ECDSA as
    /// `r || s` (each as long as the curve's coordinates), Ed25519 64 bytes.
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        // aws-lc-rs ignores the generator it is handed: AWS-LC draws its
        // own randomness (RSA-PSS salts, ECDSA nonces).
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Signer::Rsa { pair, encoding } => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(*encoding, &rng, input, &mut signature)?;
                Ok(signature)
            }
            Signer::Ecdsa(pair) => Ok(pair.sign(&rng, input)?.as_ref().to_vec()),
            Signer::Ed25519(pair) => Ok(pair.sign(input).as_ref().to_vec()),
        }
    }
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
        let failed = |_| KeyError::Crypto("aws-lc-rs could not generate the key".to_owned());
        // Each fresh key goes through the importer's checks, as any other.
        let der = match algorithm.key_kind() {
            KeyKind::Rsa => {
                let size = match bits {
                    2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                    3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                    4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                    _ => return Err(KeyError::RsaKeySizeNotOffered { bits }),
                };
                let pair = RsaKeyPair::generate(size).map_err(failed)?;
                pair.as_der().map_err(failed)?.as_ref().to_vec()
            }
            KeyKind::Ec(curve) => EcdsaKeyPair::generate(Signer::ecdsa_algorithm(curve))
                .and_then(|pair| pair.to_pkcs8v1())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            KeyKind::Ed25519 => Ed25519KeyPair::generate()
                .and_then(|pair| pair.to_pkcs8v1())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
        };
        Self::from_der(&der, algorithm, "PKCS#8 DER")
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
        let der = asn1::pem_decode(pem, "PRIVATE KEY").map_err(|reason| KeyError::Malformed {
            format: FORMAT,
            reason,
        })?;
        Self::from_der(&der, algorithm, FORMAT)
    }

    /// Imports a DER-encoded PKCS#8 `PrivateKeyInfo`.
    ///
    /// # Errors
    ///
    /// A [`KeyError`] saying why the key was refused.
    pub fn from_pkcs8_der(der: &[u8], algorithm: Algorithm) -> Result<Self, KeyError> {
        Self::from_der(der, algorithm, "PKCS#8 DER")
    }

    /// Imports a private key with its X.509 certificate chain, both PEM:
    /// the `tls.key` / `tls.crt` pair that cert-manager (or any PKI) writes.
    ///
    /// The key may be PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or
    /// SEC 1 (`EC PRIVATE KEY`, with its named curve), unencrypted; the
    /// chain is one or more `CERTIFICATE` blocks, leaf first (see
    /// [`CertificateChain::from_pem`]). The leaf must hold this key's public
    /// key. The kid stays the RFC 7638 thumbprint of the public key: use
    /// [`with_kid`](Self::with_kid) for another one.
    ///
    /// The key signs only while every certificate of the chain is valid:
    /// the signer refuses to sign with it before `notBefore` or after
    /// `notAfter` (see the [signer's status table](crate::signer#answers-the-signer-gives-itself)).
    ///
    /// # Errors
    ///
    /// A [`KeyError`] for the key as [`from_pkcs8_pem`](Self::from_pkcs8_pem)
    /// gives; [`KeyError::CertificateMalformed`] for a chain that cannot be
    /// read; [`KeyError::CertificateKeyMismatch`] when the leaf certificate
    /// is not this key's.
    pub fn from_pem_with_certificate_chain(
        key_pem: impl AsRef<[u8]>,
        chain_pem: impl AsRef<[u8]>,
        algorithm: Algorithm,
    ) -> Result<Self, KeyError> {
        let key_pem = key_pem.as_ref();
        let key = match pem_label(key_pem) {
            Some(label @ ("RSA PRIVATE KEY" | "EC PRIVATE KEY")) => {
                const FORMAT: &str = "PKCS#1/SEC 1 PEM";
                let malformed = |reason: String| KeyError::Malformed {
                    format: FORMAT,
                    reason,
                };
                let der = asn1::pem_decode(key_pem, label).map_err(malformed)?;
                let curve = if label == "EC PRIVATE KEY" {
                    Some(asn1::sec1_curve(&der).map_err(malformed)?.ok_or_else(|| {
                        KeyError::WrongKeyType {
                            algorithm,
                            found: "an EC key without a named curve we sign with".to_owned(),
                        }
                    })?)
                } else {
                    None
                };
                let pkcs8 = super::spki::pkcs8_of_traditional(&der, curve);
                Self::from_der(&pkcs8, algorithm, FORMAT)?
            }
            _ => Self::from_pkcs8_pem(key_pem, algorithm)?,
        };
        key.with_certificate_chain(CertificateChain::from_pem(chain_pem)?)
    }

    /// Returns this key with its X.509 certificate chain: its JWK then
    /// publishes `x5c` and `x5t#S256`, and the key signs only while the
    /// chain is valid. The kid does not change.
    ///
    /// # Errors
    ///
    /// [`KeyError::CertificateKeyMismatch`] when the chain's leaf
    /// certificate does not hold this key's public key.
    pub fn with_certificate_chain(mut self, chain: CertificateChain) -> Result<Self, KeyError> {
        self.jwk = self.jwk.with_certificate_chain(chain)?;
        Ok(self)
    }

    /// The key's certificate chain, for a certificate-backed key.
    pub fn certificate_chain(&self) -> Option<&CertificateChain> {
        self.jwk.certificate_chain()
    }

    /// Checks a PKCS#8 key against `algorithm` and parses it for signing.
    fn from_der(der: &[u8], algorithm: Algorithm, format: &'static str) -> Result<Self, KeyError> {
        let parts = match asn1::parse_pkcs8(der) {
            Ok(parts) => parts,
            Err(_) if asn1::is_public(der) => return Err(KeyError::PublicOnly { format }),
            Err(reason) => return Err(KeyError::Malformed { format, reason }),
        };
        let wrong = |found: String| KeyError::WrongKeyType { algorithm, found };
        let signer = match (parts, algorithm.key_kind()) {
            (PrivateParts::Rsa(rsa), KeyKind::Rsa) => {
                if rsa.other_prime_infos.is_some() {
                    return Err(KeyError::Malformed {
                        format,
                        reason: "multi-prime RSA keys are not supported".to_owned(),
                    });
                }
                rsa_signer(
                    RsaParts {
                        n: rsa.modulus.as_bytes(),
                        e: rsa.public_exponent.as_bytes(),
                        d: rsa.private_exponent.as_bytes(),
                        p: rsa.prime1.as_bytes(),
                        q: rsa.prime2.as_bytes(),
                        dp: rsa.exponent1.as_bytes(),
                        dq: rsa.exponent2.as_bytes(),
                        qi: rsa.coefficient.as_bytes(),
                    },
                    algorithm,
                )?
            }
            (PrivateParts::Ec { curve, sec1 }, KeyKind::Ec(wanted)) => {
                if curve != Some(wanted) {
                    return Err(wrong(match curve {
                        Some(other) => format!("an EC key on {other}"),
                        None => "an EC key on an unsupported curve".to_owned(),
                    }));
                }
                // AWS-LC checks that the scalar is in range and that the
                // public point, when the key has one, is its own.
                let pair =
                    EcdsaKeyPair::from_private_key_der(Signer::ecdsa_algorithm(wanted), sec1)
                        .map_err(|_| {
                            KeyError::InconsistentKey {
                    reason:
                        "the EC private scalar is out of range or does not match the public point"
                            .to_owned(),
                }
                        })?;
                Signer::Ecdsa(pair)
            }
            (PrivateParts::Ed25519 { seed }, KeyKind::Ed25519) => {
                Signer::Ed25519(Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| {
                    KeyError::Crypto("aws-lc-rs refuses the Ed25519 seed".to_owned())
                })?)
            }
            (PrivateParts::Rsa(rsa), _) => {
                return Err(wrong(describe(&PublicParts::Rsa {
                    n: rsa.modulus.as_bytes().to_vec(),
                    e: Vec::new(),
                })));
            }
            (PrivateParts::Ec { curve, .. }, _) => {
                return Err(wrong(describe(&PublicParts::Ec {
                    curve,
                    point: Vec::new(),
                })));
            }
            (PrivateParts::Ed25519 { .. }, _) => return Err(wrong("an Ed25519 key".to_owned())),
            (PrivateParts::Other(found), _) => return Err(wrong(found)),
        };
        Self::from_signer(signer, algorithm, None)
    }

    /// Builds the key from a parsed key pair: its public JWK (with the
    /// public-key checks) and the signer.
    fn from_signer(
        signer: Signer,
        algorithm: Algorithm,
        kid: Option<Kid>,
    ) -> Result<Self, KeyError> {
        let jwk = PublicJwk::from_parts(&signer.public_parts()?, algorithm, kid)?;
        Ok(SigningKey {
            jwk,
            signer: Arc::new(signer),
        })
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
    /// private key. An `x5c` member (as [`to_private_jwk`](Self::to_private_jwk)
    /// writes for a certificate-backed key) is read as the key's
    /// certificate chain, checked as [`with_certificate_chain`](Self::with_certificate_chain)
    /// does; an `x5t#S256` beside it must be the leaf's.
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
        let signer = match kty {
            "RSA" => return rsa_from_jwk(map, algorithm, kid)?.with_jwk_chain(map),
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
        let key = Self::from_signer(signer, algorithm, kid)?;
        key.with_jwk_chain(map)
    }

    /// Attaches the chain of a JWK's `x5c` member, if it has one.
    fn with_jwk_chain(self, map: &Map<String, Value>) -> Result<Self, KeyError> {
        let Some(x5c) = map.get("x5c") else {
            if map.contains_key("x5t#S256") {
                return Err(jwk_malformed("\"x5t#S256\" without \"x5c\""));
            }
            return Ok(self);
        };
        let Value::Array(entries) = x5c else {
            return Err(jwk_malformed("\"x5c\" is not an array"));
        };
        if entries.len() > super::MAX_CERTIFICATES {
            return Err(KeyError::CertificateMalformed {
                reason: format!("more than {} certificates", super::MAX_CERTIFICATES),
            });
        }
        let mut certificates = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let der = entry
                .as_str()
                .filter(|text| text.len() <= super::MAX_CERTIFICATE_LEN.div_ceil(3) * 4)
                .and_then(|text| {
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text).ok()
                })
                .ok_or_else(|| KeyError::CertificateMalformed {
                    reason: format!(
                        "\"x5c\" entry {index} is not a certificate in standard base64 (at most {} KiB)",
                        super::MAX_CERTIFICATE_LEN / 1024
                    ),
                })?;
            certificates.push(der);
        }
        let chain = CertificateChain::from_der(certificates)?;
        if let Some(x5t) = map.get("x5t#S256")
            && x5t.as_str() != Some(chain.x5t_s256())
        {
            return Err(KeyError::CertificateMalformed {
                reason: "\"x5t#S256\" is not the SHA-256 of the leaf certificate".to_owned(),
            });
        }
        self.with_certificate_chain(chain)
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
    /// [`SignError::Crypto`] if the cryptographic library fails.
    pub fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.signer
            .sign(signing_input)
            .map_err(|_| SignError::Crypto("aws-lc-rs could not sign".to_owned()))
    }

    /// Exports the private key as PKCS#8 PEM, for persistence. The kid is
    /// not part of PEM: keep it alongside if it is not the thumbprint.
    ///
    /// The result is secret: store it with restrictive permissions.
    ///
    /// # Errors
    ///
    /// [`KeyError::Crypto`] if the cryptographic library fails.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        Ok(asn1::pem_encode(&self.to_pkcs8_der()?, "PRIVATE KEY"))
    }

    /// Exports the private key as DER-encoded PKCS#8 (v1).
    ///
    /// # Errors
    ///
    /// [`KeyError::Crypto`] if the cryptographic library fails.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, KeyError> {
        self.signer
            .to_pkcs8()
            .map_err(|_| KeyError::Crypto("aws-lc-rs could not export the key".to_owned()))
    }

    /// Exports the private key as a JWK with its `kid` and `alg`, for
    /// persistence; [`from_jwk`](Self::from_jwk) reads it back with the same
    /// kid. EC keys include `x` and `y`.
    ///
    /// The result is secret: store it with restrictive permissions.
    ///
    /// # Errors
    ///
    /// [`KeyError::Crypto`] if the cryptographic library fails.
    pub fn to_private_jwk(&self) -> Result<String, KeyError> {
        let mut map = match self.jwk.to_value() {
            Value::Object(map) => map,
            _ => return Err(KeyError::Crypto("public JWK is not an object".to_owned())),
        };
        let failed = |what: &str| KeyError::Crypto(format!("cannot export the {what}"));
        match &*self.signer {
            Signer::Rsa { .. } => {
                // aws-lc-rs keeps the private members to itself: read them
                // from its PKCS#8 export.
                let der = self.to_pkcs8_der()?;
                let Ok(PrivateParts::Rsa(rsa)) = asn1::parse_pkcs8(&der) else {
                    return Err(failed("RSA private key"));
                };
                for (name, value) in [
                    ("d", rsa.private_exponent),
                    ("p", rsa.prime1),
                    ("q", rsa.prime2),
                    ("dp", rsa.exponent1),
                    ("dq", rsa.exponent2),
                    ("qi", rsa.coefficient),
                ] {
                    map.insert(name.into(), b64::encode(value.as_bytes()).into());
                }
            }
            Signer::Ecdsa(pair) => {
                // Big-endian, as long as a coordinate.
                let d = pair
                    .private_key()
                    .as_be_bytes()
                    .map_err(|_| failed("EC private key"))?;
                map.insert("d".into(), b64::encode(d.as_ref()).into());
            }
            Signer::Ed25519(pair) => {
                let seed = pair
                    .seed()
                    .and_then(|seed| seed.as_be_bytes())
                    .map_err(|_| failed("Ed25519 seed"))?;
                map.insert("d".into(), b64::encode(seed.as_ref()).into());
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

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", self.kid())
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
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

/// The members of an RSA private key, big-endian.
struct RsaParts<'a> {
    n: &'a [u8],
    e: &'a [u8],
    d: &'a [u8],
    p: &'a [u8],
    q: &'a [u8],
    dp: &'a [u8],
    dq: &'a [u8],
    qi: &'a [u8],
}

/// Refuses a modulus larger than aws-lc-rs signs with (checked first: the
/// weak-key checks on a huge modulus would cost seconds).
fn check_rsa_max(n: &[u8], format: &'static str) -> Result<(), KeyError> {
    let bits = bit_len(minimal(n));
    if bits > MAX_RSA_BITS as usize {
        return Err(KeyError::Malformed {
            format,
            reason: format!("a modulus of {bits} bits is larger than the {MAX_RSA_BITS} supported"),
        });
    }
    Ok(())
}

/// An RSA key from its members: the public checks (type, size, exponent,
/// weak moduli), then AWS-LC's consistency check of every member.
fn rsa_signer(parts: RsaParts<'_>, algorithm: Algorithm) -> Result<Signer, KeyError> {
    check_rsa_max(parts.n, "RSA key")?;
    let public = PublicParts::Rsa {
        n: parts.n.to_vec(),
        e: parts.e.to_vec(),
    };
    // Type, size, exponent and weak-modulus checks, before AWS-LC sees it.
    PublicJwk::from_parts(&public, algorithm, None)?;
    debug_assert!(bit_len(minimal(parts.e)) <= MAX_RSA_EXPONENT_BITS);
    let components = aws_lc_rs::rsa::KeyPairComponents {
        public_key: sig::RsaPublicKeyComponents {
            n: minimal(parts.n),
            e: minimal(parts.e),
        },
        d: parts.d,
        p: parts.p,
        q: parts.q,
        dP: parts.dp,
        dQ: parts.dq,
        qInv: parts.qi,
    };
    let pair = RsaKeyPair::from_components(&components).map_err(|_| KeyError::InconsistentKey {
        reason: "the RSA private components do not match the modulus".to_owned(),
    })?;
    Ok(Signer::Rsa {
        pair,
        encoding: Signer::rsa_encoding(algorithm),
    })
}

fn rsa_from_jwk(
    map: &Map<String, Value>,
    algorithm: Algorithm,
    kid: Option<Kid>,
) -> Result<SigningKey, KeyError> {
    let n = bytes_member(map, "n")?;
    check_rsa_max(&n, "JWK")?;
    let bits = bit_len(minimal(&n));
    if bits < 2048 {
        return Err(KeyError::RsaKeyTooSmall {
            bits: u32::try_from(bits).unwrap_or(0),
        });
    }
    let [e, d, p, q, dp, dq, qi] =
        ["e", "d", "p", "q", "dp", "dq", "qi"].map(|name| bytes_member(map, name));
    let (e, d, p, q, dp, dq, qi) = (e?, d?, p?, q?, dp?, dq?, qi?);
    let signer = rsa_signer(
        RsaParts {
            n: &n,
            e: &e,
            d: &d,
            p: &p,
            q: &q,
            dp: &dp,
            dq: &dq,
            qi: &qi,
        },
        algorithm,
    )?;
    SigningKey::from_signer(signer, algorithm, kid)
}

fn ec_from_jwk(map: &Map<String, Value>, curve: EcCurve) -> Result<Signer, KeyError> {
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
    // The key of `d` alone (AWS-LC checks 0 < d < n and derives the public
    // point), then the JWK's point must be that one.
    let sec1 = asn1::sec1_private_key(curve, &d).map_err(KeyError::Crypto)?;
    let pair = EcdsaKeyPair::from_private_key_der(Signer::ecdsa_algorithm(curve), &sec1).map_err(
        |_| KeyError::InconsistentKey {
            reason: format!("\"d\" is not a valid {curve} private scalar"),
        },
    )?;
    let point = pair.public_key().as_ref();
    if point.get(1..=len) != Some(&x[..]) || point.get(1 + len..) != Some(&y[..]) {
        return Err(KeyError::InconsistentKey {
            reason: "\"x\"/\"y\" do not match the private key \"d\"".to_owned(),
        });
    }
    Ok(Signer::Ecdsa(pair))
}

fn ed25519_from_jwk(map: &Map<String, Value>) -> Result<Signer, KeyError> {
    let d = bytes_member(map, "d")?;
    let x = bytes_member(map, "x")?;
    if d.len() != 32 || x.len() != 32 {
        return Err(jwk_malformed(
            "Ed25519 \"d\" and \"x\" must be 32 bytes each",
        ));
    }
    let pair = Ed25519KeyPair::from_seed_unchecked(&d)
        .map_err(|_| KeyError::Crypto("aws-lc-rs refuses the Ed25519 seed".to_owned()))?;
    if pair.public_key().as_ref() != x.as_slice() {
        return Err(KeyError::InconsistentKey {
            reason: "\"x\" does not match the private key \"d\"".to_owned(),
        });
    }
    Ok(Signer::Ed25519(pair))
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
