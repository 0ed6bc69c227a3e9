//! [`StoreFollower`]: keeps a registry in step with a store that other
//! processes write.

use std::fmt;
use std::time::Duration;

use futures_util::future::{Either, select};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::registry::KeyRegistry;
use crate::error::ConfigError;
use crate::store::StoreNotifications;

/// The longest poll interval [`StoreFollower::spawn`] accepts: 100 years.
const MAX_FOLLOWER_INTERVAL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A background task that keeps a registry in step with its store: every
/// `interval` it calls [`KeyRegistry::reload`] on a blocking thread, so keys
/// that another process added, activated, retired or removed are published
/// here within one interval.
///
/// A store that pushes its changes
/// ([`KeyStore::notifications`](crate::store::KeyStore::notifications):
/// Redis pub/sub) wakes the follower at once, so a change is published
/// here within milliseconds; the poll still runs and covers the
/// notifications that are lost (a reconnection, a full buffer). Give the
/// [rotation policy](crate::rotation::RotationPolicyBuilder::follower_poll_interval)
/// the poll interval, not the usual delay: that is how late a replica can
/// be.
///
/// A failed reload (a corrupt file, a missing directory, Redis down) is
/// logged with `tracing` and the registry keeps its current keys until a
/// later reload succeeds. The task stops when the `StoreFollower` is
/// dropped or [`stop`](Self::stop)ped. A registry without a store has
/// nothing to follow: the task then does nothing.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_jwt_signer::registry::StoreFollower;
/// use tower_jwt_signer::{DirKeyStore, KeyRegistry};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tmp = tempfile::tempdir()?;
/// # let dir = tmp.path().join("keys");
/// # KeyRegistry::builder().store(DirKeyStore::open(&dir)?)
/// #     .generate_if_missing(tower_jwt_signer::Algorithm::ES256).build()?;
/// // A replica: signs with the keys the writer keeps in `dir`.
/// let replica = KeyRegistry::builder()
///     .store(DirKeyStore::builder(&dir).create(false).open()?)
///     .build()?;
/// let follower = StoreFollower::spawn(replica.clone(), Duration::from_secs(5))?;
/// # follower.stop().await;
/// # Ok(())
/// # }
/// ```
#[must_use = "the follower stops when dropped: keep it while the registry should follow its store"]
pub struct StoreFollower {
    task: JoinHandle<()>,
    interval: Duration,
}

/// Configures a [`StoreFollower`]; see [`StoreFollower::builder`].
#[must_use]
#[derive(Debug, Clone)]
pub struct StoreFollowerBuilder {
    registry: KeyRegistry,
    interval: Duration,
    notifications: bool,
}

impl StoreFollowerBuilder {
    /// Whether to reload as soon as the store pushes a change (default
    /// `true`; a store that pushes nothing is polled either way). `false`
    /// polls only: useful to measure what the notifications save.
    pub fn notifications(mut self, enabled: bool) -> Self {
        self.notifications = enabled;
        self
    }

    /// Checks the interval and starts the follower.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (setting `"interval"`) if the interval is zero (a
    /// busy loop) or longer than 100 years (a timer that cannot be armed).
    /// It is refused before anything is spawned.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn(self) -> Result<StoreFollower, ConfigError> {
        let interval = self.interval;
        if interval.is_zero() || interval > MAX_FOLLOWER_INTERVAL {
            return Err(ConfigError::new(
                "interval",
                interval,
                "the store poll interval must be more than zero and at most 100 years",
            ));
        }
        let task = tokio::spawn(follow(self.registry, interval, self.notifications));
        Ok(StoreFollower { task, interval })
    }
}

impl StoreFollower {
    /// Starts following `registry`'s store: a reload every `interval`, and
    /// one on each change the store pushes. The same as
    /// `StoreFollower::builder(registry, interval).spawn()`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (setting `"interval"`) if `interval` is zero (a
    /// busy loop) or longer than 100 years (a timer that cannot be armed).
    /// It is refused before anything is spawned.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn(registry: KeyRegistry, interval: Duration) -> Result<Self, ConfigError> {
        Self::builder(registry, interval).spawn()
    }

    /// A builder for a follower of `registry`'s store that polls every
    /// `interval`: the other settings
    /// ([`notifications`](StoreFollowerBuilder::notifications)), then
    /// [`spawn`](StoreFollowerBuilder::spawn).
    pub fn builder(registry: KeyRegistry, interval: Duration) -> StoreFollowerBuilder {
        StoreFollowerBuilder {
            registry,
            interval,
            notifications: true,
        }
    }

    /// The poll interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Stops the task and waits for it to end. A reload already running on
    /// a blocking thread completes (it is atomic).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for StoreFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for StoreFollower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreFollower")
            .field("interval", &self.interval)
            .field("running", &!self.task.is_finished())
            .finish()
    }
}

async fn follow(registry: KeyRegistry, interval: Duration, use_notifications: bool) {
    // Asked for here, inside the task: the store may spawn the task that
    // listens for its changes, which needs the runtime.
    let mut notifications = if use_notifications {
        registry.store().and_then(|store| store.notifications())
    } else {
        None
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; the registry was just loaded.
    ticks.tick().await;
    loop {
        if !next_wake(&mut ticks, &mut notifications).await {
            continue;
        }
        let reloading = registry.clone();
        match tokio::task::spawn_blocking(move || reloading.reload()).await {
            Ok(Ok(true)) => tracing::debug!(
                version = registry.current().version(),
                "picked up a change of the key store"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(err)) => tracing::error!(
                error = %err,
                "cannot reload the key store; keeping the current keys"
            ),
            Err(err) => tracing::error!(error = %err, "the key store reload failed"),
        }
    }
}

/// Waits for the next poll tick or store notification. `false` when the
/// notifications ended (nothing to reload for: the follower polls from now
/// on).
async fn next_wake(
    ticks: &mut tokio::time::Interval,
    notifications: &mut Option<StoreNotifications>,
) -> bool {
    let Some(pushed) = notifications else {
        ticks.tick().await;
        return true;
    };
    let ended = {
        let tick = std::pin::pin!(ticks.tick());
        let note = std::pin::pin!(pushed.changed());
        matches!(select(tick, note).await, Either::Right((false, _)))
    };
    if ended {
        tracing::warn!("the key store stopped sending change notifications; polling only");
        *notifications = None;
    }
    !ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_endless_intervals_are_refused_before_spawning() {
        // No runtime is needed to refuse: nothing is spawned.
        for interval in [
            Duration::ZERO,
            MAX_FOLLOWER_INTERVAL + Duration::from_nanos(1),
            Duration::MAX,
        ] {
            let err = StoreFollower::spawn(KeyRegistry::empty(), interval).unwrap_err();
            assert_eq!(err.setting(), "interval");
        }
    }

    #[tokio::test]
    async fn a_valid_interval_starts_the_task() {
        let follower = StoreFollower::spawn(KeyRegistry::empty(), MAX_FOLLOWER_INTERVAL).unwrap();
        assert_eq!(follower.interval(), MAX_FOLLOWER_INTERVAL);
        follower.stop().await;
    }
}
