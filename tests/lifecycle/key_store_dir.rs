//! The directory key store: file format, naming rule, permissions, errors
//! that name the file and leave the disk untouched, crash safety, and the
//! registry's write-through.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::lifecycle::dir_picture;
use serde_json::Value;
use tower_jwt_signer::keys::{PublicJwk, SigningBackend};
use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::store::{KeyStore, LoosePermissions, MemoryKeyStore, StoreLock, StoredKey};
use tower_jwt_signer::{
    Algorithm, DirKeyStore, KeyRegistry, Kid, RegistryError, SigningKey, StoreError,
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn ceil(time: SystemTime) -> SystemTime {
    let since = time.duration_since(UNIX_EPOCH).unwrap();
    at(since.as_secs() + u64::from(since.subsec_nanos() > 0))
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A fresh directory with one valid active ES256 key file; returns the
/// temp dir guard, the key directory and the key's kid.
fn dir_with_one_key() -> (tempfile::TempDir, PathBuf, Kid) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(&dir).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let kid = registry.current().active().unwrap().kid().clone();
    (tmp, dir, kid)
}

fn open_registry(dir: &Path) -> Result<KeyRegistry, RegistryError> {
    KeyRegistry::builder()
        .store(DirKeyStore::open(dir)?)
        .generate_if_missing(Algorithm::ES256)
        .build()
}

#[test]
fn every_algorithm_round_trips_with_its_kid_state_and_times() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/keys");
    let store = DirKeyStore::open(&dir).unwrap();
    // Created 0700, parents too.
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&tmp.path().join("a")), 0o700);

    let states = [KeyState::Next, KeyState::Active, KeyState::Retiring];
    let mut saved = Vec::new();
    for (i, alg) in Algorithm::ALL.into_iter().enumerate() {
        let key = SigningKey::generate(alg).unwrap();
        // A custom kid for one of them: kept as is.
        let key = if alg == Algorithm::EdDSA {
            key.with_kid(Kid::new("custom-kid_1.v2").unwrap())
        } else {
            key
        };
        let state = if alg == Algorithm::ES256 {
            KeyState::Active
        } else {
            states[i % 2 * 2]
        };
        let stored = StoredKey::new(key, state, at(1_000 + i as u64))
            .with_activated_at(Some(at(2_000)))
            .with_activates_at((state == KeyState::Next).then(|| at(3_000)))
            .with_retires_at((state == KeyState::Retiring).then(|| at(4_000)));
        store.save(&stored).unwrap();
        let path = store.key_path(stored.kid()).unwrap();
        assert_eq!(mode(&path), 0o600, "{alg}");
        assert!(path.ends_with(format!("{}.key.json", stored.kid())));
        saved.push(stored);
    }
    // A new store instance (no cache) reads everything back.
    let loaded = DirKeyStore::open(&dir).unwrap().load().unwrap();
    assert_eq!(loaded.len(), saved.len());
    for stored in &saved {
        let again = loaded.iter().find(|k| k.kid() == stored.kid()).unwrap();
        assert_eq!(again, stored);
        assert_eq!(again.algorithm(), stored.algorithm());
        // Same private key: same signature verification key, same kid.
        assert_eq!(again.public_jwk(), stored.public_jwk());
    }
    // The file is the documented format.
    let es256 = saved
        .iter()
        .find(|k| k.algorithm() == Algorithm::ES256)
        .unwrap();
    let file: Value =
        serde_json::from_slice(&std::fs::read(store.key_path(es256.kid()).unwrap()).unwrap())
            .unwrap();
    assert_eq!(file["version"], 1);
    assert_eq!(file["kid"], es256.kid().as_str());
    assert_eq!(file["state"], "active");
    assert_eq!(file["created_at"], 1_006); // ES256 is the seventh algorithm
    assert_eq!(file["activated_at"], 2_000);
    assert_eq!(file["activates_at"], Value::Null);
    assert_eq!(file["private_jwk"]["kid"], es256.kid().as_str());
    assert_eq!(file["private_jwk"]["alg"], "ES256");
    assert!(file["private_jwk"]["d"].is_string());
    // No temporary file is left behind.
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| {
        e.unwrap()
            .file_name()
            .to_str()
            .unwrap()
            .ends_with(".key.json")
    }));
}

