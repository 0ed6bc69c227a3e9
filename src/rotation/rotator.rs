//! [`KeyRotator`]: the background task that runs the plan, and its handle.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::apply::{
    OldKeys, ScheduledRotation, emergency_blocking, rotate_now_blocking, step_blocking,
};
use super::events::emit;
use super::planner::{Step, expiring_certificates, plan};
use super::policy::{ResolvedPolicy, RotationPolicy};
use crate::error::ConfigError;
use crate::keys::{KeyError, Kid};
use crate::registry::{KeyRegistry, KeySnapshot, RegistryError};
use crate::store::StoreError;

/// The longest the task sleeps before looking again: bounds how late a
/// step can be after the wall clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The pause after a step that changed nothing (a writer elsewhere got
/// there first and the snapshot already shows it).
const NO_PROGRESS_PAUSE: Duration = Duration::from_secs(1);

/// How often a rotator whose process does not lead the key store looks
/// again (sooner when the registry changes): bounds how long a new leader
/// waits before its first step.
const NOT_LEADER_PAUSE: Duration = Duration::from_secs(1);

/// Why a rotation asked for by hand failed. Nothing was published.
#[derive(Debug)]
#[non_exhaustive]
pub enum RotationError {
    /// The registry refused the change or its store failed.
    Registry(RegistryError),
    /// The blocking task that did the work panicked or was cancelled.
    Task(String),
}

impl fmt::Display for RotationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotationError::Registry(err) => write!(f, "key rotation failed: {err}"),
            RotationError::Task(err) => write!(f, "key rotation task failed: {err}"),
        }
    }
}

impl std::error::Error for RotationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RotationError::Registry(err) => Some(err),
            RotationError::Task(_) => None,
        }
    }
}

impl From<RegistryError> for RotationError {
    fn from(err: RegistryError) -> Self {
        RotationError::Registry(err)
    }
}

impl From<KeyError> for RotationError {
    fn from(err: KeyError) -> Self {
        RotationError::Registry(RegistryError::Key(err))
    }
}

/// The background task that rotates a registry's keys; stops when dropped.
/// See the [module docs](crate::rotation).
#[must_use = "the rotator stops when dropped: keep it for as long as keys should rotate"]
pub struct KeyRotator {
    registry: KeyRegistry,
    policy: Arc<ResolvedPolicy>,
    task: JoinHandle<()>,
}

impl KeyRotator {
    /// Starts rotating `registry`'s keys by `policy`, resolved against the
    /// registry's token lifetime and JWKS max-age
    /// ([`RotationPolicy::resolve`]).
    ///
    /// At start the task catches up: it removes expired keys, activates a
    /// key if none is active (a due next key, or a fresh one) and publishes
    /// a next key if one is due.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the policy cannot work on this registry (the
    /// default prepublish time longer than the period, `retain` shorter
    /// than the registry's token lifetime plus the verifiers' leeway plus
    /// the followers' poll interval). It is refused before anything is
    /// spawned.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn(registry: KeyRegistry, policy: RotationPolicy) -> Result<Self, ConfigError> {
        let policy = Arc::new(policy.resolve(&registry)?);
        let task = tokio::spawn(run(registry.clone(), Arc::clone(&policy)));
        Ok(KeyRotator {
            registry,
            policy,
            task,
        })
    }

    /// The registry.
    pub fn registry(&self) -> &KeyRegistry {
        &self.registry
    }

    /// The policy, resolved against the registry: the durations the task
    /// follows.
    pub fn policy(&self) -> &ResolvedPolicy {
        &self.policy
    }

    /// How long each next key is published before it signs: the policy's
    /// `prepublish`, or the registry's JWKS max-age plus the followers'
    /// poll interval.
    pub fn prepublish(&self) -> Duration {
        self.policy.prepublish()
    }

    /// How long a key stays published after it stops signing: the policy's
    /// `retain`, or the registry's token lifetime plus the verifiers'
    /// leeway plus the followers' poll interval.
    pub fn retain(&self) -> Duration {
        self.policy.retain()
    }

    /// Starts a rotation now, by the policy's rules: a next key is published
    /// now (or the oldest next key is brought forward) and becomes active
    /// once it has been published for `prepublish`; the current key then
    /// retires for `retain`. When no key is active, one is activated at
    /// once. Activation is done by the background task.
    ///
    /// # Errors
    ///
    /// [`RotationError`] if the key cannot be generated or stored; nothing
    /// was published then.
    pub async fn rotate_now(&self) -> Result<ScheduledRotation, RotationError> {
        let (scheduled, events) = self.blocking(rotate_now_blocking).await?;
        emit(&events);
        Ok(scheduled)
    }

    /// Replaces the active key at once, for a compromised key: a fresh key
    /// signs immediately, without the prepublish wait, and next keys (which
    /// never signed) are withdrawn. See the [module docs](crate::rotation#rotating-by-hand)
    /// for the consequences, and [`OldKeys`] for what happens to the old
    /// keys. Returns the new kid.
    ///
    /// # Errors
    ///
    /// [`RotationError`] if the key cannot be generated or stored; nothing
    /// was published then.
    pub async fn emergency_rotate(&self, old: OldKeys) -> Result<Kid, RotationError> {
        let (kid, events) = self
            .blocking(move |registry, policy| emergency_blocking(registry, policy, old))
            .await?;
        tracing::warn!(kid = %kid, revoke = old == OldKeys::Revoke, "emergency key rotation");
        emit(&events);
        Ok(kid)
    }

    /// Stops the task and waits for it to end. A step already running on a
    /// blocking thread completes (each step is atomic).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&KeyRegistry, &ResolvedPolicy) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RotationError> {
        let registry = self.registry.clone();
        let policy = Arc::clone(&self.policy);
        tokio::task::spawn_blocking(move || work(&registry, &policy))
            .await
            .map_err(|err| RotationError::Task(err.to_string()))?
            .map_err(RotationError::Registry)
    }
}

