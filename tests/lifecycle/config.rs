//! Misconfigurations listed in SECURITY.md ("Bad configuration") for the
//! registry, rotation and the key store, one test each: the exact typed
//! error it gives, and no panic. The other areas' are in the other test
//! binaries' `config.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tower_jwt_signer::keys::{PublicJwk, SignError, SigningBackend};
use tower_jwt_signer::registry::{KeyState, StoreFollower};
use tower_jwt_signer::store::{KeyStore, StoredKey};
use tower_jwt_signer::{
    Algorithm, DirKeyStore, JwtSignerLayer, KeyRegistry, KeyRotator, Kid, RegistryError,
    RotationPolicy, SigningKey, StoreError,
};

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

#[test]
fn registry_token_ttl_outside_whole_seconds_from_one_second_to_a_day_is_refused() {
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(1500),
        Duration::from_secs(86_401),
    ] {
        let err = KeyRegistry::builder().token_ttl(ttl).build().unwrap_err();
        let RegistryError::Config(err) = err else {
            panic!("{ttl:?}: {err:?}");
        };
        assert_eq!(err.setting(), "token_ttl", "{ttl:?}");
        assert!(err.reason().contains("whole seconds from 1 s"), "{err}");
    }
    for ttl in [Duration::from_secs(1), Duration::from_secs(86_400)] {
        let registry = KeyRegistry::builder().token_ttl(ttl).build().unwrap();
        assert_eq!(registry.token_ttl(), ttl);
    }
    assert_eq!(KeyRegistry::empty().token_ttl(), MINUTE);
}

#[test]
fn registry_jwks_max_age_outside_whole_seconds_up_to_a_day_is_refused() {
    for max_age in [Duration::from_millis(100), Duration::from_secs(86_401)] {
        let err = KeyRegistry::builder()
            .jwks_max_age(max_age)
            .build()
            .unwrap_err();
        let RegistryError::Config(err) = err else {
            panic!("{max_age:?}: {err:?}");
        };
        assert_eq!(err.setting(), "jwks_max_age", "{max_age:?}");
    }
    for max_age in [Duration::ZERO, Duration::from_secs(86_400)] {
        let registry = KeyRegistry::builder()
            .jwks_max_age(max_age)
            .build()
            .unwrap();
        assert_eq!(registry.jwks_max_age(), max_age);
    }
    assert_eq!(
        KeyRegistry::empty().jwks_max_age(),
        Duration::from_secs(300)
    );
}

#[test]
fn a_refused_registry_setting_touches_no_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let err = KeyRegistry::builder()
        .token_ttl(Duration::ZERO)
        .store(DirKeyStore::open(&dir).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap_err();
    assert!(matches!(err, RegistryError::Config(_)), "{err:?}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

/// A signer that is not a `SigningKey` (an HSM, a KMS).
#[derive(Debug)]
struct Hsm(SigningKey);

impl SigningBackend for Hsm {
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
fn rotation_period_or_retry_zero_is_refused() {
    let err = RotationPolicy::builder(Duration::ZERO).build().unwrap_err();
    assert_eq!(err.setting(), "rotate_every");
    let err = RotationPolicy::builder(HOUR)
        .retry_after(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "retry_after");
}

#[test]
fn rotation_durations_over_a_century_are_refused() {
    let err = RotationPolicy::builder(Duration::MAX).build().unwrap_err();
    assert_eq!(err.setting(), "rotate_every");
    assert!(err.reason().contains("100 years"), "{err}");
    let err = RotationPolicy::builder(HOUR)
        .verifier_leeway(Duration::MAX)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "verifier_leeway");
    let err = RotationPolicy::builder(HOUR)
        .follower_poll_interval(CENTURY_AND_A_DAY)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "follower_poll_interval");
}

#[test]
fn prepublish_longer_than_the_period_is_refused() {
    let err = RotationPolicy::builder(HOUR)
        .prepublish(2 * HOUR)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "prepublish");
    assert!(err.reason().contains("rotation period"), "{err}");
    // The default prepublish, the registry's JWKS max-age (5 min), does not
    // fit a one-minute period either: refused by the spawn, before any task
    // starts (no runtime is needed to refuse).
    let policy = RotationPolicy::builder(MINUTE).build().unwrap();
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let err = KeyRotator::spawn(registry, policy.clone()).unwrap_err();
    assert_eq!(err.setting(), "prepublish");
    assert!(err.reason().contains("jwks_max_age"), "{err}");
    // A registry whose JWKS is cached 30 s fits it.
    let registry = KeyRegistry::builder()
        .jwks_max_age(Duration::from_secs(30))
        .build()
        .unwrap();
    let resolved = policy.resolve(&registry).unwrap();
    assert_eq!(resolved.prepublish(), Duration::from_secs(30));
}

