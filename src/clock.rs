//! The wall clock the registry and the signer read.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
///
/// Token dates (`iat`, `nbf`, `exp`) and key lifetimes (retiring until...)
/// are wall-clock times. [`Clock::system`] is the default;
/// [`Clock::tokio`] follows tokio's clock, so tests with paused time
/// (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) can drive
/// a whole key lifecycle in milliseconds.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tower_jwt_signer::clock::Clock;
///
/// let fixed = Clock::from_fn(|| UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// assert_eq!(fixed.unix_seconds(), 1_700_000_000);
/// ```
#[derive(Clone)]
pub struct Clock(Kind);

#[derive(Clone)]
enum Kind {
    System,
    Tokio {
        base: SystemTime,
        start: tokio::time::Instant,
    },
    Custom(Arc<dyn Fn() -> SystemTime + Send + Sync>),
}

impl Clock {
    /// The operating system's clock.
    pub fn system() -> Self {
        Clock(Kind::System)
    }

    /// A clock that starts at the system time now and then advances with
    /// tokio's clock (`tokio::time::Instant`), including paused and
    /// advanced time in tests.
    pub fn tokio() -> Self {
        Clock(Kind::Tokio {
            base: SystemTime::now(),
            start: tokio::time::Instant::now(),
        })
    }

    /// A clock that calls `now`.
    pub fn from_fn(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        Clock(Kind::Custom(Arc::new(now)))
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match &self.0 {
            Kind::System => SystemTime::now(),
            Kind::Tokio { base, start } => *base + start.elapsed(),
            Kind::Custom(now) => now(),
        }
    }

    /// The current time in whole seconds since the Unix epoch (0 for a
    /// clock set before 1970).
    pub fn unix_seconds(&self) -> u64 {
        unix_seconds(self.now())
    }
}

/// Whole seconds since the Unix epoch, 0 before it.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Kind::System => "Clock::system",
            Kind::Tokio { .. } => "Clock::tokio",
            Kind::Custom(_) => "Clock::from_fn",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = Clock::tokio();
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let after = clock.now();
        assert_eq!(
            after.duration_since(before).unwrap(),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn before_epoch_is_zero() {
        let clock = Clock::from_fn(|| UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(clock.unix_seconds(), 0);
    }
}
