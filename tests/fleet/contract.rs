//! The `KeyStore` contract, one suite run against every store the crate
//! ships: `MemoryKeyStore`, `DirKeyStore` and (feature `redis`)
//! `RedisKeyStore`.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::store::{KeyStore, MemoryKeyStore, StoreChange, StoredKey};
use tower_jwt_signer::{Algorithm, DirKeyStore, KeyRegistry, SigningKey};

/// A store under test.
pub(crate) trait Backend {
    /// A handle that may write (for Redis: it holds the leader lease),
    /// with whatever keeps it writing.
    fn writer(&self) -> (Arc<dyn KeyStore>, Box<dyn Any>);
    /// Another handle on the same store, that only reads.
    fn reader(&self) -> Arc<dyn KeyStore>;
    /// Empties the store behind the handles' backs (a Redis restarted
    /// without persistence, key files deleted).
    fn wipe(&self);
}

fn stored(state: KeyState) -> StoredKey {
    StoredKey::new(
        SigningKey::generate(Algorithm::ES256).unwrap(),
        state,
        SystemTime::now(),
    )
}

fn sorted(mut keys: Vec<StoredKey>) -> Vec<StoredKey> {
    keys.sort_by(|a, b| a.kid().cmp(b.kid()));
    keys
}

/// Runs every check of the contract on `backend`.
pub(crate) fn keeps_the_contract(backend: &dyn Backend) {
    backend.wipe();
    empty_then_saved_then_removed(backend);
    backend.wipe();
    a_commit_is_all_of_its_writes(backend);
    backend.wipe();
    a_registry_restarts_with_the_same_keys(backend);
    backend.wipe();
    readers_never_see_half_a_change(backend);
    backend.wipe();
    a_store_found_empty_gets_the_keys_back(backend);
    backend.wipe();
    a_certificate_chain_survives_a_restart(backend);
}

fn empty_then_saved_then_removed(backend: &dyn Backend) {
    let (store, _keep) = backend.writer();
    assert!(store.load().unwrap().is_empty());
    assert!(store.is_leader().unwrap(), "a writer leads");
    let key = stored(KeyState::Active).with_activated_at(Some(SystemTime::now()));
    store.save(&key).unwrap();
    assert_eq!(backend.reader().load().unwrap(), vec![key.clone()]);
    // A save replaces the entry of the same kid.
    let retired = StoredKey::new(
        Arc::clone(key.key().unwrap()),
        KeyState::Retiring,
        key.created_at(),
    )
    .with_retires_at(Some(SystemTime::now() + Duration::from_secs(60)));
    store.save(&retired).unwrap();
    assert_eq!(backend.reader().load().unwrap(), vec![retired.clone()]);
    store.remove(key.kid()).unwrap();
    store.remove(key.kid()).unwrap(); // not stored: fine
    assert!(backend.reader().load().unwrap().is_empty());
}

fn a_commit_is_all_of_its_writes(backend: &dyn Backend) {
    let (store, _keep) = backend.writer();
    let (old, next, expired) = (
        stored(KeyState::Active),
        stored(KeyState::Next),
        stored(KeyState::Retiring),
    );
    store
        .commit(
            &StoreChange::new()
                .save(old.clone(), None)
                .save(next.clone(), None)
                .save(expired.clone(), None),
        )
        .unwrap();
    assert_eq!(
        sorted(backend.reader().load().unwrap()),
        sorted(vec![old.clone(), next.clone(), expired.clone()])
    );
    let retired = StoredKey::new(
        Arc::clone(old.key().unwrap()),
        KeyState::Retiring,
        old.created_at(),
    );
    let activated = StoredKey::new(
        Arc::clone(next.key().unwrap()),
        KeyState::Active,
        next.created_at(),
    );
    store
        .commit(
            &StoreChange::new()
                .save(activated.clone(), Some(next))
                .save(retired.clone(), Some(old))
                .remove(expired),
        )
        .unwrap();
    assert_eq!(
        sorted(backend.reader().load().unwrap()),
        sorted(vec![retired, activated])
    );
}

fn a_registry_restarts_with_the_same_keys(backend: &dyn Backend) {
    let (store, keep) = backend.writer();
    let registry = KeyRegistry::builder()
        .store(Arc::clone(&store))
        .generate_if_missing(Algorithm::EdDSA)
        .build()
        .unwrap();
    registry
        .add_next(SigningKey::generate(Algorithm::EdDSA).unwrap())
        .unwrap();
    let before = registry.current();
    drop((registry, store, keep));
    // A restart: a new handle, nothing generated.
    let (store, _keep) = backend.writer();
    let again = KeyRegistry::builder()
        .store(store)
        .generate_if_missing(Algorithm::EdDSA)
        .build()
        .unwrap();
    assert_eq!(again.current().jwks_bytes(), before.jwks_bytes());
    assert_eq!(
        again.current().active().unwrap().kid(),
        before.active().unwrap().kid()
    );
}

/// A key with its certificate chain (a self-signed leaf made with rcgen):
/// after a restart the store gives back the same chain, published as
/// before (`x5c`, `x5t#S256`).
fn a_certificate_chain_survives_a_restart(backend: &dyn Backend) {
    let rc_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["gateway.test".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let chain = params.self_signed(&rc_key).unwrap().pem();
    let key = SigningKey::from_pem_with_certificate_chain(
        rc_key.serialize_pem(),
        chain,
        Algorithm::ES256,
    )
    .unwrap();
    let expected = key.certificate_chain().unwrap().clone();
    let (store, keep) = backend.writer();
    let registry = KeyRegistry::builder()
        .store(Arc::clone(&store))
        .active(key)
        .build()
        .unwrap();
    let before = registry.current();
    drop((registry, store, keep));
    // Another handle reads it as it was written.
    let loaded = backend.reader().load().unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].key().unwrap().certificate_chain(),
        Some(&expected)
    );
    // A restart publishes the same chain.
    let (store, _keep) = backend.writer();
    let again = KeyRegistry::builder()
        .store(store)
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    assert_eq!(again.current().jwks_bytes(), before.jwks_bytes());
    let active = again.current();
    let active = active.active().unwrap();
    assert_eq!(active.public_jwk().certificate_chain(), Some(&expected));
}

