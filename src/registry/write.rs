//! The one way the registry's keys change: under the writer lock, through
//! the key store when there is one, then published as a new snapshot.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::error::RegistryError;
use super::lifecycle::check_invariants;
use super::published::PublishedKey;
use super::snapshot::KeySnapshot;
use crate::clock::unix_seconds;
use crate::keys::{KeyFactory, KeyReference, Kid};
use crate::store::{KeyStore, StoreChange, StoreError, StoredKey};

/// The registry's keys: the current snapshot, what readers take, and what
/// a writer needs to replace it.
pub(super) struct WriteThrough {
    current: ArcSwap<KeySnapshot>,
    /// Serialises writers; never held by readers, never across an `.await`.
    writer: Mutex<()>,
    changes: watch::Sender<Arc<KeySnapshot>>,
    /// Where every change is written before it is published.
    store: Option<Arc<dyn KeyStore>>,
    /// Opens the keys the store keeps as references, and destroys them
    /// once they are gone.
    factory: Arc<dyn KeyFactory>,
}

impl WriteThrough {
    /// Publishes `keys` (checked by the caller) as the first snapshot.
    pub(super) fn new(
        keys: Vec<PublishedKey>,
        store: Option<Arc<dyn KeyStore>>,
        factory: Arc<dyn KeyFactory>,
    ) -> Self {
        let snapshot = Arc::new(KeySnapshot::build(0, keys));
        let (changes, _) = watch::channel(Arc::clone(&snapshot));
        WriteThrough {
            current: ArcSwap::new(snapshot),
            writer: Mutex::new(()),
            changes,
            store,
            factory,
        }
    }

    pub(super) fn factory(&self) -> &Arc<dyn KeyFactory> {
        &self.factory
    }

