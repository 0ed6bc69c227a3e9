//! [`KeyRegistryBuilder`], and the constructors of [`KeyRegistry`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::RegistryError;
use super::lifecycle::{check_invariants, ensure_unique, oldest_next, promote};
use super::published::PublishedKey;
use super::registry::{KeyRegistry, Settings};
use super::write;
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::keys::{
    Algorithm, InProcessKeys, KeyError, KeyFactory, KeyState, SigningBackend, SigningKey,
};
use crate::store::KeyStore;

/// The token lifetime of a registry unless set: 60 seconds.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);

/// The longest token lifetime a registry accepts: one day.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The JWKS max-age of a registry unless set: 300 seconds.
const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);

/// The longest JWKS max-age a registry accepts: one day.
const MAX_JWKS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

impl KeyRegistry {
    /// A registry whose only key, `key`, is active, with the default
    /// [`token_ttl`](Self::token_ttl) (60 s) and
    /// [`jwks_max_age`](Self::jwks_max_age) (300 s).
    pub fn new(key: impl SigningBackend + 'static) -> Self {
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

    /// A builder, to set the token lifetime, the JWKS max-age, a [`Clock`],
    /// a [`KeyStore`], or start from several keys (for example keys loaded
    /// from storage).
    pub fn builder() -> KeyRegistryBuilder {
        KeyRegistryBuilder {
            clock: Clock::system(),
            token_ttl: DEFAULT_TOKEN_TTL,
            jwks_max_age: DEFAULT_JWKS_MAX_AGE,
            keys: Vec::new(),
            store: None,
            generate_if_missing: None,
            factory: Arc::new(InProcessKeys),
        }
    }
}

/// Builds a [`KeyRegistry`] from several keys, a clock, the token lifetime
/// and JWKS max-age, and, optionally, a [`KeyStore`]. See
/// [`KeyRegistry::builder`].
///
/// The setters only record their value; [`build`](Self::build) checks
/// them.
#[must_use]
#[derive(Clone)]
pub struct KeyRegistryBuilder {
    clock: Clock,
    token_ttl: Duration,
    jwks_max_age: Duration,
    keys: Vec<PublishedKey>,
    store: Option<Arc<dyn KeyStore>>,
    generate_if_missing: Option<Algorithm>,
    factory: Arc<dyn KeyFactory>,
}

impl KeyRegistryBuilder {
    /// The lifetime of the tokens signed with these keys (default 60 s;
    /// whole seconds, 1 s to one day). Every signer on the registry signs
    /// for this long unless told a shorter
    /// [`ttl`](crate::signer::JwtSignerLayerBuilder::ttl), and the
    /// [`KeyRotator`](crate::KeyRotator) keeps an old key published for at
    /// least this long plus the verifiers' leeway. See
    /// [`KeyRegistry::token_ttl`].
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// How long verifiers may cache the JWKS (default 300 s; whole seconds,
    /// at most one day). The [`JwksService`](crate::JwksService) serves
    /// `Cache-Control: max-age` with it unless told a shorter
    /// [`max_age`](crate::jwks::JwksServiceBuilder::max_age), and the
    /// [`KeyRotator`](crate::KeyRotator) publishes each next key at least
    /// this long before it signs. See [`KeyRegistry::jwks_max_age`].
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.jwks_max_age = max_age;
        self
    }

    /// The clock for key lifetimes and token dates (default: the system's).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Adds the active key.
    pub fn active(self, key: impl SigningBackend + 'static) -> Self {
        let now = self.clock.now();
        self.key(
            PublishedKey::from_backend(key, KeyState::Active, now).with_activated_at(Some(now)),
        )
    }

