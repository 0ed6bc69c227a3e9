//! The shared key registry: which key signs, which keys are published.
//!
//! A [`KeyRegistry`] is shared (cheaply cloned) by the signer, the JWKS
//! service and the verifier. Readers call [`KeyRegistry::current`] and get
//! an immutable [`KeySnapshot`] without blocking. Every change builds a new
//! snapshot, including its JWKS bytes and ETag, outside any lock readers
//! take, and swaps it in atomically: a signer can never use a `kid` that the
//! JWKS of the same moment does not publish.
//!
//! Keys are in one of three [`KeyState`]s:
//!
//! * **next**: published, does not sign yet (so caches learn it first);
//! * **active**: signs, published; at most one;
//! * **retiring**: no longer signs, published until a given time so that
//!   tokens it signed keep verifying.
//!
//! A registry built on a [`KeyStore`]
//! ([`KeyRegistryBuilder::store`]) loads its keys at start-up and writes
//! every change through the store before publishing it; see the
//! [`store`](crate::store) module. The [`rotation`](crate::rotation) module
//! rotates keys on a schedule.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_jwt_signer::{Algorithm, KeyRegistry, KeyState, SigningKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! let first = registry.current().active().unwrap().kid().clone();
//!
//! // Publish the next key ahead of time, then let it take over. The old
//! // key stays published for two minutes, so its live tokens still verify.
//! registry.add_next(SigningKey::generate(Algorithm::ES256)?)?;
//! let second = registry.rotate(Duration::from_secs(120))?;
//!
//! let snapshot = registry.current();
//! assert_eq!(snapshot.active().unwrap().kid(), &second);
//! assert_eq!(snapshot.get(&first).unwrap().state(), KeyState::Retiring);
//! assert_eq!(snapshot.keys().len(), 2);
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::watch;

use crate::b64;
use crate::clock::Clock;
pub use crate::keys::KeyState;
use crate::keys::{Algorithm, JwsSigner, KeyError, Kid, PublicJwk, SigningKey};
use crate::store::{KeyStore, StoreError, StoredKey};

/// One key in a [`KeySnapshot`], with its lifecycle metadata.
#[derive(Clone)]
pub struct PublishedKey {
    pub(crate) signer: Arc<dyn JwsSigner>,
    /// The same key as `signer` when it is an in-process [`SigningKey`]:
    /// what a key store can persist.
    pub(crate) key: Option<Arc<SigningKey>>,
    pub(crate) state: KeyState,
    pub(crate) created_at: SystemTime,
    pub(crate) activated_at: Option<SystemTime>,
    pub(crate) activates_at: Option<SystemTime>,
    pub(crate) retires_at: Option<SystemTime>,
}

