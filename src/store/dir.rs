//! The directory key store: one file per key.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg(unix)]
use std::os::fd::AsFd;
#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

#[cfg(unix)]
use rustix::fs::{FileType, Mode, OFlags};

use serde_json::{Map, Value};

use super::files::{self, FileRules, OpenDir, not_regular, open_regular};
#[cfg(unix)]
use super::files::{file_type_at, kind_name, regular_file};
use super::txlock::{TxLock, WriteGuard};
use super::{ForeignOwner, KeyStore, LoosePermissions, StoreError, StoreLock, StoredKey};
use crate::clock::unix_seconds;
use crate::keys::{Algorithm, KeyReference, KeyState, Kid, SigningKey};

/// The suffix of key file names: the key with kid `K` lives in
/// `K.key.json`.
const KEY_FILE_SUFFIX: &str = ".key.json";

/// The lock file writers `flock`.
const LOCK_FILE: &str = ".lock";
/// Marks temporary files: `.<kid>.key.json.tmp-<pid>-<n>`.
const TEMP_MARK: &str = ".tmp-";
/// The key file format of a private key (read and written).
const FORMAT_VERSION: u64 = 1;
/// The key file format of a reference to a key kept in a device (read and
/// written); private keys keep format 1, so builds that predate references
/// still read them.
const REFERENCE_FORMAT_VERSION: u64 = 2;
/// The key file format of a private key with its X.509 certificate chain
/// (read and written): format 1 with `x5c` in the private JWK. Keys without
/// a chain keep format 1; a build older than certificate chains refuses a
/// file of format 3 (its version) instead of loading the key without its
/// chain, which would sign past the certificate's expiry.
const CHAIN_FORMAT_VERSION: u64 = 3;
/// No key file is larger (an RSA-8192 private JWK, the largest key, is about 10 KiB).
const MAX_FILE_LEN: u64 = 256 * 1024;

