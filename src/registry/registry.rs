//! [`KeyRegistry`]: the shared keys, and the operations that change them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::error::RegistryError;
use super::lifecycle::{ensure_unique, find_mut, is_expired, oldest_next, promote};
use super::published::PublishedKey;
use super::snapshot::KeySnapshot;
use super::write::WriteThrough;
use crate::clock::Clock;
use crate::keys::{KeyError, KeyFactory, KeyReference, KeyState, Kid, SigningBackend, SigningKey};
use crate::store::KeyStore;

/// The settings a registry is built with, checked by its builder.
pub(super) struct Settings {
    pub(super) clock: Clock,
    pub(super) token_ttl: Duration,
    pub(super) jwks_max_age: Duration,
}

/// The shared registry of signing keys. See the [module docs](crate::registry).
///
/// Cloning is cheap and every clone sees the same keys.
#[derive(Clone)]
pub struct KeyRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    keys: WriteThrough,
    clock: Clock,
    token_ttl: Duration,
    jwks_max_age: Duration,
}

// The constructors (`new`, `generate`, `empty`, `builder`) are in
// builder.rs; how a change reaches the store and the readers, in write.rs.
impl KeyRegistry {
    /// The current snapshot. Never blocks; the snapshot stays valid (and
    /// unchanged) for as long as it is held.
    pub fn current(&self) -> Arc<KeySnapshot> {
        self.inner.keys.current()
    }

    /// The clock this registry (and the signers built on it) read.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The lifetime of the tokens signed with these keys (60 s unless set
    /// with [`KeyRegistryBuilder::token_ttl`]): the signers'
    /// [`ttl`](crate::signer::JwtSignerLayerBuilder::ttl) defaults to it and
    /// may not exceed it, and the [`KeyRotator`](crate::KeyRotator) keeps
    /// a key published at least this long (plus the verifiers' leeway)
    /// after it stops signing. See the [module docs](crate::registry#token-lifetime-and-jwks-max-age).
    ///
    /// [`KeyRegistryBuilder::token_ttl`]: crate::registry::KeyRegistryBuilder::token_ttl
    pub fn token_ttl(&self) -> Duration {
        self.inner.token_ttl
    }

    /// How long verifiers may cache the JWKS (300 s unless set with
    /// [`KeyRegistryBuilder::jwks_max_age`]): the
    /// [`JwksService`](crate::JwksService)'s `Cache-Control: max-age`
    /// defaults to it and may not exceed it, and the
    /// [`KeyRotator`](crate::KeyRotator) publishes each next key at least
    /// this long before it signs. See the [module docs](crate::registry#token-lifetime-and-jwks-max-age).
    ///
    /// [`KeyRegistryBuilder::jwks_max_age`]: crate::registry::KeyRegistryBuilder::jwks_max_age
    pub fn jwks_max_age(&self) -> Duration {
        self.inner.jwks_max_age
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<KeySnapshot>> {
        self.inner.keys.subscribe()
    }

    /// Adds a key as **next**: published, not signing. If the registry has
    /// no active key, the key becomes active at once instead.
    ///
    /// # Errors
    ///
    /// [`RegistryError::DuplicateKid`] if the kid is already published.
    pub fn add_next(&self, key: impl SigningBackend + 'static) -> Result<Kid, RegistryError> {
        self.add_next_due(key, None)
    }

    /// Adds a key as **next**, noting when it is due to become active.
    ///
    /// # Errors
    ///
    /// [`RegistryError::DuplicateKid`] if the kid is already published.
    pub fn add_next_due(
        &self,
        key: impl SigningBackend + 'static,
        activates_at: Option<SystemTime>,
    ) -> Result<Kid, RegistryError> {
        let now = self.clock().now();
        let mut key =
            PublishedKey::from_backend(key, KeyState::Next, now).with_activates_at(activates_at);
        let kid = key.kid().clone();
        self.update(|keys| {
            ensure_unique(keys, &kid)?;
            if !keys.iter().any(|k| k.state() == KeyState::Active) {
                key.activate(now);
            }
            keys.push(key);
            Ok(kid.clone())
        })
    }

    /// Makes the oldest **next** key active (or, when there is none, a
    /// freshly generated key with the active key's algorithm); the old
    /// active key becomes **retiring** until now + `retain`. Returns the new
    /// active kid.
    ///
    /// Choose `retain` at least the [token lifetime](Self::token_ttl) plus
    /// the verifiers' leeway, or live tokens stop verifying.
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
        let has_next = snapshot.keys().iter().any(|k| k.state() == KeyState::Next);
        if !has_next {
            let algorithm = snapshot
                .active()
                .map(PublishedKey::algorithm)
                .ok_or(RegistryError::NoActiveKey)?;
            let key = self.key_factory().generate(algorithm)?;
            let now = self.clock().now();
            let published = PublishedKey::new(Arc::clone(&key), KeyState::Next, now);
            let rotated = self.rotate_to_published(published, retain);
            self.discard_unpublished(&[key]);
            return rotated;
        }
        let now = self.clock().now();
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
        key: impl SigningBackend + 'static,
        retain: Duration,
    ) -> Result<Kid, RegistryError> {
        let now = self.clock().now();
        self.rotate_to_published(PublishedKey::from_backend(key, KeyState::Next, now), retain)
    }

