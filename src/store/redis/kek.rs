//! [`Kek`]: the key-encryption key that seals private keys before they
//! reach Redis.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;

use crate::error::ConfigError;
use crate::store::files::{self, FileRules};
use crate::store::{ForeignOwner, LoosePermissions, StoreError};

/// The length of a key-encryption key: 32 bytes (AES-256).
const KEK_LEN: usize = 32;

/// A key-encryption key (KEK): 32 secret bytes under which a
/// [`RedisKeyStore`](super::RedisKeyStore) encrypts every private key
/// (AES-256-GCM) before it reaches Redis.
///
/// Every KEK has an [`id`](Self::id): the first 8 bytes of a SHA-256 of the
/// key, in hex, recorded next to each ciphertext so that a store configured
/// with several KEKs knows which one opens a record. The id reveals nothing
/// usable about the key.
///
/// Every replica of a fleet needs the same KEK. Keep it out of Redis: a
/// file (0600, owned by the process's user) on each replica, a secret
/// manager. `Debug` shows the id, never the bytes.
#[derive(Clone)]
pub struct Kek {
    key: Arc<LessSafeKey>,
    id: String,
}

impl Kek {
    /// A KEK from its 32 bytes.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for `kek` (the value is never shown) if `bytes`
    /// is not 32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() != KEK_LEN {
            return Err(ConfigError::without_value(
                "kek",
                format!(
                    "a key-encryption key is {KEK_LEN} bytes, not {}",
                    bytes.len()
                ),
            ));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| ConfigError::without_value("kek", "AES-256-GCM refused the key"))?;
        let mut hash = digest::Context::new(&digest::SHA256);
        hash.update(b"tower-jwt-signer key-encryption key id v1\0");
        hash.update(bytes);
        let id = hash.finish().as_ref()[..8]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Ok(Kek {
            key: Arc::new(LessSafeKey::new(key)),
            id,
        })
    }

    /// A fresh KEK of 32 random bytes (from the operating system's
    /// generator, through aws-lc-rs).
    ///
    /// # Panics
    ///
    /// If the system's random generator fails, which aws-lc-rs treats as
    /// fatal.
    pub fn generate() -> Self {
        Self::from_bytes(&random_bytes::<KEK_LEN>()).expect("32 bytes make a KEK")
    }

    /// Reads a KEK file (exactly 32 bytes, nothing else) with the default
    /// checks: `Kek::builder(path).open()`. Blocking.
    ///
    /// The file gets the checks a key file of a
    /// [`DirKeyStore`](crate::DirKeyStore) gets, by the same code: a
    /// regular file, opened without blocking and without following a
    /// symbolic link, except the one form Kubernetes writes Secret volumes
    /// in (`kek -> ..data/kek`); owned by the process's effective uid
    /// ([`ForeignOwner::Refuse`]); neither readable nor writable by group
    /// or others, `chmod 600` ([`LoosePermissions::Refuse`]). The
    /// directories above it are not checked. [`Kek::builder`] accepts other
    /// owners or looser permissions (a Secret volume read by a pod that does
    /// not run as root), or creates the file when it is missing.
    ///
    /// # Errors
    ///
    /// As [`KekBuilder::open`].
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::builder(path).open()
    }

    /// A builder for reading the KEK file at `path` with other checks
    /// ([`foreign_owner`](KekBuilder::foreign_owner),
    /// [`loose_permissions`](KekBuilder::loose_permissions)), or creating
    /// it when it is missing ([`create`](KekBuilder::create)).
    pub fn builder(path: impl Into<PathBuf>) -> KekBuilder {
        KekBuilder {
            path: path.into(),
            rules: FileRules::default(),
            create: false,
        }
    }

    /// The KEK's id: 16 hex digits, recorded with each record it encrypts.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext` with a fresh random 96-bit nonce; returns the
    /// nonce and the ciphertext (with its tag).
    pub(super) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>) {
        let nonce = random_bytes::<NONCE_LEN>();
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .expect("AES-GCM seals any record-sized input");
        (nonce, sealed)
    }

    /// Decrypts and authenticates; `None` when the tag does not match (a
    /// wrong key, altered bytes, other associated data).
    pub(super) fn open(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        let mut buffer = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buffer,
            )
            .ok()?
            .len();
        buffer.truncate(plain);
        Some(buffer)
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Reads (or creates) a KEK file; see [`Kek::builder`]. The setters only
/// record their value; [`open`](Self::open) does the I/O.
#[must_use]
#[derive(Debug, Clone)]
pub struct KekBuilder {
    path: PathBuf,
    rules: FileRules,
    create: bool,
}