/// A replica that misses a change notification (or polls a directory)
/// sees the next key up to one poll interval after it is published: a
/// prepublish time shorter than that would let another replica sign with
/// the key before this one's JWKS publishes it.
#[test]
fn prepublish_shorter_than_the_followers_poll_interval_is_refused() {
    let poll = Duration::from_secs(5);
    let err = RotationPolicy::builder(MINUTE)
        .follower_poll_interval(poll)
        .prepublish(Duration::from_secs(4))
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "prepublish");
    assert!(err.reason().contains("poll interval (5s)"), "{err}");
    let err = RotationPolicy::builder(Duration::from_secs(2))
        .follower_poll_interval(poll)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "follower_poll_interval");
    // One poll interval ahead is enough, and so is the default (the JWKS
    // max-age plus the poll interval), when it fits the period.
    let registry = KeyRegistry::builder()
        .jwks_max_age(Duration::from_secs(30))
        .build()
        .unwrap();
    for (prepublish, resolved) in [(Some(poll), poll), (None, Duration::from_secs(35))] {
        let mut builder = RotationPolicy::builder(MINUTE).follower_poll_interval(poll);
        if let Some(prepublish) = prepublish {
            builder = builder.prepublish(prepublish);
        }
        let policy = builder.build().unwrap().resolve(&registry).unwrap();
        assert_eq!(policy.prepublish(), resolved);
    }
}

#[test]
fn retain_shorter_than_the_token_lifetime_is_refused() {
    let registry = KeyRegistry::builder()
        .token_ttl(5 * MINUTE)
        .build()
        .unwrap();
    let policy = RotationPolicy::builder(HOUR)
        .verifier_leeway(Duration::from_secs(30))
        .retain(MINUTE)
        .build()
        .unwrap();
    let err = KeyRotator::spawn(registry.clone(), policy.clone()).unwrap_err();
    // The registry's ttl + the verifiers' 30 s leeway.
    assert_eq!(err.setting(), "retain");
    assert_eq!(err.value(), Some("60s"));
    assert!(err.reason().contains("330s"), "{err}");
    assert_eq!(policy.resolve(&registry).unwrap_err(), err);
    // The same policy on a registry of 30 s tokens is fine.
    let short = KeyRegistry::builder()
        .token_ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(policy.resolve(&short).unwrap().retain(), MINUTE);
}

/// The issue-10 finding: a signer ttl of 600 s under a rotation policy told
/// 60 s was accepted, and old keys left the JWKS while their tokens lived.
/// Now the registry holds the one lifetime that both read.
#[test]
fn the_token_lifetime_has_one_home_the_registry() {
    let registry = KeyRegistry::builder()
        .token_ttl(10 * MINUTE)
        .build()
        .unwrap();
    assert_eq!(JwtSignerLayer::new(registry.clone()).ttl(), 10 * MINUTE);
    let policy = RotationPolicy::builder(HOUR).build().unwrap();
    // 600 s of tokens + 60 s of leeway.
    assert_eq!(policy.resolve(&registry).unwrap().retain(), 11 * MINUTE);
    // A signer may sign shorter tokens, never longer ones.
    let err = JwtSignerLayer::builder(KeyRegistry::generate(Algorithm::ES256).unwrap())
        .ttl(10 * MINUTE)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "ttl");
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
    let err = DirKeyStore::builder(tmp.path().join("missing"))
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
    let store = DirKeyStore::builder(tmp.path().join("keys"))
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
        assert_eq!(err.setting(), "interval");
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