impl PublishedKey {
    /// Describes a key for [`KeyRegistryBuilder::key`], for example one
    /// loaded from storage with its saved metadata.
    ///
    /// A registry built on a [`KeyStore`] cannot persist a key described
    /// this way (the signer hides its private key): use
    /// [`from_signing_key`](Self::from_signing_key) for those.
    pub fn new(signer: Arc<dyn JwsSigner>, state: KeyState, created_at: SystemTime) -> Self {
        PublishedKey {
            signer,
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
    pub fn from_signing_key(
        key: impl Into<Arc<SigningKey>>,
        state: KeyState,
        created_at: SystemTime,
    ) -> Self {
        let key: Arc<SigningKey> = key.into();
        PublishedKey {
            signer: Arc::clone(&key) as Arc<dyn JwsSigner>,
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

    /// The signer (its public JWK and its signing operation).
    pub fn signer(&self) -> &Arc<dyn JwsSigner> {
        &self.signer
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        self.signer.public_jwk().kid()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.signer.public_jwk().algorithm()
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> &PublicJwk {
        self.signer.public_jwk()
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

    /// Whether a [`KeyStore`] can persist this key (it is an in-process
    /// [`SigningKey`]).
    pub fn is_storable(&self) -> bool {
        self.key.is_some()
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
    fn same_as(&self, other: &PublishedKey) -> bool {
        self.public_jwk() == other.public_jwk()
            && self.state == other.state
            && self.created_at == other.created_at
            && self.activated_at == other.activated_at
            && self.activates_at == other.activates_at
            && self.retires_at == other.retires_at
    }
}

/// Splits a signer into the shared trait object and, when it is an
/// in-process [`SigningKey`], the same key as a storable `Arc<SigningKey>`.
fn split_signer<K: JwsSigner + 'static>(key: K) -> (Arc<dyn JwsSigner>, Option<Arc<SigningKey>>) {
    let key = Arc::new(key);
    let any: Arc<dyn Any + Send + Sync> = Arc::clone(&key) as Arc<dyn Any + Send + Sync>;
    match any.downcast::<SigningKey>() {
        Ok(signing) => (Arc::clone(&signing) as Arc<dyn JwsSigner>, Some(signing)),
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

/// An immutable view of the registry at one moment.
///
/// The active key, when there is one, is always among the published keys,
/// and [`jwks_bytes`](Self::jwks_bytes) is the serialised JWK Set of exactly
/// these keys.
pub struct KeySnapshot {
    version: u64,
    keys: Vec<PublishedKey>,
    jwks: Bytes,
    etag: HeaderValue,
}

impl KeySnapshot {
    fn build(version: u64, mut keys: Vec<PublishedKey>) -> Self {
        // Active first, then next keys, then retiring ones: a stable,
        // readable order.
        keys.sort_by_key(|key| match key.state {
            KeyState::Active => 0,
            KeyState::Next => 1,
            KeyState::Retiring => 2,
        });
        let jwks = serde_json::to_vec(&serde_json::json!({
            "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>(),
        }))
        .expect("public JWKs always serialise");
        let digest = openssl::sha::sha256(&jwks);
        let etag = format!("\"{}\"", b64::encode(&digest[..18]));
        KeySnapshot {
            version,
            keys,
            jwks: Bytes::from(jwks),
            etag: HeaderValue::from_str(&etag).expect("base64url is a valid header value"),
        }
    }

    /// A number that grows with every change of the registry.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The key that signs, if any.
    pub fn active(&self) -> Option<&PublishedKey> {
        self.keys.iter().find(|k| k.state == KeyState::Active)
    }

    /// Every published key: active first, then next, then retiring.
    pub fn keys(&self) -> &[PublishedKey] {
        &self.keys
    }

    /// The published key with this kid.
    pub fn get(&self, kid: &str) -> Option<&PublishedKey> {
        self.keys.iter().find(|k| k.kid().as_str() == kid)
    }

    /// The JWK Set (`{"keys":[...]}`) of the published keys, serialised once
    /// when the snapshot was built.
    pub fn jwks_bytes(&self) -> &Bytes {
        &self.jwks
    }

    /// A strong ETag of [`jwks_bytes`](Self::jwks_bytes), quoted, ready for
    /// an `ETag` header.
    pub fn etag(&self) -> &HeaderValue {
        &self.etag
    }
}

impl fmt::Debug for KeySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySnapshot")
            .field("version", &self.version)
            .field("keys", &self.keys)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

/// Why a registry operation was refused. Nothing changed when it is
/// returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegistryError {
    /// A key with this kid is already published.
    DuplicateKid(Kid),
    /// No published key has this kid.
    UnknownKid(Kid),
    /// The operation needs an active key and there is none.
    NoActiveKey,
    /// The operation needs a non-active key but this one is active;
    /// rotate first.
    KeyIsActive(Kid),
    /// The key could not be generated.
    Key(KeyError),
    /// A snapshot would hold more than one active key.
    SeveralActiveKeys,
    /// A pluggable backend (a key store) failed.
    Other(Box<dyn std::error::Error + Send + Sync>),
    /// The registry's [`KeyStore`] failed to load or persist a change;
    /// nothing was published.
    Store(StoreError),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::DuplicateKid(kid) => {
                write!(f, "a key with kid {kid:?} is already in the registry")
            }
            RegistryError::UnknownKid(kid) => write!(f, "no key with kid {kid:?} in the registry"),
            RegistryError::NoActiveKey => f.write_str("the registry has no active key"),
            RegistryError::KeyIsActive(kid) => write!(
                f,
                "key {kid:?} is the active key; rotate to another key first"
            ),
            RegistryError::Key(err) => write!(f, "key generation failed: {err}"),
            RegistryError::SeveralActiveKeys => {
                f.write_str("a registry can hold only one active key")
            }
            RegistryError::Other(err) => err.fmt(f),
            RegistryError::Store(err) => write!(f, "key store: {err}"),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::Key(err) => Some(err),
            RegistryError::Other(err) => Some(err.as_ref()),
            RegistryError::Store(err) => Some(err),
            _ => None,
        }
    }
}

impl From<KeyError> for RegistryError {
    fn from(err: KeyError) -> Self {
        RegistryError::Key(err)
    }
}

impl From<StoreError> for RegistryError {
    fn from(err: StoreError) -> Self {
        RegistryError::Store(err)
    }
}

/// The shared registry of signing keys. See the [module docs](self).
///
/// Cloning is cheap and every clone sees the same keys.
#[derive(Clone)]
pub struct KeyRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<KeySnapshot>,
    /// Serialises writers; never held by readers, never across an `.await`.
    writer: Mutex<()>,
    changes: watch::Sender<Arc<KeySnapshot>>,
    clock: Clock,
    /// Where every change is written before it is published.
    store: Option<Arc<dyn KeyStore>>,
}

impl KeyRegistry {
    /// A registry whose only key, `key`, is active.
    pub fn new(key: impl JwsSigner + 'static) -> Self {
        Self::builder()
            .active(key)
            .build()
            .expect("one key cannot conflict")
    }

    /// A registry with one freshly generated active key (RSA: 2048 bits).
    ///
    /// # Errors
    ///
    /// [`KeyError`] if generation fails.
    pub fn generate(algorithm: Algorithm) -> Result<Self, KeyError> {
        Ok(Self::new(SigningKey::generate(algorithm)?))
    }

    /// A registry with no keys. Signing fails closed (no active key) until
    /// a key is added and activated.
    pub fn empty() -> Self {
        Self::builder().build().expect("no keys cannot conflict")
    }

    /// A builder, to set a [`Clock`] or start from several keys (for example
    /// keys loaded from storage).
    pub fn builder() -> KeyRegistryBuilder {
        KeyRegistryBuilder {
            clock: Clock::system(),
            keys: Vec::new(),
            store: None,
            generate_if_missing: None,
        }
    }

    /// The current snapshot. Never blocks; the snapshot stays valid (and
    /// unchanged) for as long as it is held.
    pub fn current(&self) -> Arc<KeySnapshot> {
        self.inner.current.load_full()
    }

    /// The clock this registry (and the signers built on it) read.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<KeySnapshot>> {
        self.inner.changes.subscribe()
    }

    /// Adds a key as **next**: published, not signing. If the registry has
    /// no active key, the key becomes active at once instead.
    ///
    /// # Errors
    ///
    /// [`RegistryError::DuplicateKid`] if the kid is already published.
    pub fn add_next(&self, key: impl JwsSigner + 'static) -> Result<Kid, RegistryError> {
        self.add_next_due(key, None)
    }

    /// Adds a key as **next**, noting when it is due to become active.
    ///
    /// # Errors
    ///
    /// [`RegistryError::DuplicateKid`] if the kid is already published.
    pub fn add_next_due(
        &self,
        key: impl JwsSigner + 'static,
        activates_at: Option<SystemTime>,
    ) -> Result<Kid, RegistryError> {
        let (signer, storable) = split_signer(key);
        let kid = signer.public_jwk().kid().clone();
        let now = self.inner.clock.now();
        self.update(|keys| {
            ensure_unique(keys, &kid)?;
            let state = if keys.iter().any(|k| k.state == KeyState::Active) {
                KeyState::Next
            } else {
                KeyState::Active
            };
            let mut key = PublishedKey::new(signer, state, now)
                .with_activates_at((state == KeyState::Next).then_some(activates_at).flatten())
                .with_activated_at((state == KeyState::Active).then_some(now));
            key.key = storable;
            keys.push(key);
            Ok(kid.clone())
        })
    }

    /// Makes the oldest **next** key active (or, when there is none, a
    /// freshly generated key with the active key's algorithm); the old
    /// active key becomes **retiring** until now + `retain`. Returns the new
    /// active kid.
    ///
    /// Choose `retain` at least the token lifetime plus the verifiers'
    /// leeway, or live tokens stop verifying.
    ///
    /// Generating an RSA key blocks for tens to hundreds of milliseconds; in
    /// async code add the next key from a blocking thread first.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NoActiveKey`] if there is neither a next key nor an
    /// active key to take the algorithm from; [`RegistryError::Key`] if
    /// generation fails.
    pub fn rotate(&self, retain: Duration) -> Result<Kid, RegistryError> {
        let snapshot = self.current();
        let has_next = snapshot.keys.iter().any(|k| k.state == KeyState::Next);
        if !has_next {
            let algorithm = snapshot
                .active()
                .map(PublishedKey::algorithm)
                .ok_or(RegistryError::NoActiveKey)?;
            let key = SigningKey::generate(algorithm)?;
            return self.rotate_to(key, retain);
        }
        let now = self.inner.clock.now();
        self.update(|keys| {
            let Some(next) = oldest_next(keys) else {
                // Another writer consumed it in between: nothing to promote.
                return Err(RegistryError::NoActiveKey);
            };
            Ok(promote(keys, next, now, retain))
        })
    }

    /// Makes `key` the active key at once (it is added if not yet
    /// published); the old active key becomes **retiring** until now +
    /// `retain`. Returns the new active kid.
    ///
    /// # Errors
    ///
    /// [`RegistryError::DuplicateKid`] if a key with the same kid is
    /// published but is not next.
    pub fn rotate_to(
        &self,
        key: impl JwsSigner + 'static,
        retain: Duration,
    ) -> Result<Kid, RegistryError> {
        let (signer, storable) = split_signer(key);
        let kid = signer.public_jwk().kid().clone();
        let now = self.inner.clock.now();
        self.update(|keys| {
            ensure_unique(keys, &kid)?;
            let mut key = PublishedKey::new(signer, KeyState::Next, now);
            key.key = storable;
            keys.push(key);
            let index = keys.len() - 1;
            Ok(promote(keys, index, now, retain))
        })
    }

    /// Stops a key from signing: it becomes **retiring** until `until`. A
    /// next key can be retired (withdrawn) too. Retiring the active key
    /// leaves the registry without one, and signing fails closed until
    /// another key is activated.
    ///
    /// # Errors
    ///
    /// [`RegistryError::UnknownKid`] if no such key is published.
    pub fn retire(&self, kid: &Kid, until: SystemTime) -> Result<(), RegistryError> {
        self.update(|keys| {
            let key = find_mut(keys, kid)?;
            key.state = KeyState::Retiring;
            key.activates_at = None;
            key.retires_at = Some(until);
            Ok(())
        })
    }

    /// Removes a key from the JWKS at once: tokens it signed stop verifying
    /// as soon as verifiers refresh their copy. This is revocation, for a
    /// compromised key. The active key cannot be removed: rotate first.
    ///
    /// # Errors
    ///
    /// [`RegistryError::UnknownKid`] or [`RegistryError::KeyIsActive`].
    pub fn remove(&self, kid: &Kid) -> Result<(), RegistryError> {
        self.update(|keys| {
            let key = find_mut(keys, kid)?;
            if key.state == KeyState::Active {
                return Err(RegistryError::KeyIsActive(kid.clone()));
            }
            keys.retain(|k| k.kid() != kid);
            Ok(())
        })
    }

    /// Drops every retiring key whose time has passed (by the registry's
    /// clock). Returns the kids removed. With a store, a failure to write
    /// keeps the keys and returns nothing:
    /// [`try_prune_expired`](Self::try_prune_expired) reports it.
    pub fn prune_expired(&self) -> Vec<Kid> {
        self.try_prune_expired().unwrap_or_default()
    }

    /// Like [`prune_expired`](Self::prune_expired), but reports a failure
    /// of the key store instead of keeping the keys silently.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Store`] if the store cannot load or remove the keys;
    /// nothing was published.
    pub fn try_prune_expired(&self) -> Result<Vec<Kid>, RegistryError> {
        let now = self.inner.clock.now();
        let current = self.current();
        if !current.keys.iter().any(|k| is_expired(k, now)) {
            return Ok(Vec::new());
        }
        self.update(|keys| {
            let gone: Vec<Kid> = keys
                .iter()
                .filter(|k| is_expired(k, now))
                .map(|k| k.kid().clone())
                .collect();
            keys.retain(|k| !is_expired(k, now));
            Ok(gone)
        })
    }

    /// The key store this registry writes through, if it was built with
    /// one ([`KeyRegistryBuilder::store`]).
    pub fn store(&self) -> Option<&Arc<dyn KeyStore>> {
        self.inner.store.as_ref()
    }

    /// Loads the keys from the store and publishes them if they differ from
    /// the current ones: picks up keys that another process added,
    /// activated, retired or removed. Returns whether anything changed.
    /// Nothing is written. A registry without a store returns `Ok(false)`.
    ///
    /// Blocking (see the [store module docs](crate::store#blocking));
    /// [`StoreFollower`](crate::store::StoreFollower) calls it periodically.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Store`] if the store cannot be loaded,
    /// [`RegistryError::SeveralActiveKeys`] if it holds more than one
    /// active key; the current keys stay published.
    pub fn reload(&self) -> Result<bool, RegistryError> {
        let Some(store) = &self.inner.store else {
            return Ok(false);
        };
        let _writer = self.lock_writer();
        let current = self.inner.current.load_full();
        let keys = merge_stored(&current.keys, store.load()?);
        check_invariants(&keys)?;
        if same_keys(&current.keys, &keys) {
            return Ok(false);
        }
        self.publish(current.version + 1, keys);
        Ok(true)
    }

    /// Applies `change` to a copy of the key list, checks the invariants and
    /// publishes the result as a new snapshot. Nothing changes if `change`
    /// or a check fails.
    ///
    /// With a store, the change is made to the keys as stored (read under
    /// the store's lock) and written through before it is published; if
    /// writing fails, what was written is rolled back (best effort) and
    /// nothing is published.
    fn update<R>(
        &self,
        change: impl FnOnce(&mut Vec<PublishedKey>) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        self.change(change, true)
    }

    /// Like [`update`](Self::update), but publishes no new snapshot when the
    /// keys are unchanged (the rotator's conditional steps).
    pub(crate) fn transact<R>(
        &self,
        change: impl FnOnce(&mut Vec<PublishedKey>) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        self.change(change, false)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned lock only means another writer panicked; the snapshot
        // it guards is immutable and still consistent.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn change<R>(
        &self,
        change: impl FnOnce(&mut Vec<PublishedKey>) -> Result<R, RegistryError>,
        always_publish: bool,
    ) -> Result<R, RegistryError> {
        let _writer = self.lock_writer();
        let current = self.inner.current.load_full();
        let Some(store) = &self.inner.store else {
            let mut keys = current.keys.clone();
            let result = change(&mut keys)?;
            check_invariants(&keys)?;
            if always_publish || !same_keys(&current.keys, &keys) {
                self.publish(current.version + 1, keys);
            }
            return Ok(result);
        };
        let lock = store.lock()?;
        // Work from what is stored: another writer may have changed it.
        let base = merge_stored(&current.keys, store.load()?);
        check_invariants(&base)?;
        let mut keys = base.clone();
        let result = change(&mut keys)?;
        check_invariants(&keys)?;
        persist(store.as_ref(), &base, &keys)?;
        drop(lock);
        sort_stored_order(&mut keys);
        if always_publish || !same_keys(&current.keys, &keys) {
            self.publish(current.version + 1, keys);
        }
        Ok(result)
    }

    /// Swaps in a new snapshot. The caller holds the writer lock.
    fn publish(&self, version: u64, keys: Vec<PublishedKey>) {
        let next = Arc::new(KeySnapshot::build(version, keys));
        self.inner.current.store(Arc::clone(&next));
        self.inner.changes.send_replace(next);
    }
}

/// The stored keys as published keys, reusing the in-memory key (and its
/// exact times) where the store holds the same thing.
fn merge_stored(memory: &[PublishedKey], stored: Vec<StoredKey>) -> Vec<PublishedKey> {
    let mut keys: Vec<PublishedKey> = stored
        .into_iter()
        .map(|stored| {
            match memory
                .iter()
                .find(|m| m.kid() == stored.kid() && m.to_stored().as_ref() == Some(&stored))
            {
                Some(same) => same.clone(),
                None => PublishedKey::from_stored(stored),
            }
        })
        .collect();
    sort_stored_order(&mut keys);
    keys
}

/// The order of keys loaded from a store (creation second, then kid), so
/// that replicas that load the same keys publish the same JWKS bytes.
fn sort_stored_order(keys: &mut [PublishedKey]) {
    keys.sort_by(|a, b| {
        crate::clock::unix_seconds(a.created_at)
            .cmp(&crate::clock::unix_seconds(b.created_at))
            .then_with(|| a.kid().cmp(b.kid()))
    });
}

/// Whether two key lists hold the same keys in the same states.
fn same_keys(a: &[PublishedKey], b: &[PublishedKey]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| x.kid() == y.kid() && x.same_as(y)))
}

/// One write made to a store, remembered to roll it back.
enum Written {
    Saved {
        kid: Kid,
        previous: Option<StoredKey>,
    },
    Removed(StoredKey),
}

/// Writes the difference between `base` (as stored) and `keys` to the store:
/// removals first, then keys that are not active, then the active key, so
/// that an interrupted change never leaves two active keys. On failure,
/// undoes what was written (best effort) and returns the error.
fn persist(
    store: &dyn KeyStore,
    base: &[PublishedKey],
    keys: &[PublishedKey],
) -> Result<(), RegistryError> {
    let find = |list: &[PublishedKey], kid: &Kid| list.iter().position(|k| k.kid() == kid);
    let mut saves = Vec::new();
    for key in keys {
        let before = find(base, key.kid()).map(|i| &base[i]);
        if before.is_some_and(|before| before.same_as(key)) {
            continue;
        }
        let stored = key.to_stored().ok_or_else(|| StoreError::NotStorable {
            kid: key.kid().clone(),
        })?;
        if before.and_then(PublishedKey::to_stored).as_ref() == Some(&stored) {
            // Differs only below the store's precision.
            continue;
        }
        saves.push((stored, before.and_then(PublishedKey::to_stored)));
    }
    saves.sort_by_key(|(stored, _)| stored.state() == KeyState::Active);
    let removals: Vec<StoredKey> = base
        .iter()
        .filter(|k| find(keys, k.kid()).is_none())
        .filter_map(PublishedKey::to_stored)
        .collect();

    let mut written = Vec::new();
    let mut outcome = Ok(());
    for stored in removals {
        if let Err(err) = store.remove(stored.kid()) {
            outcome = Err(err);
            break;
        }
        written.push(Written::Removed(stored));
    }
    if outcome.is_ok() {
        for (stored, previous) in saves {
            if let Err(err) = store.save(&stored) {
                outcome = Err(err);
                break;
            }
            written.push(Written::Saved {
                kid: stored.kid().clone(),
                previous,
            });
        }
    }
    let Err(err) = outcome else {
        return Ok(());
    };
    for undo in written.into_iter().rev() {
        let (kid, result) = match undo {
            Written::Saved {
                kid,
                previous: Some(previous),
            } => {
                let result = store.save(&previous);
                (kid, result)
            }
            Written::Saved {
                kid,
                previous: None,
            } => {
                let result = store.remove(&kid);
                (kid, result)
            }
            Written::Removed(stored) => (stored.kid().clone(), store.save(&stored)),
        };
        if let Err(undo_err) = result {
            tracing::error!(
                kid = %kid,
                error = %undo_err,
                "cannot roll back a partly written key change; the store may differ from the published keys"
            );
        }
    }
    Err(err.into())
}

impl fmt::Debug for KeyRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current();
        f.debug_struct("KeyRegistry")
            .field("version", &current.version)
            .field("keys", &current.keys)
            .field("clock", &self.inner.clock)
            .field("store", &self.inner.store)
            .finish()
    }
}

