//! Acting on the plan, and the blocking work behind the [`KeyRotator`]'s
//! steps: one step of the task, a rotation asked for by hand, an emergency
//! rotation. Every change is one registry transaction, planned again on the
//! keys as stored; every fresh key comes from [`with_fresh_key`].
//!
//! [`KeyRotator`]: crate::rotation::KeyRotator

use std::sync::Arc;
use std::time::SystemTime;

use super::events::Event;
use super::planner::{Action, Step, algorithm_for, plan};
use super::policy::ResolvedPolicy;
use crate::keys::{Algorithm, KeyState, Kid, SigningBackend};
use crate::registry::{
    self, KeyRegistry, PublishedKey, RegistryError, ensure_unique, is_expired, promote,
    retain_until,
};

/// What [`KeyRotator::emergency_rotate`] does with the keys it replaces.
///
/// [`KeyRotator::emergency_rotate`]: crate::rotation::KeyRotator::emergency_rotate
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OldKeys {
    /// The old active key retires normally (published for `retain`): its
    /// tokens keep verifying until they expire.
    Retain,
    /// Every other key (old active, retiring, next) leaves the JWKS and the
    /// store at once: their tokens stop verifying as soon as verifiers
    /// refresh the JWKS.
    Revoke,
}

/// The next key [`KeyRotator::rotate_now`] scheduled.
///
/// [`KeyRotator::rotate_now`]: crate::rotation::KeyRotator::rotate_now
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRotation {
    kid: Kid,
    activates_at: SystemTime,
}

impl ScheduledRotation {
    /// The kid of the key that will become active.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// When it becomes active.
    pub fn activates_at(&self) -> SystemTime {
        self.activates_at
    }
}

/// How many times [`with_fresh_key`] runs its change at most: the first run
/// may ask for a key, the second uses it, a third is needed only if another
/// writer changed the keys (and the algorithm they call for) in between.
const KEY_ATTEMPTS: usize = 3;

/// What one run of a change came to.
enum Attempt<T> {
    /// The change is made (or there was nothing to do).
    Done(T),
    /// The change needs a fresh key of this algorithm.
    NeedKey(Algorithm),
}

/// Runs `change` as one registry transaction, on the keys as stored and the
/// registry's time. When it asks for a fresh key, has the registry's
/// [`KeyFactory`](crate::keys::KeyFactory) make one outside the registry's
/// lock (slow for RSA, and for a key made inside an HSM: the store stays
/// unlocked meanwhile) and runs the change again, which takes the key with
/// [`take_key`] if it still calls for that algorithm. At most
/// [`KEY_ATTEMPTS`] runs, so at most two keys are generated. A key made in
/// a device that ends up unused (another writer got there first, or the
/// change failed) is destroyed again.
///
/// # Errors
///
/// The registry's errors; [`RegistryError::Key`] if a key cannot be
/// generated; and, the one way of giving up, [`RegistryError::Other`] when
/// the runs are used up because other writers kept changing the algorithm
/// the change needs. Nothing was published then; the rotator's task logs the
/// error and tries again after the policy's `retry_after`.
fn with_fresh_key<T>(
    registry: &KeyRegistry,
    mut change: impl FnMut(
        &mut Vec<PublishedKey>,
        SystemTime,
        &mut Option<Arc<dyn SigningBackend>>,
    ) -> Result<Attempt<T>, RegistryError>,
) -> Result<T, RegistryError> {
    let mut made = Vec::new();
    let result = attempt_with_fresh_keys(registry, &mut change, &mut made);
    registry.discard_unpublished(&made);
    result
}

fn attempt_with_fresh_keys<T>(
    registry: &KeyRegistry,
    change: &mut impl FnMut(
        &mut Vec<PublishedKey>,
        SystemTime,
        &mut Option<Arc<dyn SigningBackend>>,
    ) -> Result<Attempt<T>, RegistryError>,
    made: &mut Vec<Arc<dyn SigningBackend>>,
) -> Result<T, RegistryError> {
    let mut fresh = None;
    for _ in 0..KEY_ATTEMPTS {
        let now = registry.clock().now();
        match registry.transact(|keys| change(keys, now, &mut fresh))? {
            Attempt::Done(done) => return Ok(done),
            Attempt::NeedKey(algorithm) => {
                let key = registry.key_factory().generate(algorithm)?;
                made.push(Arc::clone(&key));
                fresh = Some(key);
            }
        }
    }
    Err(RegistryError::Other(
        format!(
            "gave up generating a key after {KEY_ATTEMPTS} attempts: other writers kept changing the keys"
        )
        .into(),
    ))
}

