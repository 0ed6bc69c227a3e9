//! [`RotationPolicy`]: when keys rotate, checked when it is built, and
//! [`ResolvedPolicy`]: the policy resolved against a registry's token
//! lifetime and JWKS max-age.

use std::time::Duration;

use crate::error::ConfigError;
use crate::keys::Algorithm;
use crate::registry::KeyRegistry;

/// The leeway verifiers are assumed to allow on `exp` unless the policy is
/// told another (the `jsonwebtoken` crate's default): 60 seconds. This
/// crate's own [`Verifier`](crate::Verifier) allows 30 s by default.
const DEFAULT_VERIFIER_LEEWAY: Duration = Duration::from_secs(60);

/// How long the rotator waits before retrying a failed step unless told
/// another: 30 seconds.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long before a certificate-backed key's certificate expires the
/// rotator warns, unless told another: 7 days.
const DEFAULT_CERTIFICATE_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// No duration of a policy may be longer (100 years).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When to rotate keys. See the [module docs](crate::rotation).
///
/// A policy says what it can alone: the period, the verifiers' leeway,
/// the followers' poll interval, and, when you set them, the prepublish and
/// retain times. The rest comes from the registry the
/// [`KeyRotator`](super::KeyRotator) runs on, which holds the token
/// lifetime and the JWKS max-age: [`resolve`](Self::resolve) (which
/// [`KeyRotator::spawn`](super::KeyRotator::spawn) calls) turns the policy
/// into the durations the rotator follows, and refuses a policy that cannot
/// work with that registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    rotate_every: Duration,
    verifier_leeway: Duration,
    follower_poll_interval: Duration,
    prepublish: Option<Duration>,
    retain: Option<Duration>,
    algorithm: Option<Algorithm>,
    retry_after: Duration,
    certificate_warning: Duration,
}

impl RotationPolicy {
    /// A builder for a policy that activates a new key every
    /// `rotate_every`.
    pub fn builder(rotate_every: Duration) -> RotationPolicyBuilder {
        RotationPolicyBuilder {
            rotate_every,
            verifier_leeway: DEFAULT_VERIFIER_LEEWAY,
            follower_poll_interval: Duration::ZERO,
            prepublish: None,
            retain: None,
            algorithm: None,
            retry_after: DEFAULT_RETRY_AFTER,
            certificate_warning: DEFAULT_CERTIFICATE_WARNING,
        }
    }

    /// How long before a key's certificate expires the rotator warns
    /// (default 7 days).
    pub fn certificate_warning(&self) -> Duration {
        self.certificate_warning
    }

    /// How long each key is active.
    pub fn rotate_every(&self) -> Duration {
        self.rotate_every
    }

    /// The leeway verifiers are assumed to allow on `exp`.
    pub fn verifier_leeway(&self) -> Duration {
        self.verifier_leeway
    }

    /// The poll interval of replicas that follow the key store (zero: no
    /// replicas).
    pub fn follower_poll_interval(&self) -> Duration {
        self.follower_poll_interval
    }

    /// The prepublish time, when set (`None`: resolved from the registry's
    /// JWKS max-age, see [`ResolvedPolicy::prepublish`]).
    pub fn prepublish(&self) -> Option<Duration> {
        self.prepublish
    }

    /// The retention time, when set (`None`: resolved from the registry's
    /// token lifetime, see [`ResolvedPolicy::retain`]).
    pub fn retain(&self) -> Option<Duration> {
        self.retain
    }

