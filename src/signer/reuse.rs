//! Opt-in token reuse: [`TokenReuse`] (the setting) and [`TokenCache`],
//! the bounded, concurrent cache behind it.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderValue;

use crate::error::ConfigError;
use crate::keys::SigningBackend;

/// The default bound of a reuse cache: 10 000 tokens.
const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// The largest bound a reuse cache accepts: 1 000 000 tokens.
const MAX_ENTRIES: usize = 1_000_000;

/// The default share of its lifetime a token must still have to be handed
/// out again: 50 %.
const DEFAULT_MIN_REMAINING_PERCENT: u8 = 50;

/// Hand out a recently signed token again when a request's claims equal
/// those of that token. Off by default; turn it on with
/// [`JwtSignerLayerBuilder::reuse_tokens`](super::JwtSignerLayerBuilder::reuse_tokens)
/// (a cache for each service the layer builds) or
/// [`JwtSignerLayerBuilder::reuse_tokens_in`](super::JwtSignerLayerBuilder::reuse_tokens_in)
/// (one [`TokenCache`] that you share).
///
/// A plain settings value: its setters only record the value, and the
/// signer's [`build`](super::JwtSignerLayerBuilder::build) (or
/// [`TokenCache::new`]) checks it.
///
/// Two requests have equal claims when every claim except `iat`, `nbf`,
/// `exp` and `jti` is the same, after templates and the per-request
/// closure: the same `sub`, `aud`, tenant, and so on. A token is handed out
/// again only
///
/// * while it was signed by the registry's **active** key: after a
///   rotation, no token of the old key is handed out again;
/// * while at least [`min_remaining_percent`](Self::min_remaining_percent)
///   of its lifetime remains (half of it by default: with the default 60 s
///   ttl, a token is reused for 30 s and every token handed out has at
///   least 30 s left);
/// * and while it is still in the cache, which holds at most
///   [`max_entries`](Self::max_entries) tokens (10 000 by default). Claims
///   with many distinct values (one subject per user) cannot make it grow:
///   a full cache replaces its oldest entries.
///
/// # The trade-off
///
/// With reuse on, `jti` is no longer unique per request: several requests
/// (of the same caller, with the same claims) carry the very same token.
/// A backend that rejects a `jti` it has already seen (a replay cache)
/// will refuse them; do not combine the two. The token does not live
/// longer than without reuse: `exp` is unchanged, only more requests carry
/// it. In exchange, most requests skip the signature (tens of microseconds
/// for ECDSA and EdDSA, about 250 µs for RSA): see `BENCHMARKS.md`.
///
/// ```
/// use tower_jwt_signer::signer::TokenReuse;
/// use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let reuse = TokenReuse::new().max_entries(50_000).min_remaining_percent(75);
/// assert_eq!(reuse.max_entries_value(), 50_000);
///
/// let registry = KeyRegistry::generate(Algorithm::ES256)?;
/// let signer = JwtSignerLayer::builder(registry.clone())
///     .reuse_tokens(reuse)
///     .build()?;
/// # let _ = signer;
///
/// // Checked when the signer is built: a cache of no tokens is refused.
/// let err = JwtSignerLayer::builder(registry)
///     .reuse_tokens(TokenReuse::new().max_entries(0))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.setting(), "max_entries");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct TokenReuse {
    max_entries: usize,
    min_remaining_percent: u8,
}

impl TokenReuse {
    /// Reuse with the defaults: at most 10 000 tokens, each handed out while
    /// at least half of its lifetime remains.
    pub fn new() -> Self {
        TokenReuse {
            max_entries: DEFAULT_MAX_ENTRIES,
            min_remaining_percent: DEFAULT_MIN_REMAINING_PERCENT,
        }
    }

    /// Sets how many tokens the cache holds at most: 1 to 1 000 000
    /// (default 10 000).
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// Sets the share of a token's lifetime (`exp - iat`), in percent, that
    /// must remain for it to be handed out again: 1 to 100 (default 50).
    /// 100 reuses a token only within the second it was signed in; 10 hands
    /// it out until 10 % of its lifetime is left.
    pub fn min_remaining_percent(mut self, percent: u8) -> Self {
        self.min_remaining_percent = percent;
        self
    }

    /// The bound of the cache, in tokens.
    pub fn max_entries_value(&self) -> usize {
        self.max_entries
    }

