//! The in-memory key store.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::txlock::TxLock;
use super::{KeyStore, StoreError, StoreLock, StoredKey};
use crate::keys::Kid;

/// A [`KeyStore`] in memory: nothing survives the process.
///
/// Useful in tests, and to let several registries of one process share
/// keys: wrap it in an `Arc` and give each registry a clone. Its
/// [`lock`](KeyStore::lock) is a real lock, so those registries are as safe
/// as writers on one [`DirKeyStore`](super::DirKeyStore).
///
/// ```
/// use std::sync::Arc;
/// use tower_jwt_signer::store::{KeyStore, MemoryKeyStore};
/// use tower_jwt_signer::{Algorithm, KeyRegistry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(MemoryKeyStore::new());
/// let registry = KeyRegistry::builder()
///     .store(Arc::clone(&store))
///     .generate_if_missing(Algorithm::EdDSA)
///     .build()?;
/// let stored = store.load()?;
/// assert_eq!(stored.len(), 1);
/// assert_eq!(stored[0].kid(), registry.current().active().unwrap().kid());
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct MemoryKeyStore {
    keys: Mutex<BTreeMap<Kid, StoredKey>>,
    tx: Arc<TxLock>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<Kid, StoredKey>> {
        // Every operation leaves the map consistent, even when interrupted.
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeyStore for MemoryKeyStore {
    fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        let _reading = self.tx.read();
        Ok(self.keys().values().cloned().collect())
    }

    fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.keys().insert(key.kid().clone(), key.clone());
        Ok(())
    }

    fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
        self.keys().remove(kid);
        Ok(())
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock::new(self.tx.write()))
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("kids", &self.keys().keys().collect::<Vec<_>>())
            .finish()
    }
}
