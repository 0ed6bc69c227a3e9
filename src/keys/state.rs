//! The lifecycle state of a key: next, active, retiring.

use std::fmt;

/// The lifecycle state of a published key.
///
/// A key is published as **next** before it signs, signs while **active**
/// (at most one key at a time), and stays published while **retiring** so
/// that the tokens it signed keep verifying. See the
/// [registry module docs](crate::registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, does not sign yet.
    Next,
    /// Signs new tokens; published.
    Active,
    /// No longer signs; published until its `retires_at` time.
    Retiring,
}

impl KeyState {
    /// The lower-case name (`"next"`, `"active"`, `"retiring"`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
