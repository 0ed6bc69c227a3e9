//! [`PublishedKey`]: one key of a snapshot, with its lifecycle metadata, and
//! the transitions between states.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use super::error::RegistryError;
use crate::keys::{
    Algorithm, KeyError, KeyFactory, KeyReference, KeyState, Kid, PublicJwk, SigningBackend,
    SigningKey,
};
use crate::store::StoredKey;

/// One key in a [`KeySnapshot`], with its lifecycle metadata.
///
/// [`KeySnapshot`]: crate::registry::KeySnapshot
#[derive(Clone)]
pub struct PublishedKey {
    backend: Arc<dyn SigningBackend>,
    /// The same key as `backend` when it is an in-process [`SigningKey`]:
    /// what a key store can persist.
    key: Option<Arc<SigningKey>>,
    /// Where the key is kept, when it never leaves its device: what a key
    /// store persists instead.
    reference: Option<KeyReference>,
    state: KeyState,
    created_at: SystemTime,
    activated_at: Option<SystemTime>,
    activates_at: Option<SystemTime>,
    retires_at: Option<SystemTime>,
}

impl PublishedKey {
    /// Describes a key for [`KeyRegistryBuilder::key`], for example one
    /// loaded from storage with its saved metadata.
    ///
    /// A registry built on a [`KeyStore`] persists a key described this
    /// way when it is an in-process [`SigningKey`], or when its backend
    /// gives a [`reference`](SigningBackend::reference) (a key kept in a
    /// PKCS#11 token); see [`is_storable`](Self::is_storable).
    ///
    /// [`KeyRegistryBuilder::key`]: crate::registry::KeyRegistryBuilder::key
    /// [`KeyStore`]: crate::store::KeyStore
    pub fn new(backend: Arc<dyn SigningBackend>, state: KeyState, created_at: SystemTime) -> Self {
        let any: Arc<dyn Any + Send + Sync> = Arc::clone(&backend) as Arc<dyn Any + Send + Sync>;
        let key = any.downcast::<SigningKey>().ok();
        let reference = if key.is_some() {
            None
        } else {
            backend.reference()
        };
        PublishedKey {
            backend,
            key,
            reference,
            state,
            created_at,
            activated_at: None,
            activates_at: None,
            retires_at: None,
        }
    }

    /// Describes an in-process key for [`KeyRegistryBuilder::key`]; unlike
    /// [`new`](Self::new), a registry built on a [`KeyStore`] can persist
    /// it.
    ///
    /// [`KeyRegistryBuilder::key`]: crate::registry::KeyRegistryBuilder::key
    /// [`KeyStore`]: crate::store::KeyStore
    pub fn from_signing_key(
        key: impl Into<Arc<SigningKey>>,
        state: KeyState,
        created_at: SystemTime,
    ) -> Self {
        let key: Arc<SigningKey> = key.into();
        PublishedKey {
            backend: Arc::clone(&key) as Arc<dyn SigningBackend>,
            key: Some(key),
            reference: None,
            state,
            created_at,
            activated_at: None,
            activates_at: None,
            retires_at: None,
        }
    }

    /// Replaces the key by the same key with another certificate chain
    /// (checked by the caller), keeping the state and times.
    pub(crate) fn replace_signing_key(&mut self, key: Arc<SigningKey>) {
        self.backend = Arc::clone(&key) as Arc<dyn SigningBackend>;
        self.key = Some(key);
        self.reference = None;
    }

    /// Sets when the key became active.
    #[must_use]
    pub fn with_activated_at(mut self, at: Option<SystemTime>) -> Self {
        self.activated_at = at;
        self
    }

    /// Sets when a next key is due to become active (informational: the
    /// registry itself activates keys only when told to).
    #[must_use]
    pub fn with_activates_at(mut self, at: Option<SystemTime>) -> Self {
        self.activates_at = at;
        self
    }

    /// Sets when a retiring key leaves the JWKS.
    #[must_use]
    pub fn with_retires_at(mut self, at: Option<SystemTime>) -> Self {
        self.retires_at = at;
        self
    }

