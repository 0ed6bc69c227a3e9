//! [`CertificateChain`]: the X.509 chain of a certificate-backed key, as
//! published in its JWK (`x5c`, `x5t#S256`: RFC 7517 sections 4.7 and 4.9).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::{Decode, Encode};

use super::asn1;
use super::jwk::describe;
use super::{KeyError, PublicJwk};
use crate::b64;

/// The longest PEM chain file read, in bytes. A leaf, two intermediates and
/// a root with RSA-4096 keys take about 8 KiB.
pub(crate) const MAX_CHAIN_PEM_LEN: usize = 128 * 1024;
/// The most certificates a chain may hold.
pub const MAX_CERTIFICATES: usize = 8;
/// The largest certificate accepted, DER, in bytes.
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024;

/// An X.509 certificate chain, leaf first, as a certificate-backed key
/// carries it (the `tls.crt` that cert-manager writes beside `tls.key`).
///
/// It is read from PEM ([`from_pem`](Self::from_pem)) or DER
/// ([`from_der`](Self::from_der)) and kept in the order given: the leaf
/// (the certificate of the signing key) first, then each certificate that
/// issued the previous one. It is checked when it is read: every
/// certificate parses as X.509, each one's issuer is the next one's
/// subject, and at most [`MAX_CERTIFICATES`] of at most
/// [`MAX_CERTIFICATE_LEN`] bytes each. Attached to a key with
/// [`SigningKey::with_certificate_chain`](super::SigningKey::with_certificate_chain),
/// the leaf's public key must be the key's.
///
/// What this crate does **not** check: the signatures of the chain, and
/// that it leads to a root anyone trusts. The chain says which certificate
/// the key was issued; a verifier that wants to rely on it validates it
/// against its own trust anchors.
///
/// The validity of a chain ([`not_before`](Self::not_before),
/// [`not_after`](Self::not_after)) is the window in which **every**
/// certificate of it is valid: a key never signs outside it.
///
/// ```
/// use tower_jwt_signer::keys::CertificateChain;
///
/// let err = CertificateChain::from_pem(b"not a certificate").unwrap_err();
/// assert!(matches!(err, tower_jwt_signer::KeyError::CertificateMalformed { .. }));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateChain {
    /// DER, leaf first.
    certificates: Vec<Vec<u8>>,
    /// The leaf's DER SubjectPublicKeyInfo.
    leaf_spki: Vec<u8>,
    /// `x5t#S256`: base64url SHA-256 of the leaf's DER.
    x5t_s256: String,
    /// The latest `notBefore` of the chain, Unix seconds.
    not_before: u64,
    /// The earliest `notAfter` of the chain, Unix seconds.
    not_after: u64,
}

