//! One change of the stored keys, as [`KeyStore::commit`](super::KeyStore::commit)
//! writes it.

use super::stored::StoredKey;
use crate::keys::KeyState;

/// One change of the stored keys: the entries to remove and the keys to
/// save, each with the value the store held before, so that a store can
/// undo a change it could not finish.
///
/// A registry built on a store builds one per change, from the keys it has
/// just loaded under the store's lock, and hands it to
/// [`KeyStore::commit`](super::KeyStore::commit).
///
/// ```
/// use std::time::SystemTime;
/// use tower_jwt_signer::registry::KeyState;
/// use tower_jwt_signer::store::{KeyStore, MemoryKeyStore, StoreChange, StoredKey};
/// use tower_jwt_signer::{Algorithm, SigningKey};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryKeyStore::new();
/// let key = SigningKey::generate(Algorithm::ES256)?;
/// let key = StoredKey::new(key, KeyState::Active, SystemTime::now());
/// store.commit(&StoreChange::new().save(key.clone(), None))?;
/// assert_eq!(store.load()?, vec![key]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreChange {
    removals: Vec<StoredKey>,
    saves: Vec<KeySave>,
}

impl StoreChange {
    /// A change that writes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the removal of `removed`'s entry; `removed` is the key as the
    /// store holds it (saved back if the change is undone).
    #[must_use]
    pub fn remove(mut self, removed: StoredKey) -> Self {
        self.removals.push(removed);
        self
    }

    /// Adds a save of `key`, which replaces `previous`, the entry of the
    /// same kid as the store holds it (`None`: no entry; the key is new).
    #[must_use]
    pub fn save(mut self, key: StoredKey, previous: Option<StoredKey>) -> Self {
        let save = KeySave { key, previous };
        if save.key.state() == KeyState::Active {
            self.saves.push(save);
        } else {
            // Before the first active key: it is written last.
            let at = self
                .saves
                .iter()
                .position(|s| s.key.state() == KeyState::Active)
                .unwrap_or(self.saves.len());
            self.saves.insert(at, save);
        }
        self
    }

    /// The entries to remove, as the store holds them.
    pub fn removals(&self) -> &[StoredKey] {
        &self.removals
    }

    /// The keys to save: those that are not active first, then the active
    /// key, each in the order it was added. The default
    /// [`commit`](super::KeyStore::commit) writes them in this order, after
    /// the removals.
    pub fn saves(&self) -> &[KeySave] {
        &self.saves
    }

    /// Whether the change writes nothing.
    pub fn is_empty(&self) -> bool {
        self.removals.is_empty() && self.saves.is_empty()
    }
}

/// One key to save in a [`StoreChange`], with the entry it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySave {
    key: StoredKey,
    previous: Option<StoredKey>,
}

impl KeySave {
    /// The key to save.
    pub fn key(&self) -> &StoredKey {
        &self.key
    }

    /// The entry of the same kid as the store holds it before the change
    /// (`None`: the key is new): what undoing the save restores.
    pub fn previous(&self) -> Option<&StoredKey> {
        self.previous.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::keys::{Algorithm, SigningKey};

    fn stored(state: KeyState) -> StoredKey {
        StoredKey::new(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            state,
            SystemTime::now(),
        )
    }

    #[test]
    fn saves_list_the_active_key_last_whatever_the_order_they_were_added_in() {
        let (active, next, retiring) = (
            stored(KeyState::Active),
            stored(KeyState::Next),
            stored(KeyState::Retiring),
        );
        let change = StoreChange::new()
            .save(active.clone(), None)
            .save(next.clone(), None)
            .save(retiring.clone(), Some(active.clone()));
        let order: Vec<&StoredKey> = change.saves().iter().map(KeySave::key).collect();
        assert_eq!(order, vec![&next, &retiring, &active]);
        assert_eq!(change.saves()[1].previous(), Some(&active));
        assert!(!change.is_empty());
        assert!(StoreChange::new().is_empty());
    }
}