fn readers_never_see_half_a_change(backend: &dyn Backend) {
    let (store, _keep) = backend.writer();
    let registry = KeyRegistry::builder()
        .store(Arc::clone(&store))
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let reader = backend.reader();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut loads = 0;
                while !done.load(Ordering::Relaxed) || loads == 0 {
                    let keys = reader.load().unwrap();
                    let active = keys
                        .iter()
                        .filter(|k| k.state() == KeyState::Active)
                        .count();
                    assert_eq!(active, 1, "a reader saw {active} active keys: {keys:?}");
                    loads += 1;
                }
                loads
            })
        })
        .collect();
    for _ in 0..15 {
        registry
            .rotate_to(
                SigningKey::generate(Algorithm::ES256).unwrap(),
                Duration::from_secs(60),
            )
            .unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
}

fn a_store_found_empty_gets_the_keys_back(backend: &dyn Backend) {
    let (store, _keep) = backend.writer();
    let registry = KeyRegistry::builder()
        .store(Arc::clone(&store))
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    registry
        .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
        .unwrap();
    let before = registry.current();
    backend.wipe();
    assert!(backend.reader().load().unwrap().is_empty());

    // The reload publishes nothing (no empty JWKS), and the leader writes
    // back the keys it holds.
    assert!(!registry.reload().unwrap());
    assert_eq!(registry.current().jwks_bytes(), before.jwks_bytes());
    let back = backend.reader().load().unwrap();
    let kids: Vec<_> = sorted(back).iter().map(|k| k.kid().clone()).collect();
    let mut expected: Vec<_> = before.keys().iter().map(|k| k.kid().clone()).collect();
    expected.sort();
    assert_eq!(kids, expected);

    // A change made on a store found empty starts from the keys held: the
    // same key stays active.
    backend.wipe();
    let active = before.active().unwrap().kid().clone();
    registry
        .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
        .unwrap();
    assert_eq!(registry.current().active().unwrap().kid(), &active);
    assert_eq!(backend.reader().load().unwrap().len(), 3);
}

/// `MemoryKeyStore`: one shared store.
struct Memory(Arc<MemoryKeyStore>);

impl Backend for Memory {
    fn writer(&self) -> (Arc<dyn KeyStore>, Box<dyn Any>) {
        (Arc::clone(&self.0) as Arc<dyn KeyStore>, Box::new(()))
    }

    fn reader(&self) -> Arc<dyn KeyStore> {
        Arc::clone(&self.0) as Arc<dyn KeyStore>
    }

    fn wipe(&self) {
        for key in self.0.load().unwrap() {
            self.0.remove(key.kid()).unwrap();
        }
    }
}

/// `DirKeyStore`: a handle per opening of one directory.
struct Dir(tempfile::TempDir);

impl Backend for Dir {
    fn writer(&self) -> (Arc<dyn KeyStore>, Box<dyn Any>) {
        (
            Arc::new(DirKeyStore::open(self.0.path().join("keys")).unwrap()),
            Box::new(()),
        )
    }

    fn reader(&self) -> Arc<dyn KeyStore> {
        Arc::new(DirKeyStore::open(self.0.path().join("keys")).unwrap())
    }

    fn wipe(&self) {
        let Ok(entries) = std::fs::read_dir(self.0.path().join("keys")) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with(".key.json") {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
}

#[test]
fn the_memory_store_keeps_the_key_store_contract() {
    keeps_the_contract(&Memory(Arc::new(MemoryKeyStore::new())));
}

#[test]
fn the_directory_store_keeps_the_key_store_contract() {
    keeps_the_contract(&Dir(tempfile::tempdir().unwrap()));
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use crate::redis_server::RedisServer;
    use crate::util;
    use tower_jwt_signer::store::redis::LeaderLease;

    /// `RedisKeyStore`: a writer holds the leader lease (on a runtime of its
    /// own); readers hold none.
    struct Redis(RedisServer);

    impl Backend for Redis {
        fn writer(&self) -> (Arc<dyn KeyStore>, Box<dyn Any>) {
            let store = util::store(&self.0, "contract");
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let lease = runtime.block_on(LeaderLease::spawn(&store));
            assert!(lease.is_held(), "the only candidate leads");
            // Dropped in order: the lease (released), then its runtime.
            let keep: (LeaderLease, tokio::runtime::Runtime) = (lease, runtime);
            (Arc::new(store), Box::new(Released(Some(keep))))
        }

        fn reader(&self) -> Arc<dyn KeyStore> {
            Arc::new(util::store(&self.0, "contract"))
        }

        fn wipe(&self) {
            // Not the lease: the writer keeps leading, as after a FLUSHALL
            // its lease task would take the lease again.
            let _: i64 = self
                .0
                .cmd(&["DEL", "{contract}:keys", "{contract}:version"]);
        }
    }

    /// Stops the lease (releasing it) before its runtime goes.
    struct Released(Option<(LeaderLease, tokio::runtime::Runtime)>);

    impl Drop for Released {
        fn drop(&mut self) {
            if let Some((lease, runtime)) = self.0.take() {
                runtime.block_on(lease.stop());
            }
        }
    }

    #[test]
    fn the_redis_store_keeps_the_key_store_contract() {
        keeps_the_contract(&Redis(RedisServer::start()));
    }
}
