//! The rotator on tokio's paused clock: several periods with the two
//! invariants checked throughout, rotation by hand, emergencies, catching up
//! at start, retrying after failures, stopping.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::support::lifecycle::{published_kids, sign, verify_with_jwks};
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::registry::{KeySnapshot, KeyState};
use tower_jwt_signer::rotation::OldKeys;
use tower_jwt_signer::store::{KeyStore, MemoryKeyStore, StoreLock, StoredKey};
use tower_jwt_signer::{
    Algorithm, DirKeyStore, KeyRegistry, KeyRotator, Kid, RotationPolicy, SigningKey, StoreError,
};

const PERIOD: Duration = Duration::from_secs(3600);
const TTL: u64 = 60;
const LEEWAY: u64 = 60;
const PREPUBLISH: Duration = Duration::from_secs(300);

fn policy() -> RotationPolicy {
    RotationPolicy::builder(PERIOD)
        .verifier_leeway(Duration::from_secs(LEEWAY))
        .build()
        .unwrap()
}

fn secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Issued {
    token: String,
    kid: String,
    exp: u64,
}

#[derive(Default)]
struct Observed {
    /// When each kid first appeared in the JWKS.
    first_seen: HashMap<String, SystemTime>,
    tokens: Vec<Issued>,
    violations: Vec<String>,
    max_published: usize,
    first_active: Option<String>,
}

impl Observed {
    /// Records the kids of a snapshot seen at `now` and checks that every
    /// token still alive (exp + leeway) has its key published, and that the
    /// active key (which may sign from now on) was published `prepublish`
    /// ago (the first key excepted).
    fn observe(&mut self, snapshot: &KeySnapshot, now: SystemTime) {
        let jwks = snapshot.jwks_bytes();
        let kids = published_kids(jwks);
        self.max_published = self.max_published.max(kids.len());
        for kid in &kids {
            self.first_seen.entry(kid.clone()).or_insert(now);
        }
        for issued in &self.tokens {
            if issued.exp + LEEWAY > secs(now) && !kids.contains(&issued.kid) {
                self.violations.push(format!(
                    "at {}: the key {} of a live token (exp {}) is not published",
                    secs(now),
                    issued.kid,
                    issued.exp
                ));
            }
        }
        if let Some(active) = snapshot.active() {
            let kid = active.kid().to_string();
            let first = self.first_active.get_or_insert_with(|| kid.clone());
            let published_for = now.duration_since(self.first_seen[&kid]).unwrap();
            if kid != *first && published_for < PREPUBLISH {
                self.violations.push(format!(
                    "at {}: {kid} is active after being published for only {published_for:?}",
                    secs(now)
                ));
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn several_periods_keep_both_invariants() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let clock = Clock::tokio();
    let registry = KeyRegistry::builder()
        .clock(clock.clone())
        .store(DirKeyStore::open(&dir).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let first_kid = registry.current().active().unwrap().kid().to_string();
    let observed = Arc::new(Mutex::new(Observed::default()));
    observed
        .lock()
        .unwrap()
        .observe(&registry.current(), clock.now());

    // Watch every published snapshot, at the moment it is published.
    let observer = {
        let observed = Arc::clone(&observed);
        let clock = clock.clone();
        let mut changes = registry.subscribe();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let snapshot = changes.borrow_and_update().clone();
                observed.lock().unwrap().observe(&snapshot, clock.now());
            }
        })
    };

    let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
    let start = clock.now();
    // Not a divisor of the period: tokens at many offsets.
    let step = Duration::from_secs(7);
    let mut kids_used = Vec::<String>::new();
    let run = async {
        while clock.now() < start + PERIOD * 5 + Duration::from_secs(600) {
            tokio::time::sleep(step).await;
            let snapshot = registry.current();
            let now = clock.now();
            let (token, kid) = sign(&snapshot, secs(now), TTL);
            let mut observed = observed.lock().unwrap();
            observed.observe(&snapshot, now);
            // (1) The token's kid was published before the token was made,
            // and a rotated-in key at least `prepublish` before.
            let seen = *observed
                .first_seen
                .get(&kid)
                .unwrap_or_else(|| panic!("{kid} signs but was never seen published"));
            assert!(seen <= now);
            if kid != first_kid {
                let published_for = now.duration_since(seen).unwrap();
                assert!(
                    published_for >= PREPUBLISH,
                    "{kid} signed after being published for only {published_for:?}"
                );
            }
            // (2) Every live token verifies against the JWKS of now.
            for issued in &observed.tokens {
                if issued.exp + LEEWAY > secs(now) {
                    verify_with_jwks(&issued.token, snapshot.jwks_bytes()).unwrap_or_else(|err| {
                        panic!("a live token stopped verifying at {}: {err}", secs(now))
                    });
                }
            }
            verify_with_jwks(&token, snapshot.jwks_bytes()).unwrap();
            observed.tokens.push(Issued {
                token,
                kid: kid.clone(),
                exp: secs(now) + TTL,
            });
            if kids_used.last() != Some(&kid) {
                kids_used.push(kid);
            }
        }
    };
    tokio::time::timeout(PERIOD * 6, run).await.unwrap();
    rotator.stop().await;
    observer.abort();

    let observed = observed.lock().unwrap();
    assert!(observed.violations.is_empty(), "{:?}", observed.violations);
    // Five rotations, each key signing once, in turn.
    assert_eq!(kids_used.len(), 6, "{kids_used:?}");
    let mut distinct = kids_used.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 6);
    // Never more than next + active + retiring.
    assert!(observed.max_published <= 3, "{}", observed.max_published);
    // Old keys left: only the current key (and maybe its successor) remain.
    let snapshot = registry.current();
    let published = published_kids(snapshot.jwks_bytes());
    assert!(published.len() <= 2, "{published:?}");
    assert!(!published.contains(&first_kid));
    // The store holds exactly what is published.
    let mut stored: Vec<String> = DirKeyStore::open(&dir)
        .unwrap()
        .load()
        .unwrap()
        .iter()
        .map(|k| k.kid().to_string())
        .collect();
    let mut published = published;
    stored.sort();
    published.sort();
    assert_eq!(stored, published);
}

