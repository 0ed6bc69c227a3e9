//! [`RegistryError`]: why a registry operation was refused.

use std::fmt;

use crate::error::ConfigError;
use crate::keys::{KeyError, Kid};
use crate::store::StoreError;

/// Why a registry operation was refused. Nothing changed when it is
/// returned.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegistryError {
    /// A key with this kid is already published.
    DuplicateKid(Kid),
    /// No published key has this kid.
    UnknownKid(Kid),
    /// The operation needs an active key and there is none.
    NoActiveKey,
    /// The operation needs a non-active key but this one is active;
    /// rotate first.
    KeyIsActive(Kid),
    /// The key could not be generated.
    Key(KeyError),
    /// A snapshot would hold more than one active key.
    SeveralActiveKeys,
    /// A pluggable backend (a key store) failed.
    Other(Box<dyn std::error::Error + Send + Sync>),
    /// The registry's [`KeyStore`](crate::store::KeyStore) failed to load or persist a change;
    /// nothing was published.
    Store(StoreError),
    /// A setting of the [`KeyRegistryBuilder`](crate::registry::KeyRegistryBuilder)
    /// was refused; nothing was loaded or written.
    Config(ConfigError),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::DuplicateKid(kid) => {
                write!(f, "a key with kid {kid:?} is already in the registry")
            }
            RegistryError::UnknownKid(kid) => write!(f, "no key with kid {kid:?} in the registry"),
            RegistryError::NoActiveKey => f.write_str("the registry has no active key"),
            RegistryError::KeyIsActive(kid) => write!(
                f,
                "key {kid:?} is the active key; rotate to another key first"
            ),
            RegistryError::Key(err) => write!(f, "key generation failed: {err}"),
            RegistryError::SeveralActiveKeys => {
                f.write_str("a registry can hold only one active key")
            }
            RegistryError::Other(err) => err.fmt(f),
            RegistryError::Store(err) => write!(f, "key store: {err}"),
            RegistryError::Config(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for RegistryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegistryError::Key(err) => Some(err),
            RegistryError::Other(err) => Some(err.as_ref()),
            RegistryError::Store(err) => Some(err),
            RegistryError::Config(err) => Some(err),
            _ => None,
        }
    }
}

impl From<KeyError> for RegistryError {
    fn from(err: KeyError) -> Self {
        RegistryError::Key(err)
    }
}

impl From<StoreError> for RegistryError {
    fn from(err: StoreError) -> Self {
        RegistryError::Store(err)
    }
}

impl From<ConfigError> for RegistryError {
    fn from(err: ConfigError) -> Self {
        RegistryError::Config(err)
    }
}
