//! Key storage: keys that survive a restart, and a key directory shared by
//! replicas.
//!
//! A [`KeyStore`] keeps each key of a [`KeyRegistry`] with its lifecycle
//! metadata (state, created, activated, activates at, retires at). Two
//! stores come with the crate:
//!
//! * [`MemoryKeyStore`]: in memory, for tests and for registries in one
//!   process that share keys;
//! * [`DirKeyStore`]: one file per key in a directory, written atomically,
//!   readable by several processes (see its docs for the file format, the
//!   naming rule and the permission checks);
//! * `RedisKeyStore` (feature `redis`, module `store::redis`): one
//!   key set for a fleet of gateways, encrypted at rest, with a leader
//!   lease that fences every write and pub/sub notifications.
//!
//! A registry without a store (the default) keeps its keys in memory only.
//!
//! # Write-through: a key is durable before it signs
//!
//! A registry built with [`KeyRegistryBuilder::store`](crate::registry::KeyRegistryBuilder::store)
//! loads every stored key at start-up, with its kid and state, and writes
//! every later change through the store **before** publishing it. If the
//! store fails, nothing is published and the change returns
//! [`RegistryError::Store`](crate::RegistryError::Store). Each change
//! reaches the store as one [`KeyStore::commit`] of a [`StoreChange`]. With
//! the default `commit` the store sees removals first, then keys leaving or
//! not reaching the active state, then the key becoming active: a crash in
//! the middle never leaves two active keys behind, only (at worst) none,
//! which fails closed until the [rotator](crate::rotation) activates one (or
//! a restart with
//! [`generate_if_missing`](crate::registry::KeyRegistryBuilder::generate_if_missing)
//! activates the published next key). A store that overrides `commit` with
//! one transaction never holds part of a change.
//!
//! # What a store keeps of a key
//!
//! A [`SigningKey`] held in this process is stored with its private key
//! (as a private JWK: [`DirKeyStore`] writes it in a 0600 file, Redis
//! encrypted under the fleet's key-encryption key). A key that never leaves
//! its device (a PKCS#11 token, feature `pkcs11`) is stored as a
//! [`KeyReference`](crate::keys::KeyReference): the provider, where the key
//! is (for PKCS#11 the module, the token label, the key's label and id) and
//! its public key, never key material; the registry's
//! [`KeyFactory`](crate::keys::KeyFactory) opens it again at start-up and
//! checks that it is the key that was stored. Files and records written
//! before references existed read as before. Any other
//! [`SigningBackend`](crate::keys::SigningBackend) (one with no
//! [`reference`](crate::keys::SigningBackend::reference)) cannot be stored:
//! adding it to a registry built on a store fails with
//! [`StoreError::NotStorable`].
//!
//! # Blocking
//!
//! Store operations are blocking I/O (and [`DirKeyStore`] calls `fsync`).
//! With a store, every registry change and [`KeyRegistry::reload`] block
//! the calling thread for that long: in async code, call them from
//! `tokio::task::spawn_blocking`. The [`KeyRotator`](crate::rotation::KeyRotator)
//! and the [`StoreFollower`](crate::registry::StoreFollower) already do.
//!
//! # Replicas: one writer, many readers
//!
//! Several processes may share one key directory (a shared volume, a
//! Kubernetes Secret). The recommended setup is **one writer**, which runs
//! the [`KeyRotator`](crate::KeyRotator), and **many readers**, which sign
//! with the active key and serve the JWKS, each following the directory
//! with a [`StoreFollower`](crate::registry::StoreFollower) (or calling
//! [`KeyRegistry::reload`]). A follower sees another process's change
//! within one poll interval; give the rotation policy that interval
//! ([`RotationPolicyBuilder::follower_poll_interval`](crate::rotation::RotationPolicyBuilder::follower_poll_interval))
//! so that the next key is published and the old one retained long enough
//! for every replica. Build every replica's registry with the writer's
//! [`token_ttl`](crate::registry::KeyRegistryBuilder::token_ttl) and
//! [`jwks_max_age`](crate::registry::KeyRegistryBuilder::jwks_max_age)
//! (they are settings of the process, not stored with the keys): the
//! writer's rotator plans with its own, and a replica that signed longer
//! tokens or served a longer max-age would outlive that plan.
//!
//! Two writers are safe too: each change takes the store's write lock
//! ([`KeyStore::lock`]; a `flock` on the directory's `.lock` file for
//! [`DirKeyStore`]), re-reads the stored keys, applies the change to what it
//! read and writes the difference. No file is ever half-written and no
//! writer drops a key it did not know about; the rotator's steps are
//! conditional ("publish a next key unless there is one"), so two rotators
//! do not rotate twice.
//!
//! # Example
//!
//! ```
//! use tower_jwt_signer::{Algorithm, DirKeyStore, KeyRegistry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! let dir = tmp.path().join("keys"); // created 0700 when missing
//!
//! // First start: no key yet, one is generated and saved before it signs.
//! let registry = KeyRegistry::builder()
//!     .store(DirKeyStore::open(&dir)?)
//!     .generate_if_missing(Algorithm::ES256)
//!     .build()?;
//! let kid = registry.current().active().unwrap().kid().clone();
//! drop(registry);
//!
//! // A restart loads the same key, with the same kid.
//! let registry = KeyRegistry::builder()
//!     .store(DirKeyStore::open(&dir)?)
//!     .generate_if_missing(Algorithm::ES256)
//!     .build()?;
//! assert_eq!(registry.current().active().unwrap().kid(), &kid);
//! # Ok(())
//! # }
//! ```
//!
//! [`KeyRegistry`]: crate::registry::KeyRegistry
//! [`KeyRegistry::reload`]: crate::registry::KeyRegistry::reload
//! [`SigningKey`]: crate::keys::SigningKey

