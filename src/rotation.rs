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

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::unix_seconds;
use crate::jwks::DEFAULT_JWKS_MAX_AGE;
use crate::keys::{Algorithm, KeyError, Kid, SigningKey};
use crate::registry::{
    self, KeyRegistry, KeySnapshot, KeyState, PublishedKey, RegistryError, ensure_unique,
    is_expired, promote,
};

/// The default leeway verifiers allow on `exp` (the `jsonwebtoken` crate's
/// default): 60 seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// How long the rotator waits before retrying a failed step by default:
/// 30 seconds.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// No duration of a policy may be longer (100 years).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The longest the task sleeps before looking again: bounds how late a
/// step can be after the wall clock jumps.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The pause after a step that changed nothing (a writer elsewhere got
/// there first and the snapshot already shows it).
const NO_PROGRESS_PAUSE: Duration = Duration::from_secs(1);

/// When to rotate keys. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    rotate_every: Duration,
    prepublish: Duration,
    retain: Duration,
    token_ttl: Duration,
    leeway: Duration,
    algorithm: Option<Algorithm>,
    retry_after: Duration,
}

impl RotationPolicy {
    /// A builder for a policy that activates a new key every `rotate_every`,
    /// for tokens that live `token_ttl` (the signer's lifetime: the policy
    /// keeps old keys at least that long).
    pub fn builder(rotate_every: Duration, token_ttl: Duration) -> RotationPolicyBuilder {
        RotationPolicyBuilder {
            rotate_every,
            token_ttl,
            leeway: DEFAULT_LEEWAY,
            jwks_max_age: DEFAULT_JWKS_MAX_AGE,
            follower_poll_interval: Duration::ZERO,
            prepublish: None,
            retain: None,
            algorithm: None,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// How long each key is active.
    pub fn rotate_every(&self) -> Duration {
        self.rotate_every
    }

    /// How long the next key is published before it signs.
    pub fn prepublish(&self) -> Duration {
        self.prepublish
    }

    /// How long a key stays published after it stops signing.
    pub fn retain(&self) -> Duration {
        self.retain
    }

    /// The token lifetime the policy was built for.
    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }

    /// The verifiers' leeway the policy was built for.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// The algorithm of new keys (`None`: the active key's).
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.algorithm
    }

    /// How long the rotator waits before retrying a failed step.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// Builds a [`RotationPolicy`]; see [`RotationPolicy::builder`].
#[must_use]
#[derive(Debug, Clone)]
pub struct RotationPolicyBuilder {
    rotate_every: Duration,
    token_ttl: Duration,
    leeway: Duration,
    jwks_max_age: Duration,
    follower_poll_interval: Duration,
    prepublish: Option<Duration>,
    retain: Option<Duration>,
    algorithm: Option<Algorithm>,
    retry_after: Duration,
}

impl RotationPolicyBuilder {
    /// The clock skew verifiers allow on `exp` (default
    /// [`DEFAULT_LEEWAY`]): a token is accepted until `exp + leeway`, so its
    /// key must be published that long.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The `max-age` the JWKS is served with (default
    /// [`DEFAULT_JWKS_MAX_AGE`]): the default prepublish time.
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.jwks_max_age = max_age;
        self
    }

    /// The poll interval of replicas that follow the key store (default:
    /// zero, no replicas). A replica sees each change up to this much later,
    /// so it is added to the default prepublish time and to the minimum (and
    /// default) retention.
    pub fn follower_poll_interval(mut self, interval: Duration) -> Self {
        self.follower_poll_interval = interval;
        self
    }

    /// How long the next key is published before it signs (default: the
    /// JWKS max-age plus the followers' poll interval). Shorter than the
    /// JWKS max-age, verifiers that do not refetch on an unknown kid may
    /// reject the first tokens of a new key.
    pub fn prepublish(mut self, prepublish: Duration) -> Self {
        self.prepublish = Some(prepublish);
        self
    }

    /// How long a key stays published after it stops signing (default and
    /// minimum: token lifetime + leeway + the followers' poll interval).
    pub fn retain(mut self, retain: Duration) -> Self {
        self.retain = Some(retain);
        self
    }

