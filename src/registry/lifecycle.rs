//! The rules of a key's life, in one place: which next key becomes active,
//! how it takes over, when a retiring key has expired, and what a list of
//! keys must never hold. The registry's operations, its builder and the
//! [rotator](crate::rotation) all use these.

use std::time::{Duration, SystemTime};

use super::error::RegistryError;
use super::published::PublishedKey;
use crate::keys::{KeyState, Kid};

/// The index of the next key to activate: the oldest **next** key, ties
/// (keys created at the same time) broken by the lower kid, so that every
/// writer (by hand, the rotator, a restart) picks the same one.
pub(crate) fn oldest_next(keys: &[PublishedKey]) -> Option<usize> {
    keys.iter()
        .enumerate()
        .filter(|(_, k)| k.state() == KeyState::Next)
        .min_by(|(_, a), (_, b)| {
            a.created_at()
                .cmp(&b.created_at())
                .then_with(|| a.kid().cmp(b.kid()))
        })
        .map(|(index, _)| index)
}

/// Promotes `keys[index]` to active and retires the old active key until
/// `now + retain`. Returns the new active kid.
pub(crate) fn promote(
    keys: &mut [PublishedKey],
    index: usize,
    now: SystemTime,
    retain: Duration,
) -> Kid {
    for key in keys.iter_mut() {
        if key.state() == KeyState::Active {
            key.retire_until(retain_until(now, retain));
        }
    }
    let key = &mut keys[index];
    key.activate(now);
    key.kid().clone()
}

/// `now + retain`, with retentions beyond a thousand years (such as
/// `Duration::MAX`, "keep it") capped there instead of overflowing.
pub(crate) fn retain_until(now: SystemTime, retain: Duration) -> SystemTime {
    const MAX_RETAIN: Duration = Duration::from_secs(1000 * 365 * 24 * 60 * 60);
    now + retain.min(MAX_RETAIN)
}

/// Whether `key` is retiring and its time to leave the JWKS has come.
pub(crate) fn is_expired(key: &PublishedKey, now: SystemTime) -> bool {
    key.state() == KeyState::Retiring && key.retires_at().is_some_and(|at| at <= now)
}

/// Refuses a kid that is already published.
///
/// # Errors
///
/// [`RegistryError::DuplicateKid`].
pub(crate) fn ensure_unique(keys: &[PublishedKey], kid: &Kid) -> Result<(), RegistryError> {
    if keys.iter().any(|k| k.kid() == kid) {
        Err(RegistryError::DuplicateKid(kid.clone()))
    } else {
        Ok(())
    }
}

/// The published key with this kid, to change it.
///
/// # Errors
///
/// [`RegistryError::UnknownKid`].
pub(crate) fn find_mut<'a>(
    keys: &'a mut [PublishedKey],
    kid: &Kid,
) -> Result<&'a mut PublishedKey, RegistryError> {
    keys.iter_mut()
        .find(|k| k.kid() == kid)
        .ok_or_else(|| RegistryError::UnknownKid(kid.clone()))
}

/// What every published list of keys holds: unique kids, at most one
/// active key.
///
/// # Errors
///
/// [`RegistryError::DuplicateKid`] or [`RegistryError::SeveralActiveKeys`].
pub(crate) fn check_invariants(keys: &[PublishedKey]) -> Result<(), RegistryError> {
    for (i, key) in keys.iter().enumerate() {
        ensure_unique(&keys[..i], key.kid())?;
    }
    if keys
        .iter()
        .filter(|k| k.state() == KeyState::Active)
        .count()
        > 1
    {
        return Err(RegistryError::SeveralActiveKeys);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::keys::{Algorithm, SigningKey};

    fn key(state: KeyState, created: u64) -> PublishedKey {
        PublishedKey::from_signing_key(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            state,
            UNIX_EPOCH + Duration::from_secs(created),
        )
    }

    #[test]
    fn the_oldest_next_key_is_picked_and_ties_go_to_the_lower_kid() {
        let keys = vec![
            key(KeyState::Active, 0),
            key(KeyState::Next, 20),
            key(KeyState::Next, 10),
            key(KeyState::Next, 10),
            key(KeyState::Retiring, 5),
        ];
        let lower = if keys[2].kid() < keys[3].kid() { 2 } else { 3 };
        assert_eq!(oldest_next(&keys), Some(lower));
        assert_eq!(oldest_next(&keys[..2]), Some(1));
        assert_eq!(oldest_next(&keys[..1]), None);
    }

    #[test]
    fn promote_retires_the_active_key_and_activates_the_chosen_one() {
        let mut keys = vec![key(KeyState::Active, 0), key(KeyState::Next, 10)];
        keys[1].schedule_activation(UNIX_EPOCH + Duration::from_secs(99));
        let now = UNIX_EPOCH + Duration::from_secs(50);
        let kid = promote(&mut keys, 1, now, Duration::from_secs(30));
        assert_eq!(&kid, keys[1].kid());
        assert_eq!(keys[0].state(), KeyState::Retiring);
        assert_eq!(keys[0].retires_at(), Some(now + Duration::from_secs(30)));
        assert_eq!(keys[1].state(), KeyState::Active);
        assert_eq!(keys[1].activated_at(), Some(now));
        assert_eq!(keys[1].activates_at(), None, "no longer scheduled");
        assert!(!is_expired(&keys[0], now + Duration::from_secs(29)));
        assert!(is_expired(&keys[0], now + Duration::from_secs(30)));
        check_invariants(&keys).unwrap();
    }
}