    fn rotate_to_published(
        &self,
        key: PublishedKey,
        retain: Duration,
    ) -> Result<Kid, RegistryError> {
        let now = self.clock().now();
        let kid = key.kid().clone();
        self.update(|keys| {
            ensure_unique(keys, &kid)?;
            keys.push(key);
            let index = keys.len() - 1;
            Ok(promote(keys, index, now, retain))
        })
    }

    /// The factory this registry makes its new keys with, and opens the
    /// references its store keeps with
    /// ([`KeyRegistryBuilder::key_factory`](crate::registry::KeyRegistryBuilder::key_factory);
    /// by default [`InProcessKeys`](crate::keys::InProcessKeys)).
    pub fn key_factory(&self) -> &Arc<dyn KeyFactory> {
        self.inner.keys.factory()
    }

    /// Destroys, through the key factory, the keys of `made` that are kept
    /// in a device but were never published nor stored (a change that
    /// failed, or another writer that got there first): they would stay in
    /// the device, unused, forever. Keys this registry publishes, or its
    /// store keeps, are left alone; so is everything when the store cannot
    /// be read (a warning names the key).
    pub(crate) fn discard_unpublished(&self, made: &[Arc<dyn SigningBackend>]) {
        let current = self.current();
        let unused: Vec<KeyReference> = made
            .iter()
            .filter_map(|key| key.reference())
            .filter(|reference| current.get(reference.kid()).is_none())
            .collect();
        if unused.is_empty() {
            return;
        }
        let stored = match self.store().map(|store| store.load()).transpose() {
            Ok(stored) => stored.unwrap_or_default(),
            Err(err) => {
                for reference in &unused {
                    tracing::warn!(kid = %reference.kid(), key = %reference, error = %err, "cannot tell whether an unused key is stored; leaving it in its device");
                }
                return;
            }
        };
        for reference in unused {
            if stored.iter().any(|k| k.kid() == reference.kid()) {
                continue;
            }
            match self.key_factory().destroy(&reference) {
                Ok(()) => {
                    tracing::info!(kid = %reference.kid(), key = %reference, "destroyed a key made for a change that did not use it")
                }
                Err(err) => {
                    tracing::warn!(kid = %reference.kid(), key = %reference, error = %err, "cannot destroy an unused key; it stays in its device")
                }
            }
        }
    }

