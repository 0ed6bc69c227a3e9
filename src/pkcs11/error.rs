//! [`Pkcs11Error`]: why a token could not be opened or used.

use std::fmt;
use std::path::PathBuf;

use crate::error::ConfigError;
use crate::keys::{Algorithm, KeyError};
use crate::store::StoreError;

/// Why a PKCS#11 token, or a key in it, could not be opened or used. Each
/// message names the module, the token or the key concerned, and never
/// contains the PIN.
#[derive(Debug)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// A setting of the [`Pkcs11TokenBuilder`](super::Pkcs11TokenBuilder)
    /// was refused (no PIN, a session count of zero, an RSA size not
    /// offered).
    Config(ConfigError),
    /// The PIN file could not be read, or was refused (see
    /// [`Pin::from_file`](super::Pin::from_file)).
    PinFile(StoreError),
    /// The PKCS#11 module (the `.so`) is missing, cannot be loaded, or
    /// fails to initialise.
    Module {
        /// The module's path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No token with this label is present in the module's slots.
    TokenNotFound {
        /// The label asked for.
        label: String,
        /// The module's path.
        module: PathBuf,
        /// The labels of the tokens that are present.
        present: Vec<String>,
    },
    /// Several present tokens have this label: the token to use is not
    /// known.
    TokenAmbiguous {
        /// The label.
        label: String,
        /// How many tokens have it.
        count: usize,
    },
    /// The token refused the PIN (`CKR_PIN_INCORRECT`, or a PIN of a length
    /// it does not accept).
    WrongPin {
        /// The token's label.
        token: String,
    },
    /// The token's user PIN is locked (too many wrong PINs): unlock it with
    /// the security officer's PIN.
    PinLocked {
        /// The token's label.
        token: String,
    },
    /// No private key with this label or id is in the token.
    KeyNotFound {
        /// The token's label.
        token: String,
        /// The key asked for: `label "..."` or `id 0a1b...`.
        key: String,
    },
    /// The key is in the token, but cannot sign for the algorithm: another
    /// key type or curve, several keys with that label, no public key
    /// object to publish, or a public key that is refused.
    KeyMismatch {
        /// The token's label.
        token: String,
        /// The key: `label "..."` or `id 0a1b...`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The token does not offer the mechanism an algorithm needs.
    MechanismUnsupported {
        /// The token's label.
        token: String,
        /// The algorithm.
        algorithm: Algorithm,
        /// The mechanisms it would take (`CKM_SHA256_RSA_PKCS`, ...).
        mechanism: &'static str,
    },
    /// A call to the token failed at run time: a session closed, the user
    /// logged out (`CKR_USER_NOT_LOGGED_IN`), the token removed, a device
    /// error. After a fault of the connection
    /// ([`is_connection_fault`](Self::is_connection_fault)) the token's
    /// sessions are opened and logged in again on the next use.
    Token {
        /// The token's label.
        token: String,
        /// What was being done (`"sign"`, `"generate a key"`, ...).
        operation: &'static str,
        /// The PKCS#11 error.
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether the sessions must be opened and logged in again.
        connection: bool,
    },
    /// No session of the token became free in time: every one is busy (a
    /// device that does not answer).
    Busy {
        /// The token's label.
        token: String,
    },
}

impl Pkcs11Error {
    /// Whether the token's sessions or login were lost (a session closed,
    /// the user logged out, the token removed): the next use opens new
    /// sessions and logs in again.
    pub fn is_connection_fault(&self) -> bool {
        matches!(
            self,
            Pkcs11Error::Token {
                connection: true,
                ..
            } | Pkcs11Error::TokenNotFound { .. }
        )
    }
}

impl fmt::Display for Pkcs11Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pkcs11Error::Config(err) => err.fmt(f),
            Pkcs11Error::PinFile(err) => write!(f, "PIN file: {err}"),
            Pkcs11Error::Module { path, reason } => {
                write!(f, "PKCS#11 module {}: {reason}", path.display())
            }
            Pkcs11Error::TokenNotFound {
                label,
                module,
                present,
            } => write!(
                f,
                "no token labelled {label:?} in PKCS#11 module {} (tokens present: {present:?})",
                module.display()
            ),
            Pkcs11Error::TokenAmbiguous { label, count } => write!(
                f,
                "{count} tokens are labelled {label:?}: give each token a label of its own"
            ),
            Pkcs11Error::WrongPin { token } => {
                write!(f, "token {token:?} refused the PIN (wrong PIN)")
            }
            Pkcs11Error::PinLocked { token } => write!(
                f,
                "token {token:?}: the user PIN is locked after too many wrong PINs; unlock it with the security officer's PIN"
            ),
            Pkcs11Error::KeyNotFound { token, key } => {
                write!(f, "token {token:?} holds no private key with {key}")
            }
            Pkcs11Error::KeyMismatch { token, key, reason } => {
                write!(f, "token {token:?}, key with {key}: {reason}")
            }
            Pkcs11Error::MechanismUnsupported {
                token,
                algorithm,
                mechanism,
            } => write!(
                f,
                "token {token:?} does not offer {mechanism}, which {algorithm} needs"
            ),
            Pkcs11Error::Token {
                token,
                operation,
                source,
                connection,
            } => {
                write!(f, "token {token:?}: cannot {operation}: {source}")?;
                if *connection {
                    f.write_str(" (the sessions are opened and logged in again on the next use)")?;
                }
                Ok(())
            }
            Pkcs11Error::Busy { token } => write!(
                f,
                "token {token:?}: no session became free in time (is the device answering?)"
            ),
        }
    }
}

impl std::error::Error for Pkcs11Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Pkcs11Error::Config(err) => Some(err),
            Pkcs11Error::PinFile(err) => Some(err),
            Pkcs11Error::Token { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<ConfigError> for Pkcs11Error {
    fn from(err: ConfigError) -> Self {
        Pkcs11Error::Config(err)
    }
}

impl From<StoreError> for Pkcs11Error {
    fn from(err: StoreError) -> Self {
        Pkcs11Error::PinFile(err)
    }
}

impl From<Pkcs11Error> for KeyError {
    fn from(err: Pkcs11Error) -> Self {
        KeyError::Backend(Box::new(err))
    }
}
