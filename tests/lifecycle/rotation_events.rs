//! The rotator and the stores report what they do with `tracing`: key
//! published, activated, retired, removed, and load errors naming the file.
//!
//! The lines are read from the binary's one global subscriber
//! ([`logs`]), shared with the other tests: only lines naming this test's
//! kids and directory count.

use std::time::Duration;

use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::{Algorithm, DirKeyStore, KeyRegistry, KeyRotator, RotationPolicy};

use crate::support::logs::logs;

#[tokio::test(start_paused = true)]
async fn lifecycle_events_and_load_errors_are_logged() {
    let captured = logs();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let clock = Clock::tokio();
    let registry = KeyRegistry::builder()
        .clock(clock.clone())
        .store(DirKeyStore::open(&dir).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let first = registry.current().active().unwrap().kid().to_string();
    let period = Duration::from_secs(3600);
    let policy = RotationPolicy::builder(period).build().unwrap();
    let rotator = KeyRotator::spawn(registry.clone(), policy).unwrap();
    // One full rotation, and the old key's retention.
    tokio::time::sleep(period + Duration::from_secs(200)).await;
    let second = registry.current().active().unwrap().kid().to_string();
    assert_ne!(first, second);
    rotator.stop().await;

    let lines = captured.lines();
    let has = |message: &str, kid: &str| {
        lines
            .iter()
            .any(|line| line.contains(message) && line.contains(kid))
    };
    assert!(has("key published", &second), "{lines:#?}");
    assert!(has("key activated", &second), "{lines:#?}");
    assert!(has("key retired", &first), "{lines:#?}");
    assert!(has("key removed", &first), "{lines:#?}");
    // In this order.
    let position = |message: &str, kid: &str| {
        lines
            .iter()
            .position(|line| line.contains(message) && line.contains(kid))
            .unwrap()
    };
    assert!(position("key published", &second) < position("key activated", &second));
    assert!(position("key activated", &second) <= position("key retired", &first));
    assert!(position("key retired", &first) < position("key removed", &first));
    // No private key material in the log.
    let file = std::fs::read_to_string(dir.join(format!("{second}.key.json"))).unwrap();
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    let d = file["private_jwk"]["d"].as_str().unwrap();
    assert!(lines.iter().all(|line| !line.contains(d)));

    // A load error names the file.
    let bad = dir.join("broken.key.json");
    std::fs::write(&bad, "{").unwrap();
    let err = registry.reload().unwrap_err();
    assert!(err.to_string().contains("broken.key.json"), "{err}");
    let lines = captured.lines();
    assert!(
        lines.iter().any(|line| line.contains("ERROR")
            && line.contains("cannot load the stored keys")
            && line.contains(&bad.display().to_string())),
        "{lines:#?}"
    );
}
