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
//! Two of these durations come from the [`KeyRegistry`], the one home of
//! the token lifetime and the JWKS max-age (see the
//! [registry docs](crate::registry#token-lifetime-and-jwks-max-age)):
//! unless set, `prepublish` is the registry's
//! [`jwks_max_age`](crate::KeyRegistry::jwks_max_age) (plus the followers' poll
//! interval), and `retain` is the registry's
//! [`token_ttl`](crate::KeyRegistry::token_ttl) plus the verifiers' leeway (plus
//! that interval), which is also its minimum. A [`RotationPolicy`] holds
//! what it can check alone ([`RotationPolicyBuilder::build`]);
//! [`KeyRotator::spawn`] resolves it against the registry
//! ([`RotationPolicy::resolve`]) and refuses, with a
//! [`ConfigError`](crate::ConfigError), a policy that cannot work there.
//! [`KeyRotator::prepublish`] and [`KeyRotator::retain`] give the resolved
//! durations.
//!
//! Time is the registry's [`Clock`](crate::clock::Clock) and tokio's timers, so a
//! test with paused time drives many periods in milliseconds. Key
//! generation (slow for RSA) and store writes run on blocking threads.
//! New keys come from the registry's
//! [`KeyFactory`](crate::keys::KeyFactory)
//! ([`KeyRegistryBuilder::key_factory`](crate::registry::KeyRegistryBuilder::key_factory)):
//! in this process by default, or inside a PKCS#11 token (feature
//! `pkcs11`), where the next key is made, published and activated by the
//! same rules, and a retired key's objects are destroyed once it leaves the
//! JWKS. A key made for a step that another writer had already taken is
//! destroyed again. On a
//! registry built on a [store](crate::store), every step is written through
//! before it is published, and every step is conditional on the stored
//! state ("publish a next key unless there is one"), so two rotators on one
//! store do not rotate twice. Events are logged with `tracing`: key
//! published, activated, retired, removed, and failures.
//!
//! # What verifiers need
//!
//! A token signed by a new key verifies only where the verifier already
//! holds a JWKS that lists the key. So:
//!
//! * **`prepublish` must be at least the verifiers' cache lifetime.** A
//!   verifier that fetched the JWKS just before the next key was published
//!   keeps that copy for its cache lifetime; the key must not sign before
//!   the copy expires. The default, the registry's JWKS max-age, is right
//!   for verifiers that cache for the `Cache-Control: max-age` the
//!   [`JwksService`](crate::JwksService) sends, and no longer.
//! * **This crate's [`RemoteJwks`](crate::RemoteJwks)** caches for that
//!   max-age **clamped to its bounds**:
//!   [`cache_ttl_bounds`](crate::verifier::RemoteJwksBuilder::cache_ttl_bounds)
//!   defaults to 60 s .. 24 h, so it keeps a set **at least 60 s**, whatever
//!   a shorter max-age says. On a token with an unknown kid it refetches at
//!   once, but only **once per
//!   [`refresh_cooldown`](crate::verifier::RemoteJwksBuilder::refresh_cooldown)**
//!   (30 s by default): a key that signs before the verifier's copy lists it
//!   is refused for up to that long.
//! * **`retain` must cover the verifiers' leeway**: a token is accepted
//!   until `exp` plus the leeway. Give the policy the largest leeway of
//!   your verifiers with
//!   [`verifier_leeway`](RotationPolicyBuilder::verifier_leeway) (60 s by
//!   default; this crate's [`Verifier`](crate::Verifier) allows 30 s).
//!
//! ## Short rotation periods
//!
//! With the defaults (a 300 s max-age) the period must be at least 300 s.
//! For shorter periods, a few seconds in a test, lower the registry's JWKS
//! max-age to a fraction of the period and let the verifiers follow it:
//!
//! | where | setting | for a period `P` |
//! |---|---|---|
//! | gateway | [`KeyRegistryBuilder::jwks_max_age`](crate::registry::KeyRegistryBuilder::jwks_max_age) | at most `P` (the prepublish time; `P / 2` leaves room) |
//! | gateway | [`KeyRegistryBuilder::token_ttl`](crate::registry::KeyRegistryBuilder::token_ttl) | as short as the tokens need |
//! | gateway | [`RotationPolicyBuilder::verifier_leeway`] | the verifiers' leeway |
//! | backend | [`RemoteJwksBuilder::cache_ttl_bounds`](crate::verifier::RemoteJwksBuilder::cache_ttl_bounds) | a minimum at most the max-age (1 s), so the max-age is honoured |
//! | backend | [`RemoteJwksBuilder::refresh_cooldown`](crate::verifier::RemoteJwksBuilder::refresh_cooldown) | at most the max-age |
//! | backend | [`VerifierBuilder::leeway`](crate::verifier::VerifierBuilder::leeway) | the policy's `verifier_leeway` or less |
//!
//! With a 12 s period and the backend left at its defaults (a cache of at
//! least 60 s, one unknown-kid refresh per 30 s), a backend refused every
//! token of a new key for up to 18 s after each rotation; with the settings
//! above it refuses none. `tests/lifecycle/short_period.rs` runs both, in
//! real time: a 3 s period with a 1 s max-age, 2 s tokens and 1 s of leeway
//! refuses no token over several rotations, and the same gateway with the
//! backend at its defaults does.
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
//! missed a change notification sees the change that much later, so the
//! default prepublish and retain times grow by it, and a prepublish time
//! you set must be at least that long (the builder refuses a shorter one):
//! every replica publishes the next key before any replica signs with it.
//!
//! # Certificate-backed keys
//!
//! An active key with a certificate chain
//! ([`CertificateChain`](crate::keys::CertificateChain)) is due by the
//! chain's `notAfter` at the latest, whatever the period: the next key is
//! published `prepublish` before and signs from then on (the signer never
//! signs with an expired certificate). The rotator logs a `tracing` warning
//! once per key when its certificate ends within
//! [`certificate_warning`](RotationPolicyBuilder::certificate_warning)
//! (7 days by default): renew it. A key made by the rotator has no
//! certificate; a renewed certificate becomes the next key by
//! [`KeyRegistry::add_next_due`](crate::KeyRegistry::add_next_due) (with a
//! new key) or [`KeyRegistry::renew_certificate`](crate::KeyRegistry::renew_certificate)
//! (the same key), as `signing_proxy --cert-file --key-file` does.
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
//! use tower_jwt_signer::registry::KeyState;
//! use tower_jwt_signer::{Algorithm, KeyRegistry, KeyRotator, RotationPolicy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Tokens live 60 s and the JWKS is cached 300 s: the registry's defaults.
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! // Daily keys; the verifiers allow 60 s of leeway (the default).
//! let policy = RotationPolicy::builder(Duration::from_secs(24 * 3600)).build()?;
//! let rotator = KeyRotator::spawn(registry.clone(), policy)?;
//! assert_eq!(rotator.prepublish(), Duration::from_secs(300)); // the JWKS max-age
//! assert_eq!(rotator.retain(), Duration::from_secs(120)); // token ttl + leeway
//!
//! // Rotate ahead of schedule: the next key is published now and signs
//! // once JWKS caches have had the time to see it.
//! let scheduled = rotator.rotate_now().await?;
//! let next = registry.current();
//! assert_eq!(next.get(scheduled.kid()).unwrap().state(), KeyState::Next);
//! rotator.stop().await;
//!
//! // Configuration that cannot work is refused: old keys would leave the
//! // JWKS while their tokens are still valid.
//! let policy = RotationPolicy::builder(Duration::from_secs(3600))
//!     .retain(Duration::from_secs(30))
//!     .build()?;
//! assert_eq!(
//!     KeyRotator::spawn(registry, policy).unwrap_err().setting(),
//!     "retain"
//! );
//! # Ok(())
//! # }
//! ```
//!
//! [`KeyRegistry`]: crate::KeyRegistry

// Where things are: `policy.rs` holds the policy, its builder and its
// resolution against a registry; `planner.rs` the pure `plan(keys, policy, now)`;
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
pub use policy::{ResolvedPolicy, RotationPolicy, RotationPolicyBuilder};
pub use rotator::{KeyRotator, RotationError};