    pub(super) fn current(&self) -> Arc<KeySnapshot> {
        self.current.load_full()
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<Arc<KeySnapshot>> {
        self.changes.subscribe()
    }

    pub(super) fn store(&self) -> Option<&Arc<dyn KeyStore>> {
        self.store.as_ref()
    }

    /// Applies `change` to a copy of the key list, checks the invariants and
    /// publishes the result as a new snapshot (always, or only when the keys
    /// differ). Nothing changes if `change` or a check fails.
    ///
    /// With a store, the change is made to the keys as stored (loaded under
    /// the store's lock) and written through with one
    /// [`KeyStore::commit`] before it is published; if the commit fails,
    /// nothing is published.
    pub(super) fn change<R>(
        &self,
        change: impl FnOnce(&mut Vec<PublishedKey>) -> Result<R, RegistryError>,
        always_publish: bool,
    ) -> Result<R, RegistryError> {
        let _writer = self.lock_writer();
        let current = self.current();
        let Some(store) = &self.store else {
            let mut keys = current.keys().to_vec();
            let result = change(&mut keys)?;
            check_invariants(&keys)?;
            let gone = references_gone(current.keys(), &keys);
            if always_publish || !same_keys(current.keys(), &keys) {
                self.publish(current.version() + 1, keys);
            }
            self.destroy(gone);
            return Ok(result);
        };
        let lock = store.lock()?;
        // Work from what is stored: another writer may have changed it.
        let stored = merge_stored(current.keys(), store.load()?, self.factory.as_ref())?;
        // A store found empty while this registry holds keys was emptied
        // behind our back (a Redis restarted without persistence, a
        // FLUSHALL): never an intended state, since the active key cannot be
        // removed. Work from the keys held here, so that they are written
        // back with this change and no other key takes over.
        let restoring = stored.is_empty() && !current.keys().is_empty();
        let base = if restoring {
            current.keys().to_vec()
        } else {
            stored.clone()
        };
        check_invariants(&base)?;
        let mut keys = base.clone();
        let result = change(&mut keys)?;
        check_invariants(&keys)?;
        let writes = store_change(&stored, &keys)?;
        if restoring {
            tracing::warn!(
                keys = base.len(),
                "the key store is empty (restarted without persistence, or flushed): writing back the keys this process holds"
            );
        }
        if !writes.is_empty() {
            store.commit(&writes)?;
        }
        drop(lock);
        let gone = references_gone(&base, &keys);
        sort_stored_order(&mut keys);
        if always_publish || !same_keys(current.keys(), &keys) {
            self.publish(current.version() + 1, keys);
        }
        self.destroy(gone);
        Ok(result)
    }

    /// Destroys, through the key factory, the keys kept in a device that
    /// this change removed (a retired key past its time, a revoked key):
    /// no store keeps them and no snapshot publishes them any more. A
    /// failure is logged; the key stays in its device, unused.
    fn destroy(&self, gone: Vec<KeyReference>) {
        for reference in gone {
            match self.factory.destroy(&reference) {
                Ok(()) => {
                    tracing::info!(kid = %reference.kid(), key = %reference, "destroyed the removed key in its device")
                }
                Err(err) => tracing::warn!(
                    kid = %reference.kid(),
                    key = %reference,
                    error = %err,
                    "cannot destroy the removed key in its device; it stays there, unused"
                ),
            }
        }
    }

    /// Publishes the stored keys if they differ from the current ones.
    /// Returns whether anything changed; `Ok(false)` without a store.
    ///
    /// A store found empty while this registry holds keys is never
    /// published (that would stop signing and empty the JWKS): the keys
    /// stay, and the store's leader writes them back.
    pub(super) fn reload(&self) -> Result<bool, RegistryError> {
        let Some(store) = &self.store else {
            return Ok(false);
        };
        let writer = self.lock_writer();
        let current = self.current();
        let stored = store.load()?;
        if stored.is_empty() && !current.keys().is_empty() {
            drop(writer);
            self.write_back(store.as_ref(), current.keys().len())?;
            return Ok(false);
        }
        let keys = merge_stored(current.keys(), stored, self.factory.as_ref())?;
        check_invariants(&keys)?;
        if same_keys(current.keys(), &keys) {
            return Ok(false);
        }
        self.publish(current.version() + 1, keys);
        Ok(true)
    }

    /// The store was found empty while this registry holds `held` keys:
    /// the leader writes them back (one change, under the store's lock,
    /// which writes them only if the store is still empty); the others keep
    /// them and wait for the leader's.
    fn write_back(&self, store: &dyn KeyStore, held: usize) -> Result<(), RegistryError> {
        if !store.is_leader()? {
            tracing::warn!(
                keys = held,
                "the key store is empty (restarted without persistence, or flushed): keeping the keys this process holds until the leader writes them back"
            );
            return Ok(());
        }
        match self.change(|_| Ok(()), false) {
            Err(RegistryError::Store(err)) if err.is_not_leader() => {
                tracing::info!(error = %err, "the key store is empty; the new leader writes the keys back");
                Ok(())
            }
            other => other,
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // A poisoned lock only means another writer panicked; the snapshot
        // it guards is immutable and still consistent.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Swaps in a new snapshot. The caller holds the writer lock.
    fn publish(&self, version: u64, keys: Vec<PublishedKey>) {
        let next = Arc::new(KeySnapshot::build(version, keys));
        crate::metrics::published_keys(next.keys().len());
        self.current.store(Arc::clone(&next));
        self.changes.send_replace(next);
    }
}

/// Every key in `store`, checked, in the stored order: what a registry
/// built on the store starts from.
///
/// # Errors
///
/// [`RegistryError::Store`] if the store cannot be loaded;
/// [`RegistryError::SeveralActiveKeys`] if it holds more than one active
/// key.
pub(super) fn load(
    store: &dyn KeyStore,
    factory: &dyn KeyFactory,
) -> Result<Vec<PublishedKey>, RegistryError> {
    let keys = merge_stored(&[], store.load()?, factory)?;
    check_invariants(&keys)?;
    Ok(keys)
}

/// The stored keys as published keys, reusing the in-memory key (and its
/// exact times) where the store holds the same thing; references are
/// opened by `factory` unless a key in memory holds them already.
///
/// # Errors
///
/// [`RegistryError::Key`] for a reference that cannot be opened.
fn merge_stored(
    memory: &[PublishedKey],
    stored: Vec<StoredKey>,
    factory: &dyn KeyFactory,
) -> Result<Vec<PublishedKey>, RegistryError> {
    let mut keys = Vec::with_capacity(stored.len());
    for stored in stored {
        let same = memory
            .iter()
            .find(|m| m.kid() == stored.kid() && m.to_stored().as_ref() == Some(&stored));
        keys.push(match same {
            Some(same) => same.clone(),
            None => PublishedKey::from_stored(stored, memory, factory)?,
        });
    }
    sort_stored_order(&mut keys);
    Ok(keys)
}

/// The references of the keys of `before` that `after` no longer holds.
fn references_gone(before: &[PublishedKey], after: &[PublishedKey]) -> Vec<KeyReference> {
    before
        .iter()
        .filter(|key| !after.iter().any(|k| k.kid() == key.kid()))
        .filter_map(|key| key.reference().cloned())
        .collect()
}

/// The order of keys loaded from a store (creation second, then kid), so
/// that replicas that load the same keys publish the same JWKS bytes.
fn sort_stored_order(keys: &mut [PublishedKey]) {
    keys.sort_by(|a, b| {
        unix_seconds(a.created_at())
            .cmp(&unix_seconds(b.created_at()))
            .then_with(|| a.kid().cmp(b.kid()))
    });
}

/// Whether two key lists hold the same keys in the same states.
fn same_keys(a: &[PublishedKey], b: &[PublishedKey]) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|x| b.iter().any(|y| x.kid() == y.kid() && x.same_as(y)))
}

/// What the store must write to go from `base` (as stored) to `keys`: the
/// keys that left, and the keys that are new or differ as stored, each with
/// its stored value before.
///
/// # Errors
///
/// [`StoreError::NotStorable`] for a key the store cannot hold; nothing was
/// written.
fn store_change(base: &[PublishedKey], keys: &[PublishedKey]) -> Result<StoreChange, StoreError> {
    let find = |keys: &[PublishedKey], kid: &Kid| keys.iter().position(|k| k.kid() == kid);
    let mut change = StoreChange::new();
    for left in base.iter().filter(|k| find(keys, k.kid()).is_none()) {
        if let Some(stored) = left.to_stored() {
            change = change.remove(stored);
        }
    }
    for key in keys {
        let before = find(base, key.kid()).map(|i| &base[i]);
        if before.is_some_and(|before| before.same_as(key)) {
            continue;
        }
        let stored = key.to_stored().ok_or_else(|| StoreError::NotStorable {
            kid: key.kid().clone(),
        })?;
        let previous = before.and_then(PublishedKey::to_stored);
        if previous.as_ref() == Some(&stored) {
            // Differs only below the store's precision.
            continue;
        }
        change = change.save(stored, previous);
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use crate::keys::{Algorithm, KeyState, SigningKey};
    use crate::registry::KeyRegistry;
    use crate::store::{KeySave, KeyStore, MemoryKeyStore, StoreChange, StoreError, StoredKey};

    /// A store that writes only whole changes, as a transactional store
    /// would, and remembers them.
    #[derive(Debug, Default)]
    struct Transactional {
        keys: MemoryKeyStore,
        commits: Mutex<Vec<StoreChange>>,
    }

    impl KeyStore for Transactional {
        fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
            self.keys.load()
        }

        fn save(&self, _: &StoredKey) -> Result<(), StoreError> {
            unreachable!("the registry writes through commit")
        }

        fn remove(&self, _: &crate::keys::Kid) -> Result<(), StoreError> {
            unreachable!("the registry writes through commit")
        }

        fn commit(&self, change: &StoreChange) -> Result<(), StoreError> {
            self.commits.lock().unwrap().push(change.clone());
            self.keys.commit(change)
        }
    }

    fn states(change: &StoreChange) -> Vec<(KeyState, Option<KeyState>)> {
        change
            .saves()
            .iter()
            .map(|save: &KeySave| (save.key().state(), save.previous().map(StoredKey::state)))
            .collect()
    }

    #[test]
    fn every_change_reaches_the_store_as_one_commit() {
        let store = std::sync::Arc::new(Transactional::default());
        let registry = KeyRegistry::builder()
            .store(std::sync::Arc::clone(&store))
            .generate_if_missing(Algorithm::EdDSA)
            .build()
            .unwrap();
        let first = registry.current().active().unwrap().kid().clone();
        registry
            .add_next(SigningKey::generate(Algorithm::EdDSA).unwrap())
            .unwrap();
        registry.rotate(Duration::from_secs(60)).unwrap();
        registry.remove(&first).unwrap();
        // A change that writes nothing commits nothing.
        registry.transact(|_| Ok(())).unwrap();

        let commits = store.commits.lock().unwrap();
        assert_eq!(commits.len(), 4, "{commits:?}");
        assert_eq!(states(&commits[0]), vec![(KeyState::Active, None)]);
        assert_eq!(states(&commits[1]), vec![(KeyState::Next, None)]);
        assert_eq!(
            states(&commits[2]),
            vec![
                (KeyState::Retiring, Some(KeyState::Active)),
                (KeyState::Active, Some(KeyState::Next)),
            ],
            "the old key retires before the new one is saved active"
        );
        assert!(commits[2].removals().is_empty());
        assert_eq!(commits[3].removals().len(), 1);
        assert_eq!(commits[3].removals()[0].kid(), &first);
        assert!(commits[3].saves().is_empty());
        assert_eq!(store.load().unwrap().len(), 1);
    }

    mod device {
        //! A factory that keeps its keys "in a device": in-process keys
        //! behind references, as a PKCS#11 token keeps them.

        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};
        use std::time::Duration;

        use crate::keys::{
            Algorithm, InProcessKeys, KeyError, KeyFactory, KeyReference, Kid, PublicJwk,
            SignError, SigningBackend, SigningKey, spki,
        };
        use crate::registry::{KeyRegistry, RegistryError};
        use crate::store::{KeyStore, MemoryKeyStore, StoreChange, StoreError, StoredKey};

        #[derive(Debug)]
        struct Held {
            key: SigningKey,
            reference: KeyReference,
        }

        impl SigningBackend for Held {
            fn public_jwk(&self) -> &PublicJwk {
                self.key.public_jwk()
            }

            fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
                self.key.sign(input)
            }

            fn blocks(&self) -> bool {
                true
            }

            fn reference(&self) -> Option<KeyReference> {
                Some(self.reference.clone())
            }
        }

