//! [`Pin`]: the token's user PIN, a secret that is never logged.

use std::fmt;
use std::path::PathBuf;

use cryptoki::types::AuthPin;

use super::Pkcs11Error;
use crate::store::files::{FileRules, read_secret_file};
use crate::store::{ForeignOwner, LoosePermissions};

/// The longest PIN accepted, in bytes.
const MAX_PIN_LEN: usize = 256;

/// The user PIN of a PKCS#11 token: a secret value.
///
/// `Debug` never shows it, nor does any error: `Pin(..)`. It is handed to
/// the token only to log in. Read it from a file with [`Pin::from_file`]
/// (checked like a key file) rather than from the command line, where
/// other users can read it in the process list.
///
/// ```
/// use tower_jwt_signer::pkcs11::Pin;
///
/// let pin = Pin::new("1234");
/// assert_eq!(format!("{pin:?}"), "Pin(..)");
/// ```
#[derive(Clone)]
pub struct Pin(AuthPin);

impl Pin {
    /// A PIN given as a value (from a secret manager, an environment
    /// variable). Prefer [`from_file`](Self::from_file) for a PIN on disk.
    pub fn new(pin: impl Into<String>) -> Self {
        Pin(AuthPin::from(pin.into()))
    }

    /// Reads a PIN file with the default checks: `Pin::builder(path).read()`.
    /// Blocking.
    ///
    /// The file gets the checks a key file of a
    /// [`DirKeyStore`](crate::store::DirKeyStore) gets, by the same code: a
    /// regular file, opened without blocking and without following a
    /// symbolic link (except the one form Kubernetes writes Secret volumes
    /// in); owned by the process's effective uid
    /// ([`ForeignOwner::Refuse`]); neither readable nor writable by group
    /// or others, `chmod 600` ([`LoosePermissions::Refuse`]). The PIN is
    /// the file's content up to one final newline (`\n` or `\r\n`); an
    /// empty PIN, or one longer than 256 bytes or not UTF-8, is refused.
    ///
    /// # Errors
    ///
    /// As [`PinFileBuilder::read`].
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, Pkcs11Error> {
        Self::builder(path).read()
    }

    /// A builder for reading the PIN file at `path` with other checks
    /// (owners, permissions).
    pub fn builder(path: impl Into<PathBuf>) -> PinFileBuilder {
        PinFileBuilder {
            path: path.into(),
            rules: FileRules::default(),
        }
    }

    pub(crate) fn auth(&self) -> &AuthPin {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

/// Reads a PIN file; see [`Pin::builder`]. The setters only record their
/// value; [`read`](Self::read) does the I/O.
#[must_use]
#[derive(Debug, Clone)]
pub struct PinFileBuilder {
    path: PathBuf,
    rules: FileRules,
}

impl PinFileBuilder {
    /// What to do about a file readable or writable by group or others
    /// (default: [`LoosePermissions::Refuse`]).
    pub fn loose_permissions(mut self, loose: LoosePermissions) -> Self {
        self.rules.loose = loose;
        self
    }

    /// Which owners to accept besides the process's effective uid
    /// (default: [`ForeignOwner::Refuse`], none). A Kubernetes Secret
    /// volume read by a pod that does not run as root needs
    /// [`ForeignOwner::AllowRoot`].
    pub fn foreign_owner(mut self, foreign: ForeignOwner) -> Self {
        self.rules.foreign = foreign;
        self
    }

    /// Reads the PIN. Blocking.
    ///
    /// # Errors
    ///
    /// [`Pkcs11Error::PinFile`] naming the file: missing or unreadable
    /// ([`StoreError::Io`](crate::store::StoreError::Io)), not a regular file,
    /// owned by another user, too open, or not a PIN (empty, longer than 256
    /// bytes, not UTF-8: [`StoreError::Corrupt`](crate::store::StoreError::Corrupt),
    /// which never quotes the file).
    pub fn read(self) -> Result<Pin, Pkcs11Error> {
        let path = self.path.as_path();
        let bytes = read_secret_file(
            path,
            self.rules,
            MAX_PIN_LEN as u64 + 2,
            "PIN file readable or writable by group or others",
        )?
        .ok_or_else(|| {
            crate::store::StoreError::io("read", path)(std::io::ErrorKind::NotFound.into())
        })?;
        let corrupt =
            |reason: &str| Pkcs11Error::PinFile(crate::store::StoreError::corrupt(path, reason));
        let text = String::from_utf8(bytes).map_err(|_| corrupt("the PIN is not UTF-8"))?;
        let pin = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if pin.is_empty() {
            return Err(corrupt("the PIN file is empty"));
        }
        if pin.len() > MAX_PIN_LEN {
            return Err(corrupt("the PIN is longer than 256 bytes"));
        }
        if pin.contains(['\n', '\r', '\0']) {
            return Err(corrupt("the PIN holds a line break or a NUL byte"));
        }
        Ok(Pin::new(pin))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(path: &std::path::Path, bytes: &[u8], mode: u32) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_pin_file_is_checked_like_a_key_file_and_never_shown() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pin");
        write(&path, b"s3cret-pin\n", 0o600);
        let pin = Pin::from_file(&path).unwrap();
        assert_eq!(format!("{pin:?}"), "Pin(..)");

        write(&path, b"s3cret-pin\n", 0o640);
        let err = Pin::from_file(&path).unwrap_err();
        assert!(
            matches!(
                &err,
                Pkcs11Error::PinFile(crate::store::StoreError::LoosePermissions { .. })
            ),
            "{err}"
        );
        assert!(!err.to_string().contains("s3cret"), "{err}");
        Pin::builder(&path)
            .loose_permissions(LoosePermissions::Warn)
            .read()
            .unwrap();

        for (content, reason) in [
            (&b""[..], "empty"),
            (&b"\n"[..], "empty"),
            (&b"a\nb\n"[..], "line break"),
            (&[0xff, 0xfe][..], "UTF-8"),
        ] {
            write(&path, content, 0o600);
            let err = Pin::from_file(&path).unwrap_err();
            assert!(err.to_string().contains(reason), "{err}");
        }
        write(&path, &[b'1'; 300], 0o600);
        assert!(
            Pin::from_file(&path)
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
        let err = Pin::from_file(tmp.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
