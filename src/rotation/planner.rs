//! The pure planner: what the rotator should do, decided from the keys, the
//! policy and the time alone. [`apply`](super::apply) acts on its answer.

use std::time::SystemTime;

use super::policy::ResolvedPolicy;
use crate::keys::{Algorithm, KeyState, Kid};
use crate::registry::{self, PublishedKey, is_expired};

/// What the rotator has to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// No key is active: activate the oldest next key, or a fresh key.
    ActivateNow { next: Option<Kid> },
    /// Remove the retiring keys whose time has passed.
    Prune,
    /// A retiring key with no end (loaded that way): retire it from now.
    SetRetirement(Kid),
    /// The next key is due.
    Activate(Kid),
    /// The next key is due to be published.
    PublishNext { activates_at: SystemTime },
}

/// The planner's answer: act now, or wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Do this now.
    Act(Action),
    /// Nothing to do before this time (`None`: nothing scheduled).
    Wait(Option<SystemTime>),
}

/// The next key to activate (the registry's choice, shared by every
/// writer).
pub(super) fn oldest_next(keys: &[PublishedKey]) -> Option<&PublishedKey> {
    registry::oldest_next(keys).map(|index| &keys[index])
}

/// When `active` is due to be replaced: after its period, and by its
/// certificate's `notAfter` at the latest (a certificate-backed key never
/// signs past it).
fn due_time(active: &PublishedKey, policy: &ResolvedPolicy) -> Option<SystemTime> {
    let period = active
        .activated_at()
        .unwrap_or(active.created_at())
        .checked_add(policy.rotate_every());
    let expiry = active
        .public_jwk()
        .certificate_chain()
        .map(|chain| chain.not_after());
    match (period, expiry) {
        (Some(period), Some(expiry)) => Some(period.min(expiry)),
        (period, expiry) => period.or(expiry),
    }
}

/// The keys whose certificate expires within the policy's
/// [`certificate_warning`](ResolvedPolicy::certificate_warning) of `now`
/// (or has expired), with their `notAfter`; and the earliest time a key
/// not yet in that window enters it.
pub(super) fn expiring_certificates(
    keys: &[PublishedKey],
    policy: &ResolvedPolicy,
    now: SystemTime,
) -> (Vec<(Kid, SystemTime)>, Option<SystemTime>) {
    let mut expiring = Vec::new();
    let mut next_warning: Option<SystemTime> = None;
    for key in keys.iter().filter(|k| k.state() != KeyState::Retiring) {
        let Some(chain) = key.public_jwk().certificate_chain() else {
            continue;
        };
        let not_after = chain.not_after();
        let warn_at = not_after
            .checked_sub(policy.certificate_warning())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if now >= warn_at {
            expiring.push((key.kid().clone(), not_after));
        } else {
            next_warning = Some(next_warning.map_or(warn_at, |at| at.min(warn_at)));
        }
    }
    (expiring, next_warning)
}

/// When `next` may become active: when scheduled (or when the active key
/// is due), and never before it has been published for `prepublish`.
fn activation_time(
    next: &PublishedKey,
    active: &PublishedKey,
    policy: &ResolvedPolicy,
) -> Option<SystemTime> {
    let scheduled = match next.activates_at() {
        Some(at) => at,
        None => due_time(active, policy)?,
    };
    let published_long_enough = next.created_at().checked_add(policy.prepublish())?;
    Some(scheduled.max(published_long_enough))
}

/// What the rotator should do now, or until when it can sleep.
pub(super) fn plan(keys: &[PublishedKey], policy: &ResolvedPolicy, now: SystemTime) -> Step {
    let Some(active) = keys.iter().find(|k| k.state() == KeyState::Active) else {
        return Step::Act(Action::ActivateNow {
            next: oldest_next(keys).map(|k| k.kid().clone()),
        });
    };
    if keys.iter().any(|k| is_expired(k, now)) {
        return Step::Act(Action::Prune);
    }
    if let Some(open) = keys
        .iter()
        .find(|k| k.state() == KeyState::Retiring && k.retires_at().is_none())
    {
        return Step::Act(Action::SetRetirement(open.kid().clone()));
    }
    let mut wake = keys.iter().filter_map(PublishedKey::retires_at).min();
    let mut wake_at = |at: SystemTime| wake = Some(wake.map_or(at, |w| w.min(at)));
    match oldest_next(keys) {
        Some(next) => {
            // `None`: so far away that it cannot be represented.
            if let Some(at) = activation_time(next, active, policy) {
                if now >= at {
                    return Step::Act(Action::Activate(next.kid().clone()));
                }
                wake_at(at);
            }
        }
        None => {
            if let Some(due) = due_time(active, policy) {
                let publish_at = due.checked_sub(policy.prepublish()).unwrap_or(due);
                if now >= publish_at {
                    let earliest = now.checked_add(policy.prepublish()).unwrap_or(now);
                    return Step::Act(Action::PublishNext {
                        activates_at: due.max(earliest),
                    });
                }
                wake_at(publish_at);
            }
        }
    }
    Step::Wait(wake)
}

