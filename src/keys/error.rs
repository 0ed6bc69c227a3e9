//! Errors from key generation, import, export and signing.

use std::fmt;

use super::Algorithm;

/// Why a key could not be generated, imported or exported.
///
/// Every message says what was refused and why; none contains key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// The input is not a key in the expected format (garbage, a truncated
    /// file, broken base64, JSON that is not a JWK, ...).
    Malformed {
        /// The format that was expected (`"PKCS#8 PEM"`, `"PKCS#8 DER"`, `"JWK"`).
        format: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The input holds only a public key (or a certificate); signing needs
    /// the private key.
    PublicOnly {
        /// The format that was read.
        format: &'static str,
    },
    /// An RSA key smaller than 2048 bits: such keys can be factored and must
    /// not sign tokens (RFC 8725 section 3.5, NIST SP 800-131A).
    RsaKeyTooSmall {
        /// The modulus size that was found.
        bits: u32,
    },
    /// An RSA key size that generation does not offer (2048, 3072 and 4096
    /// are allowed).
    RsaKeySizeNotOffered {
        /// The size that was asked for.
        bits: u32,
    },
    /// An RSA public exponent of 1 or an even exponent (the key is broken),
    /// or one longer than 33 bits (refused by AWS-LC, a denial-of-service
    /// guard; real keys use 65537).
    RsaBadExponent,
    /// A public key that anyone can forge signatures for (an Ed25519
    /// small-order point, an RSA modulus that is prime or has a small
    /// factor, the ROCA fingerprint): see [`WeakKey`](super::WeakKey).
    WeakKey(super::WeakKey),
    /// The key's type or curve does not fit the algorithm (a P-256 key for
    /// ES384, an RSA key for ES256, an Ed448 key for EdDSA, ...).
    WrongKeyType {
        /// The algorithm the key was meant for.
        algorithm: Algorithm,
        /// What the key actually is.
        found: String,
    },
    /// A JWK whose `alg` member disagrees with the algorithm asked for, or
    /// names an algorithm this crate does not sign with.
    AlgorithmMismatch {
        /// The `alg` member of the JWK.
        jwk_alg: String,
        /// The algorithm that was asked for, if any.
        requested: Option<Algorithm>,
    },
    /// A JWK with no `alg` member for a key type that fits several
    /// algorithms (RSA): say which one.
    AlgorithmRequired,
    /// The private and public halves of the key do not belong together, or
    /// the key fails the library's consistency check.
    InconsistentKey {
        /// What did not match.
        reason: String,
    },
    /// The key id does not follow the rules (see [`Kid`](super::Kid)).
    InvalidKid(super::InvalidKid),
    /// The cryptographic library failed (key generation, encoding).
    Crypto(String),
    /// A key backend outside this process (an HSM, a KMS) failed to make,
    /// find or destroy a key; the error names the device and the key.
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A certificate chain that cannot be read: not PEM or DER X.509, too
    /// large, too long, or not in order (leaf first, each certificate
    /// issued by the next). See [`CertificateChain`](super::CertificateChain).
    CertificateMalformed {
        /// What was wrong.
        reason: String,
    },
    /// The leaf certificate of a chain does not hold the public key of the
    /// private key it was given with (the wrong `tls.crt` for the
    /// `tls.key`), or holds a key that does not fit the algorithm.
    CertificateKeyMismatch {
        /// What did not match.
        reason: String,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Malformed { format, reason } => {
                write!(f, "not a valid {format} private key: {reason}")
            }
            KeyError::PublicOnly { format } => write!(
                f,
                "the {format} input holds only a public key; signing needs the private key"
            ),
            KeyError::RsaKeyTooSmall { bits } => write!(
                f,
                "RSA key of {bits} bits refused: at least 2048 bits are required, smaller keys can be factored"
            ),
            KeyError::RsaKeySizeNotOffered { bits } => write!(
                f,
                "cannot generate an RSA key of {bits} bits: choose 2048, 3072 or 4096"
            ),
            KeyError::RsaBadExponent => f.write_str(
                "RSA key refused: its public exponent is 1 or even, which makes the key insecure or invalid, or longer than 33 bits",
            ),
            KeyError::WeakKey(weak) => write!(f, "key refused: {weak}"),
            KeyError::WrongKeyType { algorithm, found } => write!(
                f,
                "{algorithm} needs {}, but the key is {found}",
                describe_needed(*algorithm)
            ),
            KeyError::AlgorithmMismatch {
                jwk_alg,
                requested: Some(requested),
            } => write!(
                f,
                "the JWK says \"alg\": {jwk_alg:?}, but the key was asked for as {requested}"
            ),
            KeyError::AlgorithmMismatch {
                jwk_alg,
                requested: None,
            } => write!(
                f,
                "the JWK says \"alg\": {jwk_alg:?}, which is not an asymmetric algorithm this crate signs with"
            ),
            KeyError::AlgorithmRequired => f.write_str(
                "the JWK has no \"alg\" member and an RSA key fits several algorithms: pass the algorithm explicitly",
            ),
            KeyError::InconsistentKey { reason } => {
                write!(f, "the key is inconsistent: {reason}")
            }
            KeyError::InvalidKid(err) => err.fmt(f),
            KeyError::Crypto(reason) => write!(f, "cryptographic library error: {reason}"),
            KeyError::Backend(err) => err.fmt(f),
            KeyError::CertificateMalformed { reason } => {
                write!(f, "not a valid certificate chain: {reason}")
            }
            KeyError::CertificateKeyMismatch { reason } => {
                write!(f, "the certificate does not match the key: {reason}")
            }
        }
    }
}

fn describe_needed(algorithm: Algorithm) -> String {
    match algorithm.key_kind() {
        super::KeyKind::Rsa => "an RSA key of at least 2048 bits".to_owned(),
        super::KeyKind::Ec(curve) => format!("an EC key on {curve}"),
        super::KeyKind::Ed25519 => "an Ed25519 key".to_owned(),
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::InvalidKid(err) => Some(err),
            KeyError::WeakKey(weak) => Some(weak),
            KeyError::Backend(err) => Some(err.as_ref()),
            _ => None,
        }
    }
}

impl From<super::InvalidKid> for KeyError {
    fn from(err: super::InvalidKid) -> Self {
        KeyError::InvalidKid(err)
    }
}

/// Why a signature could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum SignError {
    /// The cryptographic library failed.
    Crypto(String),
    /// A pluggable backend (an HSM, a KMS) failed.
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::Crypto(reason) => write!(f, "signing failed: {reason}"),
            SignError::Other(err) => write!(f, "signing failed: {err}"),
        }
    }
}

impl std::error::Error for SignError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SignError::Other(err) => Some(err.as_ref()),
            SignError::Crypto(_) => None,
        }
    }
}
