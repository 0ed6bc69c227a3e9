//! [`PublishedKey`]: one key of a snapshot, with its lifecycle metadata, and
//! the transitions between states.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::keys::{Algorithm, KeyState, Kid, PublicJwk, SigningBackend, SigningKey};
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
    /// A registry built on a [`KeyStore`] cannot persist a key described
    /// this way (the backend hides its private key): use
    /// [`from_signing_key`](Self::from_signing_key) for those.
    ///
    /// [`KeyRegistryBuilder::key`]: crate::registry::KeyRegistryBuilder::key
    /// [`KeyStore`]: crate::store::KeyStore
    pub fn new(backend: Arc<dyn SigningBackend>, state: KeyState, created_at: SystemTime) -> Self {
        PublishedKey {
            backend,
            key: None,
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
            state,
            created_at,
            activated_at: None,
            activates_at: None,
            retires_at: None,
        }
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

    /// Whether a [`KeyStore`](crate::store::KeyStore) can persist this key
    /// (it is an in-process [`SigningKey`]).
    pub fn is_storable(&self) -> bool {
        self.key.is_some()
    }

    /// Describes any backend in `state`; an in-process [`SigningKey`] stays
    /// storable (see [`is_storable`](Self::is_storable)).
    pub(crate) fn from_backend(
        key: impl SigningBackend + 'static,
        state: KeyState,
        created_at: SystemTime,
    ) -> Self {
        let (backend, storable) = split_backend(key);
        let mut key = PublishedKey::new(backend, state, created_at);
        key.key = storable;
        key
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
        let key = self.key.as_ref()?;
        Some(
            StoredKey::new(Arc::clone(key), self.state, self.created_at)
                .with_activated_at(self.activated_at)
                .with_activates_at(self.activates_at)
                .with_retires_at(self.retires_at),
        )
    }

    /// The key as a store holds it, with its metadata.
    pub(crate) fn from_stored(stored: StoredKey) -> Self {
        PublishedKey::from_signing_key(
            Arc::clone(stored.key()),
            stored.state(),
            stored.created_at(),
        )
        .with_activated_at(stored.activated_at())
        .with_activates_at(stored.activates_at())
        .with_retires_at(stored.retires_at())
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

/// Splits a backend into the shared trait object and, when it is an
/// in-process [`SigningKey`], the same key as a storable `Arc<SigningKey>`.
fn split_backend<K: SigningBackend + 'static>(
    key: K,
) -> (Arc<dyn SigningBackend>, Option<Arc<SigningKey>>) {
    let key = Arc::new(key);
    let any: Arc<dyn Any + Send + Sync> = Arc::clone(&key) as Arc<dyn Any + Send + Sync>;
    match any.downcast::<SigningKey>() {
        Ok(signing) => (
            Arc::clone(&signing) as Arc<dyn SigningBackend>,
            Some(signing),
        ),
        Err(_) => (key, None),
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
            .field("storable", &self.key.is_some())
            .finish()
    }
}