/// The algorithm for a new key: the policy's, else the active key's, else
/// the newest key's, else the default.
pub(super) fn algorithm_for(keys: &[PublishedKey], policy: &ResolvedPolicy) -> Algorithm {
    policy
        .algorithm()
        .or_else(|| {
            keys.iter()
                .find(|k| k.state() == KeyState::Active)
                .map(PublishedKey::algorithm)
        })
        .or_else(|| {
            keys.iter()
                .max_by_key(|k| k.created_at())
                .map(PublishedKey::algorithm)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::keys::SigningKey;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn at(n: u64) -> SystemTime {
        UNIX_EPOCH + secs(n)
    }

    fn key(state: KeyState, created: u64) -> PublishedKey {
        PublishedKey::from_signing_key(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            state,
            at(created),
        )
    }

    fn policy() -> ResolvedPolicy {
        // Period 1000 s, prepublish 300 s (JWKS max-age), retain 60 + 60 s.
        crate::rotation::RotationPolicy::builder(secs(1000))
            .build()
            .unwrap()
            .resolve_with(secs(60), secs(300))
            .unwrap()
    }

    #[test]
    fn plan_walks_through_the_lifecycle() {
        let p = policy();
        let mut active = key(KeyState::Active, 0).with_activated_at(Some(at(0)));
        // Until 700 s (due 1000 - prepublish 300), nothing to do.
        assert_eq!(
            plan(std::slice::from_ref(&active), &p, at(10)),
            Step::Wait(Some(at(700)))
        );
        assert_eq!(
            plan(std::slice::from_ref(&active), &p, at(699)),
            Step::Wait(Some(at(700)))
        );
        assert_eq!(
            plan(std::slice::from_ref(&active), &p, at(700)),
            Step::Act(Action::PublishNext {
                activates_at: at(1000)
            })
        );
        // Late (the process was down): still a full prepublish.
        assert_eq!(
            plan(std::slice::from_ref(&active), &p, at(5000)),
            Step::Act(Action::PublishNext {
                activates_at: at(5300)
            })
        );
        let next = key(KeyState::Next, 700).with_activates_at(Some(at(1000)));
        let keys = vec![active.clone(), next.clone()];
        assert_eq!(plan(&keys, &p, at(800)), Step::Wait(Some(at(1000))));
        assert_eq!(
            plan(&keys, &p, at(1000)),
            Step::Act(Action::Activate(next.kid().clone()))
        );
        // A next key added by hand without a date waits for prepublish.
        let manual = key(KeyState::Next, 950);
        let keys = vec![active.clone(), manual.clone()];
        assert_eq!(plan(&keys, &p, at(1000)), Step::Wait(Some(at(1250))));
        // Retiring keys leave at their time.
        active.retire_until(at(1120));
        let mut new = next.clone();
        new.activate(at(1000));
        let keys = vec![active.clone(), new.clone()];
        assert_eq!(plan(&keys, &p, at(1001)), Step::Wait(Some(at(1120))));
        assert_eq!(plan(&keys, &p, at(1120)), Step::Act(Action::Prune));
        // No active key: act at once.
        let keys = vec![active.clone(), manual.clone()];
        assert_eq!(
            plan(&keys, &p, at(1001)),
            Step::Act(Action::ActivateNow {
                next: Some(manual.kid().clone())
            })
        );
        assert_eq!(
            plan(&[], &p, at(0)),
            Step::Act(Action::ActivateNow { next: None })
        );
    }
}