/// Takes the fresh key if it has the right algorithm.
fn take_key(
    fresh: &mut Option<Arc<dyn SigningBackend>>,
    algorithm: Algorithm,
) -> Option<Arc<dyn SigningBackend>> {
    fresh.take_if(|key| key.public_jwk().algorithm() == algorithm)
}

/// Plans again on `keys` (as stored, inside the registry's change) and
/// applies the step.
fn apply_plan(
    keys: &mut Vec<PublishedKey>,
    policy: &ResolvedPolicy,
    now: SystemTime,
    fresh: &mut Option<Arc<dyn SigningBackend>>,
) -> Result<Attempt<Vec<Event>>, RegistryError> {
    let Step::Act(action) = plan(keys, policy, now) else {
        return Ok(Attempt::Done(Vec::new()));
    };
    let retire_at = retain_until(now, policy.retain());
    let mut events = Vec::new();
    match action {
        Action::ActivateNow { next: Some(kid) } | Action::Activate(kid) => {
            let old = keys
                .iter()
                .find(|k| k.state() == KeyState::Active)
                .map(|k| k.kid().clone());
            let index = keys
                .iter()
                .position(|k| k.kid() == &kid)
                .expect("planned from these keys");
            promote(keys, index, now, policy.retain());
            events.push(Event::Activated { kid });
            if let Some(old) = old {
                events.push(Event::Retired {
                    kid: old,
                    until: retire_at,
                });
            }
        }
        Action::ActivateNow { next: None } => {
            let algorithm = algorithm_for(keys, policy);
            let Some(key) = take_key(fresh, algorithm) else {
                return Ok(Attempt::NeedKey(algorithm));
            };
            let kid = key.public_jwk().kid().clone();
            ensure_unique(keys, &kid)?;
            keys.push(PublishedKey::new(key, KeyState::Active, now).with_activated_at(Some(now)));
            events.push(Event::Published {
                kid: kid.clone(),
                activates_at: None,
            });
            events.push(Event::Activated { kid });
        }
        Action::Prune => {
            for key in keys.iter().filter(|k| is_expired(k, now)) {
                events.push(Event::Removed {
                    kid: key.kid().clone(),
                });
            }
            keys.retain(|k| !is_expired(k, now));
        }
        Action::SetRetirement(kid) => {
            if let Some(key) = keys.iter_mut().find(|k| k.kid() == &kid) {
                key.retire_until(retire_at);
            }
            events.push(Event::Retired {
                kid,
                until: retire_at,
            });
        }
        Action::PublishNext { activates_at } => {
            let algorithm = algorithm_for(keys, policy);
            let Some(key) = take_key(fresh, algorithm) else {
                return Ok(Attempt::NeedKey(algorithm));
            };
            let kid = key.public_jwk().kid().clone();
            ensure_unique(keys, &kid)?;
            keys.push(
                PublishedKey::new(key, KeyState::Next, now).with_activates_at(Some(activates_at)),
            );
            events.push(Event::Published {
                kid,
                activates_at: Some(activates_at),
            });
        }
    }
    Ok(Attempt::Done(events))
}

/// One step of the task, on a blocking thread.
pub(super) fn step_blocking(
    registry: &KeyRegistry,
    policy: &ResolvedPolicy,
) -> Result<Vec<Event>, RegistryError> {
    with_fresh_key(registry, |keys, now, fresh| {
        apply_plan(keys, policy, now, fresh)
    })
}