        #[derive(Debug, Default)]
        struct Device {
            keys: Mutex<HashMap<Kid, SigningKey>>,
            destroyed: Mutex<Vec<Kid>>,
        }

        impl Device {
            fn held(&self, key: SigningKey) -> Arc<dyn SigningBackend> {
                let x =
                    crate::b64::decode(key.public_jwk().to_value()["x"].as_str().unwrap()).unwrap();
                let reference = KeyReference::new(
                    "test-device",
                    [("slot", "0")],
                    &spki::ed25519(&x),
                    Algorithm::EdDSA,
                    None,
                )
                .unwrap();
                Arc::new(Held { key, reference })
            }
        }

        impl KeyFactory for Device {
            fn generate(&self, algorithm: Algorithm) -> Result<Arc<dyn SigningBackend>, KeyError> {
                assert_eq!(algorithm, Algorithm::EdDSA);
                let key = SigningKey::generate(algorithm)?;
                self.keys
                    .lock()
                    .unwrap()
                    .insert(key.kid().clone(), key.clone());
                Ok(self.held(key))
            }

            fn open(
                &self,
                reference: &KeyReference,
            ) -> Result<Option<Arc<dyn SigningBackend>>, KeyError> {
                if reference.provider() != "test-device" {
                    return Ok(None);
                }
                let key = self.keys.lock().unwrap().get(reference.kid()).cloned();
                let key =
                    key.ok_or_else(|| KeyError::Backend("no such key in the device".into()))?;
                Ok(Some(self.held(key)))
            }