impl CertificateChain {
    /// Reads a chain from PEM: one or more `CERTIFICATE` blocks, leaf
    /// first. Text between blocks is ignored, as OpenSSL does; a block of
    /// another kind (a private key) is refused.
    ///
    /// # Errors
    ///
    /// [`KeyError::CertificateMalformed`] when the input is not such PEM,
    /// is larger than 128 KiB, or a certificate does not parse, or the
    /// chain is not in order (see [`from_der`](Self::from_der)).
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let pem = pem.as_ref();
        if pem.len() > MAX_CHAIN_PEM_LEN {
            return Err(malformed(format!(
                "the PEM input is larger than {} KiB",
                MAX_CHAIN_PEM_LEN / 1024
            )));
        }
        const BEGIN: &[u8] = b"-----BEGIN ";
        let mut certificates = Vec::new();
        let mut rest = pem;
        while let Some(start) = find(rest, BEGIN) {
            let block = &rest[start..];
            let label_end = find(&block[BEGIN.len()..], b"-----")
                .ok_or_else(|| malformed("a \"-----BEGIN\" line does not end"))?;
            let label = &block[BEGIN.len()..BEGIN.len() + label_end];
            if label != b"CERTIFICATE" {
                return Err(malformed(format!(
                    "a PEM block is {:?}, not CERTIFICATE",
                    String::from_utf8_lossy(label)
                        .chars()
                        .take(32)
                        .collect::<String>()
                )));
            }
            if certificates.len() == MAX_CERTIFICATES {
                return Err(malformed(format!(
                    "more than {MAX_CERTIFICATES} certificates"
                )));
            }
            let der = asn1::pem_decode(block, "CERTIFICATE").map_err(|reason| {
                malformed(format!("certificate {}: {reason}", certificates.len()))
            })?;
            certificates.push(der);
            const END: &[u8] = b"-----END CERTIFICATE-----";
            let end = find(block, END).ok_or_else(|| malformed("a block does not end"))?;
            rest = &block[end + END.len()..];
        }
        if certificates.is_empty() {
            return Err(malformed("no \"-----BEGIN CERTIFICATE-----\" block"));
        }
        Self::from_der(certificates)
    }

    /// Reads a chain of DER certificates, leaf first.
    ///
    /// # Errors
    ///
    /// [`KeyError::CertificateMalformed`] when the chain is empty or too
    /// long, a certificate is too large or does not parse as X.509 (with
    /// nothing after it), or a certificate's issuer is not the subject of
    /// the next one.
    pub fn from_der(certificates: Vec<Vec<u8>>) -> Result<Self, KeyError> {
        if certificates.is_empty() {
            return Err(malformed("the chain is empty"));
        }
        if certificates.len() > MAX_CERTIFICATES {
            return Err(malformed(format!(
                "more than {MAX_CERTIFICATES} certificates"
            )));
        }
        let mut parsed = Vec::with_capacity(certificates.len());
        for (index, der) in certificates.iter().enumerate() {
            if der.len() > MAX_CERTIFICATE_LEN {
                return Err(malformed(format!(
                    "certificate {index} is larger than {} KiB",
                    MAX_CERTIFICATE_LEN / 1024
                )));
            }
            let cert = x509_cert::Certificate::from_der(der).map_err(|err| {
                malformed(format!(
                    "certificate {index} is not X.509 DER ({})",
                    err.kind()
                ))
            })?;
            parsed.push(cert);
        }
        for (index, pair) in parsed.windows(2).enumerate() {
            if pair[0].tbs_certificate.issuer != pair[1].tbs_certificate.subject {
                return Err(malformed(format!(
                    "certificate {index} was not issued by certificate {} (its issuer is not that one's subject): the chain must be in order, leaf first",
                    index + 1
                )));
            }
        }
        let mut not_before = 0u64;
        let mut not_after = u64::MAX;
        for cert in &parsed {
            let validity = &cert.tbs_certificate.validity;
            not_before = not_before.max(validity.not_before.to_unix_duration().as_secs());
            not_after = not_after.min(validity.not_after.to_unix_duration().as_secs());
        }
        let leaf_spki = parsed[0]
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|err| malformed(format!("the leaf's public key ({})", err.kind())))?;
        let x5t_s256 = b64::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &certificates[0],
        ));
        Ok(CertificateChain {
            certificates,
            leaf_spki,
            x5t_s256,
            not_before,
            not_after,
        })
    }

    /// The certificates, DER, leaf first.
    pub fn certificates(&self) -> &[Vec<u8>] {
        &self.certificates
    }

    /// The leaf certificate (the signing key's), DER.
    pub fn leaf(&self) -> &[u8] {
        &self.certificates[0]
    }

    /// The `x5t#S256` thumbprint: the base64url SHA-256 of the leaf's DER
    /// (RFC 7517 section 4.9).
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// The `x5c` member: each certificate's DER in standard base64 (not
    /// base64url), leaf first (RFC 7517 section 4.7).
    pub fn x5c(&self) -> Vec<String> {
        self.certificates
            .iter()
            .map(|der| STANDARD.encode(der))
            .collect()
    }

    /// The start of the chain's validity: the latest `notBefore` of its
    /// certificates.
    pub fn not_before(&self) -> SystemTime {
        to_time(self.not_before)
    }

    /// The end of the chain's validity: the earliest `notAfter` of its
    /// certificates. A key never signs after it.
    pub fn not_after(&self) -> SystemTime {
        to_time(self.not_after)
    }

    /// [`not_before`](Self::not_before) in Unix seconds.
    pub(crate) fn not_before_secs(&self) -> u64 {
        self.not_before
    }

    /// [`not_after`](Self::not_after) in Unix seconds.
    pub(crate) fn not_after_secs(&self) -> u64 {
        self.not_after
    }

    /// Whether the chain is valid at `now` (Unix seconds): `notBefore <=
    /// now <= notAfter` for every certificate (RFC 5280 section 4.1.2.5:
    /// both ends are inclusive).
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        self.validity_at(now).is_ok()
    }

    /// `Ok` when valid at `now` (Unix seconds), else whether it has
    /// expired (`Err(true)`) or is not valid yet (`Err(false)`).
    pub(crate) fn validity_at(&self, now: u64) -> Result<(), bool> {
        if now > self.not_after {
            Err(true)
        } else if now < self.not_before {
            Err(false)
        } else {
            Ok(())
        }
    }

    /// Checks that the leaf holds the public key of `jwk`.
    pub(crate) fn check_leaf(&self, jwk: &PublicJwk) -> Result<(), KeyError> {
        let parts = asn1::parse_spki(&self.leaf_spki).map_err(|reason| {
            mismatch(format!(
                "the leaf certificate's public key does not parse: {reason}"
            ))
        })?;
        if !jwk.holds(&parts) {
            return Err(mismatch(match (&parts, jwk.key_type()) {
                (asn1::PublicParts::Rsa { .. }, "RSA")
                | (asn1::PublicParts::Ec { .. }, "EC")
                | (asn1::PublicParts::Ed25519 { .. }, "OKP") => {
                    "the leaf certificate holds another public key than the private key's"
                        .to_owned()
                }
                _ => format!(
                    "the leaf certificate holds {}, not a key for {}",
                    describe(&parts),
                    jwk.algorithm()
                ),
            }));
        }
        Ok(())
    }
}

fn malformed(reason: impl Into<String>) -> KeyError {
    KeyError::CertificateMalformed {
        reason: reason.into(),
    }
}

fn mismatch(reason: String) -> KeyError {
    KeyError::CertificateKeyMismatch { reason }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn to_time(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

impl fmt::Debug for CertificateChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateChain")
            .field("certificates", &self.certificates.len())
            .field("x5t#S256", &self.x5t_s256)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}