#[test]
fn files_that_are_not_ours_are_ignored_and_left_alone() {
    let (_tmp, dir, kid) = dir_with_one_key();
    std::fs::write(dir.join("README.md"), "keys live here\n").unwrap();
    std::fs::write(dir.join(".gitignore"), "*\n").unwrap();
    std::fs::write(dir.join("notes.json"), "{}").unwrap();
    std::fs::write(dir.join(".hidden.key.json"), "not even json").unwrap();
    std::fs::create_dir(dir.join("old")).unwrap();
    let foreign = |picture: &std::collections::BTreeMap<String, (u32, Vec<u8>)>| {
        picture
            .iter()
            .filter(|(name, _)| !name.ends_with(".key.json") || name.starts_with('.'))
            .filter(|(name, _)| name.as_str() != ".lock")
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    let before = foreign(&dir_picture(&dir));
    assert_eq!(before.len(), 5);

    let registry = open_registry(&dir).unwrap();
    assert_eq!(registry.current().keys().len(), 1);
    assert_eq!(registry.current().active().unwrap().kid(), &kid);
    // Writes (a rotation) leave them alone too.
    registry.rotate(Duration::from_secs(60)).unwrap();
    assert_eq!(foreign(&dir_picture(&dir)), before);
    assert_eq!(DirKeyStore::open(&dir).unwrap().load().unwrap().len(), 2);
}

/// Breaks the key directory with `damage`, then checks that start-up fails
/// with an error naming `file` and containing `reason`, and that nothing on
/// disk changed.
fn assert_refused(
    damage: impl FnOnce(&Path, &Kid) -> PathBuf,
    open: impl FnOnce(&Path) -> Result<KeyRegistry, RegistryError>,
    check: impl FnOnce(&StoreError),
    reason: &str,
) {
    let (_tmp, dir, kid) = dir_with_one_key();
    let bad = damage(&dir, &kid);
    let before = dir_picture(&dir);
    let err = match open(&dir) {
        Ok(_) => panic!("start-up accepted a damaged key directory ({reason})"),
        Err(RegistryError::Store(err)) => err,
        Err(other) => panic!("not a store error: {other}"),
    };
    assert_eq!(err.path(), Some(bad.as_path()), "{err}");
    let message = format!("{}", RegistryError::Store(err_clone(&err)));
    assert!(
        message.contains(bad.file_name().unwrap().to_str().unwrap()),
        "{message}"
    );
    assert!(message.contains(reason), "{message} lacks {reason:?}");
    check(&err);
    assert_eq!(dir_picture(&dir), before, "the disk changed ({reason})");
}

/// Store errors are not `Clone`; rebuild the message-bearing part.
fn err_clone(err: &StoreError) -> StoreError {
    StoreError::Other(err.to_string().into())
}

fn rewrite_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

fn key_file(dir: &Path, kid: &Kid) -> PathBuf {
    dir.join(format!("{kid}.key.json"))
}

#[test]
fn a_corrupt_file_stops_start_up_and_is_left_as_it_is() {
    assert_refused(
        |dir, _| {
            let path = dir.join("garbage.key.json");
            std::fs::write(&path, b"\x00\x01 this is not json").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        },
        open_registry,
        |err| assert!(matches!(err, StoreError::Corrupt { .. })),
        "not valid JSON",
    );
}

#[test]
fn a_truncated_file_stops_start_up_and_is_left_as_it_is() {
    assert_refused(
        |dir, kid| {
            let path = key_file(dir, kid);
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            path
        },
        open_registry,
        |err| assert!(matches!(err, StoreError::Corrupt { .. })),
        "truncated",
    );
    assert_refused(
        |dir, kid| {
            let path = key_file(dir, kid);
            std::fs::write(&path, b"").unwrap();
            path
        },
        open_registry,
        |err| assert!(matches!(err, StoreError::Corrupt { .. })),
        "truncated",
    );
}

#[test]
fn a_key_of_the_wrong_algorithm_stops_start_up() {
    // The JWK claims ES384, the key is a P-256 key.
    assert_refused(
        |dir, kid| {
            let path = key_file(dir, kid);
            rewrite_json(&path, |v| v["private_jwk"]["alg"] = "ES384".into());
            path
        },
        open_registry,
        |err| assert!(matches!(err, StoreError::Key { .. })),
        "ES384",
    );
    // A symmetric algorithm is never accepted.
    assert_refused(
        |dir, kid| {
            let path = key_file(dir, kid);
            rewrite_json(&path, |v| v["private_jwk"]["alg"] = "HS256".into());
            path
        },
        open_registry,
        |err| assert!(matches!(err, StoreError::Key { .. })),
        "HS256",
    );
    // A store for ES256 keys refuses an EdDSA key.
    assert_refused(
        |dir, _| {
            let store = DirKeyStore::open(dir).unwrap();
            let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
            let path = store.key_path(key.kid()).unwrap();
            store
                .save(&StoredKey::new(key, KeyState::Next, SystemTime::now()))
                .unwrap();
            path
        },
        |dir| {
            KeyRegistry::builder()
                .store(
                    DirKeyStore::builder(dir)
                        .algorithm(Algorithm::ES256)
                        .open()?,
                )
                .build()
        },
        |err| {
            assert!(matches!(
                err,
                StoreError::WrongAlgorithm {
                    found: Algorithm::EdDSA,
                    expected: Algorithm::ES256,
                    ..
                }
            ))
        },
        "its key is for EdDSA, but this key store is for ES256 keys",
    );
}

#[test]
fn other_damage_is_named_too() {
    // A public key only.
    assert_refused(
        |dir, kid| {
            let path = key_file(dir, kid);
            rewrite_json(&path, |v| {
                v["private_jwk"].as_object_mut().unwrap().remove("d");
            });
            path
        },
        open_registry,
        |err| assert!(matches!(err, StoreError::Key { .. })),
        "only a public key",
    );
    // A file copied under another kid's name.
    assert_refused(
        |dir, kid| {
            let path = dir.join("someone-else.key.json");
            std::fs::copy(key_file(dir, kid), &path).unwrap();
            path
        },
        open_registry,
        |err| assert!(matches!(err, StoreError::Corrupt { .. })),
        "its name says \"someone-else\"",
    );
    // An unknown state, an unknown member, a string for a time.
    assert_refused(
        |dir, kid| {
            let path = key_file(dir, kid);
            rewrite_json(&path, |v| v["state"] = "paused".into());
            path
        },
        open_registry,
        |_| {},
        "\"state\" is not",
    );
    assert_refused(
        |dir, kid| {
            let path = key_file(dir, kid);
            rewrite_json(&path, |v| v["colour"] = "blue".into());
            path
        },
        open_registry,
        |_| {},
        "unknown member \"colour\"",
    );
    assert_refused(
        |dir, kid| {
            let path = key_file(dir, kid);
            rewrite_json(&path, |v| v["created_at"] = "secret-looking value".into());
            path
        },
        open_registry,
        |err| assert!(!err.to_string().contains("secret-looking")),
        "\"created_at\" is not a time",
    );
    // A kid that is not a kid.
    assert_refused(
        |dir, kid| {
            let path = dir.join("bad kid!.key.json");
            std::fs::copy(key_file(dir, kid), &path).unwrap();
            path
        },
        open_registry,
        |_| {},
        "not hold a valid kid",
    );
}

#[test]
fn error_messages_never_contain_key_material() {
    let (_tmp, dir, kid) = dir_with_one_key();
    let path = key_file(&dir, &kid);
    let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let d = file["private_jwk"]["d"].as_str().unwrap().to_owned();
    // The private JWK replaced by its `d` as a string: wrong type.
    rewrite_json(&path, |v| v["private_jwk"] = Value::String(d.clone()));
    let err = open_registry(&dir).unwrap_err();
    assert!(!err.to_string().contains(&d), "{err}");
    assert!(!format!("{err:?}").contains(&d));
}

#[test]
fn loose_permissions_are_refused_by_default_and_can_be_downgraded_to_a_warning() {
    // A directory others can write to.
    let (_tmp, dir, _) = dir_with_one_key();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let before = dir_picture(&dir);
    let err = DirKeyStore::open(&dir).unwrap_err();
    assert!(matches!(err, StoreError::LoosePermissions { .. }), "{err}");
    assert_eq!(err.path(), Some(dir.as_path()));
    assert!(err.to_string().contains("chmod 700"), "{err}");
    assert_eq!(
        mode(&dir),
        0o777,
        "the store does not fix permissions itself"
    );
    assert_eq!(dir_picture(&dir), before);
    // Readable by others is fine (kids are public), writable is not.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    DirKeyStore::open(&dir).unwrap();

    // A key file others can read.
    let (_tmp, dir, kid) = dir_with_one_key();
    let path = key_file(&dir, &kid);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = dir_picture(&dir);
    let err = open_registry(&dir).unwrap_err();
    let RegistryError::Store(err) = err else {
        panic!("{err}")
    };
    assert!(matches!(err, StoreError::LoosePermissions { .. }), "{err}");
    assert_eq!(err.path(), Some(path.as_path()));
    assert!(err.to_string().contains("chmod 600"), "{err}");
    assert_eq!(dir_picture(&dir), before);

    // Warn: loads, leaves the mode as it is.
    let registry = KeyRegistry::builder()
        .store(
            DirKeyStore::builder(&dir)
                .loose_permissions(LoosePermissions::Warn)
                .open()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert_eq!(registry.current().active().unwrap().kid(), &kid);
    assert_eq!(mode(&path), 0o644);
}

#[test]
fn a_missing_directory_is_an_error_when_creation_is_off() {
    let tmp = tempfile::tempdir().unwrap();
    let err = DirKeyStore::builder(tmp.path().join("nope"))
        .create(false)
        .open()
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert!(!tmp.path().join("nope").exists());
}

#[test]
fn a_write_interrupted_before_the_rename_leaves_the_previous_state() {
    let (_tmp, dir, kid) = dir_with_one_key();
    let before = std::fs::read(key_file(&dir, &kid)).unwrap();

    // A crash between the temporary file and the rename: the new state of
    // the key (retiring) half written in the temporary file, and a second
    // leftover for a key that never made it.
    let mut half: Vec<u8> = before.clone();
    half.truncate(before.len() / 3);
    let leftover = dir.join(format!(".{kid}.key.json.tmp-4242-0"));
    std::fs::write(&leftover, &half).unwrap();
    let other = SigningKey::generate(Algorithm::ES256).unwrap();
    let leftover2 = dir.join(format!(".{}.key.json.tmp-4242-1", other.kid()));
    std::fs::write(&leftover2, b"{").unwrap();

    // The previous state loads (a reader ignores temporary files, and
    // does not delete them: it holds no lock).
    let registry = open_registry(&dir).unwrap();
    let snapshot = registry.current();
    assert_eq!(snapshot.keys().len(), 1);
    assert_eq!(snapshot.active().unwrap().kid(), &kid);
    assert_eq!(std::fs::read(key_file(&dir, &kid)).unwrap(), before);
    assert!(leftover.exists() && leftover2.exists());

    // The next writer, holding the lock, cleans them up.
    let next = registry
        .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
        .unwrap();
    assert!(!leftover.exists() && !leftover2.exists());
    let loaded = DirKeyStore::open(&dir).unwrap().load().unwrap();
    assert_eq!(loaded.len(), 2);
    assert!(loaded.iter().any(|k| k.kid() == &next));
}

#[test]
fn kids_the_directory_cannot_name_are_refused_and_nothing_is_published() {
    let (_tmp, dir, _) = dir_with_one_key();
    let registry = open_registry(&dir).unwrap();
    let version = registry.current().version();
    let before = dir_picture(&dir);
    for kid in [".", "..", ".hidden"] {
        let key = SigningKey::generate(Algorithm::ES256)
            .unwrap()
            .with_kid(Kid::new(kid).unwrap());
        let err = registry.add_next(key).unwrap_err();
        assert!(
            matches!(err, RegistryError::Store(StoreError::UnsupportedKid { .. })),
            "{err}"
        );
    }
    assert_eq!(registry.current().version(), version);
    // Only the lock file may have appeared.
    let mut after = dir_picture(&dir);
    after.remove(".lock");
    let mut before = before;
    before.remove(".lock");
    assert_eq!(after, before);
}

/// A signer whose private key is elsewhere (an HSM): cannot be stored.
#[derive(Debug)]
struct Remote(SigningKey);

impl SigningBackend for Remote {
    fn public_jwk(&self) -> &PublicJwk {
        self.0.public_jwk()
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, tower_jwt_signer::keys::SignError> {
        self.0.sign(input)
    }
}

#[test]
fn a_signer_without_exportable_key_cannot_join_a_stored_registry() {
    let registry = KeyRegistry::builder()
        .store(MemoryKeyStore::new())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let version = registry.current().version();
    let err = registry
        .add_next(Remote(SigningKey::generate(Algorithm::ES256).unwrap()))
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Store(StoreError::NotStorable { .. })),
        "{err}"
    );
    assert_eq!(registry.current().version(), version);
    // Without a store it is fine.
    KeyRegistry::generate(Algorithm::ES256)
        .unwrap()
        .add_next(Remote(SigningKey::generate(Algorithm::ES256).unwrap()))
        .unwrap();
}

/// Wraps a memory store: checks at every save that the registry has not
/// published the saved state yet, and can be told to fail.
#[derive(Debug, Default)]
struct Watching {
    inner: MemoryKeyStore,
    registry: OnceLock<KeyRegistry>,
    saves: Mutex<Vec<(Kid, KeyState, bool)>>,
    fail_save_number: Mutex<Option<usize>>,
}

impl KeyStore for Watching {
    fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.inner.load()
    }

    fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
        let mut saves = self.saves.lock().unwrap();
        {
            let mut fail = self.fail_save_number.lock().unwrap();
            if *fail == Some(saves.len()) {
                // Once: the rollback's saves succeed.
                *fail = None;
                return Err(StoreError::Other("disk full".into()));
            }
        }
        // Is exactly this record (state and times, at the store's whole
        // seconds) published already?
        let published_already = self.registry.get().is_some_and(|registry| {
            registry.current().get(key.kid()).is_some_and(|k| {
                k.state() == key.state()
                    && k.retires_at().map(ceil) == key.retires_at()
                    && k.activates_at().map(ceil) == key.activates_at()
            })
        });
        saves.push((key.kid().clone(), key.state(), published_already));
        drop(saves);
        self.inner.save(key)
    }

    fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
        self.inner.remove(kid)
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        self.inner.lock()
    }
}

