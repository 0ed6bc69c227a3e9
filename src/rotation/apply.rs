//! Acting on the plan, and the blocking work behind the [`KeyRotator`]'s
//! steps: one step of the task, a rotation asked for by hand, an emergency
//! rotation. Every change is one registry transaction, planned again on the
//! keys as stored.
//!
//! [`KeyRotator`]: crate::rotation::KeyRotator

use std::time::SystemTime;

use super::events::Event;
use super::planner::{Action, Step, algorithm_for, oldest_next, plan};
use super::policy::RotationPolicy;
use crate::keys::{Algorithm, KeyState, Kid, SigningKey};
use crate::registry::{
    KeyRegistry, PublishedKey, RegistryError, ensure_unique, is_expired, promote,
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

/// A result of applying the plan inside a registry change.
enum Outcome {
    Done(Vec<Event>),
    /// The plan needs a fresh key of this algorithm; generate it outside
    /// the registry's lock and try again.
    NeedKey(Algorithm),
    Nothing,
}

/// Takes the fresh key if it has the right algorithm.
fn take_key(fresh: &mut Option<SigningKey>, algorithm: Algorithm) -> Option<SigningKey> {
    fresh.take_if(|key| key.algorithm() == algorithm)
}

/// Plans again on `keys` (as stored, inside the registry's change) and
/// applies the step.
fn apply_plan(
    keys: &mut Vec<PublishedKey>,
    policy: &RotationPolicy,
    now: SystemTime,
    fresh: &mut Option<SigningKey>,
) -> Result<Outcome, RegistryError> {
    let Step::Act(action) = plan(keys, policy, now) else {
        return Ok(Outcome::Nothing);
    };
    let retire_at = now + policy.retain();
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
                return Ok(Outcome::NeedKey(algorithm));
            };
            let kid = key.kid().clone();
            ensure_unique(keys, &kid)?;
            keys.push(
                PublishedKey::from_signing_key(key, KeyState::Active, now)
                    .with_activated_at(Some(now)),
            );
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
                return Ok(Outcome::NeedKey(algorithm));
            };
            let kid = key.kid().clone();
            ensure_unique(keys, &kid)?;
            keys.push(
                PublishedKey::from_signing_key(key, KeyState::Next, now)
                    .with_activates_at(Some(activates_at)),
            );
            events.push(Event::Published {
                kid,
                activates_at: Some(activates_at),
            });
        }
    }
    Ok(Outcome::Done(events))
}

/// One step of the task, on a blocking thread.
pub(super) fn step_blocking(
    registry: &KeyRegistry,
    policy: &RotationPolicy,
) -> Result<Vec<Event>, RegistryError> {
    let mut fresh = None;
    // Twice is enough: the first attempt may ask for a key; a third only
    // if another writer changed the algorithm in between.
    for _ in 0..3 {
        let now = registry.clock().now();
        match registry.transact(|keys| apply_plan(keys, policy, now, &mut fresh))? {
            Outcome::Done(events) => return Ok(events),
            Outcome::Nothing => return Ok(Vec::new()),
            Outcome::NeedKey(algorithm) => fresh = Some(SigningKey::generate(algorithm)?),
        }
    }
    Ok(Vec::new())
}

/// [`KeyRotator::rotate_now`](crate::rotation::KeyRotator::rotate_now), on a
/// blocking thread.
pub(super) fn rotate_now_blocking(
    registry: &KeyRegistry,
    policy: &RotationPolicy,
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
    let mut fresh: Option<SigningKey> = None;
    for _ in 0..3 {
        let now = registry.clock().now();
        let outcome = registry.transact(|keys| {
            if let Some(kid) = oldest_next(keys).map(|k| k.kid().clone()) {
                let next = keys
                    .iter_mut()
                    .find(|k| k.kid() == &kid)
                    .expect("just found");
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
                let event = Event::Scheduled {
                    kid: kid.clone(),
                    activates_at: at,
                };
                return Ok(Ok((
                    ScheduledRotation {
                        kid,
                        activates_at: at,
                    },
                    vec![event],
                )));
            }
            let algorithm = algorithm_for(keys, policy);
            let Some(key) = take_key(&mut fresh, algorithm) else {
                return Ok(Err(algorithm));
            };
            let kid = key.kid().clone();
            ensure_unique(keys, &kid)?;
            let at = now + policy.prepublish();
            keys.push(
                PublishedKey::from_signing_key(key, KeyState::Next, now)
                    .with_activates_at(Some(at)),
            );
            Ok(Ok((
                ScheduledRotation {
                    kid: kid.clone(),
                    activates_at: at,
                },
                vec![Event::Published {
                    kid,
                    activates_at: Some(at),
                }],
            )))
        })?;
        match outcome {
            Ok(done) => return Ok(done),
            Err(algorithm) => fresh = Some(SigningKey::generate(algorithm)?),
        }
    }
    Err(RegistryError::Other(
        "the key algorithm kept changing while rotating".into(),
    ))
}

/// [`KeyRotator::emergency_rotate`](crate::rotation::KeyRotator::emergency_rotate),
/// on a blocking thread.
pub(super) fn emergency_blocking(
    registry: &KeyRegistry,
    policy: &RotationPolicy,
    old: OldKeys,
) -> Result<(Kid, Vec<Event>), RegistryError> {
    let key = SigningKey::generate(algorithm_for(registry.current().keys(), policy))?;
    let kid = key.kid().clone();
    let now = registry.clock().now();
    let retire_at = now + policy.retain();
    let events = registry.transact(|keys| {
        ensure_unique(keys, &kid)?;
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
        keys.push(
            PublishedKey::from_signing_key(key, KeyState::Active, now).with_activated_at(Some(now)),
        );
        events.push(Event::Published {
            kid: kid.clone(),
            activates_at: None,
        });
        events.push(Event::Activated { kid: kid.clone() });
        Ok(events)
    })?;
    Ok((kid, events))
}