mod change;
mod dir;
pub(crate) mod files;
mod memory;
mod notify;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod stored;
mod txlock;

use std::any::Any;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::keys::{Algorithm, KeyError, Kid};

pub use change::{KeySave, StoreChange};
pub use dir::{DirKeyStore, DirKeyStoreBuilder};
pub use files::{ForeignOwner, LoosePermissions};
pub use memory::MemoryKeyStore;
pub use notify::{StoreNotifications, StoreNotifier};
pub use stored::StoredKey;

/// Where a [`KeyRegistry`](crate::registry::KeyRegistry) keeps its keys across restarts.
///
/// See the [module docs](self) for how the registry uses it.
///
/// # Implementing
///
/// * [`save`](Self::save) creates or replaces the entry of the key's kid and
///   returns only once the key is durable; an entry is never seen half
///   written.
/// * [`load`](Self::load) returns every stored key. While another thread
///   or process holds the store's [`lock`](Self::lock), `load` waits for it
///   (a reader never sees half a change); when the **calling thread** holds
///   the lock, `load` must not wait (the registry loads inside its lock).
/// * [`remove`](Self::remove) of a kid that is not stored succeeds.
/// * [`commit`](Self::commit) writes one change of several keys; its default
///   makes the writes one by one, in an order that never leaves two active
///   keys. A store that can apply several writes as one transaction should
///   override it.
/// * [`is_leader`](Self::is_leader) says whether this process may make the
///   changes nobody asked for by hand (rotation, the first key, writing
///   back the keys of a store found empty); the default says yes. A store
///   shared by a fleet answers from its leader lease.
/// * [`notifications`](Self::notifications) lets a store that can push its
///   changes (Redis pub/sub) wake followers at once; the default pushes
///   nothing and followers poll.
/// * The operations block; the registry calls them from the thread that
///   changes it.
/// * `Debug` must never print key material or credentials.
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// Loads every stored key.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] naming the entry that could not be read and why.
    fn load(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Saves one key, replacing the entry with the same kid.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; the previous entry, if any, is unchanged.
    fn save(&self, key: &StoredKey) -> Result<(), StoreError>;

    /// Removes the entry of `kid`, if there is one.
    ///
    /// # Errors
    ///
    /// A [`StoreError`]; the entry is unchanged.
    fn remove(&self, kid: &Kid) -> Result<(), StoreError>;

    /// Takes the store's write lock, held until the returned guard is
    /// dropped. Writers (every registry change) hold it while they read the
    /// stored keys and write their change, so that two writers never work
    /// from stale state. The default does not lock: fine for a store that
    /// only one registry writes to.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the lock cannot be taken.
    fn lock(&self) -> Result<StoreLock, StoreError> {
        Ok(StoreLock::none())
    }

    /// Writes one change of the stored keys: its removals and its saves, all
    /// of them or, as far as the store can undo what it wrote, none.
    ///
    /// A registry calls it once per change, while it holds the store's
    /// [`lock`](Self::lock), with the `previous` values it has just
    /// [`load`](Self::load)ed; then it publishes the change, or nothing if
    /// `commit` fails.
    ///
    /// The default is **ordered, not atomic**. It makes one
    /// [`remove`](Self::remove) or [`save`](Self::save) at a time: the
    /// removals, then the saves in the order of [`StoreChange::saves`] (the
    /// keys that are not active, then the active key), so that a change cut
    /// short never leaves two active keys behind, at worst none. Readers that
    /// wait for the lock, as [`load`](Self::load) must, never see part of a
    /// change. When a write fails, it undoes what it wrote, newest first
    /// (saving back each previous value, removing each new key, saving back
    /// each removed one), logs with `tracing` any undo that fails (the store
    /// then differs from the published keys until the next change), and
    /// returns the error of the failed write. A process that dies in the
    /// middle undoes nothing: the store keeps the writes made so far.
    ///
    /// Override it when the store can apply all the writes as one
    /// transaction (Redis `MULTI`/`EXEC`, a SQL transaction): then no crash
    /// and no reader ever sees part of a change. An override must keep the
    /// contract: on success every write is durable, on failure the stored
    /// keys are those of before the change.
    ///
    /// # Errors
    ///
    /// The [`StoreError`] of the write that failed.
    fn commit(&self, change: &StoreChange) -> Result<(), StoreError> {
        commit_in_order(self, change)
    }

    /// Whether this process leads the writers of this store now: only the
    /// leader makes the changes nobody asked for by hand, that is the
    /// [`KeyRotator`](crate::rotation::KeyRotator)'s steps, the first key of
    /// an empty store
    /// ([`generate_if_missing`](crate::registry::KeyRegistryBuilder::generate_if_missing)),
    /// and writing back the keys of a store found empty
    /// ([`KeyRegistry::reload`](crate::registry::KeyRegistry::reload)).
    /// Other processes leave them to the leader and follow the store.
    ///
    /// The default, `Ok(true)`, suits a store whose writers take turns on
    /// its [`lock`](Self::lock) (every [`DirKeyStore`] or
    /// [`MemoryKeyStore`] writer is its own leader: the rotator's steps are
    /// conditional, so two of them do not rotate twice). A store shared by
    /// a fleet answers from a lease that one process holds at a time (see
    /// `RedisKeyStore`, feature `redis`).
    ///
    /// It is called from async code and must not block: answer from what
    /// the store already knows.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the store cannot tell (it cannot be reached):
    /// the rotator then waits, with a warning each time it tries, and the
    /// registry keeps signing with the keys it holds.
    fn is_leader(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Notifications of changes that other processes make, for a store that
    /// can push them (Redis pub/sub): a
    /// [`StoreFollower`](crate::registry::StoreFollower) reloads as soon as one arrives, and keeps polling
    /// at its interval for the ones that are lost. The default, `None`,
    /// pushes nothing: followers poll.
    ///
    /// Called by the follower from inside its tokio task, once per
    /// follower; the store may spawn a task that feeds the
    /// [`StoreNotifier`] and stops when it
    /// [`is_closed`](StoreNotifier::is_closed).
    fn notifications(&self) -> Option<StoreNotifications> {
        None
    }
}

/// [`KeyStore::commit`]'s default: one write at a time, in order, undone
/// (best effort) when one fails.
fn commit_in_order<S: KeyStore + ?Sized>(
    store: &S,
    change: &StoreChange,
) -> Result<(), StoreError> {
    enum Written<'a> {
        Removed(&'a StoredKey),
        Saved(&'a KeySave),
    }
    let mut written = Vec::new();
    let mut write_all = || -> Result<(), StoreError> {
        for removed in change.removals() {
            store.remove(removed.kid())?;
            written.push(Written::Removed(removed));
        }
        for save in change.saves() {
            store.save(save.key())?;
            written.push(Written::Saved(save));
        }
        Ok(())
    };
    let Err(err) = write_all() else {
        return Ok(());
    };
    for undo in written.into_iter().rev() {
        let (kid, undone) = match undo {
            Written::Removed(removed) => (removed.kid(), store.save(removed)),
            Written::Saved(save) => (
                save.key().kid(),
                match save.previous() {
                    Some(previous) => store.save(previous),
                    None => store.remove(save.key().kid()),
                },
            ),
        };
        if let Err(undo_err) = undone {
            tracing::error!(
                kid = %kid,
                error = %undo_err,
                "cannot roll back a partly written key change; the store may differ from the published keys"
            );
        }
    }
    Err(err)
}

impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        (**self).load()
    }

    fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
        (**self).save(key)
    }

    fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
        (**self).remove(kid)
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        (**self).lock()
    }

    fn commit(&self, change: &StoreChange) -> Result<(), StoreError> {
        (**self).commit(change)
    }

    fn is_leader(&self) -> Result<bool, StoreError> {
        (**self).is_leader()
    }

    fn notifications(&self) -> Option<StoreNotifications> {
        (**self).notifications()
    }
}