/// A [`KeyStore`] that keeps one file per key in a directory.
///
/// # Files
///
/// The key with kid `K` lives in `K.key.json`. Every
/// other name is ignored: files without the suffix (a `README.md`) and
/// every name starting with `.` (dotfiles, the `.lock` file, temporary
/// files, and Kubernetes' `..data` links). Kids are restricted to
/// `A-Z a-z 0-9 - _ .`, so they are safe as file names; a kid starting with
/// `.` would be a hidden file, and saving one fails with
/// [`StoreError::UnsupportedKid`]. On a case-insensitive file system, a
/// save never replaces a file that holds another kid.
///
/// A key file must be a regular file. Key files (and `.lock`) are opened
/// with `O_NONBLOCK | O_NOFOLLOW` and checked with `fstat` before a byte is
/// read: a FIFO, a socket, a device or a directory named `K.key.json` fails
/// [`load`](KeyStore::load) at once with [`StoreError::NotRegularFile`]
/// naming it (a FIFO used to block the load forever, and with it every
/// writer waiting for the store's lock), and so does a symbolic link, which
/// is never followed. One form of link is read: `K.key.json ->
/// ..data/K.key.json`, the layout Kubernetes writes Secret and ConfigMap
/// volumes in (`..data` is a link to the current timestamped directory,
/// swapped by the kubelet to update the volume atomically); the file is
/// opened through `..data`, still without following a link at the last
/// step, and checked like any other. A save or removal never replaces,
/// deletes or writes through anything but a regular file either.
///
/// The directory is opened once per load (following the configured path,
/// which may itself be a symbolic link); its type, owner and permissions
/// are checked on that open directory and every key file is opened
/// relative to it (`openat`), so a load reads the directory it checked even
/// if the path is renamed or replaced meanwhile. Writes go by path. The
/// parent directories are not checked.
///
/// A key file is JSON (format version 1):
///
/// ```json
/// {
///   "version": 1,
///   "kid": "gateway-1",
///   "state": "active",
///   "created_at": 1767225600,
///   "activated_at": 1767225600,
///   "activates_at": null,
///   "retires_at": null,
///   "private_jwk": { "kty": "EC", "crv": "P-256", "x": "…", "y": "…", "d": "…",
///                    "kid": "gateway-1", "alg": "ES256", "use": "sig" }
/// }
/// ```
///
/// `state` is `next`, `active` or `retiring`; times are Unix seconds (see
/// [`StoredKey`] for the rounding); `private_jwk` is the private key as
/// [`SigningKey::to_private_jwk`] writes it, with its kid and algorithm.
/// Unknown members are refused, so a typo in a hand-written file is caught.
///
/// A key that never leaves its device (a PKCS#11 token) is a file of format
/// version 2, with its algorithm and a
/// [`KeyReference`](crate::keys::KeyReference) instead of the private key:
///
/// ```json
/// {
///   "version": 2,
///   "kid": "Wq8…",
///   "alg": "ES256",
///   "state": "active",
///   "created_at": 1767225600,
///   "activated_at": 1767225600,
///   "activates_at": null,
///   "retires_at": null,
///   "reference": {
///     "provider": "pkcs11",
///     "attributes": { "module": "/usr/lib/softhsm/libsofthsm2.so", "token": "gateway",
///                     "label": "tower-jwt-signer:Wq8…", "id": "5f0c…", "generated": "true" },
///     "public_key": "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE…"
///   }
/// }
/// ```
///
/// `public_key` is the key's DER SubjectPublicKeyInfo in base64url. Such a
/// file holds nothing secret; it gets the same permission checks all the
/// same. Private keys are still written in format 1, which every build
/// reads; a build older than references refuses a file of format 2 (its
/// version), loudly.
///
/// A certificate-backed key (see
/// [`SigningKey::with_certificate_chain`]) is a file of format version 3:
/// format 1 whose `private_jwk` also holds the chain as `x5c` (leaf first,
/// standard base64 DER) and `x5t#S256`, as RFC 7517 writes them. A restart
/// loads the key with its chain. A build older than chains refuses the
/// file (its version) rather than load the key without its chain; a file
/// of format 1 with `x5c` is refused too.
///
/// # Writes
///
/// A save writes a temporary file `.K.key.json.tmp-<pid>-<n>` in the same
/// directory (mode 0600), `fsync`s it, renames it over `K.key.json` and
/// `fsync`s the directory: a reader sees the old file or the new one,
/// never half of one, and a crash leaves the previous state loadable. A
/// temporary file left by a crash is ignored by readers and deleted by the
/// next writer once it holds the lock (no writer can be using it then).
/// The directory is created with mode 0700 when missing.
///
/// # Errors are loud, and nothing is touched
///
/// A key file that cannot be read or parsed, holds a key that is refused
/// (an `alg` the key does not fit, a JWK that is not a private key, another
/// algorithm than [`DirKeyStoreBuilder::algorithm`]) or whose kid does not
/// match its name makes [`load`](KeyStore::load) fail with an error naming
/// the file and the reason, and is logged with `tracing`. Such a file is
/// never rewritten, renamed or deleted: fix or remove it by hand.
///
/// # Permissions (Unix)
///
/// By default ([`LoosePermissions::Refuse`]) the store refuses a directory
/// writable by group or others (they could plant or delete keys) and key
/// files readable or writable by group or others (they hold private keys).
/// A directory readable by others is accepted: file names are kids, which
/// are public. [`LoosePermissions::Warn`] logs instead of refusing.
///
/// # Ownership (Unix)
///
/// By default ([`ForeignOwner::Refuse`]) the directory and every key file
/// must be owned by the process's effective uid, as `ssh` requires of a
/// private key: otherwise [`open`](DirKeyStoreBuilder::open) and
/// [`load`](KeyStore::load) fail with [`StoreError::ForeignOwner`], naming
/// the path and both uids. Whoever owns the directory can put any key in
/// it, so a directory another user created (say `nobody`, even with modes
/// 0700 and 0600) would choose the key a gateway running as root signs
/// with. A directory the store creates itself is owned by the process, and
/// so is every file it writes. The check runs as the file is read; the
/// store never changes an owner.
///
/// Kubernetes: a Secret or ConfigMap volume is written by the kubelet, so
/// its files are owned by root (uid 0); with the pod's `fsGroup` their
/// group is that gid and the kubelet adds group read (a `defaultMode: 0400`
/// file shows as 0440). A pod running as root sees files it owns. A pod
/// running as non-root sees files owned by uid 0: refused by this check,
/// and, with `fsGroup`, group-readable, refused by the permission check.
/// What to do:
///
/// * keys the gateway writes (the rotator) belong on a writable volume (an
///   `emptyDir` or a PersistentVolume): point the store at a
///   **subdirectory** it creates itself (the volume's root is shared with
///   `fsGroup` and, for an `emptyDir`, mode 0777), so that the directory
///   and files are the process's own, 0700 and 0600;
/// * to read keys provisioned as a Secret by a pod that does not run as
///   root, accept root explicitly with
///   [`foreign_owner(ForeignOwner::AllowRoot)`](DirKeyStoreBuilder::foreign_owner)
///   (and, with `fsGroup`, [`LoosePermissions::Warn`]), or copy the keys
///   into the pod's own directory from an init container running as the
///   pod's user.
///
/// On an NFS export with `root_squash`, files created by root are owned by
/// `nobody`: run as another user, or accept that uid with
/// [`ForeignOwner::AllowUid`].
///
/// # Several processes
///
/// Writers take an exclusive `flock` on `.lock` for each change (see
/// [`KeyStore::lock`]); readers take a shared one when the file exists, so
/// they never see half of a change. A reader needs no write access: a
/// follower can read a read-only volume. Locks work on local file systems
/// and on NFS (Linux emulates `flock` with NFS locks).
///
/// # Example
///
/// ```
/// use tower_jwt_signer::registry::KeyState;
/// use tower_jwt_signer::store::{KeyStore, StoredKey};
/// use tower_jwt_signer::{Algorithm, DirKeyStore, SigningKey};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tmp = tempfile::tempdir()?;
/// let store = DirKeyStore::builder(tmp.path().join("keys"))
///     .algorithm(Algorithm::ES256)
///     .open()?;
/// let key = SigningKey::generate(Algorithm::ES256)?;
/// let path = store.key_path(key.kid())?;
/// store.save(&StoredKey::new(key, KeyState::Active, std::time::SystemTime::now()))?;
/// assert!(path.exists());
/// assert_eq!(store.load()?.len(), 1);
///
/// // A key of another algorithm is refused.
/// let rsa = SigningKey::generate(Algorithm::RS256)?;
/// assert!(store.save(&StoredKey::new(rsa, KeyState::Next, std::time::SystemTime::now())).is_err());
/// # Ok(())
/// # }
/// ```
pub struct DirKeyStore {
    dir: PathBuf,
    algorithm: Option<Algorithm>,
    rules: FileRules,
    /// Parsed keys by file name, with the bytes they were parsed from:
    /// polling a directory does not parse unchanged keys again.
    cache: Mutex<HashMap<String, (Vec<u8>, StoredKey)>>,
    tx: Arc<TxLock>,
    temp_counter: AtomicU64,
}

