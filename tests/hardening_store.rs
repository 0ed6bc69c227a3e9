//! Hardening of the directory key store (issue 16, "Key store"): a key
//! directory or key file another user owns is refused.
//!
//! The ownership tests chown files to uid 65534 (`nobody`), which needs
//! root: run as another user, they fail and say so (CI runs as root).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tower_jwt_signer::store::{
    DirKeyStore, ForeignOwner, KeyStore, LoosePermissions, StoreError, StoredKey,
};
use tower_jwt_signer::{Algorithm, KeyRegistry, KeyState, Kid, RegistryError, SigningKey};

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
    let err = DirKeyStore::options(&dir)
        .foreign_owner(ForeignOwner::AllowRoot)
        .open()
        .unwrap_err();
    assert!(matches!(err, StoreError::ForeignOwner { .. }), "{err}");

    // Accepting that uid explicitly loads the directory.
    let store = DirKeyStore::options(&dir)
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
    let err = DirKeyStore::options(&dir)
        .loose_permissions(LoosePermissions::Warn)
        .open()
        .unwrap()
        .load()
        .unwrap_err();
    assert!(matches!(err, StoreError::ForeignOwner { .. }), "{err}");
    let keys = DirKeyStore::options(&dir)
        .foreign_owner(ForeignOwner::AllowUid(NOBODY))
        .open()
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(keys[0].kid(), &kid);
}
