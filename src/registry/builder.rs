//! [`KeyRegistryBuilder`], and the constructors of [`KeyRegistry`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::RegistryError;
use super::lifecycle::{check_invariants, ensure_unique, oldest_next, promote};
use super::published::PublishedKey;
use super::registry::KeyRegistry;
use super::write;
use crate::clock::Clock;
use crate::keys::{Algorithm, JwsSigner, KeyError, KeyState, SigningKey};
use crate::store::KeyStore;

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
}

/// Builds a [`KeyRegistry`] from several keys, a clock and, optionally, a
/// [`KeyStore`]. See [`KeyRegistry::builder`].
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
        self.key(PublishedKey::from_signer(key, KeyState::Active, now).with_activated_at(Some(now)))
    }

    /// Adds a next key (published, not signing).
    pub fn next(self, key: impl JwsSigner + 'static) -> Self {
        let now = self.clock.now();
        self.key(PublishedKey::from_signer(key, KeyState::Next, now))
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
    /// With a store that another process leads
    /// ([`KeyStore::is_leader`] says no: a replica of a fleet that does not
    /// hold the leader lease), nothing is generated or activated here: the
    /// registry starts with the stored keys, possibly none, and the leader's
    /// key arrives when the registry follows the store
    /// ([`StoreFollower`](crate::store::StoreFollower)).
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
                && !keys.iter().any(|k| k.state() == KeyState::Active)
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
        let loaded = write::load(store.as_ref())?;
        let registry = KeyRegistry::assemble(clock, loaded, Some(Arc::clone(&store)));
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
            if !store.is_leader()? {
                // The first key is the leader's to make; a follower picks it
                // up from the store (and signs nothing until then).
                tracing::info!(
                    "the key store has no active key and another process leads it: leaving the first key to the leader"
                );
                return Ok(registry);
            }
            let now = registry.clock().now();
            let activated = registry.transact(|stored| {
                if stored.iter().any(|k| k.state() == KeyState::Active) {
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
                if !stored.iter().any(|k| k.state() == KeyState::Active) {
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
