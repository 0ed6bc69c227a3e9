//! Hardening of the directory key store (issue 16, "Key store"): a key
//! directory or key file another user owns is refused, and a key file name
//! that is not a regular file (a FIFO, a symbolic link) is refused without
//! blocking and without being followed.
//!
//! The ownership tests chown files to uid 65534 (`nobody`), which needs
//! root: run as another user, they fail and say so (CI runs as root).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::store::{ForeignOwner, KeyStore, LoosePermissions, StoredKey};
use tower_jwt_signer::{
    Algorithm, DirKeyStore, KeyRegistry, Kid, RegistryError, SigningKey, StoreError,
};

/// The uid `nobody` has on Linux distributions.
const NOBODY: u32 = 65534;

/// The effective uid: the owner of a file this process creates.
fn effective_uid() -> u32 {
    tempfile::tempfile().unwrap().metadata().unwrap().uid()
}

fn require_root() {
    let euid = effective_uid();
    assert_eq!(
        euid, 0,
        "this test needs root (it runs as uid {euid}): it chowns key files to uid {NOBODY} \
         (nobody) to check that the store refuses them; run it as root, as CI does"
    );
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// A fresh key directory (mode 0700) holding one active ES256 key saved by
/// the store itself; returns the temp dir guard, the key directory and the
/// key's kid.
fn dir_with_one_key() -> (tempfile::TempDir, PathBuf, Kid) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let kid = save_one_key(&dir, None);
    (tmp, dir, kid)
}

/// Saves a fresh active ES256 key (with `kid` if given) in `dir` through a
/// store, creating `dir` (0700) when missing.
fn save_one_key(dir: &Path, kid: Option<&str>) -> Kid {
    let store = DirKeyStore::open(dir).unwrap();
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let key = match kid {
        Some(kid) => key.with_kid(Kid::new(kid).unwrap()),
        None => key,
    };
    let kid = key.kid().clone();
    store
        .save(&StoredKey::new(key, KeyState::Active, SystemTime::now()))
        .unwrap();
    kid
}

fn key_file(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.key.json"))
}

/// What a gateway does at start-up: load the stored keys, generate one if
/// there is none.
fn open_registry(dir: &Path) -> Result<KeyRegistry, RegistryError> {
    KeyRegistry::builder()
        .store(DirKeyStore::open(dir)?)
        .generate_if_missing(Algorithm::ES256)
        .build()
}

fn store_error(err: RegistryError) -> StoreError {
    match err {
        RegistryError::Store(err) => err,
        other => panic!("not a store error: {other}"),
    }
}

/// Runs `f` on its own thread and waits for it at most 30 s: a store
/// operation that blocks (on a FIFO) fails the test instead of hanging it.
/// The bound is generous: the operations take milliseconds.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} did not return within 30 s: it blocks"))
}

#[test]
fn a_key_directory_another_user_created_does_not_choose_the_signing_key() {
    require_root();
    // Another user (nobody) pre-creates the key directory the gateway will
    // use, with modes the store accepts (0700, 0600), and puts its own key
    // in it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let planted = save_one_key(&dir, Some("planted"));
    chown(&dir, NOBODY);
    chown(&key_file(&dir, planted.as_str()), NOBODY);
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);

    // The gateway, running as root, refuses the directory instead of
    // signing with the planted key.
    let err = match open_registry(&dir) {
        Ok(registry) => panic!(
            "a directory owned by uid {NOBODY} was loaded; the active key is {:?}",
            registry.current().active().map(|k| k.kid().clone())
        ),
        Err(err) => store_error(err),
    };
    assert!(
        matches!(
            err,
            StoreError::ForeignOwner {
                owner: NOBODY,
                euid: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(dir.as_path()), "{err}");
    let message = err.to_string();
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(message.contains(&format!("uid {NOBODY}")), "{message}");
    assert!(message.contains("foreign_owner"), "{message}");
    // Nothing was written: no key generated, no lock file.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["planted.key.json"]);

    // Accepting root does not accept nobody.
    let err = DirKeyStore::builder(&dir)
        .foreign_owner(ForeignOwner::AllowRoot)
        .open()
        .unwrap_err();
    assert!(matches!(err, StoreError::ForeignOwner { .. }), "{err}");

    // Accepting that uid explicitly loads the directory.
    let store = DirKeyStore::builder(&dir)
        .foreign_owner(ForeignOwner::AllowUid(NOBODY))
        .open()
        .unwrap();
    let keys = store.load().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid(), &planted);
}