#[test]
fn every_change_is_durable_before_it_is_published() {
    let store = Arc::new(Watching::default());
    let registry = KeyRegistry::builder()
        .store(Arc::clone(&store))
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    store.registry.set(registry.clone()).unwrap();
    let next = registry
        .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
        .unwrap();
    registry.rotate(Duration::from_secs(60)).unwrap();
    registry.rotate(Duration::from_secs(60)).unwrap();
    registry
        .retire(&next, SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    let saves = store.saves.lock().unwrap().clone();
    assert!(saves.len() >= 6, "{saves:?}");
    for (kid, state, published_already) in &saves {
        assert!(
            !published_already,
            "{kid} was published as {state} before it was saved"
        );
    }
    // The stored keys are exactly the published ones.
    let mut stored: Vec<_> = store
        .load()
        .unwrap()
        .iter()
        .map(|k| (k.kid().clone(), k.state().as_str()))
        .collect();
    let mut published: Vec<_> = registry
        .current()
        .keys()
        .iter()
        .map(|k| (k.kid().clone(), k.state().as_str()))
        .collect();
    stored.sort();
    published.sort();
    assert_eq!(stored, published);
}

#[test]
fn a_failed_write_publishes_nothing_and_rolls_back_what_was_written() {
    let store = Arc::new(Watching::default());
    let registry = KeyRegistry::builder()
        .store(Arc::clone(&store))
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    registry
        .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
        .unwrap();
    let before = registry.current();
    let stored_before = store.load().unwrap();
    // A rotation saves two keys (old active -> retiring, next -> active):
    // the second save fails.
    let saves_so_far = store.saves.lock().unwrap().len();
    *store.fail_save_number.lock().unwrap() = Some(saves_so_far + 1);
    let err = registry.rotate(Duration::from_secs(60)).unwrap_err();
    assert!(
        matches!(err, RegistryError::Store(StoreError::Other(_))),
        "{err}"
    );
    assert!(err.to_string().contains("disk full"));
    assert_eq!(registry.current().version(), before.version());
    assert_eq!(registry.current().jwks_bytes(), before.jwks_bytes());
    // The first save (the demoted key) was undone.
    let mut stored_after = store.load().unwrap();
    let mut stored_before = stored_before;
    stored_after.sort_by(|a, b| a.kid().cmp(b.kid()));
    stored_before.sort_by(|a, b| a.kid().cmp(b.kid()));
    assert_eq!(stored_after, stored_before);
    // And the registry works again once the store does.
    registry.rotate(Duration::from_secs(60)).unwrap();
}

#[test]
fn builder_keys_are_added_to_the_stored_ones_and_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let first = SigningKey::generate(Algorithm::ES256).unwrap();
    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(&dir).unwrap())
        .active(first.clone())
        .build()
        .unwrap();
    assert_eq!(registry.current().active().unwrap().kid(), first.kid());
    drop(registry);
    // Again with the same active key: it is already stored.
    let err = KeyRegistry::builder()
        .store(DirKeyStore::open(&dir).unwrap())
        .active(first.clone())
        .build()
        .unwrap_err();
    assert!(matches!(err, RegistryError::DuplicateKid(_)), "{err}");
    // A next key joins the stored active one.
    let second = SigningKey::generate(Algorithm::ES256).unwrap();
    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(&dir).unwrap())
        .next(second.clone())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let snapshot = registry.current();
    assert_eq!(snapshot.active().unwrap().kid(), first.kid());
    assert_eq!(snapshot.get(second.kid()).unwrap().state(), KeyState::Next);
    assert_eq!(DirKeyStore::open(&dir).unwrap().load().unwrap().len(), 2);
}