    /// Adds a next key (published, not signing).
    pub fn next(self, key: impl SigningBackend + 'static) -> Self {
        let now = self.clock.now();
        self.key(PublishedKey::from_backend(key, KeyState::Next, now))
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

    /// Where new keys are made (default: [`InProcessKeys`], in this
    /// process): the first key of
    /// [`generate_if_missing`](Self::generate_if_missing), the next keys of
    /// [`KeyRegistry::rotate`] and of the
    /// [`KeyRotator`](crate::KeyRotator). With a factory backed by a device
    /// (a PKCS#11 token, feature `pkcs11`), keys are made inside it; the
    /// store keeps [references](crate::keys::KeyReference) to them, which
    /// the factory opens again at start-up, and the keys the registry
    /// removes (retired past their time, revoked) are destroyed in the
    /// device once the store has dropped them. See [`KeyFactory`].
    pub fn key_factory(mut self, factory: impl KeyFactory + 'static) -> Self {
        self.factory = Arc::new(factory);
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
    /// ([`StoreFollower`](crate::registry::StoreFollower)).
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

    /// Checks the settings and builds the registry.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Config`] for a setting out of range, checked first
    /// and in this order: [`token_ttl`](Self::token_ttl) (not whole seconds
    /// from 1 s to one day), [`jwks_max_age`](Self::jwks_max_age) (not whole
    /// seconds up to one day); then, with nothing loaded or written yet,
    /// [`RegistryError::DuplicateKid`] if two keys share a kid;
    /// [`RegistryError::SeveralActiveKeys`] if more than one is active;
    /// [`RegistryError::Store`] if the store cannot be loaded (the error
    /// names the file and the reason) or written; [`RegistryError::Key`] if
    /// a key cannot be generated, or a stored reference cannot be opened by
    /// the [key factory](Self::key_factory).
    pub fn build(self) -> Result<KeyRegistry, RegistryError> {
        let KeyRegistryBuilder {
            clock,
            token_ttl,
            jwks_max_age,
            mut keys,
            store,
            generate_if_missing,
            factory,
        } = self;
        check_token_ttl(token_ttl)?;
        check_jwks_max_age(jwks_max_age)?;
        let settings = Settings {
            clock,
            token_ttl,
            jwks_max_age,
        };
        let Some(store) = store else {
            if let Some(algorithm) = generate_if_missing
                && !keys.iter().any(|k| k.state() == KeyState::Active)
            {
                let now = settings.clock.now();
                keys.push(
                    PublishedKey::new(factory.generate(algorithm)?, KeyState::Active, now)
                        .with_activated_at(Some(now)),
                );
            }
            check_invariants(&keys)?;
            return Ok(KeyRegistry::assemble(settings, keys, None, factory));
        };
        check_invariants(&keys)?;
        let loaded = write::load(store.as_ref(), factory.as_ref())?;
        let registry = KeyRegistry::assemble(settings, loaded, Some(Arc::clone(&store)), factory);
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
            let key = registry.key_factory().generate(algorithm)?;
            let now = registry.clock().now();
            let first = PublishedKey::new(Arc::clone(&key), KeyState::Active, now)
                .with_activated_at(Some(now));
            let activated = registry.transact(|stored| {
                // Another process may have activated a key meanwhile.
                if !stored.iter().any(|k| k.state() == KeyState::Active) {
                    stored.push(first);
                }
                Ok(())
            });
            registry.discard_unpublished(&[key]);
            activated?;
        }
        Ok(registry)
    }
}

impl fmt::Debug for KeyRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRegistryBuilder")
            .field("clock", &self.clock)
            .field("token_ttl", &self.token_ttl)
            .field("jwks_max_age", &self.jwks_max_age)
            .field("keys", &self.keys)
            .field("store", &self.store)
            .field("generate_if_missing", &self.generate_if_missing)
            .field("key_factory", &self.factory)
            .finish()
    }
}

fn check_token_ttl(ttl: Duration) -> Result<(), ConfigError> {
    if ttl.subsec_nanos() != 0 || ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ConfigError::new(
            "token_ttl",
            ttl,
            format!(
                "use a token lifetime of whole seconds from 1 s to {} s (one day)",
                MAX_TOKEN_TTL.as_secs()
            ),
        ));
    }
    Ok(())
}

fn check_jwks_max_age(max_age: Duration) -> Result<(), ConfigError> {
    if max_age.subsec_nanos() != 0 || max_age > MAX_JWKS_MAX_AGE {
        return Err(ConfigError::new(
            "jwks_max_age",
            max_age,
            format!(
                "use whole seconds up to {} s (one day)",
                MAX_JWKS_MAX_AGE.as_secs()
            ),
        ));
    }
    Ok(())
}