impl Drop for KeyRotator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for KeyRotator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRotator")
            .field("policy", &self.policy)
            .field("running", &!self.task.is_finished())
            .finish_non_exhaustive()
    }
}

async fn run(registry: KeyRegistry, policy: Arc<ResolvedPolicy>) {
    let mut changes = registry.subscribe();
    // The keys whose expiring certificate was warned about.
    let mut warned: std::collections::HashSet<Kid> = std::collections::HashSet::new();
    loop {
        changes.borrow_and_update();
        let snapshot = registry.current();
        let now = registry.clock().now();
        let (expiring, next_warning) = expiring_certificates(snapshot.keys(), &policy, now);
        for (kid, not_after) in expiring {
            if !warned.contains(&kid) {
                tracing::warn!(
                    kid = %kid,
                    not_after = crate::clock::unix_seconds(not_after),
                    expires_in = ?not_after.duration_since(now).unwrap_or(Duration::ZERO),
                    "the key's certificate expires soon: renew it (the key stops signing at its notAfter; the rotator replaces it by then)"
                );
                warned.insert(kid);
            }
        }
        warned.retain(|kid| snapshot.get(kid.as_str()).is_some());
        match plan(snapshot.keys(), &policy, now) {
            Step::Act(_) => {
                // Only the leader of a shared store rotates; the others
                // leave the step to it, without generating a key.
                match registry.store().map_or(Ok(true), |store| store.is_leader()) {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!(
                            "another process leads the key store: leaving the rotation to it"
                        );
                        wait(&mut changes, NOT_LEADER_PAUSE).await;
                        continue;
                    }
                    Err(err) => {
                        store_unavailable(&err, &policy);
                        tokio::time::sleep(policy.retry_after()).await;
                        continue;
                    }
                }
                let stepping = registry.clone();
                let step_policy = Arc::clone(&policy);
                let result =
                    tokio::task::spawn_blocking(move || step_blocking(&stepping, &step_policy))
                        .await;
                match result {
                    Ok(Ok(events)) => {
                        let progressed = !events.is_empty()
                            || registry.current().version() != snapshot.version();
                        emit(&events);
                        if !progressed {
                            wait(&mut changes, NO_PROGRESS_PAUSE).await;
                        }
                    }
                    Ok(Err(RegistryError::Store(err))) if err.is_not_leader() => {
                        tracing::info!(
                            error = %err,
                            "lost the lead of the key store: leaving the rotation to the new leader"
                        );
                        wait(&mut changes, NOT_LEADER_PAUSE).await;
                    }
                    Ok(Err(RegistryError::Store(err))) if err.is_unavailable() => {
                        store_unavailable(&err, &policy);
                        tokio::time::sleep(policy.retry_after()).await;
                    }
                    Ok(Err(err)) => {
                        tracing::error!(
                            error = %err,
                            retry_after = ?policy.retry_after(),
                            "key rotation step failed; will retry"
                        );
                        tokio::time::sleep(policy.retry_after()).await;
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "key rotation step panicked; will retry");
                        tokio::time::sleep(policy.retry_after()).await;
                    }
                }
            }
            Step::Wait(until) => {
                let until = match (until, next_warning) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let delay = until
                    .map_or(MAX_SLEEP, |until| {
                        until.duration_since(now).unwrap_or(Duration::ZERO)
                    })
                    .min(MAX_SLEEP);
                wait(&mut changes, delay).await;
            }
        }
    }
}

