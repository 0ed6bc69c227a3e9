//! [`KeyFactory`]: where a registry's new keys are made, and how stored
//! references are opened again.

use std::fmt;
use std::sync::Arc;

use super::{Algorithm, KeyError, KeyReference, SigningBackend, SigningKey};

/// Makes the new keys of a [`KeyRegistry`](crate::KeyRegistry): the first
/// key ([`generate_if_missing`](crate::registry::KeyRegistryBuilder::generate_if_missing)),
/// the next keys of the [`KeyRotator`](crate::KeyRotator) and of
/// [`KeyRegistry::rotate`](crate::KeyRegistry::rotate); opens the keys a
/// store keeps as [`KeyReference`]s; destroys them once they are gone.
///
/// [`InProcessKeys`], the default, generates [`SigningKey`]s in this
/// process. A factory backed by a device (with the `pkcs11` feature,
/// `Pkcs11Token`) makes each key inside it, where it never leaves, and the
/// registry's store keeps a reference to it.
///
/// Set it with
/// [`KeyRegistryBuilder::key_factory`](crate::registry::KeyRegistryBuilder::key_factory).
///
/// # Implementing
///
/// * [`generate`](Self::generate) makes one key for the algorithm. It may
///   block (the rotator calls it on a blocking thread).
/// * [`open`](Self::open) returns the backend of a reference this factory
///   can open, `Ok(None)` for a reference it does not know (another
///   provider). The registry checks that the backend's public JWK is the
///   one the reference holds.
/// * [`destroy`](Self::destroy) is called once a key the registry removed
///   (a retired key past its time, a revoked key) is gone from its store,
///   and for a key the factory made that was never published (another
///   writer got there first). It may refuse to destroy keys it did not
///   make; the default destroys nothing.
pub trait KeyFactory: Send + Sync + fmt::Debug {
    /// Makes a new key for `algorithm`.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the key cannot be made.
    fn generate(&self, algorithm: Algorithm) -> Result<Arc<dyn SigningBackend>, KeyError>;

    /// Opens the key `reference` names, or `Ok(None)` when it is not one
    /// this factory knows. The default knows none.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the reference is this factory's but its key cannot
    /// be opened (the device is missing, the key is gone).
    fn open(&self, reference: &KeyReference) -> Result<Option<Arc<dyn SigningBackend>>, KeyError> {
        let _ = reference;
        Ok(None)
    }

    /// Destroys the key `reference` names: no registry publishes it and
    /// no store keeps it any more. The default does nothing.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the key cannot be destroyed; the registry logs it
    /// and goes on (the key stays in its device, unused).
    fn destroy(&self, reference: &KeyReference) -> Result<(), KeyError> {
        let _ = reference;
        Ok(())
    }
}

impl<T: KeyFactory + ?Sized> KeyFactory for Arc<T> {
    fn generate(&self, algorithm: Algorithm) -> Result<Arc<dyn SigningBackend>, KeyError> {
        (**self).generate(algorithm)
    }

    fn open(&self, reference: &KeyReference) -> Result<Option<Arc<dyn SigningBackend>>, KeyError> {
        (**self).open(reference)
    }

    fn destroy(&self, reference: &KeyReference) -> Result<(), KeyError> {
        (**self).destroy(reference)
    }
}

/// The default [`KeyFactory`]: [`SigningKey::generate`] in this process
/// (RSA keys of 2048 bits). It opens no reference.
///
/// ```
/// use tower_jwt_signer::Algorithm;
/// use tower_jwt_signer::keys::{InProcessKeys, KeyFactory};
///
/// let key = InProcessKeys.generate(Algorithm::EdDSA).unwrap();
/// assert_eq!(key.public_jwk().algorithm(), Algorithm::EdDSA);
/// assert!(key.reference().is_none());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InProcessKeys;

impl KeyFactory for InProcessKeys {
    fn generate(&self, algorithm: Algorithm) -> Result<Arc<dyn SigningBackend>, KeyError> {
        Ok(Arc::new(SigningKey::generate(algorithm)?))
    }
}