            fn destroy(&self, reference: &KeyReference) -> Result<(), KeyError> {
                self.keys.lock().unwrap().remove(reference.kid());
                self.destroyed.lock().unwrap().push(reference.kid().clone());
                Ok(())
            }
        }

        #[test]
        fn a_devices_keys_are_stored_as_references_opened_again_and_destroyed_when_removed() {
            let store = Arc::new(MemoryKeyStore::new());
            let device = Arc::new(Device::default());
            let open = || {
                KeyRegistry::builder()
                    .store(Arc::clone(&store))
                    .key_factory(Arc::clone(&device))
                    .generate_if_missing(Algorithm::EdDSA)
                    .build()
            };
            let registry = open().unwrap();
            let first = registry.current().active().unwrap().kid().clone();
            assert!(registry.current().active().unwrap().is_storable());
            let stored = store.load().unwrap();
            assert_eq!(stored.len(), 1);
            assert!(stored[0].key().is_none(), "no key material");
            assert_eq!(stored[0].reference().unwrap().provider(), "test-device");

            // Rotation makes the next key in the device; the old one is
            // destroyed there once it leaves the registry.
            let second = registry.rotate(Duration::ZERO).unwrap();
            assert!(device.keys.lock().unwrap().contains_key(&second));
            registry.remove(&first).unwrap();
            assert_eq!(*device.destroyed.lock().unwrap(), vec![first.clone()]);

            // A restart opens the stored reference through the factory.
            drop(registry);
            let registry = open().unwrap();
            assert_eq!(registry.current().active().unwrap().kid(), &second);
            assert!(registry.current().active().unwrap().backend().blocks());

            // Without the factory, the reference cannot be opened: refused.
            let err = KeyRegistry::builder()
                .store(Arc::clone(&store))
                .key_factory(InProcessKeys)
                .build()
                .unwrap_err();
            assert!(
                matches!(err, RegistryError::Key(KeyError::Backend(_))),
                "{err}"
            );
            assert!(err.to_string().contains("does not open it"), "{err}");
        }

