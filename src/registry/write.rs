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
use crate::keys::Kid;
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
}

impl WriteThrough {
    /// Publishes `keys` (checked by the caller) as the first snapshot.
    pub(super) fn new(keys: Vec<PublishedKey>, store: Option<Arc<dyn KeyStore>>) -> Self {
        let snapshot = Arc::new(KeySnapshot::build(0, keys));
        let (changes, _) = watch::channel(Arc::clone(&snapshot));
        WriteThrough {
            current: ArcSwap::new(snapshot),
            writer: Mutex::new(()),
            changes,
            store,
        }
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
            if always_publish || !same_keys(current.keys(), &keys) {
                self.publish(current.version() + 1, keys);
            }
            return Ok(result);
        };
        let lock = store.lock()?;
        // Work from what is stored: another writer may have changed it.
        let stored = merge_stored(current.keys(), store.load()?);
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
        sort_stored_order(&mut keys);
        if always_publish || !same_keys(current.keys(), &keys) {
            self.publish(current.version() + 1, keys);
        }
        Ok(result)
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
        let keys = merge_stored(current.keys(), stored);
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
pub(super) fn load(store: &dyn KeyStore) -> Result<Vec<PublishedKey>, RegistryError> {
    let keys = merge_stored(&[], store.load()?);
    check_invariants(&keys)?;
    Ok(keys)
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
}
