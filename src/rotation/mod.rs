//! Automatic key rotation with overlap.
//!
//! A [`KeyRotator`] is a tokio background task that rotates the keys of a
//! [`KeyRegistry`] by a [`RotationPolicy`]:
//!
//! 1. the next key is **published** `prepublish` before it is due to sign,
//!    so that JWKS caches (and replicas) know it before the first token
//!    with its kid arrives;
//! 2. it becomes **active** at the due time, `rotate_every` after the
//!    previous key became active;
//! 3. the previous key stays published, **retiring**, for `retain`, so that
//!    every token it signed keeps verifying until it expires;
//! 4. retiring keys past their time **leave** the JWKS and the store.
//!
//! ```text
//!              publish K2       K2 signs          K1 leaves
//!   K1  active ────────────────┐ retiring ────────┐
//!   K2             next ───────┘ active ─────────────────────── ...
//!                  │<prepublish>│<──── retain ───>│
//!   │<──────── rotate_every ───>│
//! ```
//!
//! With defaults, `prepublish` is the JWKS `max-age` (plus the followers'
//! poll interval) and `retain` is the token lifetime plus the verifiers'
//! leeway (plus that interval); configuration that cannot work is refused
//! by [`RotationPolicyBuilder::build`] with a [`RotationConfigError`].
//!
//! Time is the registry's [`Clock`](crate::Clock) and tokio's timers, so a
//! test with paused time drives many periods in milliseconds. Key
//! generation (slow for RSA) and store writes run on blocking threads. On a
//! registry built on a [store](crate::store), every step is written through
//! before it is published, and every step is conditional on the stored
//! state ("publish a next key unless there is one"), so two rotators on one
//! store do not rotate twice. Events are logged with `tracing`: key
//! published, activated, retired, removed, and failures.
//!
//! # A fleet
//!
//! On a store shared by a fleet (`RedisKeyStore`, feature `redis`),
//! run a rotator on every replica: before each step it asks the store
//! whether this process leads ([`KeyStore::is_leader`](crate::store::KeyStore::is_leader)).
//! A replica that does not lead leaves the step to the leader, without
//! generating a key; a step the store refuses as not the leader's
//! (fenced) is "not my turn". When the store cannot be reached, the
//! rotator waits (the active key keeps signing past its period), logs a
//! warning each time it tries, and resumes when the store is back. Give the
//! policy the followers' poll interval
//! ([`RotationPolicyBuilder::follower_poll_interval`]): a replica that
//! missed a change notification sees the change that much later.
//!
//! # Rotating by hand
//!
//! [`KeyRotator::rotate_now`] follows the same rules: it publishes a next
//! key now (or brings an existing one forward) and the task activates it
//! once it has been published for `prepublish`.
//!
//! [`KeyRotator::emergency_rotate`] is for a compromised key: a fresh key
//! signs **at once**, without the prepublish wait. Consequence: verifiers
//! that cached the JWKS without it reject its tokens until they fetch the
//! JWKS again (verifiers that refetch on an unknown kid recover at once).
//! With [`OldKeys::Revoke`], every other key also leaves the JWKS and the
//! store at once: **tokens signed with them stop verifying** as soon as
//! verifiers refresh their copy, even if they have not expired. With
//! [`OldKeys::Retain`], the old active key retires normally.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_jwt_signer::rotation::{KeyRotator, RotationPolicy};
//! use tower_jwt_signer::{Algorithm, KeyRegistry, KeyState};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! // Daily keys for tokens that live 60 s; verifiers allow 60 s of leeway.
//! let policy = RotationPolicy::builder(Duration::from_secs(24 * 3600), Duration::from_secs(60))
//!     .build()?;
//! assert_eq!(policy.prepublish(), Duration::from_secs(300)); // the JWKS max-age
//! assert_eq!(policy.retain(), Duration::from_secs(120)); // ttl + leeway
//!
//! let rotator = KeyRotator::spawn(registry.clone(), policy);
//!
//! // Rotate ahead of schedule: the next key is published now and signs
//! // once JWKS caches have had the time to see it.
//! let scheduled = rotator.rotate_now().await?;
//! let next = registry.current();
//! assert_eq!(next.get(scheduled.kid()).unwrap().state(), KeyState::Next);
//!
//! // Configuration that cannot work is refused.
//! assert!(RotationPolicy::builder(Duration::from_secs(3600), Duration::from_secs(60))
//!     .retain(Duration::from_secs(30))
//!     .build()
//!     .is_err());
//! rotator.stop().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`KeyRegistry`]: crate::registry::KeyRegistry

// Where things are: `policy.rs` holds the policy, its builder and its
// configuration error; `planner.rs` the pure `plan(keys, policy, now)`;
// `apply.rs` acts on a plan inside one registry change (and generates keys
// through its one helper); `events.rs` logs what was done; `rotator.rs` is
// the task and its handle. Imports run one way: policy <- planner <- apply
// <- rotator.

mod apply;
mod events;
mod planner;
mod policy;
mod rotator;

pub use apply::{OldKeys, ScheduledRotation};
pub use policy::{
    DEFAULT_LEEWAY, DEFAULT_RETRY_AFTER, RotationConfigError, RotationPolicy, RotationPolicyBuilder,
};
pub use rotator::{KeyRotator, RotationError};
