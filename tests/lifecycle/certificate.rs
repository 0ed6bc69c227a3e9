//! Certificate-backed keys across their lifecycle: a `DirKeyStore` keeps
//! the chain (key file format 3) and a restart publishes it again; a file
//! whose format and chain disagree is refused; the rotator replaces a
//! certificate-backed active key by its certificate's `notAfter` and warns
//! ahead of it.

use std::time::{Duration, SystemTime};

use serde_json::Value;
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::{
    Algorithm, DirKeyStore, KeyRegistry, KeyRotator, RegistryError, RotationPolicy, SigningKey,
    StoreError,
};

use crate::support::certs::{self, Pki, at};
use crate::support::logs::logs;

fn certified_key(pki: &Pki, alg: Algorithm, not_after: SystemTime) -> SigningKey {
    let (rc_key, key_pem) = certs::key(alg);
    let chain = pki.chain_pem(&rc_key, rcgen::date_time_ymd(2020, 1, 1), at(not_after));
    SigningKey::from_pem_with_certificate_chain(key_pem, chain, alg).unwrap()
}

fn open(dir: &std::path::Path) -> Result<KeyRegistry, RegistryError> {
    KeyRegistry::builder()
        .store(DirKeyStore::open(dir).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
}

#[test]
fn a_restart_keeps_the_certificate_chain_in_a_key_directory() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let year = Duration::from_secs(365 * 86_400);
    let key = certified_key(&pki, Algorithm::ES256, SystemTime::now() + year);
    let kid = key.kid().clone();
    let chain = key.certificate_chain().unwrap().clone();

    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(&dir).unwrap())
        .active(key)
        .build()
        .unwrap();
    let jwks_before = registry.current().jwks_bytes().clone();
    drop(registry);

    // The file: format 3, the chain in the private JWK as x5c.
    let path = dir.join(format!("{kid}.key.json"));
    let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(file["version"], 3);
    assert_eq!(file["private_jwk"]["x5c"].as_array().unwrap().len(), 3);

    // A restart: same key, same chain, same JWKS.
    let registry = open(&dir).unwrap();
    let snapshot = registry.current();
    let active = snapshot.active().unwrap();
    assert_eq!(active.kid(), &kid);
    assert_eq!(active.public_jwk().certificate_chain(), Some(&chain));
    assert_eq!(snapshot.jwks_bytes(), &jwks_before);
    let jwks: Value = serde_json::from_slice(snapshot.jwks_bytes()).unwrap();
    assert_eq!(jwks["keys"][0]["x5t#S256"], chain.x5t_s256());
    drop(registry);

    // A file whose format says no chain but whose key has one is refused,
    // and so is format 3 without a chain: the format says what is in it.
    let original = std::fs::read(&path).unwrap();
    let mut edited = file.clone();
    edited["version"] = Value::from(1);
    std::fs::write(&path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let err = open(&dir).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Store(StoreError::Corrupt { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("format 3"), "{err}");
    let mut edited = file.clone();
    let jwk = edited["private_jwk"].as_object_mut().unwrap();
    jwk.remove("x5c");
    jwk.remove("x5t#S256");
    std::fs::write(&path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let err = open(&dir).unwrap_err();
    assert!(err.to_string().contains("without \"x5c\""), "{err}");
    // Restored, it loads again.
    std::fs::write(&path, original).unwrap();
    assert_eq!(open(&dir).unwrap().current().active().unwrap().kid(), &kid);
}

#[test]
fn keys_without_a_chain_keep_key_file_format_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let registry = open(&dir).unwrap();
    let kid = registry.current().active().unwrap().kid().clone();
    let file: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{kid}.key.json"))).unwrap())
            .unwrap();
    assert_eq!(file["version"], 1);
    assert!(file["private_jwk"].get("x5c").is_none());
}

#[tokio::test(start_paused = true)]
async fn the_rotator_replaces_a_certified_key_before_its_certificate_expires_and_warns_ahead() {
    let captured = logs();
    let pki = Pki::new();
    let clock = Clock::tokio();
    // The certificate ends in two hours; the period is 30 days.
    let not_after = clock.now() + Duration::from_secs(2 * 3600);
    let key = certified_key(&pki, Algorithm::ES256, not_after);
    let kid = key.kid().clone();
    let not_after = key.certificate_chain().unwrap().not_after();
    let registry = KeyRegistry::builder()
        .clock(clock.clone())
        .active(key)
        .build()
        .unwrap();
    let policy = RotationPolicy::builder(Duration::from_secs(30 * 86_400))
        .build()
        .unwrap();
    let rotator = KeyRotator::spawn(registry.clone(), policy).unwrap();

    // Minute by minute for three hours: whenever the certified key is
    // active, its certificate is valid; a next key is published before
    // it signs.
    let mut replaced_at = None;
    for _ in 0..180 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let snapshot = registry.current();
        let active = snapshot.active().expect("a key is always active");
        if let Some(chain) = active.public_jwk().certificate_chain() {
            assert!(
                chain.is_valid_at(clock.now()),
                "the certified key is still active past its notAfter"
            );
        } else if replaced_at.is_none() {
            replaced_at = Some(clock.now());
            let old = snapshot.get(kid.as_str()).expect("the old key is retained");
            assert_eq!(old.state(), KeyState::Retiring);
        }
    }
    let replaced_at = replaced_at.expect("the certified key was replaced");
    assert!(replaced_at <= not_after + Duration::from_secs(60));
    rotator.stop().await;

    // The warning came at once (the certificate ends within 7 days), once.
    let warnings = captured.matching(&["WARN", "certificate expires soon", kid.as_str()]);
    assert_eq!(warnings.len(), 1, "{:#?}", captured.lines());
}