/// Builds (opens) a [`DirKeyStore`]; see [`DirKeyStore::builder`]. The
/// setters only record their value; [`open`](Self::open) opens and checks
/// the directory.
#[must_use]
#[derive(Debug, Clone)]
pub struct DirKeyStoreBuilder {
    dir: PathBuf,
    algorithm: Option<Algorithm>,
    loose: LoosePermissions,
    foreign: ForeignOwner,
    create: bool,
}

impl DirKeyStoreBuilder {
    /// Accept only keys of this algorithm: a stored key of another one
    /// fails [`load`](KeyStore::load) and [`save`](KeyStore::save) with
    /// [`StoreError::WrongAlgorithm`]. By default any algorithm is accepted.
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// What to do about permissions that are too open (default:
    /// [`LoosePermissions::Refuse`]).
    pub fn loose_permissions(mut self, loose: LoosePermissions) -> Self {
        self.loose = loose;
        self
    }

    /// Which owners to accept for the directory and key files besides the
    /// process's effective uid (default: [`ForeignOwner::Refuse`], none).
    /// See "Ownership" in the [`DirKeyStore`] docs.
    pub fn foreign_owner(mut self, foreign: ForeignOwner) -> Self {
        self.foreign = foreign;
        self
    }

    /// Whether to create the directory (mode 0700) when it is missing
    /// (default: yes).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Opens the store: creates the directory if allowed and checks its
    /// permissions. Blocking.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the directory is missing (and not to be
    /// created), cannot be created or is not a directory;
    /// [`StoreError::LoosePermissions`]; [`StoreError::ForeignOwner`].
    pub fn open(self) -> Result<DirKeyStore, StoreError> {
        match fs::metadata(&self.dir) {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound && self.create => {
                let mut builder = fs::DirBuilder::new();
                builder.recursive(true);
                #[cfg(unix)]
                builder.mode(0o700);
                builder
                    .create(&self.dir)
                    .map_err(StoreError::io("create directory", &self.dir))?;
            }
            Err(err) => return Err(StoreError::io("open directory", &self.dir)(err)),
        }
        let store = DirKeyStore {
            dir: self.dir,
            algorithm: self.algorithm,
            rules: FileRules {
                loose: self.loose,
                foreign: self.foreign,
            },
            cache: Mutex::default(),
            tx: Arc::default(),
            temp_counter: AtomicU64::new(0),
        };
        store.open_dir()?;
        Ok(store)
    }
}