    /// The algorithm of new keys (`None`: the active key's).
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.algorithm
    }

    /// How long the rotator waits before retrying a failed step.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The durations this policy gives on `registry`: the rotator's plan,
    /// without starting it (a command line can check its flags with it
    /// before anything runs).
    ///
    /// * `prepublish`: as set, or the registry's
    ///   [`jwks_max_age`](KeyRegistry::jwks_max_age) plus the followers'
    ///   poll interval; it must fit in the period.
    /// * `retain`: as set, or its minimum, the registry's
    ///   [`token_ttl`](KeyRegistry::token_ttl) plus the verifiers' leeway
    ///   plus the followers' poll interval: the last token of a key must
    ///   verify until it expires, on every replica.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_jwt_signer::{KeyRegistry, RotationPolicy};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let registry = KeyRegistry::builder()
    ///     .token_ttl(Duration::from_secs(30))
    ///     .jwks_max_age(Duration::from_secs(120))
    ///     .build()?;
    /// let policy = RotationPolicy::builder(Duration::from_secs(3600))
    ///     .verifier_leeway(Duration::from_secs(10))
    ///     .build()?;
    /// let resolved = policy.resolve(&registry)?;
    /// assert_eq!(resolved.prepublish(), Duration::from_secs(120)); // the JWKS max-age
    /// assert_eq!(resolved.retain(), Duration::from_secs(40)); // ttl + leeway
    ///
    /// // Old keys may not leave the JWKS while their tokens live.
    /// let short = RotationPolicy::builder(Duration::from_secs(3600))
    ///     .retain(Duration::from_secs(20))
    ///     .build()?;
    /// assert_eq!(short.resolve(&registry).unwrap_err().setting(), "retain");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the policy cannot work on this registry:
    /// `prepublish` (by default) longer than the period, or `retain` shorter
    /// than its minimum. (A prepublish time set shorter than the followers'
    /// poll interval, or longer than the period, never gets here: the
    /// builder refuses it.)
    pub fn resolve(&self, registry: &KeyRegistry) -> Result<ResolvedPolicy, ConfigError> {
        self.resolve_with(registry.token_ttl(), registry.jwks_max_age())
    }

    /// [`resolve`](Self::resolve) for a registry with this token lifetime
    /// and JWKS max-age.
    pub(crate) fn resolve_with(
        &self,
        token_ttl: Duration,
        jwks_max_age: Duration,
    ) -> Result<ResolvedPolicy, ConfigError> {
        let poll = self.follower_poll_interval;
        let prepublish = match self.prepublish {
            // Checked against the period by the builder.
            Some(prepublish) => prepublish,
            None => {
                let prepublish = jwks_max_age + poll;
                if prepublish > self.rotate_every {
                    return Err(ConfigError::new(
                        "prepublish",
                        prepublish,
                        format!(
                            "the default prepublish time (the registry's JWKS max-age, {:?}, \
                             plus the followers' poll interval, {poll:?}) is longer than the \
                             rotation period ({:?}); set prepublish explicitly, or lower \
                             KeyRegistryBuilder::jwks_max_age (see the rotation docs on short \
                             periods)",
                            jwks_max_age, self.rotate_every
                        ),
                    ));
                }
                prepublish
            }
        };
        let minimum = token_ttl + self.verifier_leeway + poll;
        let retain = self.retain.unwrap_or(minimum);
        if retain < minimum {
            return Err(ConfigError::new(
                "retain",
                retain,
                format!(
                    "shorter than its minimum, {minimum:?} (the registry's token lifetime, \
                     {token_ttl:?}, + the verifiers' leeway + the followers' poll interval): \
                     tokens signed just before a rotation would stop verifying while still valid"
                ),
            ));
        }
        Ok(ResolvedPolicy {
            policy: self.clone(),
            prepublish,
            retain,
        })
    }
}

/// Builds a [`RotationPolicy`]; see [`RotationPolicy::builder`].
///
/// The setters only record their value; [`build`](Self::build) checks what
/// the policy can check alone, and [`RotationPolicy::resolve`] (called by
/// [`KeyRotator::spawn`](super::KeyRotator::spawn)) the rest, against the
/// registry.
#[must_use]
#[derive(Debug, Clone)]
pub struct RotationPolicyBuilder {
    rotate_every: Duration,
    verifier_leeway: Duration,
    follower_poll_interval: Duration,
    prepublish: Option<Duration>,
    retain: Option<Duration>,
    algorithm: Option<Algorithm>,
    retry_after: Duration,
    certificate_warning: Duration,
}

impl RotationPolicyBuilder {
    /// The clock skew the verifiers allow on `exp` (default 60 s, the
    /// `jsonwebtoken` crate's default; this crate's
    /// [`Verifier`](crate::Verifier) allows 30 s unless told otherwise): a
    /// token is accepted until `exp + leeway`, so its key must be published
    /// that long. Set it to the largest leeway of your verifiers.
    pub fn verifier_leeway(mut self, leeway: Duration) -> Self {
        self.verifier_leeway = leeway;
        self
    }

    /// The poll interval of replicas that follow the key store (default:
    /// zero, no replicas), at most the period. A replica sees each change up
    /// to this much later (with change notifications, when it misses one),
    /// so it is added to the default prepublish time and to the minimum (and
    /// default) retention, and a prepublish time you set must be at least
    /// this long.
    pub fn follower_poll_interval(mut self, interval: Duration) -> Self {
        self.follower_poll_interval = interval;
        self
    }

    /// How long the next key is published before it signs (default: the
    /// registry's JWKS max-age plus the followers' poll interval; at most
    /// the period, and at least the
    /// [followers' poll interval](Self::follower_poll_interval)). Shorter than the verifiers' cache lifetime, verifiers
    /// that have not fetched the JWKS since the key was published refuse
    /// its first tokens until they do: see the module docs on
    /// [what verifiers need](crate::rotation#what-verifiers-need).
    pub fn prepublish(mut self, prepublish: Duration) -> Self {
        self.prepublish = Some(prepublish);
        self
    }