impl KekBuilder {
    /// What to do about a file readable or writable by group or others
    /// (default: [`LoosePermissions::Refuse`]). With a Kubernetes Secret
    /// volume and the pod's `fsGroup`, the kubelet adds group read.
    pub fn loose_permissions(mut self, loose: LoosePermissions) -> Self {
        self.rules.loose = loose;
        self
    }

    /// Which owners to accept besides the process's effective uid
    /// (default: [`ForeignOwner::Refuse`], none). A Secret volume's files
    /// are owned by root: a pod that does not run as root needs
    /// [`ForeignOwner::AllowRoot`]. See "Ownership" in the
    /// [`DirKeyStore`](crate::DirKeyStore) docs.
    pub fn foreign_owner(mut self, foreign: ForeignOwner) -> Self {
        self.rules.foreign = foreign;
        self
    }

    /// Whether to create the file when it is missing (default: no), mode
    /// 0600, with 32 random bytes, logged as a `tracing` warning: give
    /// every replica of the fleet that same file. The file appears whole
    /// or not at all (written and synced under a temporary name, then
    /// linked into place), so processes that start together and race to
    /// create it all end up with the winner's key.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Reads the KEK (creating the file first if it is missing and
    /// [`create`](Self::create) allows). Blocking.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] (the file or its directory is missing or cannot
    /// be read or created), [`StoreError::NotRegularFile`],
    /// [`StoreError::ForeignOwner`], [`StoreError::LoosePermissions`], or
    /// [`StoreError::Corrupt`] for a file that is not 32 bytes long; each
    /// names the file.
    pub fn open(self) -> Result<Kek, StoreError> {
        let path = self.path.as_path();
        if let Some(kek) = read(path, self.rules)? {
            return Ok(kek);
        }
        let missing = || StoreError::io("read", path)(io::ErrorKind::NotFound.into());
        if !self.create {
            return Err(missing());
        }
        match create(path) {
            Ok(kek) => {
                tracing::warn!(
                    path = %path.display(),
                    kek = kek.id(),
                    "created the key-encryption key file (32 random bytes, mode 0600): give every replica of the fleet this same file"
                );
                Ok(kek)
            }
            // Another process created it meanwhile: its key it is.
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                read(path, self.rules)?.ok_or_else(missing)
            }
            Err(err) => Err(err),
        }
    }
}

/// Reads the KEK file at `path` with the checks of `rules`, by the code
/// that reads a [`DirKeyStore`](crate::DirKeyStore)'s key files. `None`
/// when it does not exist.
fn read(path: &Path, rules: FileRules) -> Result<Option<Kek>, StoreError> {
    let Some(bytes) = files::read_secret_file(
        path,
        rules,
        KEK_LEN as u64,
        "key-encryption key file readable or writable by group or others",
    )?
    else {
        return Ok(None);
    };
    if bytes.len() != KEK_LEN {
        return Err(StoreError::corrupt(
            path,
            format!(
                "a key-encryption key file holds exactly {KEK_LEN} bytes, this one {}",
                if bytes.len() > KEK_LEN {
                    "more".to_owned()
                } else {
                    bytes.len().to_string()
                }
            ),
        ));
    }
    Ok(Some(Kek::from_bytes(&bytes).expect("32 bytes make a KEK")))
}

