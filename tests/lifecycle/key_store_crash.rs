//! Crash safety with real crashes: a child process rotates keys in a loop
//! and is killed (SIGKILL) at an arbitrary point, several times; every time
//! the directory loads, with at most one active key, and the next writer
//! carries on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::store::KeyStore;
use tower_jwt_signer::{Algorithm, DirKeyStore, KeyRegistry, SigningKey};

const CHILD_DIR: &str = "TOWER_JWT_SIGNER_CRASH_CHILD_DIR";

fn open(dir: &Path) -> KeyRegistry {
    KeyRegistry::builder()
        .store(DirKeyStore::open(dir).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap()
}

/// This test's name as the test harness knows it: its module path without
/// the binary's name (`key_store_crash::a_writer_killed_...`).
fn this_test() -> String {
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    format!("{module}::a_writer_killed_at_any_point_leaves_a_loadable_directory")
}

/// The child process: the same test binary and test, with `CHILD_DIR` set.
/// Rotates until it is killed.
fn child_writer(dir: &str) -> ! {
    let registry = open(Path::new(dir));
    for round in 0u64.. {
        registry
            .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
            .unwrap();
        registry.rotate(Duration::ZERO).unwrap();
        registry.prune_expired();
        println!("rotated {round}");
    }
    unreachable!("killed by the parent long before")
}

#[test]
fn a_writer_killed_at_any_point_leaves_a_loadable_directory() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        child_writer(&dir);
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let mut active = open(&dir).current().active().unwrap().kid().clone();
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &this_test(), "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it rotate a few times (more each round), then kill it
        // wherever it is.
        let stdout = child.stdout.take().unwrap();
        let (lines, rotations) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("rotated") && lines.send(()).is_err() {
                    break;
                }
            }
        });
        for _ in 0..=round * 3 {
            if rotations.recv_timeout(Duration::from_secs(60)).is_err() {
                let _ = child.kill();
                panic!("the child writer made no progress");
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();

        // Whatever it was doing, the directory loads.
        let loaded = DirKeyStore::open(&dir)
            .unwrap()
            .load()
            .unwrap_or_else(|err| panic!("round {round}: {err}"));
        let actives = loaded
            .iter()
            .filter(|k| k.state() == KeyState::Active)
            .count();
        assert!(actives <= 1, "round {round}: {actives} active keys");
        // The child made progress: the key active before is not any more.
        let registry = open(&dir);
        let now_active = registry.current().active().unwrap().kid().clone();
        assert_ne!(now_active, active, "round {round}");
        // And a new writer can carry on.
        registry.rotate(Duration::ZERO).unwrap();
        active = registry.current().active().unwrap().kid().clone();
    }
}
