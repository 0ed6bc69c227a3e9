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
//! A registry built on a [`KeyStore`](crate::store::KeyStore)
//! ([`KeyRegistryBuilder::store`]) loads its keys at start-up and writes
//! every change through the store before publishing it; see the
//! [`store`](crate::store) module. The [`rotation`](crate::rotation) module
//! rotates keys on a schedule.
//!
//! # Token lifetime and JWKS max-age
//!
//! Two durations decide how long a key must be published around the tokens
//! it signs. They are set once, here, because the registry is what the
//! signer, the JWKS service and the rotator share:
//!
//! * [`token_ttl`](KeyRegistryBuilder::token_ttl) (60 s by default): how
//!   long tokens live. Every signer on the registry signs for this long, or
//!   for a shorter ttl of its own, never a longer one; the
//!   [`KeyRotator`](crate::KeyRotator) keeps a key published at least this
//!   long (plus the verifiers' leeway) after it stops signing.
//! * [`jwks_max_age`](KeyRegistryBuilder::jwks_max_age) (300 s by
//!   default): how long verifiers may cache the JWKS. The
//!   [`JwksService`](crate::JwksService) sends it as `Cache-Control:
//!   max-age`, or a shorter max-age of its own, never a longer one; the
//!   rotator publishes each next key at least this long before it signs.
//!
//! Given once, they cannot disagree: a signer that made 600 s tokens under
//! a rotation planned for 60 s ones would see its old keys leave the JWKS
//! while their tokens live, and a JWKS cached longer than the rotator
//! prepublishes would make verifiers refuse the first tokens of each new
//! key. The builders refuse both with a [`ConfigError`](crate::ConfigError).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_jwt_signer::registry::KeyState;
//! use tower_jwt_signer::{Algorithm, KeyRegistry, SigningKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! assert_eq!(registry.token_ttl(), Duration::from_secs(60));
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

// Where things are: `published.rs` holds `PublishedKey`, `snapshot.rs`
// `KeySnapshot`, `registry.rs` the operations of `KeyRegistry`, `builder.rs`
// its constructors and `KeyRegistryBuilder`, `write.rs` the one path by which
// keys change (through the store, then published), `lifecycle.rs` the rules
// every writer shares (which next key activates, how a key retires), and
// `follow.rs` the `StoreFollower`. Imports run one way: keys <- store <-
// registry <- rotation.

mod builder;
mod error;
mod follow;
mod lifecycle;
mod published;
#[expect(
    clippy::module_inception,
    reason = "KeyRegistry's own file, named for it; its items are re-exported here"
)]
mod registry;
mod snapshot;
mod write;

// `KeyState` is defined beside the keys (the store uses it too); this is
// its one public path.
pub use crate::keys::state::KeyState;
pub use builder::KeyRegistryBuilder;
pub use error::RegistryError;
pub use follow::{StoreFollower, StoreFollowerBuilder};
pub use published::PublishedKey;
pub use registry::KeyRegistry;
pub use snapshot::KeySnapshot;

pub(crate) use lifecycle::{ensure_unique, is_expired, oldest_next, promote, retain_until};
pub(crate) use snapshot::{jwk_set, strong_etag};
