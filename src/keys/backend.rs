//! [`SigningBackend`]: the pluggable signing trait.

use std::any::Any;
use std::fmt::Debug;

use super::{KeyReference, PublicJwk, SignError};

/// Something that makes JWS signatures with one private key.
///
/// The [`KeyRegistry`](crate::KeyRegistry) holds keys as
/// `Arc<dyn SigningBackend>`, so the private key does not have to live in this
/// process: an implementation can forward [`sign`](SigningBackend::sign) to an
/// HSM or a KMS. [`SigningKey`](super::SigningKey) is the in-process
/// implementation, backed by aws-lc-rs.
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
/// * A backend whose `sign` waits on a device or the network (an HSM, a
///   KMS) says so with [`blocks`](SigningBackend::blocks): the signer then
///   signs on its own threads by default, never on an async worker.
/// * A backend whose key lives in a device describes where with
///   [`reference`](SigningBackend::reference): a registry built on a
///   [`KeyStore`](crate::store::KeyStore) stores that reference (never key
///   material), and a [`KeyFactory`](super::KeyFactory) opens it again
///   after a restart.
pub trait SigningBackend: Any + Send + Sync + Debug {
    /// The public JWK of this key, with its `kid` and `alg`.
    fn public_jwk(&self) -> &PublicJwk;

    /// Signs the JWS signing input.
    ///
    /// # Errors
    ///
    /// [`SignError`] when the backend cannot sign.
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError>;

    /// Whether [`sign`](Self::sign) blocks on something else than the CPU
    /// (a device, the network). The signer's default
    /// [`Offload::Auto`](crate::signer::Offload::Auto) then signs on its
    /// own threads whatever the algorithm. The default says no.
    fn blocks(&self) -> bool {
        false
    }

    /// Where the private key is kept, for a key that never leaves its
    /// device (a PKCS#11 token): what a key store keeps of it. `None` (the
    /// default) for a key that cannot be stored that way.
    fn reference(&self) -> Option<KeyReference> {
        None
    }
}
