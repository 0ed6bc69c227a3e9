//! Key ids.

use std::fmt;
use std::sync::Arc;

/// The longest key id accepted, in characters.
const MAX_KID_LEN: usize = 128;

/// A validated key id (`kid`).
///
/// A kid is 1 to 128 characters of `A-Z a-z 0-9 - _ .`: safe to
/// put in a file name, a log line, a URL or a header without escaping. By
/// default a key's kid is its RFC 7638 thumbprint (43 base64url
/// characters), which is stable across restarts.
///
/// ```
/// use tower_jwt_signer::Kid;
///
/// assert!(Kid::new("gateway-2026.11").is_ok());
/// assert!(Kid::new("../etc/passwd").is_err());
/// assert!(Kid::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kid(Arc<str>);

impl Kid {
    /// Validates and wraps a key id.
    ///
    /// # Errors
    ///
    /// [`InvalidKid`] when the id is empty, longer than 128 bytes, or
    /// holds a character outside `A-Z a-z 0-9 - _ .`.
    pub fn new(kid: impl AsRef<str>) -> Result<Self, InvalidKid> {
        let kid = kid.as_ref();
        if kid.is_empty() {
            return Err(InvalidKid::Empty);
        }
        if kid.len() > MAX_KID_LEN {
            return Err(InvalidKid::TooLong { len: kid.len() });
        }
        if let Some(bad) = kid
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(InvalidKid::BadCharacter { found: bad });
        }
        Ok(Kid(Arc::from(kid)))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Kid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Kid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Kid {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Kid {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl std::str::FromStr for Kid {
    type Err = InvalidKid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kid::new(s)
    }
}

impl serde::Serialize for Kid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Why a string is not an acceptable key id.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidKid {
    /// The id is empty.
    Empty,
    /// The id is longer than 128 bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id holds a character outside `A-Z a-z 0-9 - _ .`.
    BadCharacter {
        /// The first offending character.
        found: char,
    },
}

impl fmt::Display for InvalidKid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidKid::Empty => f.write_str("invalid kid: it is empty"),
            InvalidKid::TooLong { len } => write!(
                f,
                "invalid kid: {len} bytes long, at most {MAX_KID_LEN} are allowed"
            ),
            InvalidKid::BadCharacter { found } => write!(
                f,
                "invalid kid: character {found:?} is not allowed (only A-Z a-z 0-9 - _ .)"
            ),
        }
    }
}

impl std::error::Error for InvalidKid {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_allowed_alphabet() {
        let all = "ABCXYZabcxyz0189-_.";
        assert_eq!(Kid::new(all).unwrap().as_str(), all);
        assert!(Kid::new("a".repeat(MAX_KID_LEN)).is_ok());
    }

    #[test]
    fn refuses_the_rest() {
        assert_eq!(Kid::new(""), Err(InvalidKid::Empty));
        assert_eq!(
            Kid::new("a".repeat(MAX_KID_LEN + 1)),
            Err(InvalidKid::TooLong { len: 129 })
        );
        for bad in ["a/b", "a b", "a\nb", "a\"b", "é", "a\\b", "key;1", "a\0"] {
            assert!(
                matches!(Kid::new(bad), Err(InvalidKid::BadCharacter { .. })),
                "{bad:?}"
            );
        }
    }
}
