//! [`StoreFollower`]: keeps a registry in step with a store that other
//! processes write.

use std::fmt;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::registry::KeyRegistry;
use crate::error::ConfigError;

/// The longest poll interval [`StoreFollower::spawn`] accepts: 100 years.
const MAX_FOLLOWER_INTERVAL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A background task that keeps a registry in step with its store: every
/// `interval` it calls [`KeyRegistry::reload`] on a blocking thread, so keys
/// that another process added, activated, retired or removed are published
/// here within one interval.
///
/// A failed reload (a corrupt file, a missing directory) is logged with
/// `tracing` and the registry keeps its current keys until a later reload
/// succeeds. The task stops when the `StoreFollower` is dropped or
/// [`stop`](Self::stop)ped. A registry without a store has nothing to
/// follow: the task then does nothing.
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

impl StoreFollower {
    /// Starts following `registry`'s store, reloading every `interval`.
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
        if interval.is_zero() || interval > MAX_FOLLOWER_INTERVAL {
            return Err(ConfigError::new(
                "interval",
                interval,
                "the store poll interval must be more than zero and at most 100 years",
            ));
        }
        let task = tokio::spawn(follow(registry, interval));
        Ok(StoreFollower { task, interval })
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

async fn follow(registry: KeyRegistry, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; the registry was just loaded.
    ticks.tick().await;
    loop {
        ticks.tick().await;
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