        /// A store that refuses every next key.
        #[derive(Debug, Default)]
        struct NoNext(MemoryKeyStore);

        impl KeyStore for NoNext {
            fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
                self.0.load()
            }
            fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
                self.0.save(key)
            }
            fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
                self.0.remove(kid)
            }
            fn commit(&self, change: &StoreChange) -> Result<(), StoreError> {
                if change.saves().iter().any(|s| s.previous().is_none())
                    && !self.0.load()?.is_empty()
                {
                    return Err(StoreError::Other("disk full".into()));
                }
                self.0.commit(change)
            }
        }

        #[test]
        fn a_key_made_for_a_change_that_failed_is_destroyed_in_the_device() {
            let device = Arc::new(Device::default());
            let registry = KeyRegistry::builder()
                .store(NoNext::default())
                .key_factory(Arc::clone(&device))
                .generate_if_missing(Algorithm::EdDSA)
                .build()
                .unwrap();
            let err = registry.rotate(Duration::ZERO).unwrap_err();
            assert!(err.to_string().contains("disk full"), "{err}");
            let destroyed = device.destroyed.lock().unwrap().clone();
            assert_eq!(destroyed.len(), 1, "the unused key went");
            assert_eq!(
                device.keys.lock().unwrap().len(),
                1,
                "only the active key is left"
            );
        }
    }
}