    /// Gives a published key its renewed certificate: `key` is the same
    /// private key (same public key, same kid) with a new certificate
    /// chain, as a renewal that keeps the key writes it (cert-manager's
    /// `rotationPolicy: Never`). The key keeps its state and times; the JWKS
    /// publishes the new `x5c` and `x5t#S256`, and the key signs for as long
    /// as the new chain is valid. A renewal with a **new** key is a
    /// rotation instead: [`add_next_due`](Self::add_next_due), then
    /// [`rotate`](Self::rotate) once it has been published long enough.
    ///
    /// # Errors
    ///
    /// [`RegistryError::UnknownKid`] if no key with `key`'s kid is
    /// published; [`RegistryError::Key`] with
    /// [`KeyError::CertificateKeyMismatch`](crate::KeyError::CertificateKeyMismatch)
    /// if the published key with that kid is another key, or `key` has no
    /// chain.
    pub fn renew_certificate(&self, key: SigningKey) -> Result<(), RegistryError> {
        let kid = key.kid().clone();
        if key.certificate_chain().is_none() {
            return Err(RegistryError::Key(KeyError::CertificateKeyMismatch {
                reason: "the renewed key has no certificate chain".to_owned(),
            }));
        }
        let key = Arc::new(key);
        self.update(|keys| {
            let published = find_mut(keys, &kid)?;
            if published.public_jwk().thumbprint() != key.public_jwk().thumbprint()
                || published.algorithm() != key.algorithm()
            {
                return Err(RegistryError::Key(KeyError::CertificateKeyMismatch {
                    reason: format!("the published key {kid} is another key"),
                }));
            }
            published.replace_signing_key(Arc::clone(&key));
            Ok(())
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
            find_mut(keys, kid)?.retire_until(until);
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
            if key.state() == KeyState::Active {
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
        let now = self.clock().now();
        let current = self.current();
        if !current.keys().iter().any(|k| is_expired(k, now)) {
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
    /// one ([`KeyRegistryBuilder::store`](crate::registry::KeyRegistryBuilder::store)).
    pub fn store(&self) -> Option<&Arc<dyn KeyStore>> {
        self.inner.keys.store()
    }

    /// Loads the keys from the store and publishes them if they differ from
    /// the current ones: picks up keys that another process added,
    /// activated, retired or removed. Returns whether anything changed.
    /// Nothing is written. A registry without a store returns `Ok(false)`.
    ///
    /// Blocking (see the [store module docs](crate::store#blocking));
    /// [`StoreFollower`](crate::registry::StoreFollower) calls it periodically.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Store`] if the store cannot be loaded,
    /// [`RegistryError::SeveralActiveKeys`] if it holds more than one
    /// active key; the current keys stay published.
    pub fn reload(&self) -> Result<bool, RegistryError> {
        self.inner.keys.reload()
    }

    /// Applies `change` to a copy of the key list, checks the invariants,
    /// writes it through the store (if any) and publishes the result as a
    /// new snapshot. Nothing changes if `change`, a check or the store
    /// fails.
    pub(crate) fn update<R>(
        &self,
        change: impl FnOnce(&mut Vec<PublishedKey>) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        self.inner.keys.change(change, true)
    }

    /// Like [`update`](Self::update), but publishes no new snapshot when the
    /// keys are unchanged (the rotator's conditional steps).
    pub(crate) fn transact<R>(
        &self,
        change: impl FnOnce(&mut Vec<PublishedKey>) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        self.inner.keys.change(change, false)
    }

    /// A registry of `keys` (checked by the caller) on `store`, with
    /// checked `settings`.
    pub(super) fn assemble(
        settings: Settings,
        keys: Vec<PublishedKey>,
        store: Option<Arc<dyn KeyStore>>,
        factory: Arc<dyn KeyFactory>,
    ) -> Self {
        let Settings {
            clock,
            token_ttl,
            jwks_max_age,
        } = settings;
        KeyRegistry {
            inner: Arc::new(Inner {
                keys: WriteThrough::new(keys, store, factory),
                clock,
                token_ttl,
                jwks_max_age,
            }),
        }
    }
}

impl fmt::Debug for KeyRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current();
        f.debug_struct("KeyRegistry")
            .field("version", &current.version())
            .field("keys", &current.keys())
            .field("clock", self.clock())
            .field("token_ttl", &self.token_ttl())
            .field("jwks_max_age", &self.jwks_max_age())
            .field("store", &self.store())
            .field("key_factory", self.key_factory())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, SigningKey};

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