    /// The algorithm of new keys (default: the active key's; ES256 when the
    /// registry has no key).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// How long to wait before retrying a step that failed (a full disk, a
    /// corrupt key file); default [`DEFAULT_RETRY_AFTER`].
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Checks the configuration and builds the policy.
    ///
    /// # Errors
    ///
    /// A [`RotationConfigError`] when the policy cannot work: a zero period,
    /// token lifetime or retry delay, a duration over 100 years, `prepublish`
    /// longer than the period, or `retain` shorter than the token lifetime
    /// plus leeway (plus the followers' poll interval).
    pub fn build(self) -> Result<RotationPolicy, RotationConfigError> {
        if self.rotate_every.is_zero() {
            return Err(RotationConfigError::ZeroPeriod);
        }
        if self.token_ttl.is_zero() {
            return Err(RotationConfigError::ZeroTokenTtl);
        }
        if self.retry_after.is_zero() {
            return Err(RotationConfigError::ZeroRetry);
        }
        for (what, value) in [
            ("rotate_every", Some(self.rotate_every)),
            ("token_ttl", Some(self.token_ttl)),
            ("leeway", Some(self.leeway)),
            ("jwks_max_age", Some(self.jwks_max_age)),
            ("follower_poll_interval", Some(self.follower_poll_interval)),
            ("prepublish", self.prepublish),
            ("retain", self.retain),
            ("retry_after", Some(self.retry_after)),
        ] {
            if let Some(value) = value
                && value > MAX_DURATION
            {
                return Err(RotationConfigError::TooLong { what, value });
            }
        }
        let (prepublish, defaulted) = match self.prepublish {
            Some(prepublish) => (prepublish, false),
            None => (self.jwks_max_age + self.follower_poll_interval, true),
        };
        if prepublish > self.rotate_every {
            return Err(RotationConfigError::PrepublishLongerThanPeriod {
                prepublish,
                rotate_every: self.rotate_every,
                defaulted,
            });
        }
        let minimum = self.token_ttl + self.leeway + self.follower_poll_interval;
        let retain = self.retain.unwrap_or(minimum);
        if retain < minimum {
            return Err(RotationConfigError::RetainTooShort { retain, minimum });
        }
        Ok(RotationPolicy {
            rotate_every: self.rotate_every,
            prepublish,
            retain,
            token_ttl: self.token_ttl,
            leeway: self.leeway,
            algorithm: self.algorithm,
            retry_after: self.retry_after,
        })
    }
}

/// A rotation policy that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RotationConfigError {
    /// `rotate_every` is zero.
    ZeroPeriod,
    /// The token lifetime is zero.
    ZeroTokenTtl,
    /// The retry delay is zero.
    ZeroRetry,
    /// A duration is longer than 100 years.
    TooLong {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: Duration,
    },
    /// The next key would have to be published before the current one
    /// became active.
    PrepublishLongerThanPeriod {
        /// The prepublish time.
        prepublish: Duration,
        /// The rotation period.
        rotate_every: Duration,
        /// Whether `prepublish` is the default (JWKS max-age + followers'
        /// poll interval) rather than set explicitly.
        defaulted: bool,
    },
    /// Old keys would leave the JWKS while their tokens are still valid.
    RetainTooShort {
        /// The retention asked for.
        retain: Duration,
        /// Token lifetime + leeway + followers' poll interval.
        minimum: Duration,
    },
}

impl fmt::Display for RotationConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RotationConfigError::ZeroPeriod => {
                f.write_str("the rotation period (rotate_every) must not be zero")
            }
            RotationConfigError::ZeroTokenTtl => f.write_str("the token lifetime must not be zero"),
            RotationConfigError::ZeroRetry => f.write_str("the retry delay must not be zero"),
            RotationConfigError::TooLong { what, value } => {
                write!(f, "{what} of {value:?} is longer than 100 years")
            }
            RotationConfigError::PrepublishLongerThanPeriod {
                prepublish,
                rotate_every,
                defaulted: true,
            } => write!(
                f,
                "the default prepublish time ({prepublish:?}: the JWKS max-age plus the followers' poll interval) \
                 is longer than the rotation period ({rotate_every:?}); set prepublish explicitly or lower the JWKS max-age"
            ),
            RotationConfigError::PrepublishLongerThanPeriod {
                prepublish,
                rotate_every,
                defaulted: false,
            } => write!(
                f,
                "prepublish ({prepublish:?}) is longer than the rotation period ({rotate_every:?}): \
                 the next key cannot be published that early"
            ),
            RotationConfigError::RetainTooShort { retain, minimum } => write!(
                f,
                "retain ({retain:?}) is shorter than its minimum, {minimum:?} (token lifetime + leeway + \
                 followers' poll interval): tokens signed just before a rotation would stop verifying while still valid"
            ),
        }
    }
}