/// Builds a [`KeyRegistry`] from several keys, a clock and, optionally, a
/// [`KeyStore`].
#[must_use]
pub struct KeyRegistryBuilder {
    clock: Clock,
    keys: Vec<PublishedKey>,
    store: Option<Arc<dyn KeyStore>>,
    generate_if_missing: Option<Algorithm>,
}

impl KeyRegistryBuilder {
    /// The clock for key lifetimes and token dates (default: the system's).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Adds the active key.
    pub fn active(self, key: impl JwsSigner + 'static) -> Self {
        let now = self.clock.now();
        let (signer, storable) = split_signer(key);
        let mut key = PublishedKey::new(signer, KeyState::Active, now).with_activated_at(Some(now));
        key.key = storable;
        self.key(key)
    }

    /// Adds a next key (published, not signing).
    pub fn next(self, key: impl JwsSigner + 'static) -> Self {
        let now = self.clock.now();
        let (signer, storable) = split_signer(key);
        let mut key = PublishedKey::new(signer, KeyState::Next, now);
        key.key = storable;
        self.key(key)
    }

    /// Adds a key with its state and metadata as they are, for example as
    /// loaded from storage.
    pub fn key(mut self, key: PublishedKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Keeps the keys in `store`: [`build`](Self::build) loads every stored
    /// key (same kid, state and times), and every later change is written
    /// through the store before it is published (see the
    /// [store module docs](crate::store)). Keys given to this builder are
    /// added to the stored ones and saved.
    ///
    /// With a store, building and every change do blocking I/O.
    pub fn store(mut self, store: impl KeyStore + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// When the registry would have no active key (a first start with an
    /// empty store), generates one for `algorithm` and makes it active. With
    /// a store, the key is saved before it is published. RSA generation
    /// blocks for a while.
    ///
    /// A store that holds keys but none active (a change cut short by a
    /// crash or a full disk, between the old key leaving the active state
    /// and the new one reaching it) gets its oldest **next** key activated
    /// instead, as the [rotator](crate::rotation) would: that key has been
    /// published, a fresh one has not.
    pub fn generate_if_missing(mut self, algorithm: Algorithm) -> Self {
        self.generate_if_missing = Some(algorithm);
        self
    }

    /// Builds the registry.
    ///
    /// # Errors
    ///
    /// [`RegistryError::DuplicateKid`] if two keys share a kid;
    /// [`RegistryError::SeveralActiveKeys`] if more than one is active;
    /// [`RegistryError::Store`] if the store cannot be loaded (the error
    /// names the file and the reason) or written; [`RegistryError::Key`] if
    /// a key cannot be generated.
    pub fn build(self) -> Result<KeyRegistry, RegistryError> {
        let KeyRegistryBuilder {
            clock,
            mut keys,
            store,
            generate_if_missing,
        } = self;
        let Some(store) = store else {
            if let Some(algorithm) = generate_if_missing
                && !keys.iter().any(|k| k.state == KeyState::Active)
            {
                let now = clock.now();
                keys.push(
                    PublishedKey::from_signing_key(
                        SigningKey::generate(algorithm)?,
                        KeyState::Active,
                        now,
                    )
                    .with_activated_at(Some(now)),
                );
            }
            check_invariants(&keys)?;
            return Ok(KeyRegistry::assemble(clock, keys, None));
        };
        check_invariants(&keys)?;
        let loaded = merge_stored(&[], store.load()?);
        check_invariants(&loaded)?;
        let registry = KeyRegistry::assemble(clock, loaded, Some(store));
        if !keys.is_empty() {
            registry.update(|stored| {
                for key in keys {
                    ensure_unique(stored, key.kid())?;
                    stored.push(key);
                }
                Ok(())
            })?;
        }
        if let Some(algorithm) = generate_if_missing
            && registry.current().active().is_none()
        {
            let now = registry.clock().now();
            let activated = registry.transact(|stored| {
                if stored.iter().any(|k| k.state == KeyState::Active) {
                    return Ok(true);
                }
                // A published next key rather than a fresh, unpublished one.
                match oldest_next(stored) {
                    Some(index) => {
                        promote(stored, index, now, Duration::ZERO);
                        Ok(true)
                    }
                    None => Ok(false),
                }
            })?;
            if activated {
                return Ok(registry);
            }
            let key = SigningKey::generate(algorithm)?;
            let now = registry.clock().now();
            registry.transact(|stored| {
                // Another process may have activated a key meanwhile.
                if !stored.iter().any(|k| k.state == KeyState::Active) {
                    stored.push(
                        PublishedKey::from_signing_key(key, KeyState::Active, now)
                            .with_activated_at(Some(now)),
                    );
                }
                Ok(())
            })?;
        }
        Ok(registry)
    }
}

impl KeyRegistry {
    fn assemble(clock: Clock, keys: Vec<PublishedKey>, store: Option<Arc<dyn KeyStore>>) -> Self {
        let snapshot = Arc::new(KeySnapshot::build(0, keys));
        let (changes, _) = watch::channel(Arc::clone(&snapshot));
        KeyRegistry {
            inner: Arc::new(Inner {
                current: ArcSwap::new(snapshot),
                writer: Mutex::new(()),
                changes,
                clock,
                store,
            }),
        }
    }
}

impl fmt::Debug for KeyRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRegistryBuilder")
            .field("clock", &self.clock)
            .field("keys", &self.keys)
            .field("store", &self.store)
            .field("generate_if_missing", &self.generate_if_missing)
            .finish()
    }
}