impl DirKeyStore {
    /// Opens (and creates, mode 0700, when missing) the key directory with
    /// the default settings. Blocking.
    ///
    /// # Errors
    ///
    /// As [`DirKeyStoreBuilder::open`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::builder(dir).open()
    }

    /// A builder for opening the key directory `dir` with other settings:
    /// one algorithm only, permissions, owners, whether to create it.
    pub fn builder(dir: impl Into<PathBuf>) -> DirKeyStoreBuilder {
        DirKeyStoreBuilder {
            dir: dir.into(),
            algorithm: None,
            loose: LoosePermissions::Refuse,
            foreign: ForeignOwner::Refuse,
            create: true,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The file that holds (or would hold) the key `kid`.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnsupportedKid`] for a kid starting with `.`.
    pub fn key_path(&self, kid: &Kid) -> Result<PathBuf, StoreError> {
        Ok(self.dir.join(file_name(kid)?))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<u8>, StoredKey)>> {
        // A cache: any state it is left in is valid.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens the directory and checks it: a directory, owned by the
    /// process (or an owner [`ForeignOwner`] allows), not writable by group
    /// or others. On Unix the checks, the listing and every key file open of
    /// one load go through the descriptor returned (`fstat`, `openat`), so
    /// they are all about one directory even if its path is renamed or
    /// replaced meanwhile.
    fn open_dir(&self) -> Result<OpenDir, StoreError> {
        // The configured path itself may be a symbolic link: it is followed
        // here, once per load.
        let (dir, meta) = files::open_dir(&self.dir, "open directory")?;
        self.rules.check_dir(&self.dir, &meta)?;
        Ok(dir)
    }

    /// The key file names in the directory, sorted.
    fn key_file_names(&self, dir: &OpenDir) -> Result<Vec<String>, StoreError> {
        let failed = || StoreError::io("list", &self.dir);
        let mut names = Vec::new();
        #[cfg(unix)]
        for entry in rustix::fs::Dir::read_from(&dir.0).map_err(|errno| failed()(errno.into()))? {
            let entry = entry.map_err(|errno| failed()(errno.into()))?;
            // Our names are ASCII; anything else is not ours.
            if let Ok(name) = entry.file_name().to_str()
                && is_key_file_name(name)
            {
                names.push(name.to_owned());
            }
        }
        #[cfg(not(unix))]
        for entry in fs::read_dir(&self.dir).map_err(failed())? {
            let _ = dir;
            let entry = entry.map_err(failed())?;
            if let Some(name) = entry.file_name().to_str()
                && is_key_file_name(name)
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn load_inner(&self) -> Result<Vec<StoredKey>, StoreError> {
        let dir = self.open_dir()?;
        let reading = self.tx.read();
        // The thread that holds the write lock reads inside it; anyone else
        // waits for writers in other processes too.
        let _shared = match reading {
            Some(_) => self.shared_flock(&dir)?,
            None => None,
        };
        let names = self.key_file_names(&dir)?;
        let mut keys = Vec::with_capacity(names.len());
        let mut cache = self.cache();
        for name in &names {
            let path = self.dir.join(name);
            let kid = Kid::new(&name[..name.len() - KEY_FILE_SUFFIX.len()]).map_err(|err| {
                StoreError::corrupt(
                    &path,
                    format!("the file name does not hold a valid kid: {err}"),
                )
            })?;
            let Some(bytes) = self.read_key_file(&dir, name, &path)? else {
                // Removed since the listing (a reader without lock).
                continue;
            };
            if let Some((cached, stored)) = cache.get(name)
                && *cached == bytes
            {
                keys.push(stored.clone());
                continue;
            }
            let stored = parse_key_file(&path, &kid, &bytes, self.algorithm)?;
            cache.insert(name.clone(), (bytes, stored.clone()));
            keys.push(stored);
        }
        cache.retain(|name, _| names.contains(name));
        Ok(keys)
    }

    /// Reads a key file, with the checks every secret file gets (type,
    /// owner, permissions: see [`FileRules::open_secret`]) and its size
    /// checked before a byte is read. `None` when it does not exist (any
    /// more).
    fn read_key_file(
        &self,
        dir: &OpenDir,
        name: &str,
        path: &Path,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((file, meta)) = self.rules.open_secret(
            dir,
            OsStr::new(name),
            path,
            "key file readable or writable by group or others",
        )?
        else {
            return Ok(None);
        };
        if meta.len() > MAX_FILE_LEN {
            return Err(StoreError::corrupt(
                path,
                format!("larger than {} KiB", MAX_FILE_LEN / 1024),
            ));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(MAX_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(StoreError::io("read", path))?;
        Ok(Some(bytes))
    }

    fn shared_flock(&self, dir: &OpenDir) -> Result<Option<File>, StoreError> {
        let path = self.dir.join(LOCK_FILE);
        #[cfg(unix)]
        let opened = open_regular(dir.0.as_fd(), LOCK_FILE, &path)?.or_refuse_link(&path)?;
        #[cfg(not(unix))]
        let opened = {
            let _ = dir;
            open_regular(&path)?
        };
        let file = match opened {
            Some((file, _)) => file,
            // No writer has written here (a read-only volume): nothing to
            // wait for.
            None => return Ok(None),
        };
        fs4::FileExt::lock_shared(&file).map_err(StoreError::io("lock", &path))?;
        Ok(Some(file))
    }

    /// Refuses to replace or delete `path` unless it holds `kid` (on a
    /// case-insensitive file system `a.key.json` is `A.key.json`), or if
    /// it is not a regular file.
    fn ensure_holds(&self, path: &Path, kid: &Kid, action: &str) -> Result<(), StoreError> {
        #[cfg(unix)]
        let opened = open_regular(rustix::fs::CWD, path, path)?.or_refuse_link(path)?;
        #[cfg(not(unix))]
        let opened = open_regular(path)?;
        let Some((file, _)) = opened else {
            return Ok(());
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(StoreError::io("read", path))?;
        let holds = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .is_some_and(|value| value.get("kid").and_then(Value::as_str) == Some(kid.as_str()));
        if holds {
            Ok(())
        } else {
            Err(StoreError::corrupt(
                path,
                format!("refusing to {action} this file: it does not hold key {kid:?}"),
            ))
        }
    }

    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_temp_file_name(name) {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Ok(()) => tracing::warn!(
                        path = %path.display(),
                        "removed a temporary key file left by an interrupted write"
                    ),
                    Err(err) => tracing::warn!(
                        path = %path.display(),
                        error = %err,
                        "cannot remove a temporary key file left by an interrupted write"
                    ),
                }
            }
        }
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        #[cfg(unix)]
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(StoreError::io("sync directory", &self.dir))?;
        Ok(())
    }
}

impl KeyStore for DirKeyStore {
    fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        let result = self.load_inner();
        if let Err(err) = &result {
            tracing::error!(
                store = %self.dir.display(),
                error = %err,
                "cannot load the stored keys"
            );
        }
        result
    }

    fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
        let kid = key.kid();
        let name = file_name(kid)?;
        let path = self.dir.join(&name);
        if let Some(expected) = self.algorithm
            && key.algorithm() != expected
        {
            return Err(StoreError::WrongAlgorithm {
                path,
                found: key.algorithm(),
                expected,
            });
        }
        let bytes = encode(key).map_err(|source| StoreError::Key {
            path: path.clone(),
            source,
        })?;
        self.ensure_holds(&path, kid, "replace")?;
        let temp = self.dir.join(format!(
            ".{name}{TEMP_MARK}{}-{}",
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        write_new_file(&temp, &bytes).inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })?;
        if let Err(err) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(StoreError::io("rename", &temp)(err));
        }
        self.sync_dir()?;
        self.cache().insert(name, (bytes, key.clone()));
        Ok(())
    }

    fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
        // A kid this store cannot name was never stored here.
        let Ok(name) = file_name(kid) else {
            return Ok(());
        };
        let path = self.dir.join(&name);
        self.ensure_holds(&path, kid, "delete")?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(StoreError::io("delete", &path)(err)),
        }
        self.sync_dir()?;
        self.cache().remove(&name);
        Ok(())
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        let tx = self.tx.write();
        let path = self.dir.join(LOCK_FILE);
        let file = open_lock_file(&path)?;
        fs4::FileExt::lock(&file).map_err(StoreError::io("lock", &path))?;
        // Every writer holds this lock while it writes: any temporary file
        // still here is left by a crash.
        self.remove_stale_temp_files();
        Ok(StoreLock::new(DirLock {
            _file: file,
            _tx: tx,
        }))
    }
}

impl fmt::Debug for DirKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirKeyStore")
            .field("dir", &self.dir)
            .field("algorithm", &self.algorithm)
            .field("loose_permissions", &self.rules.loose)
            .field("foreign_owner", &self.rules.foreign)
            .finish_non_exhaustive()
    }
}

/// The exclusive `flock` (released when the file closes) and the in-process
/// write lock.
struct DirLock {
    _file: File,
    _tx: WriteGuard,
}

/// Opens (creating it, mode 0600, when missing) the lock file, without
/// blocking and without following a symbolic link; refuses anything but a
/// regular file.
fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    #[cfg(unix)]
    {
        let flags = OFlags::RDWR
            | OFlags::CREATE
            | OFlags::NONBLOCK
            | OFlags::NOFOLLOW
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::RUSR | Mode::WUSR) {
            Ok(fd) => Ok(regular_file(fd, path, "create lock file")?.0),
            Err(errno) => match file_type_at(rustix::fs::CWD, path) {
                Some(kind) if kind != FileType::RegularFile => {
                    Err(not_regular(path, kind_name(kind)))
                }
                _ => Err(StoreError::io("create lock file", path)(errno.into())),
            },
        }
    }
    #[cfg(not(unix))]
    {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::io("create lock file", path))?;
        Ok(file)
    }
}

fn file_name(kid: &Kid) -> Result<String, StoreError> {
    if kid.starts_with('.') {
        return Err(StoreError::UnsupportedKid {
            kid: kid.clone(),
            reason: "a kid starting with '.' would be a hidden file, which the directory store ignores",
        });
    }
    Ok(format!("{kid}{KEY_FILE_SUFFIX}"))
}

fn is_key_file_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(KEY_FILE_SUFFIX)
}

fn is_temp_file_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(&format!("{KEY_FILE_SUFFIX}{TEMP_MARK}"))
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(StoreError::io("create", path))?;
    file.write_all(bytes)
        .map_err(StoreError::io("write", path))?;
    file.sync_all().map_err(StoreError::io("sync", path))
}

#[derive(serde::Serialize)]
struct KeyFile<'a> {
    version: u64,
    kid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    alg: Option<&'static str>,
    state: &'static str,
    created_at: u64,
    activated_at: Option<u64>,
    activates_at: Option<u64>,
    retires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_jwk: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<Value>,
}

fn encode(key: &StoredKey) -> Result<Vec<u8>, crate::keys::KeyError> {
    let (version, alg, private_jwk, reference) = match (key.key(), key.reference()) {
        (Some(private), _) => {
            let jwk: Value = serde_json::from_str(&private.to_private_jwk()?).map_err(|_| {
                crate::keys::KeyError::Crypto("the private JWK is not JSON".to_owned())
            })?;
            let version = if private.certificate_chain().is_some() {
                CHAIN_FORMAT_VERSION
            } else {
                FORMAT_VERSION
            };
            (version, None, Some(jwk), None)
        }
        (None, Some(reference)) => (
            REFERENCE_FORMAT_VERSION,
            Some(key.algorithm().as_str()),
            None,
            Some(reference.to_json()),
        ),
        (None, None) => unreachable!("a stored key holds a private key or a reference"),
    };
    let file = KeyFile {
        version,
        kid: key.kid().as_str(),
        alg,
        state: key.state().as_str(),
        created_at: unix_seconds(key.created_at()),
        activated_at: key.activated_at().map(unix_seconds),
        activates_at: key.activates_at().map(unix_seconds),
        retires_at: key.retires_at().map(unix_seconds),
        private_jwk,
        reference,
    };
    let mut bytes = serde_json::to_vec_pretty(&file)
        .map_err(|_| crate::keys::KeyError::Crypto("cannot serialise the key file".to_owned()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Members of a key file, taken one by one with messages that never quote
/// a value (a value could be key material).
struct Members<'a> {
    path: &'a Path,
    map: Map<String, Value>,
}

impl Members<'_> {
    fn take(&mut self, name: &str) -> Result<Value, StoreError> {
        self.map
            .remove(name)
            .ok_or_else(|| StoreError::corrupt(self.path, format!("\"{name}\" is missing")))
    }

    fn string(&mut self, name: &str) -> Result<String, StoreError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            _ => Err(StoreError::corrupt(
                self.path,
                format!("\"{name}\" is not a string"),
            )),
        }
    }

    fn time(&mut self, name: &str) -> Result<SystemTime, StoreError> {
        let value = self.take(name)?;
        self.to_time(name, &value)
    }

    fn optional_time(&mut self, name: &str) -> Result<Option<SystemTime>, StoreError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => self.to_time(name, &value).map(Some),
        }
    }

    fn to_time(&self, name: &str, value: &Value) -> Result<SystemTime, StoreError> {
        value
            .as_u64()
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .ok_or_else(|| {
                StoreError::corrupt(
                    self.path,
                    format!("\"{name}\" is not a time in whole seconds since 1970"),
                )
            })
    }
}

fn json_reason(err: &serde_json::Error) -> String {
    match err.classify() {
        serde_json::error::Category::Eof => format!(
            "the file ends too early (truncated?) at line {} column {}",
            err.line(),
            err.column()
        ),
        // Parsing into a `Value`, the other messages never quote content.
        _ => format!("not valid JSON: {err}"),
    }
}

fn parse_key_file(
    path: &Path,
    kid: &Kid,
    bytes: &[u8],
    expected: Option<Algorithm>,
) -> Result<StoredKey, StoreError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|err| StoreError::corrupt(path, json_reason(&err)))?;
    let Value::Object(map) = value else {
        return Err(StoreError::corrupt(path, "not a JSON object"));
    };
    let mut members = Members { path, map };
    let version = members.take("version")?.as_u64();
    if version != Some(FORMAT_VERSION)
        && version != Some(REFERENCE_FORMAT_VERSION)
        && version != Some(CHAIN_FORMAT_VERSION)
    {
        return Err(StoreError::corrupt(
            path,
            format!(
                "\"version\" is not {FORMAT_VERSION} (a private key), {REFERENCE_FORMAT_VERSION} (a reference to a key in a device) or {CHAIN_FORMAT_VERSION} (a private key with its certificate chain), the key file formats this build reads"
            ),
        ));
    }
    let is_reference = version == Some(REFERENCE_FORMAT_VERSION);
    let file_kid = members.string("kid")?;
    if file_kid != kid.as_str() {
        return Err(StoreError::corrupt(
            path,
            format!(
                "the file says kid {:?}, its name says {kid:?}",
                file_kid.chars().take(64).collect::<String>()
            ),
        ));
    }
    let state = match members.string("state")?.as_str() {
        "next" => KeyState::Next,
        "active" => KeyState::Active,
        "retiring" => KeyState::Retiring,
        _ => {
            return Err(StoreError::corrupt(
                path,
                "\"state\" is not \"next\", \"active\" or \"retiring\"",
            ));
        }
    };
    let created_at = members.time("created_at")?;
    let activated_at = members.optional_time("activated_at")?;
    let activates_at = members.optional_time("activates_at")?;
    let retires_at = members.optional_time("retires_at")?;
    if is_reference {
        return parse_reference(members, kid, expected, state, created_at).map(|key| {
            key.with_activated_at(activated_at)
                .with_activates_at(activates_at)
                .with_retires_at(retires_at)
        });
    }
    let Value::Object(jwk) = members.take("private_jwk")? else {
        return Err(StoreError::corrupt(
            path,
            "\"private_jwk\" is not a JSON object",
        ));
    };
    if let Some(extra) = members.map.keys().next() {
        return Err(StoreError::corrupt(
            path,
            format!(
                "unknown member {:?}",
                extra.chars().take(64).collect::<String>()
            ),
        ));
    }
    let key = SigningKey::from_jwk_map(&jwk, None).map_err(|source| StoreError::Key {
        path: path.to_path_buf(),
        source,
    })?;
    if key.kid() != kid {
        return Err(StoreError::corrupt(
            path,
            format!(
                "the private JWK has kid {:?}, the file name says {kid:?}",
                key.kid()
            ),
        ));
    }
    match (
        version == Some(CHAIN_FORMAT_VERSION),
        key.certificate_chain().is_some(),
    ) {
        (true, false) => {
            return Err(StoreError::corrupt(
                path,
                format!(
                    "a file of format {CHAIN_FORMAT_VERSION} without \"x5c\" in its private JWK"
                ),
            ));
        }
        (false, true) => {
            return Err(StoreError::corrupt(
                path,
                format!(
                    "a certificate chain (\"x5c\") in a file of format {FORMAT_VERSION}: a key with a chain is format {CHAIN_FORMAT_VERSION}"
                ),
            ));
        }
        _ => {}
    }
    if let Some(expected) = expected
        && key.algorithm() != expected
    {
        return Err(StoreError::WrongAlgorithm {
            path: path.to_path_buf(),
            found: key.algorithm(),
            expected,
        });
    }
    Ok(StoredKey::new(key, state, created_at)
        .with_activated_at(activated_at)
        .with_activates_at(activates_at)
        .with_retires_at(retires_at))
}

/// The rest of a key file of format 2: `alg` and `reference`.
fn parse_reference(
    mut members: Members<'_>,
    kid: &Kid,
    expected: Option<Algorithm>,
    state: KeyState,
    created_at: SystemTime,
) -> Result<StoredKey, StoreError> {
    let path = members.path;
    let algorithm: Algorithm = members
        .string("alg")?
        .parse()
        .map_err(|_| StoreError::corrupt(path, "\"alg\" is not an algorithm this build knows"))?;
    let reference = members.take("reference")?;
    if let Some(extra) = members.map.keys().next() {
        return Err(StoreError::corrupt(
            path,
            format!(
                "unknown member {:?}",
                extra.chars().take(64).collect::<String>()
            ),
        ));
    }
    if let Some(expected) = expected
        && algorithm != expected
    {
        return Err(StoreError::WrongAlgorithm {
            path: path.to_path_buf(),
            found: algorithm,
            expected,
        });
    }
    let reference = KeyReference::from_json(reference, algorithm, kid)
        .map_err(|reason| StoreError::corrupt(path, reason))?;
    Ok(StoredKey::from_reference(reference, state, created_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_rule() {
        assert!(is_key_file_name("abc.key.json"));
        assert!(is_key_file_name("a.b.key.json"));
        assert!(!is_key_file_name("README.md"));
        assert!(!is_key_file_name(".hidden.key.json"));
        assert!(!is_key_file_name(".abc.key.json.tmp-1-0"));
        assert!(!is_key_file_name("abc.key.json.bak"));
        assert!(is_temp_file_name(".abc.key.json.tmp-1-0"));
        assert!(!is_temp_file_name("abc.key.json"));
        assert!(!is_temp_file_name(".lock"));
        for kid in [".", "..", ".hidden"] {
            assert!(matches!(
                file_name(&Kid::new(kid).unwrap()),
                Err(StoreError::UnsupportedKid { .. })
            ));
        }
        assert_eq!(
            file_name(&Kid::new("a.b").unwrap()).unwrap(),
            "a.b.key.json"
        );
    }

    #[test]
    fn a_reference_is_a_file_of_format_2_without_key_material() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DirKeyStore::builder(tmp.path().join("keys"))
            .algorithm(Algorithm::EdDSA)
            .open()
            .unwrap();
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        let x = crate::b64::decode(key.public_jwk().to_value()["x"].as_str().unwrap()).unwrap();
        let reference = KeyReference::new(
            "pkcs11",
            [("token", "gateway"), ("id", "0a0b")],
            &crate::keys::spki::ed25519(&x),
            Algorithm::EdDSA,
            None,
        )
        .unwrap();
        let stored = StoredKey::from_reference(reference, KeyState::Active, SystemTime::now())
            .with_activated_at(Some(SystemTime::now()));
        store.save(&stored).unwrap();
        let bytes = fs::read(store.key_path(stored.kid()).unwrap()).unwrap();
        let file: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(file["version"], 2);
        assert_eq!(file["alg"], "EdDSA");
        assert_eq!(file["reference"]["attributes"]["id"], "0a0b");
        assert!(file.get("private_jwk").is_none());
        assert_eq!(store.load().unwrap(), vec![stored.clone()]);
        // A fresh store (no cache) reads it too.
        let again = DirKeyStore::open(tmp.path().join("keys")).unwrap();
        assert_eq!(again.load().unwrap(), vec![stored]);
        // Format 2 without its reference, or with a private key, is refused.
        let mut broken = file.clone();
        broken.as_object_mut().unwrap().remove("reference");
        let err = parse_key_file(
            Path::new("k"),
            &Kid::new(file["kid"].as_str().unwrap()).unwrap(),
            &serde_json::to_vec(&broken).unwrap(),
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("\"reference\" is missing"),
            "{err}"
        );
    }
}