async fn settle() {
    // Let the rotator run its pending step (blocking threads included).
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn memory_registry(clock: &Clock) -> KeyRegistry {
    KeyRegistry::builder()
        .clock(clock.clone())
        .store(MemoryKeyStore::new())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn rotate_now_publishes_first_and_activates_after_prepublish() {
    let clock = Clock::tokio();
    let registry = memory_registry(&clock);
    let old = registry.current().active().unwrap().kid().clone();
    let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
    settle().await;
    let t0 = clock.now();
    let scheduled = rotator.rotate_now().await.unwrap();
    assert_eq!(
        scheduled.activates_at().duration_since(t0).unwrap(),
        PREPUBLISH
    );
    let snapshot = registry.current();
    assert_eq!(snapshot.active().unwrap().kid(), &old);
    assert_eq!(
        snapshot.get(scheduled.kid()).unwrap().state(),
        KeyState::Next
    );
    // Asking again does not publish a second key.
    let again = rotator.rotate_now().await.unwrap();
    assert_eq!(again, scheduled);
    assert_eq!(registry.current().keys().len(), 2);

    tokio::time::sleep(PREPUBLISH - Duration::from_secs(1)).await;
    assert_eq!(registry.current().active().unwrap().kid(), &old);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = registry.current();
    assert_eq!(snapshot.active().unwrap().kid(), scheduled.kid());
    let retiring = snapshot.get(&old).unwrap();
    assert_eq!(retiring.state(), KeyState::Retiring);
    let retain = retiring
        .retires_at()
        .unwrap()
        .duration_since(snapshot.active().unwrap().activated_at().unwrap())
        .unwrap();
    assert_eq!(retain, Duration::from_secs(TTL + LEEWAY));
    // Retired keys leave after `retain`.
    tokio::time::sleep(retain + Duration::from_secs(1)).await;
    assert!(registry.current().get(&old).is_none());
    assert!(
        registry
            .store()
            .unwrap()
            .load()
            .unwrap()
            .iter()
            .all(|k| k.kid() != &old)
    );
    // The new key's period started at its activation: no rotation soon.
    assert_eq!(registry.current().keys().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn emergency_rotation_keeping_the_old_key() {
    let clock = Clock::tokio();
    let registry = memory_registry(&clock);
    let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
    settle().await;
    let old = registry.current().active().unwrap().kid().clone();
    let (old_token, _) = sign(&registry.current(), clock.unix_seconds(), TTL);
    // A next key exists (it never signed): it is withdrawn too.
    let next = rotator.rotate_now().await.unwrap();

    let new = rotator.emergency_rotate(OldKeys::Retain).await.unwrap();
    let snapshot = registry.current();
    // Signs at once, no prepublish wait.
    assert_eq!(snapshot.active().unwrap().kid(), &new);
    assert!(snapshot.get(next.kid()).is_none());
    assert_eq!(snapshot.get(&old).unwrap().state(), KeyState::Retiring);
    verify_with_jwks(&old_token, snapshot.jwks_bytes()).unwrap();
    rotator.stop().await;
}

#[tokio::test(start_paused = true)]
async fn emergency_rotation_revoking_the_old_key() {
    let clock = Clock::tokio();
    let registry = memory_registry(&clock);
    let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
    settle().await;
    let old = registry.current().active().unwrap().kid().clone();
    let (old_token, _) = sign(&registry.current(), clock.unix_seconds(), TTL);
    verify_with_jwks(&old_token, registry.current().jwks_bytes()).unwrap();

    let new = rotator.emergency_rotate(OldKeys::Revoke).await.unwrap();
    let snapshot = registry.current();
    assert_eq!(snapshot.active().unwrap().kid(), &new);
    assert_eq!(snapshot.keys().len(), 1);
    // The documented consequence: the old key's live tokens stop verifying.
    let err = verify_with_jwks(&old_token, snapshot.jwks_bytes()).unwrap_err();
    assert!(err.contains("not published"), "{err}");
    assert!(
        registry
            .store()
            .unwrap()
            .load()
            .unwrap()
            .iter()
            .all(|k| k.kid() != &old)
    );
    let (new_token, _) = sign(&snapshot, clock.unix_seconds(), TTL);
    verify_with_jwks(&new_token, snapshot.jwks_bytes()).unwrap();
    rotator.stop().await;
}

/// A memory store that records which thread saves, and can fail.
#[derive(Debug, Default)]
struct Recording {
    inner: MemoryKeyStore,
    save_threads: Mutex<Vec<std::thread::ThreadId>>,
    failures_left: Mutex<usize>,
}

impl KeyStore for Recording {
    fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.inner.load()
    }

    fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
        let mut left = self.failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(StoreError::Other("disk full".into()));
        }
        self.save_threads
            .lock()
            .unwrap()
            .push(std::thread::current().id());
        self.inner.save(key)
    }

    fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
        self.inner.remove(kid)
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        self.inner.lock()
    }
}

