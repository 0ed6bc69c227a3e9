//! One stored key with its lifecycle metadata.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::keys::{KeyState, Kid, SigningKey};

/// A key as a [`KeyStore`](super::KeyStore) keeps it: the private key (with
/// its kid and algorithm) and its lifecycle metadata.
///
/// Times are kept in whole seconds since the Unix epoch, as a key file
/// holds them: the constructor and the `with_*` methods round
/// `created_at` and `activated_at` down, and `activates_at` and
/// `retires_at` **up** (a key is never activated or retired earlier than
/// asked). Times before 1970 become 1970.
///
/// Two stored keys are equal when they hold the same key (same public JWK,
/// hence same kid and algorithm) with the same metadata. `Debug` never
/// shows key material.
#[derive(Clone)]
pub struct StoredKey {
    key: Arc<SigningKey>,
    state: KeyState,
    created_at: SystemTime,
    activated_at: Option<SystemTime>,
    activates_at: Option<SystemTime>,
    retires_at: Option<SystemTime>,
}

impl StoredKey {
    /// A stored key in `state`, created at `created_at`.
    pub fn new(key: impl Into<Arc<SigningKey>>, state: KeyState, created_at: SystemTime) -> Self {
        StoredKey {
            key: key.into(),
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

    /// The private key. Secret: a store writes it with restrictive
    /// permissions and never logs it.
    pub fn key(&self) -> &Arc<SigningKey> {
        &self.key
    }

    /// The key id.
    pub fn kid(&self) -> &Kid {
        self.key.kid()
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
        self.key.public_jwk() == other.key.public_jwk()
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
            .field("algorithm", &self.key.algorithm())
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