    /// The signing backend (its public JWK and its signing operation).
    pub fn backend(&self) -> &Arc<dyn SigningBackend> {
        &self.backend
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        self.backend.public_jwk().kid()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.backend.public_jwk().algorithm()
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> &PublicJwk {
        self.backend.public_jwk()
    }

    /// The lifecycle state.
    pub fn state(&self) -> KeyState {
        self.state
    }

    /// When the key was added to the registry (or created, for a key loaded
    /// from storage).
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// For a next key, when it is due to become active, if scheduled.
    pub fn activates_at(&self) -> Option<SystemTime> {
        self.activates_at
    }

    /// For a retiring key, when it leaves the JWKS.
    pub fn retires_at(&self) -> Option<SystemTime> {
        self.retires_at
    }

    /// When the key became active (the registry records it when it
    /// activates a key; `None` for a key that never was, or was described
    /// without it).
    pub fn activated_at(&self) -> Option<SystemTime> {
        self.activated_at
    }

    /// Whether a [`KeyStore`](crate::store::KeyStore) can persist this key:
    /// it is an in-process [`SigningKey`] (the store keeps the private
    /// key), or its backend gives a
    /// [`reference`](SigningBackend::reference) (the store keeps the
    /// reference).
    pub fn is_storable(&self) -> bool {
        self.key.is_some() || self.reference.is_some()
    }

    /// Where the key is kept, for a key that never leaves its device.
    pub fn reference(&self) -> Option<&KeyReference> {
        self.reference.as_ref()
    }

    /// Describes any backend in `state`; an in-process [`SigningKey`] stays
    /// storable (see [`is_storable`](Self::is_storable)).
    pub(crate) fn from_backend(
        key: impl SigningBackend + 'static,
        state: KeyState,
        created_at: SystemTime,
    ) -> Self {
        PublishedKey::new(Arc::new(key), state, created_at)
    }

    /// Makes the key the signing one, from `now`. The caller retires the
    /// previous active key (see `lifecycle::promote`).
    pub(crate) fn activate(&mut self, now: SystemTime) {
        self.state = KeyState::Active;
        self.activated_at = Some(now);
        self.activates_at = None;
        self.retires_at = None;
    }

    /// Stops the key from signing (or, for a next key, from ever signing):
    /// it stays published, retiring, until `until`.
    pub(crate) fn retire_until(&mut self, until: SystemTime) {
        self.state = KeyState::Retiring;
        self.activates_at = None;
        self.retires_at = Some(until);
    }

    /// Notes when a next key is due to become active.
    pub(crate) fn schedule_activation(&mut self, at: SystemTime) {
        self.activates_at = Some(at);
    }

    /// The stored form of this key, if it can be stored.
    pub(crate) fn to_stored(&self) -> Option<StoredKey> {
        let stored = match (&self.key, &self.reference) {
            (Some(key), _) => StoredKey::new(Arc::clone(key), self.state, self.created_at),
            (None, Some(reference)) => {
                StoredKey::from_reference(reference.clone(), self.state, self.created_at)
            }
            (None, None) => return None,
        };
        Some(
            stored
                .with_activated_at(self.activated_at)
                .with_activates_at(self.activates_at)
                .with_retires_at(self.retires_at),
        )
    }

    /// The key as a store holds it, with its metadata. A reference is
    /// opened by `factory` (unless a key of `memory` already holds it: its
    /// backend is reused), and the key it opens must have the public JWK
    /// the reference holds.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Key`] when no factory opens the reference, or the
    /// factory fails to, or the key it opens is another key.
    pub(crate) fn from_stored(
        stored: StoredKey,
        memory: &[PublishedKey],
        factory: &dyn KeyFactory,
    ) -> Result<Self, RegistryError> {
        let key = match (stored.key(), stored.reference()) {
            (Some(key), _) => {
                PublishedKey::from_signing_key(Arc::clone(key), stored.state(), stored.created_at())
            }
            (None, Some(reference)) => {
                let held = memory
                    .iter()
                    .find(|m| m.reference.as_ref() == Some(reference))
                    .map(|m| Arc::clone(&m.backend));
                let backend = match held {
                    Some(backend) => backend,
                    None => factory.open(reference)?.ok_or_else(|| {
                    KeyError::Backend(
                        format!(
                            "key {:?} is kept as a {reference}; the registry's key factory ({factory:?}) does not open it: build the registry with KeyRegistryBuilder::key_factory and the factory of that device",
                            stored.kid()
                        )
                        .into(),
                    )
                    })?,
                };
                if backend.public_jwk() != reference.public_jwk() {
                    return Err(KeyError::Backend(
                        format!(
                            "key {:?}: the {reference} holds another public key than the one stored; refusing to sign or publish with it",
                            stored.kid()
                        )
                        .into(),
                    )
                    .into());
                }
                let mut key = PublishedKey::new(backend, stored.state(), stored.created_at());
                // The stored reference, as stored: the record stays as it is.
                key.reference = Some(reference.clone());
                key
            }
            (None, None) => unreachable!("a stored key holds a private key or a reference"),
        };
        Ok(key
            .with_activated_at(stored.activated_at())
            .with_activates_at(stored.activates_at())
            .with_retires_at(stored.retires_at()))
    }

    /// Same key (public JWK), same state and times.
    pub(crate) fn same_as(&self, other: &PublishedKey) -> bool {
        self.public_jwk() == other.public_jwk()
            && self.state == other.state
            && self.created_at == other.created_at
            && self.activated_at == other.activated_at
            && self.activates_at == other.activates_at
            && self.retires_at == other.retires_at
    }
}

impl fmt::Debug for PublishedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishedKey")
            .field("kid", self.kid())
            .field("algorithm", &self.algorithm())
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("activated_at", &self.activated_at)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .field("storable", &self.is_storable())
            .field("reference", &self.reference)
            .finish()
    }
}