/// A store's write lock, released when dropped. See [`KeyStore::lock`].
#[must_use = "the lock is released when dropped: hold it while the store must stay locked"]
pub struct StoreLock {
    guard: Option<Box<dyn Any + Send>>,
}

impl StoreLock {
    /// A lock that holds nothing.
    pub fn none() -> Self {
        StoreLock { guard: None }
    }

    /// A lock held until `guard` is dropped.
    pub fn new(guard: impl Any + Send) -> Self {
        StoreLock {
            guard: Some(Box::new(guard)),
        }
    }

    /// Whether this lock holds anything.
    pub fn is_held(&self) -> bool {
        self.guard.is_some()
    }
}

impl fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreLock")
            .field("held", &self.is_held())
            .finish()
    }
}

/// Why a key store operation failed. Messages name the file and the reason
/// and never contain key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O operation failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`"read"`, `"create"`, `"rename"`, ...).
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// A key file that cannot be parsed: not JSON, truncated, a missing or
    /// wrongly typed member, a kid that does not match the file name, ...
    /// The file is left as it is.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file whose key was refused (for example an `alg` the key does
    /// not fit). The file is left as it is.
    Key {
        /// The file.
        path: PathBuf,
        /// Why the key was refused.
        source: KeyError,
    },
    /// A key of another algorithm than the store is configured for
    /// ([`DirKeyStoreBuilder::algorithm`]).
    WrongAlgorithm {
        /// The file.
        path: PathBuf,
        /// The key's algorithm.
        found: Algorithm,
        /// The store's algorithm.
        expected: Algorithm,
    },
    /// A directory writable by group or others, or a key file readable or
    /// writable by them. See [`LoosePermissions`].
    LoosePermissions {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// What is too open.
        reason: &'static str,
    },
    /// A key directory or key file owned by another user than the one the
    /// process runs as: whoever owns them chooses the signing key. See
    /// [`ForeignOwner`].
    ForeignOwner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
        /// The process's effective uid.
        euid: u32,
    },
    /// A key file name (or the lock file) that is not a regular file: a
    /// FIFO, a symbolic link, a directory, a socket, a device. It is refused
    /// without being read (a FIFO would block) or followed, and left as it
    /// is.
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is: `"a FIFO (named pipe)"`, `"a symbolic link"`, ...
        found: &'static str,
    },
    /// A kid this store cannot hold (for [`DirKeyStore`]: a kid starting
    /// with `.`, which would be a hidden file).
    UnsupportedKid {
        /// The kid.
        kid: Kid,
        /// Why.
        reason: &'static str,
    },
    /// A key that is neither a [`SigningKey`](crate::keys::SigningKey)
    /// held in this process nor a backend that gives a
    /// [`reference`](crate::keys::SigningBackend::reference): the store can
    /// keep neither its private key nor where it is.
    NotStorable {
        /// The kid.
        kid: Kid,
    },
    /// Another store implementation failed.
    Other(Box<dyn std::error::Error + Send + Sync>),
    /// The store cannot be reached, or did not answer in time (Redis down,
    /// a timeout, a refused login). Nothing was written. The registry keeps
    /// its keys; the rotator waits and tries again.
    Unavailable {
        /// The store, credentials redacted.
        store: String,
        /// What failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// This process does not lead the store's writers (another process
    /// holds the leader lease, or none does): the change was refused before
    /// anything was sent. See [`KeyStore::is_leader`].
    NotLeader {
        /// The store, credentials redacted.
        store: String,
    },
    /// The store refused the write, atomically: its lease no longer held
    /// this process's token when the write arrived (the process stalled
    /// past its lease, and another one leads now). Nothing was written.
    Fenced {
        /// The store, credentials redacted.
        store: String,
    },
    /// The store changed between the load this change was made from and
    /// its commit (another writer, or the store was emptied). Nothing was
    /// written; the change can be tried again.
    Conflict {
        /// The store, credentials redacted.
        store: String,
        /// The store's version when the change was loaded.
        loaded: u64,
        /// Its version when the change arrived.
        found: u64,
    },
    /// A stored record that cannot be decrypted or parsed (a wrong
    /// key-encryption key, a corrupted record, a record moved to another
    /// kid or fleet). The record is left as it is.
    CorruptRecord {
        /// The store, credentials redacted.
        store: String,
        /// The kid the record is stored under (cut to 64 characters).
        kid: String,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// The file or directory the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StoreError::Io { path, .. }
            | StoreError::Corrupt { path, .. }
            | StoreError::Key { path, .. }
            | StoreError::WrongAlgorithm { path, .. }
            | StoreError::LoosePermissions { path, .. }
            | StoreError::ForeignOwner { path, .. }
            | StoreError::NotRegularFile { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Whether the change was refused because this process does not lead
    /// the store's writers: [`NotLeader`](Self::NotLeader) (refused before
    /// sending) or [`Fenced`](Self::Fenced) (refused by the store). The
    /// rotator takes either as "not my turn".
    pub fn is_not_leader(&self) -> bool {
        matches!(
            self,
            StoreError::NotLeader { .. } | StoreError::Fenced { .. }
        )
    }

    /// Whether the store could not be reached
    /// ([`Unavailable`](Self::Unavailable)).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            path,
            action,
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            StoreError::Corrupt { path, reason } => {
                write!(f, "{}: not a valid key file: {reason}", path.display())
            }
            StoreError::Key { path, source } => {
                write!(f, "{}: key refused: {source}", path.display())
            }
            StoreError::WrongAlgorithm {
                path,
                found,
                expected,
            } => write!(
                f,
                "{}: its key is for {found}, but this key store is for {expected} keys",
                path.display()
            ),
            StoreError::LoosePermissions { path, mode, reason } => write!(
                f,
                "{}: permissions {:04o} are too open ({reason}); restrict them (chmod {} {})",
                path.display(),
                mode & 0o7777,
                if reason.starts_with("directory") {
                    "700"
                } else {
                    "600"
                },
                path.display()
            ),
            StoreError::ForeignOwner { path, owner, euid } => write!(
                f,
                "{}: owned by uid {owner}, but this process runs as uid {euid}; whoever owns a key directory or key file chooses the signing key (chown {euid} {}, or accept that owner with DirKeyStoreBuilder::foreign_owner)",
                path.display(),
                path.display()
            ),
            StoreError::NotRegularFile { path, found } => write!(
                f,
                "{}: refused without reading it: it is {found}, not a regular file; a key file must be a regular file (remove it)",
                path.display()
            ),
            StoreError::UnsupportedKid { kid, reason } => {
                write!(f, "kid {kid:?} cannot be stored: {reason}")
            }
            StoreError::NotStorable { kid } => write!(
                f,
                "key {kid:?} is neither a SigningKey held in this process nor a key whose backend gives a reference to where it is kept; a key store can keep neither"
            ),
            StoreError::Other(err) => err.fmt(f),
            StoreError::Unavailable { store, source } => {
                write!(f, "key store {store} unavailable: {source}")
            }
            StoreError::NotLeader { store } => write!(
                f,
                "key store {store}: this process does not hold the leader lease; the leader makes this change"
            ),
            StoreError::Fenced { store } => write!(
                f,
                "key store {store} refused the write: the leader lease no longer holds this process's token (it stalled past its lease and another process leads); nothing was written"
            ),
            StoreError::Conflict {
                store,
                loaded,
                found,
            } => write!(
                f,
                "key store {store} changed during the change (version {loaded} when loaded, {found} now); nothing was written"
            ),
            StoreError::CorruptRecord { store, kid, reason } => write!(
                f,
                "key store {store}: the record of kid {kid:?} {reason}; it is left as it is"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Key { source, .. } => Some(source),
            StoreError::Other(err) => Some(err.as_ref()),
            StoreError::Unavailable { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::SystemTime;

    use super::*;
    use crate::keys::{KeyState, SigningKey};

    /// A memory store that records its writes and fails the save of one kid.
    #[derive(Debug, Default)]
    struct Recording {
        inner: MemoryKeyStore,
        writes: Mutex<Vec<String>>,
        fail_save_of: Option<Kid>,
    }

    impl KeyStore for Recording {
        fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
            self.inner.load()
        }

        fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
            self.writes
                .lock()
                .unwrap()
                .push(format!("save {} {}", key.kid(), key.state()));
            if self.fail_save_of.as_ref() == Some(key.kid()) {
                return Err(StoreError::Other("disk full".into()));
            }
            self.inner.save(key)
        }

        fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
            self.writes.lock().unwrap().push(format!("remove {kid}"));
            self.inner.remove(kid)
        }
    }

    fn stored(state: KeyState) -> StoredKey {
        StoredKey::new(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            state,
            SystemTime::now(),
        )
    }

    fn sorted(mut keys: Vec<StoredKey>) -> Vec<StoredKey> {
        keys.sort_by(|a, b| a.kid().cmp(b.kid()));
        keys
    }

    /// A rotation as the registry writes it: the old active key retires, a
    /// next key becomes active, an expired key leaves.
    fn rotation() -> (Vec<StoredKey>, StoreChange, Vec<StoredKey>) {
        let (old, next, expired) = (
            stored(KeyState::Active),
            stored(KeyState::Next),
            stored(KeyState::Retiring),
        );
        let retired = StoredKey::new(
            Arc::clone(old.key().unwrap()),
            KeyState::Retiring,
            old.created_at(),
        );
        let activated = StoredKey::new(
            Arc::clone(next.key().unwrap()),
            KeyState::Active,
            next.created_at(),
        );
        let change = StoreChange::new()
            .save(activated.clone(), Some(next.clone()))
            .save(retired.clone(), Some(old.clone()))
            .remove(expired.clone());
        (vec![old, next, expired], change, vec![retired, activated])
    }

    #[test]
    fn the_default_commit_removes_then_saves_the_active_key_last() {
        let (before, change, after) = rotation();
        let store = Recording::default();
        for key in &before {
            store.inner.save(key).unwrap();
        }
        store.commit(&change).unwrap();
        assert_eq!(
            *store.writes.lock().unwrap(),
            vec![
                format!("remove {}", before[2].kid()),
                format!("save {} retiring", before[0].kid()),
                format!("save {} active", before[1].kid()),
            ]
        );
        assert_eq!(sorted(store.load().unwrap()), sorted(after));
    }

    #[test]
    fn a_failed_commit_undoes_what_it_wrote_newest_first() {
        let (before, change, _) = rotation();
        // The active key's save, the last write, fails.
        let store = Recording {
            fail_save_of: Some(before[1].kid().clone()),
            ..Recording::default()
        };
        for key in &before {
            store.inner.save(key).unwrap();
        }
        let err = store.commit(&change).unwrap_err();
        assert!(matches!(err, StoreError::Other(_)), "{err}");
        let writes = store.writes.lock().unwrap().clone();
        assert_eq!(
            writes[3..],
            [
                format!("save {} active", before[0].kid()),
                format!("save {} retiring", before[2].kid()),
            ],
            "undone newest first: the retired key, then the removed one"
        );
        assert_eq!(sorted(store.load().unwrap()), sorted(before));
    }

    #[test]
    fn an_arc_forwards_commit_to_the_store_inside() {
        #[derive(Debug, Default)]
        struct Atomic {
            commits: Mutex<usize>,
        }
        impl KeyStore for Atomic {
            fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
                Ok(Vec::new())
            }
            fn save(&self, _: &StoredKey) -> Result<(), StoreError> {
                unreachable!("an overriding commit does not save key by key")
            }
            fn remove(&self, _: &Kid) -> Result<(), StoreError> {
                unreachable!("an overriding commit does not remove key by key")
            }
            fn commit(&self, _: &StoreChange) -> Result<(), StoreError> {
                *self.commits.lock().unwrap() += 1;
                Ok(())
            }
        }
        let store = Arc::new(Atomic::default());
        let shared: Arc<dyn KeyStore> = Arc::clone(&store) as Arc<dyn KeyStore>;
        Arc::new(shared)
            .commit(&StoreChange::new().save(stored(KeyState::Active), None))
            .unwrap();
        assert_eq!(*store.commits.lock().unwrap(), 1);
    }
}
