//! One stored key with its lifecycle metadata.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::keys::{Algorithm, KeyReference, KeyState, Kid, PublicJwk, SigningKey};

/// A key as a [`KeyStore`](super::KeyStore) keeps it: the private key (with
/// its kid and algorithm), or, for a key that never leaves its device (a
/// PKCS#11 token), a [`KeyReference`] to it; and its lifecycle metadata.
///
/// A store writes a private key as key material (with restrictive
/// permissions, or encrypted) and a reference as the public data it is:
/// where the key is, and its public key. See [`new`](Self::new) and
/// [`from_reference`](Self::from_reference).
///
/// Times are kept in whole seconds since the Unix epoch, as a key file
/// holds them: the constructor and the `with_*` methods round
/// `created_at` and `activated_at` down, and `activates_at` and
/// `retires_at` **up** (a key is never activated or retired earlier than
/// asked). Times before 1970 become 1970.
///
/// Two stored keys are equal when they hold the same key (same public JWK,
/// hence same kid and algorithm; for references, the same reference) with
/// the same metadata. `Debug` never shows key material.
#[derive(Clone)]
pub struct StoredKey {
    key: Kept,
    state: KeyState,
    created_at: SystemTime,
    activated_at: Option<SystemTime>,
    activates_at: Option<SystemTime>,
    retires_at: Option<SystemTime>,
}

/// What a store keeps of a key.
#[derive(Clone)]
enum Kept {
    /// The private key, in this process.
    Private(Arc<SigningKey>),
    /// Where a key that never leaves its device is.
    Reference(KeyReference),
}

impl StoredKey {
    /// A stored private key in `state`, created at `created_at`.
    pub fn new(key: impl Into<Arc<SigningKey>>, state: KeyState, created_at: SystemTime) -> Self {
        Self::with(Kept::Private(key.into()), state, created_at)
    }

    /// A stored reference to a key kept in a device (a PKCS#11 token), in
    /// `state`, created at `created_at`: the store keeps where the key is
    /// and its public key, never key material.
    pub fn from_reference(
        reference: KeyReference,
        state: KeyState,
        created_at: SystemTime,
    ) -> Self {
        Self::with(Kept::Reference(reference), state, created_at)
    }

    fn with(key: Kept, state: KeyState, created_at: SystemTime) -> Self {
        StoredKey {
            key,
            state,
            created_at: floor_secs(created_at),
            activated_at: None,
            activates_at: None,
            retires_at: None,
        }
    }

    /// Sets when the key became active (rounded down).
    #[must_use]
    pub fn with_activated_at(mut self, at: Option<SystemTime>) -> Self {
        self.activated_at = at.map(floor_secs);
        self
    }

    /// Sets when a next key is due to become active (rounded up).
    #[must_use]
    pub fn with_activates_at(mut self, at: Option<SystemTime>) -> Self {
        self.activates_at = at.map(ceil_secs);
        self
    }

    /// Sets when a retiring key leaves the JWKS (rounded up).
    #[must_use]
    pub fn with_retires_at(mut self, at: Option<SystemTime>) -> Self {
        self.retires_at = at.map(ceil_secs);
        self
    }

    /// The private key, for a key held in this process (`None` for a
    /// [reference](Self::reference)). Secret: a store writes it with
    /// restrictive permissions, or encrypted, and never logs it.
    pub fn key(&self) -> Option<&Arc<SigningKey>> {
        match &self.key {
            Kept::Private(key) => Some(key),
            Kept::Reference(_) => None,
        }
    }

    /// Where the key is kept, for a key that never leaves its device
    /// (`None` for a private key held in this process).
    pub fn reference(&self) -> Option<&KeyReference> {
        match &self.key {
            Kept::Private(_) => None,
            Kept::Reference(reference) => Some(reference),
        }
    }

    /// The public JWK (with the kid and algorithm).
    pub fn public_jwk(&self) -> &PublicJwk {
        match &self.key {
            Kept::Private(key) => key.public_jwk(),
            Kept::Reference(reference) => reference.public_jwk(),
        }
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        self.public_jwk().kid()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.public_jwk().algorithm()
    }

    /// The lifecycle state.
    pub fn state(&self) -> KeyState {
        self.state
    }

    /// When the key was created.
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// When the key became active, if it has been.
    pub fn activated_at(&self) -> Option<SystemTime> {
        self.activated_at
    }

    /// For a next key, when it is due to become active, if scheduled.
    pub fn activates_at(&self) -> Option<SystemTime> {
        self.activates_at
    }

    /// For a retiring key, when it leaves the JWKS.
    pub fn retires_at(&self) -> Option<SystemTime> {
        self.retires_at
    }
}

impl PartialEq for StoredKey {
    fn eq(&self, other: &Self) -> bool {
        let same_key = match (&self.key, &other.key) {
            (Kept::Private(a), Kept::Private(b)) => a.public_jwk() == b.public_jwk(),
            (Kept::Reference(a), Kept::Reference(b)) => a == b,
            _ => false,
        };
        same_key
            && self.state == other.state
            && self.created_at == other.created_at
            && self.activated_at == other.activated_at
            && self.activates_at == other.activates_at
            && self.retires_at == other.retires_at
    }
}

impl Eq for StoredKey {}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", self.kid())
            .field("algorithm", &self.algorithm())
            .field("reference", &self.reference())
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("activated_at", &self.activated_at)
            .field("activates_at", &self.activates_at)
            .field("retires_at", &self.retires_at)
            .finish_non_exhaustive()
    }
}

/// `time` rounded down to a whole second (1970 for earlier times).
pub(crate) fn floor_secs(time: SystemTime) -> SystemTime {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        Err(_) => UNIX_EPOCH,
    }
}

/// `time` rounded up to a whole second (1970 for earlier times).
pub(crate) fn ceil_secs(time: SystemTime) -> SystemTime {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) if since.subsec_nanos() == 0 => time,
        Ok(since) => UNIX_EPOCH + Duration::from_secs(since.as_secs().saturating_add(1)),
        Err(_) => UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_keeps_whole_seconds_and_goes_the_safe_way() {
        let whole = UNIX_EPOCH + Duration::from_secs(100);
        let frac = whole + Duration::from_millis(1);
        assert_eq!(floor_secs(whole), whole);
        assert_eq!(ceil_secs(whole), whole);
        assert_eq!(floor_secs(frac), whole);
        assert_eq!(ceil_secs(frac), whole + Duration::from_secs(1));
        assert_eq!(floor_secs(UNIX_EPOCH - Duration::from_secs(5)), UNIX_EPOCH);
        assert_eq!(ceil_secs(UNIX_EPOCH - Duration::from_secs(5)), UNIX_EPOCH);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = SigningKey::generate(crate::keys::Algorithm::ES256).unwrap();
        let jwk: serde_json::Value = serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap();
        let d = jwk["d"].as_str().unwrap().to_owned();
        let stored = StoredKey::new(key, KeyState::Active, SystemTime::now());
        let debug = format!("{stored:?}");
        assert!(debug.contains("kid"));
        assert!(!debug.contains(&d));
    }
}