#[test]
fn a_key_file_another_user_owns_is_refused_in_a_directory_we_own() {
    require_root();
    let (_tmp, dir, kid) = dir_with_one_key();
    let path = key_file(&dir, kid.as_str());
    chown(&path, NOBODY);
    assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);

    let store = DirKeyStore::open(&dir).unwrap();
    let err = store
        .load()
        .expect_err("a key file owned by another user was loaded");
    assert!(
        matches!(
            err,
            StoreError::ForeignOwner {
                owner: NOBODY,
                euid: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(path.as_path()), "{err}");
    assert!(err.to_string().contains(&format!("uid {NOBODY}")), "{err}");
    // Start-up fails the same way.
    let err = store_error(open_registry(&dir).unwrap_err());
    assert_eq!(err.path(), Some(path.as_path()), "{err}");
    // The file is left as it is.
    assert_eq!(std::fs::metadata(&path).unwrap().uid(), NOBODY);

    // Downgrading the permission check does not lift the ownership check:
    // they are separate settings.
    let err = DirKeyStore::builder(&dir)
        .loose_permissions(LoosePermissions::Warn)
        .open()
        .unwrap()
        .load()
        .unwrap_err();
    assert!(matches!(err, StoreError::ForeignOwner { .. }), "{err}");
    let keys = DirKeyStore::builder(&dir)
        .foreign_owner(ForeignOwner::AllowUid(NOBODY))
        .open()
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(keys[0].kid(), &kid);
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn a_fifo_named_like_a_key_file_is_refused_without_blocking() {
    let (_tmp, dir, _) = dir_with_one_key();
    let fifo = key_file(&dir, "trap");
    mkfifo(&fifo);

    // Loading (start-up, a follower's poll) refuses it and returns.
    let load_dir = dir.clone();
    let err = bounded("loading a directory with a FIFO", move || {
        DirKeyStore::open(&load_dir).unwrap().load()
    })
    .expect_err("a FIFO was loaded as a key file");
    assert!(
        matches!(err, StoreError::NotRegularFile { found, .. } if found.contains("FIFO")),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(fifo.as_path()), "{err}");
    assert!(err.to_string().contains("FIFO"), "{err}");

    // A writer holding the store's lock is not stuck either: saving (here
    // over the FIFO's name) refuses and returns.
    let save_dir = dir.clone();
    let err = bounded("saving over a FIFO", move || {
        let store = DirKeyStore::open(&save_dir).unwrap();
        let _lock = store.lock().unwrap();
        let key = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid(Kid::new("trap").unwrap());
        store.save(&StoredKey::new(key, KeyState::Next, SystemTime::now()))
    })
    .expect_err("a save replaced a FIFO");
    assert!(matches!(err, StoreError::NotRegularFile { .. }), "{err:?}");
    assert_eq!(err.path(), Some(fifo.as_path()), "{err}");
    assert!(err.to_string().contains("FIFO"), "{err}");

    // Start-up (which loads under the lock) fails the same way, promptly.
    let start_dir = dir.clone();
    let err = bounded("start-up", move || open_registry(&start_dir).map(|_| ()))
        .expect_err("start-up accepted a FIFO");
    assert!(err.to_string().contains("FIFO"), "{err}");

    // Nothing was touched.
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn a_symlink_named_like_a_key_file_is_refused_not_followed() {
    let (tmp, dir, _) = dir_with_one_key();
    // A valid key file elsewhere, owned by us with mode 0600: the link,
    // not its target, is what is refused.
    let elsewhere = tmp.path().join("elsewhere");
    save_one_key(&elsewhere, Some("other"));
    let link = key_file(&dir, "other");
    symlink(key_file(&elsewhere, "other"), &link).unwrap();

    let err = DirKeyStore::open(&dir)
        .unwrap()
        .load()
        .expect_err("a symbolic link was followed");
    assert!(
        matches!(
            err,
            StoreError::NotRegularFile {
                found: "a symbolic link",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(link.as_path()), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");

    // A save does not replace the link (nor write through it).
    let save_store = DirKeyStore::open(&dir).unwrap();
    let key = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid(Kid::new("other").unwrap());
    let err = save_store
        .save(&StoredKey::new(key, KeyState::Next, SystemTime::now()))
        .expect_err("a save replaced a symbolic link");
    assert_eq!(err.path(), Some(link.as_path()), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A link to a FIFO is refused as a link, without blocking.
    std::fs::remove_file(&link).unwrap();
    let fifo = tmp.path().join("fifo");
    mkfifo(&fifo);
    symlink(&fifo, &link).unwrap();
    let load_dir = dir.clone();
    let err = bounded("loading a link to a FIFO", move || {
        DirKeyStore::open(&load_dir).unwrap().load()
    })
    .expect_err("a link to a FIFO was followed");
    assert_eq!(err.path(), Some(link.as_path()), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn a_socket_or_a_directory_named_like_a_key_file_is_refused_as_what_it_is() {
    let (_tmp, dir, _) = dir_with_one_key();
    let socket = key_file(&dir, "socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = DirKeyStore::open(&dir).unwrap().load().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotRegularFile {
                found: "a socket",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(socket.as_path()), "{err}");
    std::fs::remove_file(&socket).unwrap();

    let subdir = key_file(&dir, "subdir");
    std::fs::create_dir(&subdir).unwrap();
    let err = DirKeyStore::open(&dir).unwrap().load().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotRegularFile {
                found: "a directory",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(subdir.as_path()), "{err}");
}

/// Kubernetes writes Secret and ConfigMap volumes as `NAME -> ..data/NAME`,
/// `..data -> ..<timestamp>/` (the kubelet swaps `..data` to update them
/// atomically). That one form of link is read; any other link is refused.
#[test]
fn the_kubernetes_volume_layout_is_read_and_other_links_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    let kid = save_one_key(&source, None);
    let name = format!("{kid}.key.json");

    let dir = tmp.path().join("volume");
    let data = dir.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(source.join(&name), data.join(&name)).unwrap();
    std::fs::set_permissions(data.join(&name), std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink("..2026_01_01_00_00_00.000000001", dir.join("..data")).unwrap();
    symlink(format!("..data/{name}"), dir.join(&name)).unwrap();

    let store = DirKeyStore::builder(&dir).create(false).open().unwrap();
    let keys = store.load().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid(), &kid);

    // A link into `..data` under another name is not that form.
    let other = dir.join("other.key.json");
    symlink(format!("..data/{name}"), &other).unwrap();
    let err = store
        .load()
        .expect_err("a link to another name was followed");
    assert_eq!(err.path(), Some(other.as_path()), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn a_fifo_or_a_link_as_the_lock_file_is_refused_without_blocking() {
    // Readers take a shared lock on `.lock` when it exists: a FIFO there
    // must not block them.
    let (tmp, dir, _) = dir_with_one_key();
    let lock = dir.join(".lock");
    let _ = std::fs::remove_file(&lock);
    mkfifo(&lock);
    let load_dir = dir.clone();
    let err = bounded("loading with a FIFO as the lock file", move || {
        DirKeyStore::open(&load_dir).unwrap().load()
    })
    .expect_err("a FIFO was used as the lock file");
    assert!(matches!(err, StoreError::NotRegularFile { .. }), "{err:?}");
    assert_eq!(err.path(), Some(lock.as_path()), "{err}");
    assert!(err.to_string().contains("FIFO"), "{err}");
    // Nor writers.
    let lock_dir = dir.clone();
    let err = bounded("locking with a FIFO as the lock file", move || {
        DirKeyStore::open(&lock_dir).unwrap().lock().map(|_| ())
    })
    .expect_err("a FIFO was locked");
    assert_eq!(err.path(), Some(lock.as_path()), "{err}");

    // A link as the lock file is not followed: nothing is created at its
    // target.
    std::fs::remove_file(&lock).unwrap();
    let target = tmp.path().join("created-through-the-link");
    symlink(&target, &lock).unwrap();
    let err = DirKeyStore::open(&dir)
        .unwrap()
        .lock()
        .map(|_| ())
        .expect_err("the lock file link was followed");
    assert_eq!(err.path(), Some(lock.as_path()), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(!target.exists());
}
