//! Readers take snapshots while a writer rotates in a loop: no snapshot
//! ever has an active kid missing from its JWKS, and versions only grow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::{Algorithm, KeyRegistry, SigningKey};

fn published_kids(bytes: &[u8]) -> Vec<String> {
    let jwks: Value = serde_json::from_slice(bytes).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn readers_never_see_an_unpublished_active_key() {
    const ROTATIONS: usize = 200;
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    // Keys are made up front so the loop is only registry work.
    let keys: Vec<SigningKey> = (0..ROTATIONS)
        .map(|_| SigningKey::generate(Algorithm::ES256).unwrap())
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..4)
        .map(|_| {
            let registry = registry.clone();
            let done = done.clone();
            let checked = checked.clone();
            std::thread::spawn(move || {
                let mut last_version = 0;
                while !done.load(Ordering::Acquire) {
                    let snapshot = registry.current();
                    assert!(snapshot.version() >= last_version, "version went back");
                    last_version = snapshot.version();
                    let active = snapshot.active().expect("always an active key");
                    let kids = published_kids(snapshot.jwks_bytes());
                    assert!(
                        kids.iter().any(|k| k == active.kid().as_str()),
                        "active kid {} missing from {kids:?}",
                        active.kid()
                    );
                    assert_eq!(kids.len(), snapshot.keys().len());
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let writer = {
        let registry = registry.clone();
        std::thread::spawn(move || {
            for (i, key) in keys.into_iter().enumerate() {
                if i % 2 == 0 {
                    registry.add_next(key).unwrap();
                    registry.rotate(Duration::ZERO).unwrap();
                } else {
                    registry.rotate_to(key, Duration::ZERO).unwrap();
                }
                registry.prune_expired();
            }
        })
    };
    writer.join().unwrap();
    done.store(true, Ordering::Release);
    for reader in readers {
        reader.join().unwrap();
    }

    assert!(checked.load(Ordering::Relaxed) > 0);
    let snapshot = registry.current();
    // 2 changes per even step (add, rotate) + 1 per odd step, + prunes.
    assert!(snapshot.version() >= (ROTATIONS * 3 / 2) as u64);
    assert_eq!(
        snapshot
            .keys()
            .iter()
            .filter(|k| k.state() == KeyState::Active)
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_readers_and_change_notifications() {
    let registry = KeyRegistry::generate(Algorithm::EdDSA).unwrap();
    let mut changes = registry.subscribe();
    let watcher = tokio::spawn(async move {
        let mut seen = 0u64;
        while changes.changed().await.is_ok() {
            let snapshot = changes.borrow_and_update().clone();
            let active = snapshot.active().unwrap().kid().to_string();
            assert!(published_kids(snapshot.jwks_bytes()).contains(&active));
            seen = snapshot.version();
            if seen >= 50 {
                break;
            }
        }
        seen
    });
    for _ in 0..50 {
        let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
        registry.rotate_to(key, Duration::from_secs(60)).unwrap();
        tokio::task::yield_now().await;
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watcher finished")
        .unwrap();
    assert_eq!(seen, 50);
    assert_eq!(registry.current().keys().len(), 51, "all retained for 60 s");
}