/// The index of the next key to activate: the oldest **next** key, ties
/// (keys created at the same time) broken by the lower kid, so that every
/// writer (by hand, the rotator, a restart) picks the same one.
pub(crate) fn oldest_next(keys: &[PublishedKey]) -> Option<usize> {
    keys.iter()
        .enumerate()
        .filter(|(_, k)| k.state == KeyState::Next)
        .min_by(|(_, a), (_, b)| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.kid().cmp(b.kid()))
        })
        .map(|(index, _)| index)
}

/// Promotes `keys[index]` to active and retires the old active key.
pub(crate) fn promote(
    keys: &mut [PublishedKey],
    index: usize,
    now: SystemTime,
    retain: Duration,
) -> Kid {
    for key in keys.iter_mut() {
        if key.state == KeyState::Active {
            key.state = KeyState::Retiring;
            key.retires_at = Some(retain_until(now, retain));
        }
    }
    let key = &mut keys[index];
    key.state = KeyState::Active;
    key.activated_at = Some(now);
    key.activates_at = None;
    key.retires_at = None;
    key.kid().clone()
}

/// `now + retain`, with retentions beyond a thousand years (such as
/// `Duration::MAX`, "keep it") capped there instead of overflowing.
fn retain_until(now: SystemTime, retain: Duration) -> SystemTime {
    const MAX_RETAIN: Duration = Duration::from_secs(1000 * 365 * 24 * 60 * 60);
    now + retain.min(MAX_RETAIN)
}