#[tokio::test(start_paused = true)]
async fn no_warning_before_the_configured_time() {
    let captured = logs();
    let pki = Pki::new();
    let clock = Clock::tokio();
    let key = certified_key(
        &pki,
        Algorithm::EdDSA,
        clock.now() + Duration::from_secs(10 * 86_400),
    );
    let kid = key.kid().clone();
    let registry = KeyRegistry::builder()
        .clock(clock.clone())
        .active(key)
        .build()
        .unwrap();
    let policy = RotationPolicy::builder(Duration::from_secs(30 * 86_400))
        .certificate_warning(Duration::from_secs(86_400))
        .build()
        .unwrap();
    let rotator = KeyRotator::spawn(registry.clone(), policy).unwrap();
    // Eight days: more than a day before the end, no warning.
    tokio::time::sleep(Duration::from_secs(8 * 86_400)).await;
    assert!(
        captured
            .matching(&["certificate expires soon", kid.as_str()])
            .is_empty()
    );
    // Past nine days: the warning.
    tokio::time::sleep(Duration::from_secs(86_400 + 120)).await;
    assert_eq!(
        captured
            .matching(&["certificate expires soon", kid.as_str()])
            .len(),
        1,
        "{:#?}",
        captured.lines()
    );
    rotator.stop().await;
}

#[test]
fn a_renewed_certificate_of_the_same_key_replaces_the_chain_and_is_kept() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let (rc_key, key_pem) = certs::key(Algorithm::ES256);
    let soon = SystemTime::now() + Duration::from_secs(3600);
    let old_chain = pki.chain_pem(&rc_key, rcgen::date_time_ymd(2020, 1, 1), at(soon));
    let key = SigningKey::from_pem_with_certificate_chain(&key_pem, &old_chain, Algorithm::ES256)
        .unwrap();
    let kid = key.kid().clone();
    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(&dir).unwrap())
        .active(key)
        .build()
        .unwrap();
    let etag = registry.current().etag().clone();

    // The same key, a certificate valid for a year.
    let renewed = SigningKey::from_pem_with_certificate_chain(
        &key_pem,
        pki.valid_chain_pem(&rc_key),
        Algorithm::ES256,
    )
    .unwrap();
    let renewed_chain = renewed.certificate_chain().unwrap().clone();
    registry.renew_certificate(renewed).unwrap();
    let snapshot = registry.current();
    let active = snapshot.active().unwrap();
    assert_eq!(active.kid(), &kid, "same key, same kid");
    assert_eq!(active.state(), KeyState::Active);
    assert_eq!(
        active.public_jwk().certificate_chain(),
        Some(&renewed_chain)
    );
    assert_ne!(snapshot.etag(), &etag, "the JWKS changed");

    // Another key with this kid's certificate is not a renewal; an unknown
    // kid neither.
    let (other, other_pem) = certs::key(Algorithm::ES256);
    let stranger = SigningKey::from_pem_with_certificate_chain(
        &other_pem,
        pki.valid_chain_pem(&other),
        Algorithm::ES256,
    )
    .unwrap();
    let err = registry.renew_certificate(stranger.clone()).unwrap_err();
    assert!(matches!(err, RegistryError::UnknownKid(_)), "{err:?}");
    let impostor = stranger.with_kid(kid.clone());
    let err = registry.renew_certificate(impostor).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::Key(tower_jwt_signer::KeyError::CertificateKeyMismatch { .. })
        ),
        "{err:?}"
    );
    drop(registry);

    // A restart loads the renewed chain.
    let registry = open(&dir).unwrap();
    assert_eq!(
        registry
            .current()
            .active()
            .unwrap()
            .public_jwk()
            .certificate_chain(),
        Some(&renewed_chain)
    );
}
