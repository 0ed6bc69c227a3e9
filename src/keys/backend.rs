//! [`SigningBackend`]: the pluggable signing trait.

use std::fmt::Debug;

use super::{PublicJwk, SignError};

/// Something that makes JWS signatures with one private key.
///
/// The [`KeyRegistry`](crate::KeyRegistry) holds keys as
/// `Arc<dyn SigningBackend>`, so the private key does not have to live in this
/// process: an implementation can forward [`sign`](SigningBackend::sign) to an
/// HSM or a KMS. [`SigningKey`](super::SigningKey) is the in-process
/// implementation, backed by OpenSSL.
///
/// The key id and algorithm always come from [`public_jwk`](SigningBackend::public_jwk):
/// the token header and the published JWKS can never disagree.
///
/// # Implementing
///
/// * `public_jwk` must describe the very key that `sign` uses; build it with
///   [`PublicJwk::from_spki_der`], which also checks the key fits the
///   algorithm.
/// * `sign` receives the JWS signing input (`BASE64URL(header) "."
///   BASE64URL(payload)`) and returns the raw signature as RFC 7518 defines
///   it: for ECDSA the fixed-length `r || s` concatenation, not DER.
/// * `sign` may block for as long as the backend takes; the signing
///   middleware decides whether to call it on a blocking thread.
/// * `Debug` must never print key material.
pub trait SigningBackend: Send + Sync + Debug {
    /// The public JWK of this key, with its `kid` and `alg`.
    fn public_jwk(&self) -> &PublicJwk;

    /// Signs the JWS signing input.
    ///
    /// # Errors
    ///
    /// [`SignError`] when the backend cannot sign.
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError>;
}