    /// The share of the lifetime, in percent, a token must still have.
    pub fn min_remaining_percent_value(&self) -> u8 {
        self.min_remaining_percent
    }

    /// The whole seconds a token with lifetime `ttl` must still have.
    pub(crate) fn min_remaining_secs(&self, ttl: u64) -> u64 {
        (ttl * u64::from(self.min_remaining_percent)).div_ceil(100)
    }

    /// Refuses a bound outside 1 to 1 000 000 tokens and a share outside 1
    /// to 100 percent.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_ENTRIES).contains(&self.max_entries) {
            return Err(ConfigError::new(
                "max_entries",
                self.max_entries,
                format!("invalid token reuse bound: use 1 to {MAX_ENTRIES} entries"),
            ));
        }
        if !(1..=100).contains(&self.min_remaining_percent) {
            return Err(ConfigError::new(
                "min_remaining_percent",
                self.min_remaining_percent,
                "invalid token reuse share: use 1 to 100 percent",
            ));
        }
        Ok(())
    }
}

impl Default for TokenReuse {
    fn default() -> Self {
        TokenReuse::new()
    }
}

/// A token reuse cache: bounded, concurrent, and cheap to clone (clones
/// share it).
///
/// [`JwtSignerLayerBuilder::reuse_tokens`](super::JwtSignerLayerBuilder::reuse_tokens)
/// gives each service the layer builds a cache of its own (a fresh one on
/// every [`Layer::layer`](tower_layer::Layer::layer) call, as tower's
/// `ConcurrencyLimitLayer` makes a fresh semaphore; clones of that service
/// share it). axum's `Router::layer` calls `layer` once per route, so each
/// route then has its own cache, each bounded by
/// [`TokenReuse::max_entries`]. To use one cache across routes, or across
/// several layers, build a `TokenCache` and hand it to
/// [`JwtSignerLayerBuilder::reuse_tokens_in`](super::JwtSignerLayerBuilder::reuse_tokens_in),
/// as tower's `GlobalConcurrencyLimitLayer` takes one shared semaphore:
/// every service built from those layers then shares this one cache and
/// its one bound.
///
/// A token is handed out again only by a service whose settings made it:
/// services of the same layer (or of its clones) share tokens through the
/// cache; a layer configured differently (another scheme, `typ`, lifetime,
/// or any other setting) shares the bound, never its tokens.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_jwt_signer::signer::{TokenCache, TokenReuse};
/// use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = KeyRegistry::generate(Algorithm::ES256)?;
/// let cache = TokenCache::new(TokenReuse::new().max_entries(50_000))?;
/// let signer = JwtSignerLayer::builder(registry)
///     .audience("orders-api")
///     .reuse_tokens_in(cache.clone())
///     .build()?;
/// // Both routes hand out each other's tokens, from one cache of at most
/// // 50 000 tokens.
/// let app: Router = Router::new()
///     .route("/orders", get(|| async { "orders" }))
///     .route("/invoices", get(|| async { "invoices" }))
///     .layer(signer);
/// assert_eq!(cache.len(), 0);
/// # let _ = app;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Sets>,
}

/// How many entries share one lock and one lookup: a set-associative cache.
const WAYS: usize = 8;

/// One cached token.
struct Slot {
    hash: u64,
    /// The claims other than `iat`, `nbf`, `exp`, `jti`, as serialised.
    key: Box<[u8]>,
    /// `<scheme> <jwt>`, ready for the header.
    value: HeaderValue,
    /// The key that signed it; compared with the active key on every hit.
    /// Holding it also means a signer's address cannot be reused by another
    /// key while the entry lives.
    backend: Arc<dyn SigningBackend>,
    /// The settings that made it: only they hand it out again.
    settings: u64,
    iat: u64,
    /// The last second it may be handed out (`exp` minus the lifetime it
    /// must keep).
    until: u64,
}

/// What a hit must match besides the claims.
pub(crate) struct Lookup<'a> {
    pub(crate) active: &'a Arc<dyn SigningBackend>,
    pub(crate) settings: u64,
    pub(crate) now: u64,
}

/// A signed token to remember.
pub(crate) struct NewEntry {
    pub(crate) hash: u64,
    pub(crate) key: Box<[u8]>,
    pub(crate) backend: Arc<dyn SigningBackend>,
    pub(crate) settings: u64,
    pub(crate) iat: u64,
    pub(crate) until: u64,
}

