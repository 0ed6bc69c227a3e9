//! Signing keys: algorithms, key ids, import and export, public JWKs.
//!
//! A [`SigningKey`] is one private key with its [`Algorithm`] and its
//! [`Kid`]. It is parsed once and then signs many tokens. Its
//! [`PublicJwk`] is what the JWKS publishes: public members only.
//!
//! Keys are checked when they are made or imported, never at request time:
//! RSA keys of at least 2048 bits with an odd exponent above 1, EC keys on
//! the curve their algorithm names, Ed25519 (not Ed448) for EdDSA, and
//! private halves that match their public halves. Public halves that anyone
//! can forge signatures for are refused ([`WeakKey`]): Ed25519 small-order
//! points, RSA moduli with a prime factor below 2^16, prime RSA moduli, and
//! moduli with the ROCA fingerprint. The verifier skips the same keys in a
//! JWK Set, so a JWKS built from these keys never publishes one.
//!
//! A key can carry its X.509 certificate chain ([`CertificateChain`]):
//! imported with [`SigningKey::from_pem_with_certificate_chain`] (the
//! `tls.key` / `tls.crt` pair cert-manager or any PKI writes), its JWK also
//! publishes `x5c` and `x5t#S256`, its kid stays the thumbprint, and it
//! signs only while every certificate of the chain is valid. See
//! [certificate-backed keys](#certificate-backed-keys).
//!
//! # Example
//!
//! ```
//! use tower_jwt_signer::{Algorithm, KeyError, SigningKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Generate, persist as a private JWK, load back with the same kid.
//! let key = SigningKey::generate(Algorithm::ES256)?;
//! let stored = key.to_private_jwk()?;
//! let loaded = SigningKey::from_jwk(&stored, None)?;
//! assert_eq!(loaded.kid(), key.kid());
//!
//! // The public JWK is what backends see.
//! let public = serde_json::to_string(key.public_jwk())?;
//! assert!(!public.contains("\"d\""));
//!
//! // Import refuses keys that do not fit, with a typed error.
//! let err = SigningKey::from_jwk(&stored, Some(Algorithm::ES384)).unwrap_err();
//! assert!(matches!(err, KeyError::AlgorithmMismatch { .. }));
//! # Ok(())
//! # }
//! ```
//!
//! # Certificate-backed keys
//!
//! The leaf certificate must hold the key (else
//! [`KeyError::CertificateKeyMismatch`]); the chain is kept in the order
//! given, leaf first, and must be in order (each certificate issued by the
//! next; else [`KeyError::CertificateMalformed`]). Nothing here validates
//! the chain's signatures or a root: the chain tells verifiers which
//! certificate the key was issued, it does not make the key trusted.
//!
//! ```
//! use tower_jwt_signer::{Algorithm, KeyError, SigningKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A key and its certificate (here self-signed with rcgen; in production
//! // the tls.key / tls.crt files your PKI writes).
//! let issued = rcgen::generate_simple_self_signed(vec!["gateway.example".to_owned()])?;
//! let (key_pem, cert_pem) = (issued.key_pair.serialize_pem(), issued.cert.pem());
//!
//! let key = SigningKey::from_pem_with_certificate_chain(&key_pem, &cert_pem, Algorithm::ES256)?;
//! let jwk = key.public_jwk().to_value();
//! assert_eq!(jwk["x5c"].as_array().map(Vec::len), Some(1));
//! assert_eq!(jwk["x5t#S256"], key.certificate_chain().unwrap().x5t_s256());
//! // The kid is still the thumbprint of the public key.
//! assert_eq!(key.kid(), SigningKey::from_pkcs8_pem(&key_pem, Algorithm::ES256)?.kid());
//!
//! // Another key's certificate is refused.
//! let other = SigningKey::generate(Algorithm::ES256)?.to_pkcs8_pem()?;
//! let err = SigningKey::from_pem_with_certificate_chain(&other, &cert_pem, Algorithm::ES256);
//! assert!(matches!(err, Err(KeyError::CertificateKeyMismatch { .. })));
//! # Ok(())
//! # }
//! ```

mod algorithm;
mod asn1;
mod backend;
mod certificate;
mod error;
mod factory;
mod jwk;
mod kid;
mod reference;
mod signing_key;
#[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
pub(crate) mod spki;
pub(crate) mod state;
mod weak;

pub use algorithm::{Algorithm, EcCurve, KeyKind, UnknownAlgorithm};
pub use backend::SigningBackend;
pub use certificate::{CertificateChain, MAX_CERTIFICATE_LEN, MAX_CERTIFICATES};
pub use error::{KeyError, SignError};
pub use factory::{InProcessKeys, KeyFactory};
pub use jwk::PublicJwk;
pub use kid::{InvalidKid, Kid};
pub use reference::KeyReference;
pub use signing_key::SigningKey;
pub(crate) use state::KeyState;
pub use weak::WeakKey;
pub(crate) use weak::{Budget, NoLimit, OutOfTime, Until, check_ed25519, check_rsa_modulus};