pub(crate) fn is_expired(key: &PublishedKey, now: SystemTime) -> bool {
    key.state == KeyState::Retiring && key.retires_at.is_some_and(|at| at <= now)
}

fn ensure_unique(keys: &[PublishedKey], kid: &Kid) -> Result<(), RegistryError> {
    if keys.iter().any(|k| k.kid() == kid) {
        Err(RegistryError::DuplicateKid(kid.clone()))
    } else {
        Ok(())
    }
}

fn find_mut<'a>(
    keys: &'a mut [PublishedKey],
    kid: &Kid,
) -> Result<&'a mut PublishedKey, RegistryError> {
    keys.iter_mut()
        .find(|k| k.kid() == kid)
        .ok_or_else(|| RegistryError::UnknownKid(kid.clone()))
}

fn check_invariants(keys: &[PublishedKey]) -> Result<(), RegistryError> {
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].iter().any(|k| k.kid() == key.kid()) {
            return Err(RegistryError::DuplicateKid(key.kid().clone()));
        }
    }
    if keys.iter().filter(|k| k.state == KeyState::Active).count() > 1 {
        return Err(RegistryError::SeveralActiveKeys);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn es256() -> SigningKey {
        SigningKey::generate(Algorithm::ES256).unwrap()
    }

    fn published_kids(snapshot: &KeySnapshot) -> Vec<String> {
        let jwks: serde_json::Value = serde_json::from_slice(snapshot.jwks_bytes()).unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn new_registry_publishes_its_active_key() {
        let key = es256();
        let kid = key.kid().clone();
        let registry = KeyRegistry::new(key);
        let snapshot = registry.current();
        assert_eq!(snapshot.active().unwrap().kid(), &kid);
        assert_eq!(published_kids(&snapshot), vec![kid.to_string()]);
    }

    #[test]
    fn empty_registry_has_an_empty_set_and_no_active_key() {
        let registry = KeyRegistry::empty();
        let snapshot = registry.current();
        assert!(snapshot.active().is_none());
        assert_eq!(&snapshot.jwks_bytes()[..], br#"{"keys":[]}"#);
    }

    #[test]
    fn first_key_added_to_an_empty_registry_becomes_active() {
        let registry = KeyRegistry::empty();
        let kid = registry.add_next(es256()).unwrap();
        assert_eq!(registry.current().active().unwrap().kid(), &kid);
    }

    #[test]
    fn duplicate_kid_is_refused_and_nothing_changes() {
        let key = es256();
        let registry = KeyRegistry::new(key.clone());
        let before = registry.current();
        assert!(matches!(
            registry.add_next(key.clone()),
            Err(RegistryError::DuplicateKid(_))
        ));
        assert!(matches!(
            registry.rotate_to(key, Duration::ZERO),
            Err(RegistryError::DuplicateKid(_))
        ));
        assert_eq!(registry.current().version(), before.version());
    }

    #[test]
    fn builder_refuses_duplicates_and_two_active_keys() {
        let key = es256();
        assert!(matches!(
            KeyRegistry::builder().active(key.clone()).next(key).build(),
            Err(RegistryError::DuplicateKid(_))
        ));
        assert!(matches!(
            KeyRegistry::builder()
                .active(es256())
                .active(es256())
                .build(),
            Err(RegistryError::SeveralActiveKeys)
        ));
    }

    #[test]
    fn rotate_promotes_next_and_retires_old_until_retention() {
        let at = std::sync::Arc::new(std::sync::Mutex::new(SystemTime::UNIX_EPOCH));
        let clock_at = at.clone();
        let clock = Clock::from_fn(move || *clock_at.lock().unwrap());
        let old = es256();
        let old_kid = old.kid().clone();
        let registry = KeyRegistry::builder()
            .clock(clock)
            .active(old)
            .build()
            .unwrap();
        let next_kid = registry.add_next(es256()).unwrap();
        assert_eq!(
            registry.current().get(&next_kid).unwrap().state(),
            KeyState::Next
        );
        assert_eq!(registry.current().active().unwrap().kid(), &old_kid);

        *at.lock().unwrap() = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(registry.rotate(Duration::from_secs(60)).unwrap(), next_kid);
        let snapshot = registry.current();
        let retiring = snapshot.get(&old_kid).unwrap();
        assert_eq!(retiring.state(), KeyState::Retiring);
        assert_eq!(
            retiring.retires_at(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(160))
        );
        assert_eq!(snapshot.keys()[0].kid(), &next_kid, "active first");

        *at.lock().unwrap() = SystemTime::UNIX_EPOCH + Duration::from_secs(159);
        assert!(registry.prune_expired().is_empty());
        *at.lock().unwrap() = SystemTime::UNIX_EPOCH + Duration::from_secs(160);
        assert_eq!(registry.prune_expired(), vec![old_kid.clone()]);
        assert!(registry.current().get(&old_kid).is_none());
    }

    #[test]
    fn huge_retentions_are_capped_not_overflowing() {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let old = registry.current().active().unwrap().kid().clone();
        registry.rotate_to(es256(), Duration::MAX).unwrap();
        let until = registry.current().get(&old).unwrap().retires_at().unwrap();
        assert!(until > SystemTime::now() + Duration::from_secs(900 * 365 * 24 * 3600));
        assert!(registry.prune_expired().is_empty());
    }

    #[test]
    fn rotate_without_next_generates_a_key_of_the_same_algorithm() {
        let registry = KeyRegistry::generate(Algorithm::EdDSA).unwrap();
        let old = registry.current().active().unwrap().kid().clone();
        let new = registry.rotate(Duration::from_secs(1)).unwrap();
        assert_ne!(old, new);
        assert_eq!(
            registry.current().active().unwrap().algorithm(),
            Algorithm::EdDSA
        );
        assert!(matches!(
            KeyRegistry::empty().rotate(Duration::ZERO),
            Err(RegistryError::NoActiveKey)
        ));
    }

    #[test]
    fn active_key_cannot_be_removed_but_others_can() {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let active = registry.current().active().unwrap().kid().clone();
        assert!(matches!(
            registry.remove(&active),
            Err(RegistryError::KeyIsActive(_))
        ));
        let next = registry.add_next(es256()).unwrap();
        registry.remove(&next).unwrap();
        assert_eq!(registry.current().keys().len(), 1);
        let unknown = Kid::new("nope").unwrap();
        assert!(matches!(
            registry.remove(&unknown),
            Err(RegistryError::UnknownKid(_))
        ));
    }

    #[test]
    fn retiring_the_active_key_leaves_no_active_key() {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let active = registry.current().active().unwrap().kid().clone();
        registry.retire(&active, SystemTime::now()).unwrap();
        let snapshot = registry.current();
        assert!(snapshot.active().is_none());
        assert_eq!(snapshot.get(&active).unwrap().state(), KeyState::Retiring);
    }

    #[test]
    fn etag_changes_with_the_set_and_is_strong() {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let first = registry.current().etag().clone();
        assert!(first.to_str().unwrap().starts_with('"'));
        registry.add_next(es256()).unwrap();
        assert_ne!(registry.current().etag(), &first);
    }

    #[tokio::test]
    async fn subscribers_see_every_change() {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let mut changes = registry.subscribe();
        let kid = registry.add_next(es256()).unwrap();
        changes.changed().await.unwrap();
        assert!(changes.borrow_and_update().get(&kid).is_some());
    }
}