/// The bounded cache: `sets` of at most [`WAYS`] entries each, every set
/// behind its own lock. A claims set hashes (SipHash with a random key, so
/// request data cannot aim at one set) to one set; a full set replaces the
/// entry whose reuse ends first. The total never exceeds `max_entries`.
struct Sets {
    settings: TokenReuse,
    sets: Box<[Mutex<Vec<Slot>>]>,
    /// How many entries each set may hold: `WAYS`, and fewer for the last
    /// set when `max_entries` is not a multiple of `WAYS`.
    last_ways: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl TokenCache {
    /// An empty cache with these settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a bound outside 1 to 1 000 000 tokens (setting
    /// `"max_entries"`) or a share outside 1 to 100 percent
    /// (`"min_remaining_percent"`).
    pub fn new(settings: TokenReuse) -> Result<Self, ConfigError> {
        settings.check()?;
        Ok(Self::checked(settings))
    }

    /// An empty cache with settings already checked.
    pub(crate) fn checked(settings: TokenReuse) -> Self {
        let max = settings.max_entries;
        let set_count = max.div_ceil(WAYS);
        let last_ways = max - (set_count - 1) * WAYS;
        TokenCache {
            inner: Arc::new(Sets {
                settings,
                sets: (0..set_count).map(|_| Mutex::new(Vec::new())).collect(),
                last_ways,
                hasher: std::collections::hash_map::RandomState::new(),
            }),
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> TokenReuse {
        self.inner.settings
    }

    /// How many tokens it holds now: at most
    /// [`TokenReuse::max_entries`].
    pub fn len(&self) -> usize {
        self.inner
            .sets
            .iter()
            .map(|set| set.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether it holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.inner.hasher.hash_one(key)
    }

    fn set(&self, hash: u64) -> (&Mutex<Vec<Slot>>, usize) {
        let sets = &self.inner.sets;
        // The high bits pick the set (the low bits are compared first in
        // the set: both are good bits of SipHash).
        let index = ((hash >> 32) as usize) % sets.len();
        let ways = if index + 1 == sets.len() {
            self.inner.last_ways
        } else {
            WAYS
        };
        (&sets[index], ways)
    }

    /// The cached token for these claims, if these settings made it, the
    /// active key signed it, and it may still be handed out.
    pub(crate) fn get(&self, hash: u64, key: &[u8], lookup: &Lookup<'_>) -> Option<HeaderValue> {
        let (set, _) = self.set(hash);
        let set = set.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = set.iter().find(|slot| {
            slot.hash == hash && slot.settings == lookup.settings && *slot.key == *key
        })?;
        let usable = std::ptr::addr_eq(Arc::as_ptr(&slot.backend), Arc::as_ptr(lookup.active))
            && slot.iat <= lookup.now
            && lookup.now <= slot.until;
        usable.then(|| slot.value.clone())
    }

    /// Remembers a freshly signed token, replacing the entry for the same
    /// claims under the same settings, else an empty way, else the entry
    /// whose reuse ends first.
    pub(crate) fn insert(&self, entry: NewEntry, value: HeaderValue) {
        let (set, ways) = self.set(entry.hash);
        let slot = Slot {
            hash: entry.hash,
            key: entry.key,
            value,
            backend: entry.backend,
            settings: entry.settings,
            iat: entry.iat,
            until: entry.until,
        };
        let mut set = set.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(same) = set.iter_mut().find(|old| {
            old.hash == slot.hash && old.settings == slot.settings && old.key == slot.key
        }) {
            *same = slot;
        } else if set.len() < ways {
            if set.capacity() == 0 {
                set.reserve_exact(ways);
            }
            set.push(slot);
        } else if let Some(oldest) = set.iter_mut().min_by_key(|old| old.until) {
            *oldest = slot;
        }
    }

    /// Drops every entry another key signed (after a rotation: the old
    /// key's tokens are never handed out again, and its backend is
    /// released). Entries of `active` stay: another service sharing this
    /// cache may have seen the rotation first.
    pub(crate) fn retain_backend(&self, active: &Arc<dyn SigningBackend>) {
        for set in &*self.inner.sets {
            set.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|slot| std::ptr::addr_eq(Arc::as_ptr(&slot.backend), Arc::as_ptr(active)));
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("settings", &self.inner.settings)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, SigningKey};

    fn backend() -> Arc<dyn SigningBackend> {
        Arc::new(SigningKey::generate(Algorithm::ES256).unwrap())
    }

    /// A 60 s token signed at `iat` under settings 1, handed out again while
    /// 30 s remain.
    fn entry(
        cache: &TokenCache,
        key: &[u8],
        backend: &Arc<dyn SigningBackend>,
        iat: u64,
    ) -> NewEntry {
        NewEntry {
            hash: cache.hash(key),
            key: key.into(),
            backend: Arc::clone(backend),
            settings: 1,
            iat,
            until: iat + 60 - TokenReuse::new().min_remaining_secs(60),
        }
    }

    #[test]
    fn settings() {
        assert_eq!(TokenReuse::new().min_remaining_secs(60), 30);
        let reuse = TokenReuse::new().min_remaining_percent(100);
        assert_eq!(reuse.min_remaining_secs(60), 60);
        let reuse = TokenReuse::new().min_remaining_percent(1);
        assert_eq!(reuse.min_remaining_secs(60), 1, "rounded up");
        for (reuse, setting) in [
            (TokenReuse::new().max_entries(0), "max_entries"),
            (
                TokenReuse::new().max_entries(MAX_ENTRIES + 1),
                "max_entries",
            ),
            (
                TokenReuse::new().min_remaining_percent(0),
                "min_remaining_percent",
            ),
            (
                TokenReuse::new().min_remaining_percent(101),
                "min_remaining_percent",
            ),
        ] {
            assert_eq!(reuse.check().unwrap_err().setting(), setting);
            assert_eq!(TokenCache::new(reuse).unwrap_err().setting(), setting);
        }
        assert!(TokenReuse::new().max_entries(MAX_ENTRIES).check().is_ok());
    }

    #[test]
    fn hit_needs_same_claims_same_key_same_settings_and_lifetime() {
        let cache = TokenCache::new(TokenReuse::new()).unwrap();
        let key = backend();
        let other = backend();
        cache.insert(
            entry(&cache, b"a", &key, 1000),
            HeaderValue::from_static("A"),
        );
        let hash = cache.hash(b"a");
        let at = |now| Lookup {
            active: &key,
            settings: 1,
            now,
        };
        assert_eq!(cache.get(hash, b"a", &at(1000)).unwrap(), "A");
        assert_eq!(cache.get(hash, b"a", &at(1030)).unwrap(), "A");
        assert!(cache.get(hash, b"a", &at(1031)).is_none(), "too old");
        assert!(cache.get(hash, b"a", &at(999)).is_none(), "clock went back");
        assert!(cache.get(cache.hash(b"b"), b"b", &at(1000)).is_none());
        let rotated = Lookup {
            active: &other,
            settings: 1,
            now: 1000,
        };
        assert!(cache.get(hash, b"a", &rotated).is_none(), "another key");
        let elsewhere = Lookup {
            active: &key,
            settings: 2,
            now: 1000,
        };
        assert!(
            cache.get(hash, b"a", &elsewhere).is_none(),
            "other settings"
        );
        // Same hash, other bytes: no hit.
        assert!(cache.get(hash, b"a2", &at(1000)).is_none());
        // Other settings, same claims: a second entry, beside the first.
        let mut theirs = entry(&cache, b"a", &key, 1000);
        theirs.settings = 2;
        cache.insert(theirs, HeaderValue::from_static("B"));
        assert_eq!(cache.get(hash, b"a", &elsewhere).unwrap(), "B");
        assert_eq!(cache.get(hash, b"a", &at(1000)).unwrap(), "A");
        // A clone is the same cache.
        assert_eq!(cache.clone().len(), 2);
        cache.retain_backend(&key);
        assert_eq!(cache.len(), 2, "the active key's tokens stay");
        cache.retain_backend(&other);
        assert!(cache.is_empty());
    }

    #[test]
    fn bounded_for_any_size() {
        for max in [1, 3, 4, 5, 17, 1000] {
            let cache = TokenCache::new(TokenReuse::new().max_entries(max)).unwrap();
            let key = backend();
            for i in 0..(max * 10) {
                let claims = format!("sub-{i}");
                cache.insert(
                    entry(&cache, claims.as_bytes(), &key, i as u64),
                    HeaderValue::from_static("T"),
                );
                assert!(cache.len() <= max, "{max}");
            }
            assert!(!cache.is_empty());
        }
    }
}
