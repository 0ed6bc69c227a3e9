//! [`ConfigError`]: the one error for a refused setting, and the helper that
//! keeps refused values short.

use std::borrow::Cow;
use std::fmt;

/// How many characters of a refused value an error message keeps.
const MAX_REFUSED_CHARS: usize = 200;

/// At most 200 characters of a refused value, for an error message: enough
/// to recognise it, never an unbounded copy of what a caller passed.
pub(crate) fn truncate(value: &str) -> String {
    value.chars().take(MAX_REFUSED_CHARS).collect()
}

/// A setting was refused: which one, the value (when it is not a secret) and
/// why.
///
/// Every builder of the crate only records its settings and checks them all
/// once when it builds (`build()`; the spawners
/// [`KeyRotator::spawn`](crate::KeyRotator::spawn) and
/// [`StoreFollower::spawn`](crate::registry::StoreFollower::spawn), before
/// they spawn anything), never at request time: a layer, service or policy
/// that exists works. A constructor whose required argument can be bad
/// ([`RemoteJwks::new`](crate::RemoteJwks::new)) and `FromStr` of a
/// settings enum return it too. [`setting`](Self::setting) is the name of
/// the builder method that took the value (`"ttl"`, `"issuer"`,
/// `"rotate_every"`, ...), so a program can tell which setting to fix;
/// [`reason`](Self::reason) says why in words, and what is allowed.
/// [`KeyRegistryBuilder::build`](crate::registry::KeyRegistryBuilder::build),
/// which does I/O, wraps it in [`RegistryError::Config`](crate::RegistryError::Config).
/// Errors with a cause at run time (a key store that fails, a token that
/// does not verify) have types of their own.
///
/// ```
/// use tower_jwt_signer::ConfigError;
///
/// fn describe(err: &ConfigError) -> String {
///     format!("fix `{}`: {}", err.setting(), err.reason())
/// }
/// # let _ = describe;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    value: Option<String>,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// `setting` refused `value` (shown with its `Debug` form, cut to 200
    /// characters) because of `reason`.
    pub(crate) fn new(
        setting: &'static str,
        value: impl fmt::Debug,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError {
            setting,
            value: Some(truncate(&format!("{value:?}"))),
            reason: reason.into(),
        }
    }

    /// `setting` refused a value that must not be repeated (a secret, a
    /// URL with credentials), because of `reason`.
    pub(crate) fn without_value(
        setting: &'static str,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError {
            setting,
            value: None,
            reason: reason.into(),
        }
    }

    /// The setting: the name of the builder method that took the value.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// The refused value in its `Debug` form (strings quoted), cut to 200
    /// characters; `None` when it is not shown (a secret).
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "invalid {} {value}: {}", self.setting, self.reason),
            None => write!(f, "invalid {}: {}", self.setting, self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refused_values_are_cut_to_200_characters_not_bytes() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(300);
        assert_eq!(truncate(&long).chars().count(), 200);
        assert_eq!(truncate(&long), "é".repeat(200));
    }

    #[test]
    fn the_message_names_the_setting_the_value_and_the_reason() {
        let err = ConfigError::new("ttl", Duration::from_secs(0), "use 1 s to 1 day");
        assert_eq!(err.setting(), "ttl");
        assert_eq!(err.value(), Some("0ns"));
        assert_eq!(err.to_string(), "invalid ttl 0ns: use 1 s to 1 day");
        let err = ConfigError::new("issuer", "", "must not be empty");
        assert_eq!(err.to_string(), "invalid issuer \"\": must not be empty");
        let err = ConfigError::without_value("url", "holds credentials");
        assert_eq!(err.value(), None);
        assert_eq!(err.to_string(), "invalid url: holds credentials");
        let long = ConfigError::new("path", "x".repeat(500), "too long");
        assert_eq!(long.value().unwrap().chars().count(), 200);
    }
}
