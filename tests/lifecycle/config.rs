//! Misconfigurations listed in SECURITY.md ("Bad configuration") for the
//! registry, rotation and the key store, one test each: the exact typed
//! error it gives, and no panic. The other areas' are in the other test
//! binaries' `config.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tower_jwt_signer::keys::{JwsSigner, PublicJwk, SignError};
use tower_jwt_signer::registry::RegistryError;
use tower_jwt_signer::rotation::{RotationConfigError, RotationPolicy};
use tower_jwt_signer::store::{
    DirKeyStore, FollowerConfigError, KeyStore, StoreError, StoreFollower, StoredKey,
};
use tower_jwt_signer::{Algorithm, KeyRegistry, KeyState, Kid, SigningKey};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const CENTURY_AND_A_DAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600 + 86_400);

fn es256() -> SigningKey {
    SigningKey::generate(Algorithm::ES256).unwrap()
}

// --- Registry -----------------------------------------------------------------

#[test]
fn two_active_keys_are_refused() {
    let err = KeyRegistry::builder()
        .active(es256())
        .active(es256())
        .build()
        .unwrap_err();
    assert!(matches!(err, RegistryError::SeveralActiveKeys), "{err:?}");
}

#[test]
fn two_keys_with_one_kid_are_refused() {
    let key = es256();
    let err = KeyRegistry::builder()
        .active(key.clone())
        .next(key.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::DuplicateKid(kid) if kid == key.kid()),
        "{err:?}"
    );
}

#[test]
fn removing_the_active_key_is_refused() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let kid = registry.current().active().unwrap().kid().clone();
    let err = registry.remove(&kid).unwrap_err();
    assert!(matches!(err, RegistryError::KeyIsActive(k) if k == kid));
}

#[test]
fn rotating_a_registry_without_keys_is_refused() {
    let err = KeyRegistry::empty().rotate(MINUTE).unwrap_err();
    assert!(matches!(err, RegistryError::NoActiveKey), "{err:?}");
}

/// A signer that is not a `SigningKey` (an HSM, a KMS).
#[derive(Debug)]
struct Hsm(SigningKey);

impl JwsSigner for Hsm {
    fn public_jwk(&self) -> &PublicJwk {
        self.0.public_jwk()
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.0.sign(input)
    }
}

#[test]
fn a_key_that_cannot_be_stored_is_refused_by_a_store_backed_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(tmp.path().join("keys")).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let err = registry.add_next(Hsm(es256())).unwrap_err();
    assert!(
        matches!(err, RegistryError::Store(StoreError::NotStorable { .. })),
        "{err:?}"
    );
}

// --- Rotation -------------------------------------------------------------------

#[test]
fn rotation_ttl_zero_is_refused() {
    let err = RotationPolicy::builder(HOUR, Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, RotationConfigError::ZeroTokenTtl);
}

#[test]
fn rotation_period_or_retry_zero_is_refused() {
    let err = RotationPolicy::builder(Duration::ZERO, MINUTE)
        .build()
        .unwrap_err();
    assert_eq!(err, RotationConfigError::ZeroPeriod);
    let err = RotationPolicy::builder(HOUR, MINUTE)
        .retry_after(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, RotationConfigError::ZeroRetry);
}

#[test]
fn rotation_durations_over_a_century_are_refused() {
    let err = RotationPolicy::builder(Duration::MAX, MINUTE)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            RotationConfigError::TooLong {
                what: "rotate_every",
                ..
            }
        ),
        "{err:?}"
    );
    let err = RotationPolicy::builder(HOUR, MINUTE)
        .leeway(Duration::MAX)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, RotationConfigError::TooLong { what: "leeway", .. }),
        "{err:?}"
    );
}