    /// How long a key stays published after it stops signing (default and
    /// minimum: the registry's token lifetime + the verifiers' leeway + the
    /// followers' poll interval).
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
    /// corrupt key file); default 30 s.
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// How long before the certificate of a certificate-backed key expires
    /// the rotator warns about it (a `tracing` warning, once per key and
    /// process), default 7 days. Whatever this says, the rotator replaces
    /// a certificate-backed active key by its certificate's `notAfter` at
    /// the latest (the next key published `prepublish` before), and the
    /// signer never signs with an expired certificate.
    pub fn certificate_warning(mut self, ahead: Duration) -> Self {
        self.certificate_warning = ahead;
        self
    }

    /// Checks what the policy can check alone and builds it.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for the first refused setting, in this order:
    /// `rotate_every` (zero), `retry_after` (zero), any duration longer than
    /// 100 years (`rotate_every`, `verifier_leeway`,
    /// `follower_poll_interval`, `prepublish`, `retain`, `retry_after`,
    /// `certificate_warning`),
    /// `follower_poll_interval` (longer than the period), `prepublish` (set
    /// longer than the period, or shorter than the followers' poll
    /// interval: a follower that misses a change notification must still
    /// see the next key before any replica signs with it). What depends on
    /// the registry (the default prepublish time, the minimum retention) is
    /// checked by [`RotationPolicy::resolve`].
    pub fn build(self) -> Result<RotationPolicy, ConfigError> {
        if self.rotate_every.is_zero() {
            return Err(ConfigError::new(
                "rotate_every",
                self.rotate_every,
                "the rotation period must not be zero",
            ));
        }
        if self.retry_after.is_zero() {
            return Err(ConfigError::new(
                "retry_after",
                self.retry_after,
                "the retry delay must not be zero",
            ));
        }
        for (setting, value) in [
            ("rotate_every", Some(self.rotate_every)),
            ("verifier_leeway", Some(self.verifier_leeway)),
            ("follower_poll_interval", Some(self.follower_poll_interval)),
            ("prepublish", self.prepublish),
            ("retain", self.retain),
            ("retry_after", Some(self.retry_after)),
            ("certificate_warning", Some(self.certificate_warning)),
        ] {
            if let Some(value) = value
                && value > MAX_DURATION
            {
                return Err(ConfigError::new(setting, value, "longer than 100 years"));
            }
        }
        let poll = self.follower_poll_interval;
        if poll > self.rotate_every {
            return Err(ConfigError::new(
                "follower_poll_interval",
                poll,
                format!(
                    "longer than the rotation period ({:?}): every replica must see the next key \
                     (within one poll) before any replica signs with it, once per period; poll \
                     more often",
                    self.rotate_every
                ),
            ));
        }
        if let Some(prepublish) = self.prepublish {
            if prepublish > self.rotate_every {
                return Err(ConfigError::new(
                    "prepublish",
                    prepublish,
                    format!(
                        "longer than the rotation period ({:?}): the next key cannot be \
                         published that early",
                        self.rotate_every
                    ),
                ));
            }
            if prepublish < poll {
                return Err(ConfigError::new(
                    "prepublish",
                    prepublish,
                    format!(
                        "shorter than the followers' poll interval ({poll:?}): a replica that \
                         misses a change notification sees the next key up to one poll \
                         interval after it is published, so it would learn of it only after \
                         another replica signs with it; publish it at least one poll interval \
                         ahead, or poll more often"
                    ),
                ));
            }
        }
        Ok(RotationPolicy {
            rotate_every: self.rotate_every,
            verifier_leeway: self.verifier_leeway,
            follower_poll_interval: self.follower_poll_interval,
            prepublish: self.prepublish,
            retain: self.retain,
            algorithm: self.algorithm,
            retry_after: self.retry_after,
            certificate_warning: self.certificate_warning,
        })
    }
}

/// A [`RotationPolicy`] resolved against a registry: the durations a
/// [`KeyRotator`](super::KeyRotator) follows. See
/// [`RotationPolicy::resolve`]; a running rotator gives its own with
/// [`KeyRotator::policy`](super::KeyRotator::policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPolicy {
    policy: RotationPolicy,
    prepublish: Duration,
    retain: Duration,
}

impl ResolvedPolicy {
    /// The policy as it was built.
    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// How long each key is active.
    pub fn rotate_every(&self) -> Duration {
        self.policy.rotate_every
    }

    /// How long the next key is published before it signs.
    pub fn prepublish(&self) -> Duration {
        self.prepublish
    }

    /// How long a key stays published after it stops signing.
    pub fn retain(&self) -> Duration {
        self.retain
    }