#[tokio::test(start_paused = true)]
async fn rsa_keys_are_generated_and_stored_off_the_runtime_thread() {
    let clock = Clock::tokio();
    let store = Arc::new(Recording::default());
    let registry = KeyRegistry::builder()
        .clock(clock.clone())
        .store(Arc::clone(&store))
        .active(SigningKey::generate(Algorithm::RS256).unwrap())
        .build()
        .unwrap();
    store.save_threads.lock().unwrap().clear();
    let old = registry.current().active().unwrap().kid().clone();
    let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
    tokio::time::sleep(PERIOD + Duration::from_secs(1)).await;
    let snapshot = registry.current();
    let active = snapshot.active().unwrap();
    assert_ne!(active.kid(), &old);
    assert_eq!(active.algorithm(), Algorithm::RS256);
    // This test runs on a current-thread runtime: every save happened on
    // another (blocking) thread.
    let threads = store.save_threads.lock().unwrap().clone();
    assert!(threads.len() >= 3, "{threads:?}");
    let runtime_thread = std::thread::current().id();
    assert!(threads.iter().all(|t| *t != runtime_thread));
    rotator.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_is_retried_and_nothing_is_published_meanwhile() {
    let clock = Clock::tokio();
    let store = Arc::new(Recording::default());
    let registry = KeyRegistry::builder()
        .clock(clock.clone())
        .store(Arc::clone(&store))
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let policy = RotationPolicy::builder(PERIOD)
        .retry_after(Duration::from_secs(30))
        .build()
        .unwrap();
    let rotator = KeyRotator::spawn(registry.clone(), policy).unwrap();
    settle().await;
    let version = registry.current().version();
    *store.failures_left.lock().unwrap() = 3;
    // Due to publish the next key at PERIOD - prepublish: three failures.
    tokio::time::sleep(PERIOD - PREPUBLISH + Duration::from_secs(1)).await;
    assert_eq!(registry.current().version(), version);
    assert_eq!(registry.current().keys().len(), 1);
    // Three retries 30 s apart later, it is published.
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert_eq!(*store.failures_left.lock().unwrap(), 0);
    assert_eq!(registry.current().keys().len(), 2);
    // Published later than planned, it still waits its full prepublish:
    // the old key is still active just before the new activation time.
    let next = registry
        .current()
        .keys()
        .iter()
        .find(|k| k.state() == KeyState::Next)
        .unwrap()
        .clone();
    let wait = next
        .activates_at()
        .unwrap()
        .duration_since(next.created_at())
        .unwrap();
    assert!(wait >= PREPUBLISH, "{wait:?}");
    rotator.stop().await;
}

#[tokio::test(start_paused = true)]
async fn at_start_the_rotator_catches_up_without_skipping_prepublish() {
    let clock = Clock::tokio();
    let now = clock.now();
    let store = MemoryKeyStore::new();
    let fresh = || SigningKey::generate(Algorithm::ES256).unwrap();
    // Active for ten periods (the process was down), a retiring key long
    // expired, one retiring without an end.
    let long_ago = now - PERIOD * 10;
    let active =
        StoredKey::new(fresh(), KeyState::Active, long_ago).with_activated_at(Some(long_ago));
    let expired =
        StoredKey::new(fresh(), KeyState::Retiring, long_ago).with_retires_at(Some(now - PERIOD));
    let open = StoredKey::new(fresh(), KeyState::Retiring, long_ago);
    for key in [&active, &expired, &open] {
        store.save(key).unwrap();
    }
    let registry = KeyRegistry::builder()
        .clock(clock.clone())
        .store(store)
        .build()
        .unwrap();
    assert_eq!(registry.current().keys().len(), 3);
    let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
    settle().await;
    let snapshot = registry.current();
    assert!(snapshot.get(expired.kid()).is_none(), "expired key removed");
    let open_now = snapshot.get(open.kid()).unwrap();
    assert!(open_now.retires_at().is_some(), "given an end");
    // The active key keeps signing until a next key has been published
    // for `prepublish`.
    assert_eq!(snapshot.active().unwrap().kid(), active.kid());
    let next = snapshot
        .keys()
        .iter()
        .find(|k| k.state() == KeyState::Next)
        .expect("a next key is published at once");
    let activates_at = next.activates_at().unwrap();
    assert!(activates_at.duration_since(next.created_at()).unwrap() >= PREPUBLISH);
    rotator.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stopped_or_dropped_rotator_rotates_no_more() {
    let clock = Clock::tokio();
    for stop in [true, false] {
        let registry = memory_registry(&clock);
        let rotator = KeyRotator::spawn(registry.clone(), policy()).unwrap();
        settle().await;
        let version = registry.current().version();
        if stop {
            rotator.stop().await;
        } else {
            drop(rotator);
        }
        tokio::time::sleep(PERIOD * 3).await;
        assert_eq!(registry.current().version(), version);
        assert_eq!(registry.current().keys().len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn an_empty_registry_gets_an_active_key_at_once() {
    let clock = Clock::tokio();
    let registry = KeyRegistry::builder()
        .clock(clock.clone())
        .store(MemoryKeyStore::new())
        .build()
        .unwrap();
    assert!(registry.current().active().is_none());
    let policy = RotationPolicy::builder(PERIOD)
        .algorithm(Algorithm::EdDSA)
        .build()
        .unwrap();
    let rotator = KeyRotator::spawn(registry.clone(), policy).unwrap();
    settle().await;
    let snapshot = registry.current();
    assert_eq!(snapshot.active().unwrap().algorithm(), Algorithm::EdDSA);
    assert_eq!(registry.store().unwrap().load().unwrap().len(), 1);
    rotator.stop().await;
}

/// The policy the signing proxy example builds from `--key-dir DIR
/// --rotate-every 600 --ttl 30` (its defaults: prepublish the smaller of
/// half the period and the JWKS max-age, retain ttl + 60 s of leeway),
/// driven on tokio's paused clock. The example's own flags and what it
/// reports are tested on the real binary (`tools::lifecycle_proxy`).
#[tokio::test(start_paused = true)]
async fn rotate_every_rotates_the_keys_in_the_key_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    // --ttl 30 is the registry's token lifetime; the JWKS max-age is the
    // default 300 s.
    let open = |clock: Clock| {
        KeyRegistry::builder()
            .clock(clock)
            .token_ttl(Duration::from_secs(30))
            .generate_if_missing(Algorithm::ES256)
            .store(
                DirKeyStore::builder(&dir)
                    .algorithm(Algorithm::ES256)
                    .open()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let period = Duration::from_secs(600);
    let max_age = Duration::from_secs(300); // the JWKS max-age, by default
    let policy = RotationPolicy::builder(period)
        .algorithm(Algorithm::ES256)
        .prepublish((period / 2).min(max_age))
        .build()
        .unwrap();
    let registry = open(Clock::tokio());
    let first = registry.current().active().unwrap().kid().clone();
    let rotator = KeyRotator::spawn(registry.clone(), policy).unwrap();
    assert_eq!(rotator.prepublish(), Duration::from_secs(300));
    assert_eq!(rotator.retain(), Duration::from_secs(30 + 60));

    // Published 300 s (half the period) before it signs.
    tokio::time::sleep(Duration::from_secs(301)).await;
    let snapshot = registry.current();
    assert_eq!(snapshot.active().unwrap().kid(), &first);
    let next = snapshot
        .keys()
        .iter()
        .find(|k| k.state() == KeyState::Next)
        .expect("published half a period ahead")
        .kid()
        .clone();
    tokio::time::sleep(Duration::from_secs(300)).await;
    let snapshot = registry.current();
    assert_eq!(snapshot.active().unwrap().kid(), &next);
    assert_eq!(snapshot.get(&first).unwrap().state(), KeyState::Retiring);
    // Retained ttl + leeway = 90 s, then gone from the JWKS and the dir.
    tokio::time::sleep(Duration::from_secs(91)).await;
    assert!(registry.current().get(&first).is_none());
    assert!(!dir.join(format!("{first}.key.json")).exists());
    assert!(dir.join(format!("{next}.key.json")).exists());
    rotator.stop().await;

    // A restart picks up the rotated key.
    let again = open(Clock::system());
    assert_eq!(again.current().active().unwrap().kid(), &next);
}