#[test]
fn two_writers_on_one_directory_lose_no_key_and_corrupt_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    open_registry(&dir).unwrap();
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                // Each writer has its own registry and its own store
                // instance, as two processes would.
                let registry = open_registry(&dir).unwrap();
                let mut added = Vec::new();
                for i in 0..15 {
                    let kid = registry
                        .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
                        .unwrap();
                    added.push(kid);
                    if i % 3 == 0 {
                        registry.rotate(Duration::from_secs(3600)).unwrap();
                    }
                }
                added
            })
        })
        .collect();
    let added: Vec<Kid> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(added.len(), 30);
    // Every file parses; exactly one key is active; no key either writer
    // added is missing (nothing removes keys here).
    let loaded = DirKeyStore::open(&dir).unwrap().load().unwrap();
    assert_eq!(
        loaded
            .iter()
            .filter(|k| k.state() == KeyState::Active)
            .count(),
        1
    );
    for kid in &added {
        assert!(loaded.iter().any(|k| k.kid() == kid), "{kid} was lost");
    }
    assert_eq!(loaded.len(), 31);
    // Ten rotations happened in all, so ten keys (the first one among them)
    // are retiring.
    assert_eq!(
        loaded
            .iter()
            .filter(|k| k.state() == KeyState::Retiring)
            .count(),
        10
    );
    // A registry reading the directory now publishes every key.
    let registry = open_registry(&dir).unwrap();
    assert_eq!(registry.current().keys().len(), 31);
}
