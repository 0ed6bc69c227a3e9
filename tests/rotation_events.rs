//! The rotator and the stores report what they do with `tracing`: key
//! published, activated, retired, removed, and load errors naming the file.
//!
//! One test in its own binary: it installs the global subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_jwt_signer::rotation::{KeyRotator, RotationPolicy};
use tower_jwt_signer::store::DirKeyStore;
use tower_jwt_signer::{Algorithm, Clock, KeyRegistry};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn lifecycle_events_and_load_errors_are_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

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
    let policy = RotationPolicy::builder(period, Duration::from_secs(60))
        .build()
        .unwrap();
    let rotator = KeyRotator::spawn(registry.clone(), policy);
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
            && line.contains("broken.key.json")),
        "{lines:#?}"
    );
}