/// The warning each time a step is due but the key store cannot be
/// reached: nothing changes, the active key keeps signing (past its period
/// if need be), and the step is tried again after `retry_after`.
fn store_unavailable(err: &StoreError, policy: &ResolvedPolicy) {
    tracing::warn!(
        error = %err,
        retry_after = ?policy.retry_after(),
        "cannot reach the key store: rotation waits, the active key keeps signing"
    );
}

/// Sleeps for `delay` or until the registry changes.
async fn wait(changes: &mut watch::Receiver<Arc<KeySnapshot>>, delay: Duration) {
    let deadline = tokio::time::Instant::now() + delay;
    if let Ok(Err(_closed)) = tokio::time::timeout_at(deadline, changes.changed()).await {
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::keys::{Algorithm, KeyState, SigningKey};
    use crate::registry::PublishedKey;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn policy() -> RotationPolicy {
        // Period 1000 s; on the default registry, prepublish 300 s (JWKS
        // max-age), retain 60 + 60 s.
        RotationPolicy::builder(secs(1000)).build().unwrap()
    }

    /// Two next keys (the higher kid listed first) created in the same second.
    fn two_next_keys_created_together() -> (Kid, Kid, Vec<PublishedKey>) {
        let created = SystemTime::now();
        let mut pair = [
            SigningKey::generate(Algorithm::ES256).unwrap(),
            SigningKey::generate(Algorithm::ES256).unwrap(),
        ];
        pair.sort_by(|a, b| b.kid().cmp(a.kid()));
        let (higher, lower) = (pair[0].kid().clone(), pair[1].kid().clone());
        let keys = pair
            .into_iter()
            .map(|k| PublishedKey::from_signing_key(k, KeyState::Next, created))
            .collect();
        (lower, higher, keys)
    }

    #[tokio::test]
    async fn rotate_and_the_rotator_pick_the_same_next_key_when_two_share_a_creation_time() {
        let (lower, higher, nexts) = two_next_keys_created_together();
        let mut builder =
            KeyRegistry::builder().active(SigningKey::generate(Algorithm::ES256).unwrap());
        for key in nexts.iter().cloned() {
            builder = builder.key(key);
        }
        let registry = builder.build().unwrap();

        // The rotator schedules the oldest next key, ties broken by kid.
        let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
        let scheduled = rotator.rotate_now().await.unwrap();
        rotator.stop().await;
        assert_eq!(scheduled.kid(), &lower, "the rotator picks the lower kid");

        // Rotating by hand picks the same key.
        let rotated = registry.rotate(secs(120)).unwrap();
        assert_eq!(
            rotated, lower,
            "rotate() picked {rotated}, not the lower kid; higher is {higher}"
        );

        // So does a restart that finds no active key in the store.
        let store = crate::store::MemoryKeyStore::new();
        for key in &nexts {
            crate::store::KeyStore::save(&store, &key.to_stored().unwrap()).unwrap();
        }
        let restarted = KeyRegistry::builder()
            .store(store)
            .generate_if_missing(Algorithm::ES256)
            .build()
            .unwrap();
        assert_eq!(restarted.current().active().unwrap().kid(), &lower);
    }
}