    /// The algorithm of new keys (`None`: the active key's).
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.policy.algorithm
    }

    /// How long the rotator waits before retrying a failed step.
    pub fn retry_after(&self) -> Duration {
        self.policy.retry_after
    }

    /// How long before a key's certificate expires the rotator warns.
    pub fn certificate_warning(&self) -> Duration {
        self.policy.certificate_warning
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// The default registry: 60 s tokens, a 300 s JWKS max-age.
    fn resolve(policy: &RotationPolicy) -> Result<ResolvedPolicy, ConfigError> {
        policy.resolve_with(secs(60), secs(300))
    }

    #[test]
    fn defaults_follow_the_registrys_max_age_and_ttl_and_the_leeway() {
        let p = resolve(&RotationPolicy::builder(secs(1000)).build().unwrap()).unwrap();
        assert_eq!(p.prepublish(), secs(300));
        assert_eq!(p.retain(), secs(120));
        let p = RotationPolicy::builder(secs(1000))
            .verifier_leeway(secs(5))
            .follower_poll_interval(secs(10))
            .build()
            .unwrap()
            .resolve_with(secs(60), secs(100))
            .unwrap();
        assert_eq!(p.prepublish(), secs(110));
        assert_eq!(p.retain(), secs(75));
    }

    /// A follower that misses a change notification sees the next key up
    /// to one poll interval after it is published: a prepublish time set
    /// shorter than that would let another replica sign with the key
    /// before this one publishes it.
    #[test]
    fn a_prepublish_shorter_than_the_followers_poll_is_refused() {
        let err = RotationPolicy::builder(secs(60))
            .follower_poll_interval(secs(5))
            .prepublish(secs(4))
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "prepublish");
        assert_eq!(err.value(), Some("4s"));
        assert!(err.reason().contains("poll interval (5s)"), "{err}");
        // Without followers, any prepublish time up to the period.
        let alone = RotationPolicy::builder(secs(60))
            .prepublish(secs(1))
            .build()
            .unwrap();
        assert_eq!(resolve(&alone).unwrap().prepublish(), secs(1));
        // A poll interval longer than the period is refused as such.
        let err = RotationPolicy::builder(secs(2))
            .follower_poll_interval(secs(5))
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "follower_poll_interval");
        assert!(err.reason().contains("rotation period (2s)"), "{err}");
    }

    #[test]
    fn configuration_that_cannot_work_is_refused() {
        let b = || RotationPolicy::builder(secs(1000));
        let setting = |result: Result<RotationPolicy, ConfigError>| result.unwrap_err().setting();
        assert_eq!(
            setting(RotationPolicy::builder(Duration::ZERO).build()),
            "rotate_every"
        );
        assert_eq!(setting(b().prepublish(secs(1001)).build()), "prepublish");
        assert_eq!(setting(b().retain(Duration::MAX).build()), "retain");
        assert_eq!(
            setting(b().verifier_leeway(Duration::MAX).build()),
            "verifier_leeway"
        );
        assert_eq!(
            setting(b().retry_after(Duration::ZERO).build()),
            "retry_after"
        );

        // Against the registry: the default prepublish (300 s max-age) does
        // not fit a 100 s period.
        let err = resolve(&RotationPolicy::builder(secs(100)).build().unwrap()).unwrap_err();
        assert_eq!(err.setting(), "prepublish");
        assert!(err.reason().contains("set prepublish explicitly"), "{err}");
        assert!(err.reason().contains("jwks_max_age"), "{err}");
        let err = resolve(&b().retain(secs(119)).build().unwrap()).unwrap_err();
        assert_eq!(err.setting(), "retain");
        assert_eq!(err.value(), Some("119s"));
        assert!(err.reason().contains("120s"), "{err}");
        assert_eq!(
            resolve(
                &b().follower_poll_interval(secs(5))
                    .retain(secs(120))
                    .build()
                    .unwrap()
            )
            .unwrap_err()
            .setting(),
            "retain"
        );
        // A longer token lifetime raises the minimum.
        let p = b().retain(secs(120)).build().unwrap();
        assert!(resolve(&p).is_ok());
        assert_eq!(
            p.resolve_with(secs(61), secs(300)).unwrap_err().setting(),
            "retain"
        );
        // Edge cases that work: prepublish equal to the period, retain equal
        // to the minimum, prepublish equal to the poll interval.
        let p = b()
            .follower_poll_interval(secs(5))
            .prepublish(secs(5))
            .build()
            .unwrap();
        assert_eq!(resolve(&p).unwrap().prepublish(), secs(5));
        let p = b()
            .prepublish(secs(1000))
            .retain(secs(120))
            .build()
            .unwrap();
        let p = resolve(&p).unwrap();
        assert_eq!((p.prepublish(), p.retain()), (secs(1000), secs(120)));
    }
}