/// [`KeyRotator::rotate_now`](crate::rotation::KeyRotator::rotate_now), on a
/// blocking thread.
pub(super) fn rotate_now_blocking(
    registry: &KeyRegistry,
    policy: &ResolvedPolicy,
) -> Result<(ScheduledRotation, Vec<Event>), RegistryError> {
    if registry.current().active().is_none() {
        // Nothing signs: activate at once, as the task would.
        let events = step_blocking(registry, policy)?;
        let active = registry
            .current()
            .active()
            .map(|k| k.kid().clone())
            .ok_or(RegistryError::NoActiveKey)?;
        let now = registry.clock().now();
        return Ok((
            ScheduledRotation {
                kid: active,
                activates_at: now,
            },
            events,
        ));
    }
    with_fresh_key(registry, |keys, now, fresh| {
        if let Some(index) = registry::oldest_next(keys) {
            // Bring the oldest next key forward, never before it has been
            // published for `prepublish`.
            let next = &mut keys[index];
            let earliest = next
                .created_at()
                .checked_add(policy.prepublish())
                .unwrap_or(now)
                .max(now);
            let at = match next.activates_at() {
                Some(at) if at <= earliest => at,
                _ => earliest,
            };
            next.schedule_activation(at);
            let kid = next.kid().clone();
            let event = Event::Scheduled {
                kid: kid.clone(),
                activates_at: at,
            };
            return Ok(Attempt::Done((
                ScheduledRotation {
                    kid,
                    activates_at: at,
                },
                vec![event],
            )));
        }
        let algorithm = algorithm_for(keys, policy);
        let Some(key) = take_key(fresh, algorithm) else {
            return Ok(Attempt::NeedKey(algorithm));
        };
        let kid = key.public_jwk().kid().clone();
        ensure_unique(keys, &kid)?;
        let at = now + policy.prepublish();
        keys.push(PublishedKey::new(key, KeyState::Next, now).with_activates_at(Some(at)));
        Ok(Attempt::Done((
            ScheduledRotation {
                kid: kid.clone(),
                activates_at: at,
            },
            vec![Event::Published {
                kid,
                activates_at: Some(at),
            }],
        )))
    })
}

/// [`KeyRotator::emergency_rotate`](crate::rotation::KeyRotator::emergency_rotate),
/// on a blocking thread.
pub(super) fn emergency_blocking(
    registry: &KeyRegistry,
    policy: &ResolvedPolicy,
    old: OldKeys,
) -> Result<(Kid, Vec<Event>), RegistryError> {
    with_fresh_key(registry, |keys, now, fresh| {
        let algorithm = algorithm_for(keys, policy);
        let Some(key) = take_key(fresh, algorithm) else {
            return Ok(Attempt::NeedKey(algorithm));
        };
        let kid = key.public_jwk().kid().clone();
        ensure_unique(keys, &kid)?;
        let retire_at = retain_until(now, policy.retain());
        let mut events = Vec::new();
        keys.retain(|k| {
            let remove = k.state() == KeyState::Next || old == OldKeys::Revoke;
            if remove {
                events.push(Event::Removed {
                    kid: k.kid().clone(),
                });
            }
            !remove
        });
        for key in keys.iter_mut().filter(|k| k.state() == KeyState::Active) {
            key.retire_until(retire_at);
            events.push(Event::Retired {
                kid: key.kid().clone(),
                until: retire_at,
            });
        }
        keys.push(PublishedKey::new(key, KeyState::Active, now).with_activated_at(Some(now)));
        events.push(Event::Published {
            kid: kid.clone(),
            activates_at: None,
        });
        events.push(Event::Activated { kid: kid.clone() });
        Ok(Attempt::Done((kid, events)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_that_keeps_asking_for_another_key_gives_up_with_an_error() {
        let registry = KeyRegistry::empty();
        let mut runs = 0;
        let mut handed = Vec::new();
        let result: Result<(), _> = with_fresh_key(&registry, |_, _, fresh| {
            runs += 1;
            handed.push(fresh.as_ref().map(|key| key.public_jwk().algorithm()));
            // As if another writer changed the algorithm each time.
            Ok(Attempt::NeedKey(if runs % 2 == 1 {
                Algorithm::EdDSA
            } else {
                Algorithm::ES256
            }))
        });
        let err = result.unwrap_err();
        assert!(matches!(err, RegistryError::Other(_)), "{err}");
        assert!(err.to_string().contains("gave up"), "{err}");
        assert_eq!(runs, KEY_ATTEMPTS);
        assert_eq!(
            handed,
            vec![None, Some(Algorithm::EdDSA), Some(Algorithm::ES256)],
            "each run after the first is handed the key the previous one asked for"
        );
    }

    #[test]
    fn a_change_takes_the_key_it_asked_for_on_its_second_run() {
        let registry = KeyRegistry::empty();
        let mut runs = 0;
        let kid = with_fresh_key(&registry, |keys, now, fresh| {
            runs += 1;
            let Some(key) = take_key(fresh, Algorithm::EdDSA) else {
                return Ok(Attempt::NeedKey(Algorithm::EdDSA));
            };
            let kid = key.public_jwk().kid().clone();
            keys.push(PublishedKey::new(key, KeyState::Active, now));
            Ok(Attempt::Done(kid))
        })
        .unwrap();
        assert_eq!(runs, 2);
        assert_eq!(registry.current().active().unwrap().kid(), &kid);
    }
}