/// Creates a KEK file at `path` (mode 0600) holding a fresh KEK, whole or
/// not at all: written and synced under a temporary name, then linked into
/// place. An error of kind `AlreadyExists` when the file exists.
fn create(path: &Path) -> Result<Kek, StoreError> {
    let bytes = random_bytes::<KEK_LEN>();
    let temp = temp_name(path);
    let write = || -> io::Result<()> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::hard_link(&temp, path)
    };
    let written = write();
    let _ = fs::remove_file(&temp);
    written.map_err(StoreError::io("create", path))?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|dir| dir.sync_all());
    }
    Ok(Kek::from_bytes(&bytes).expect("32 bytes make a KEK"))
}

/// `N` bytes from the system's generator.
pub(super) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system's random generator works");
    bytes
}

/// `.<name>.tmp-<pid>-<random>` next to `path`.
fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tag: String = random_bytes::<4>()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    path.with_file_name(format!(".{name}.tmp-{}-{tag}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_id_and_never_the_bytes() {
        let bytes = [7u8; KEK_LEN];
        let kek = Kek::from_bytes(&bytes).unwrap();
        let debug = format!("{kek:?}");
        assert!(debug.contains(kek.id()), "{debug}");
        assert_eq!(kek.id().len(), 16);
        assert!(!debug.contains("[7, 7"), "{debug}");
        assert!(!debug.contains("0707"), "{debug}");
    }

    #[test]
    fn a_kek_is_32_bytes_and_the_refusal_never_shows_them() {
        let err = Kek::from_bytes(&[1; 31]).unwrap_err();
        assert_eq!(err.setting(), "kek");
        assert_eq!(err.value(), None);
        assert!(err.reason().contains("32 bytes, not 31"), "{err}");
    }

    #[test]
    fn seal_and_open_need_the_same_key_and_associated_data() {
        let kek = Kek::generate();
        let (nonce, sealed) = kek.seal(b"aad", b"secret");
        assert_eq!(kek.open(nonce, b"aad", &sealed).unwrap(), b"secret");
        assert!(kek.open(nonce, b"other", &sealed).is_none());
        assert!(Kek::generate().open(nonce, b"aad", &sealed).is_none());
        let (again, _) = kek.seal(b"aad", b"secret");
        assert_ne!(nonce, again, "a fresh nonce each time");
    }

    #[cfg(unix)]
    #[test]
    fn kek_files_are_created_0600_whole_and_checked_when_read() {
        use std::os::unix::fs::PermissionsExt;

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("kek");
        let err = Kek::from_file(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "not created unless asked: {err}"
        );
        let created = Kek::builder(&path).create(true).open().unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEK_LEN as u64);
        assert_eq!(Kek::from_file(&path).unwrap().id(), created.id());
        // There: read, not replaced.
        let again = Kek::builder(&path).create(true).open().unwrap();
        assert_eq!(again.id(), created.id());
        // Lost the race to create it: the winner's key.
        let err = create(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "no temporary file left"
        );

        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = Kek::from_file(&path).unwrap_err();
        assert!(matches!(err, StoreError::LoosePermissions { .. }), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

        let short = tmp.path().join("short");
        fs::write(&short, [1u8; 31]).unwrap();
        fs::set_permissions(&short, fs::Permissions::from_mode(0o600)).unwrap();
        let err = Kek::from_file(&short).unwrap_err();
        assert!(
            err.to_string().contains("exactly 32 bytes, this one 31"),
            "{err}"
        );
        let long = tmp.path().join("long");
        fs::write(&long, [1u8; 33]).unwrap();
        fs::set_permissions(&long, fs::Permissions::from_mode(0o600)).unwrap();
        let err = Kek::from_file(&long).unwrap_err();
        assert!(err.to_string().contains("this one more"), "{err}");
        let err = Kek::from_file(tmp.path()).unwrap_err();
        assert!(matches!(err, StoreError::NotRegularFile { .. }), "{err}");
    }
}