impl std::error::Error for RotationConfigError {}

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

/// What [`KeyRotator::emergency_rotate`] does with the keys it replaces.
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

/// The background task that rotates a registry's keys; stops when dropped.
/// See the [module docs](self).
pub struct KeyRotator {
    registry: KeyRegistry,
    policy: Arc<RotationPolicy>,
    task: JoinHandle<()>,
}

impl KeyRotator {
    /// Starts rotating `registry`'s keys by `policy`.
    ///
    /// At start the task catches up: it removes expired keys, activates a
    /// key if none is active (a due next key, or a fresh one) and publishes
    /// a next key if one is due.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn spawn(registry: KeyRegistry, policy: RotationPolicy) -> Self {
        let policy = Arc::new(policy);
        let task = tokio::spawn(run(registry.clone(), Arc::clone(&policy)));
        KeyRotator {
            registry,
            policy,
            task,
        }
    }

    /// The registry.
    pub fn registry(&self) -> &KeyRegistry {
        &self.registry
    }

    /// The policy.
    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
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
    /// never signed) are withdrawn. See the [module docs](self#rotating-by-hand)
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
        work: impl FnOnce(&KeyRegistry, &RotationPolicy) -> Result<T, RegistryError> + Send + 'static,
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

/// A lifecycle event, logged once the change is published.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Published {
        kid: Kid,
        activates_at: Option<SystemTime>,
    },
    Scheduled {
        kid: Kid,
        activates_at: SystemTime,
    },
    Activated {
        kid: Kid,
    },
    Retired {
        kid: Kid,
        until: SystemTime,
    },
    Removed {
        kid: Kid,
    },
}

fn emit(events: &[Event]) {
    for event in events {
        match event {
            Event::Published { kid, activates_at } => tracing::info!(
                kid = %kid,
                activates_at = ?activates_at.map(unix_seconds),
                "key published"
            ),
            Event::Scheduled { kid, activates_at } => tracing::info!(
                kid = %kid,
                activates_at = unix_seconds(*activates_at),
                "key activation scheduled"
            ),
            Event::Activated { kid } => tracing::info!(kid = %kid, "key activated"),
            Event::Retired { kid, until } => tracing::info!(
                kid = %kid,
                retires_at = unix_seconds(*until),
                "key retired"
            ),
            Event::Removed { kid } => tracing::info!(kid = %kid, "key removed"),
        }
    }
}