#[test]
fn prepublish_longer_than_the_period_is_refused() {
    let err = RotationPolicy::builder(HOUR, MINUTE)
        .prepublish(2 * HOUR)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        RotationConfigError::PrepublishLongerThanPeriod {
            prepublish: 2 * HOUR,
            rotate_every: HOUR,
            defaulted: false,
        }
    );
    // The default prepublish (the JWKS max-age, 5 min) does not fit a
    // one-minute period either.
    let err = RotationPolicy::builder(MINUTE, Duration::from_secs(10))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            RotationConfigError::PrepublishLongerThanPeriod {
                defaulted: true,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn retain_shorter_than_the_token_lifetime_is_refused() {
    let err = RotationPolicy::builder(HOUR, 5 * MINUTE)
        .retain(MINUTE)
        .build()
        .unwrap_err();
    // ttl + the default 60 s leeway.
    assert_eq!(
        err,
        RotationConfigError::RetainTooShort {
            retain: MINUTE,
            minimum: 6 * MINUTE
        }
    );
}

// --- Key store --------------------------------------------------------------------

#[test]
fn key_dir_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("keys");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = DirKeyStore::open(&file).unwrap_err();
    match &err {
        StoreError::Io {
            path,
            action: "open directory",
            source,
        } => {
            assert_eq!(path, &file);
            assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_key_dir_is_refused_when_it_may_not_be_created() {
    let tmp = tempfile::tempdir().unwrap();
    let err = DirKeyStore::options(tmp.path().join("missing"))
        .create(false)
        .open()
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

#[cfg(unix)]
#[test]
fn key_dir_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = DirKeyStore::open(&dir).unwrap_err();
    assert!(
        matches!(err, StoreError::LoosePermissions { mode, .. } if mode & 0o777 == 0o777),
        "{err:?}"
    );
}

#[cfg(unix)]
#[test]
fn key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let store = DirKeyStore::open(tmp.path().join("keys")).unwrap();
    let key = es256();
    let path = store.key_path(key.kid()).unwrap();
    store
        .save(&StoredKey::new(key, KeyState::Active, SystemTime::now()))
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = DirKeyStore::open(tmp.path().join("keys"))
        .unwrap()
        .load()
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::LoosePermissions { path: p, .. } if p == &path),
        "{err:?}"
    );
}

#[test]
fn key_of_another_algorithm_than_the_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirKeyStore::options(tmp.path().join("keys"))
        .algorithm(Algorithm::ES256)
        .open()
        .unwrap();
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let err = store
        .save(&StoredKey::new(ed, KeyState::Next, SystemTime::now()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongAlgorithm {
                found: Algorithm::EdDSA,
                expected: Algorithm::ES256,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn kid_that_would_be_a_hidden_file_is_refused_by_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirKeyStore::open(tmp.path().join("keys")).unwrap();
    let key = es256().with_kid(Kid::new(".hidden").unwrap());
    let err = store.key_path(key.kid()).unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedKid { .. }), "{err:?}");
    let err = store
        .save(&StoredKey::new(key, KeyState::Next, SystemTime::now()))
        .unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedKid { .. }), "{err:?}");
}

#[test]
fn key_file_under_another_kid_than_its_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let store = DirKeyStore::open(&dir).unwrap();
    let key = es256();
    let path = store.key_path(key.kid()).unwrap();
    store
        .save(&StoredKey::new(key, KeyState::Active, SystemTime::now()))
        .unwrap();
    let renamed = dir.join("other.key.json");
    std::fs::rename(&path, &renamed).unwrap();
    let err = DirKeyStore::open(&dir).unwrap().load().unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if path == &renamed),
        "{err:?}"
    );
    // And a registry on that store refuses to start.
    let err = KeyRegistry::builder()
        .store(DirKeyStore::open(&dir).unwrap())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Store(StoreError::Corrupt { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn follower_with_a_zero_or_endless_interval_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(tmp.path().join("keys")).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    for interval in [Duration::ZERO, Duration::MAX, CENTURY_AND_A_DAY] {
        let err = StoreFollower::spawn(registry.clone(), interval).unwrap_err();
        assert_eq!(err, FollowerConfigError::InvalidInterval(interval));
    }
    let follower = StoreFollower::spawn(registry, Duration::from_secs(5)).unwrap();
    follower.stop().await;
}

/// Loading a registry from a store with two active keys (two writers that
/// both activated a key, a hand-edited directory) is refused.
#[test]
fn store_with_two_active_keys_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(DirKeyStore::open(tmp.path().join("keys")).unwrap());
    for _ in 0..2 {
        store
            .save(&StoredKey::new(
                es256(),
                KeyState::Active,
                SystemTime::now(),
            ))
            .unwrap();
    }
    let err = KeyRegistry::builder().store(store).build().unwrap_err();
    assert!(matches!(err, RegistryError::SeveralActiveKeys), "{err:?}");
}
