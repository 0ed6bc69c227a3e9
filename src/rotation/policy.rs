//! [`RotationPolicy`]: when keys rotate, checked when it is built.

use std::fmt;
use std::time::Duration;

use crate::keys::Algorithm;
use crate::registry::DEFAULT_JWKS_MAX_AGE;

/// The default leeway verifiers allow on `exp` (the `jsonwebtoken` crate's
/// default): 60 seconds.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// How long the rotator waits before retrying a failed step by default:
/// 30 seconds.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// No duration of a policy may be longer (100 years).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When to rotate keys. See the [module docs](crate::rotation).
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
    /// 300 s): the default prepublish time.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn policy() -> RotationPolicy {
        // Period 1000 s, prepublish 300 s (JWKS max-age), retain 60 + 60 s.
        RotationPolicy::builder(secs(1000), secs(60))
            .build()
            .unwrap()
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
}