async fn run(registry: KeyRegistry, policy: Arc<RotationPolicy>) {
    let mut changes = registry.subscribe();
    loop {
        changes.borrow_and_update();
        let snapshot = registry.current();
        let now = registry.clock().now();
        match plan(snapshot.keys(), &policy, now) {
            Step::Act(_) => {
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
                    Ok(Err(err)) => {
                        tracing::error!(
                            error = %err,
                            retry_after = ?policy.retry_after,
                            "key rotation step failed; will retry"
                        );
                        tokio::time::sleep(policy.retry_after).await;
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "key rotation step panicked; will retry");
                        tokio::time::sleep(policy.retry_after).await;
                    }
                }
            }
            Step::Wait(until) => {
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

/// Sleeps for `delay` or until the registry changes.
async fn wait(changes: &mut watch::Receiver<Arc<KeySnapshot>>, delay: Duration) {
    let deadline = tokio::time::Instant::now() + delay;
    if let Ok(Err(_closed)) = tokio::time::timeout_at(deadline, changes.changed()).await {
        tokio::time::sleep_until(deadline).await;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Act(Action),
    /// Nothing to do before this time (`None`: nothing scheduled).
    Wait(Option<SystemTime>),
}

fn oldest_next(keys: &[PublishedKey]) -> Option<&PublishedKey> {
    registry::oldest_next(keys).map(|index| &keys[index])
}

/// When `active` is due to be replaced.
fn due_time(active: &PublishedKey, policy: &RotationPolicy) -> Option<SystemTime> {
    active
        .activated_at()
        .unwrap_or(active.created_at())
        .checked_add(policy.rotate_every)
}

/// When `next` may become active: when scheduled (or when the active key
/// is due), and never before it has been published for `prepublish`.
fn activation_time(
    next: &PublishedKey,
    active: &PublishedKey,
    policy: &RotationPolicy,
) -> Option<SystemTime> {
    let scheduled = match next.activates_at() {
        Some(at) => at,
        None => due_time(active, policy)?,
    };
    let published_long_enough = next.created_at().checked_add(policy.prepublish)?;
    Some(scheduled.max(published_long_enough))
}

/// What the rotator should do now, or until when it can sleep.
fn plan(keys: &[PublishedKey], policy: &RotationPolicy, now: SystemTime) -> Step {
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
                let publish_at = due.checked_sub(policy.prepublish).unwrap_or(due);
                if now >= publish_at {
                    let earliest = now.checked_add(policy.prepublish).unwrap_or(now);
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

/// The algorithm for a new key.
fn algorithm_for(keys: &[PublishedKey], policy: &RotationPolicy) -> Algorithm {
    policy
        .algorithm
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
    let retire_at = now + policy.retain;
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
            promote(keys, index, now, policy.retain);
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
fn step_blocking(
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

fn rotate_now_blocking(
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
                    .checked_add(policy.prepublish)
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
            let at = now + policy.prepublish;
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

fn emergency_blocking(
    registry: &KeyRegistry,
    policy: &RotationPolicy,
    old: OldKeys,
) -> Result<(Kid, Vec<Event>), RegistryError> {
    let key = SigningKey::generate(algorithm_for(registry.current().keys(), policy))?;
    let kid = key.kid().clone();
    let now = registry.clock().now();
    let retire_at = now + policy.retain;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

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

    fn policy() -> RotationPolicy {
        // Period 1000 s, prepublish 300 s (JWKS max-age), retain 60 + 60 s.
        RotationPolicy::builder(secs(1000), secs(60))
            .build()
            .unwrap()
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
        let rotator = KeyRotator::spawn(registry.clone(), policy());
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

    #[test]
    fn defaults_follow_max_age_ttl_and_leeway() {
        let p = policy();
        assert_eq!(p.prepublish(), secs(300));
        assert_eq!(p.retain(), secs(120));
        let p = RotationPolicy::builder(secs(1000), secs(60))
            .leeway(secs(5))
            .jwks_max_age(secs(100))
            .follower_poll_interval(secs(10))
            .build()
            .unwrap();
        assert_eq!(p.prepublish(), secs(110));
        assert_eq!(p.retain(), secs(75));
    }

    #[test]
    fn configuration_that_cannot_work_is_refused() {
        let b = || RotationPolicy::builder(secs(1000), secs(60));
        assert_eq!(
            RotationPolicy::builder(Duration::ZERO, secs(60))
                .build()
                .unwrap_err(),
            RotationConfigError::ZeroPeriod
        );
        assert_eq!(
            RotationPolicy::builder(secs(10), Duration::ZERO)
                .build()
                .unwrap_err(),
            RotationConfigError::ZeroTokenTtl
        );
        assert!(matches!(
            b().prepublish(secs(1001)).build(),
            Err(RotationConfigError::PrepublishLongerThanPeriod {
                defaulted: false,
                ..
            })
        ));
        // The default prepublish (300 s max-age) does not fit a 100 s period.
        let err = RotationPolicy::builder(secs(100), secs(10))
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            RotationConfigError::PrepublishLongerThanPeriod {
                defaulted: true,
                ..
            }
        ));
        assert!(err.to_string().contains("set prepublish explicitly"));
        assert_eq!(
            b().retain(secs(119)).build().unwrap_err(),
            RotationConfigError::RetainTooShort {
                retain: secs(119),
                minimum: secs(120)
            }
        );
        assert!(matches!(
            b().follower_poll_interval(secs(5))
                .retain(secs(120))
                .build(),
            Err(RotationConfigError::RetainTooShort { .. })
        ));
        assert!(matches!(
            b().retain(Duration::MAX).build(),
            Err(RotationConfigError::TooLong { what: "retain", .. })
        ));
        assert_eq!(
            b().retry_after(Duration::ZERO).build().unwrap_err(),
            RotationConfigError::ZeroRetry
        );
        // Edge cases that work: prepublish equal to the period, retain equal
        // to the minimum.
        assert!(b().prepublish(secs(1000)).retain(secs(120)).build().is_ok());
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
