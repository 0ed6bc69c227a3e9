//! Faults under load: the JWKS server restarts, the key directory becomes
//! read-only, the disk is full (before a step, and in the middle of an
//! activation), the clock jumps. Each test runs the whole chain over real
//! sockets (clients, a signing gateway on a `DirKeyStore`, a backend
//! verifying with a `RemoteJwks`) and checks, besides its own point, that
//! nothing unsigned is forwarded and nothing is lost: no request reached
//! the backend without a token the gateway signed (audited independently
//! with jsonwebtoken), no request went unanswered or got a 5xx, and every
//! key file in the directory still parses.
//!
//! The faults are real (`support::disk`): the key directory is made
//! read-only by the kernel (a read-only bind mount as root, `chmod` for an
//! unprivileged user) and the full disk is a small tmpfs that really fills
//! up, so the real `DirKeyStore` meets each fault and must leave every file
//! whole and no temporary file behind by itself. Mounting needs root with
//! `CAP_SYS_ADMIN` (CI runs as root): where it is refused, these tests fail
//! saying so, they do not fall back to a fake. The one wrapper left,
//! `FullAfterSaves`, only picks the moment the real disk fills (between the
//! two writes of an activation, which no outside timing can hit).

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::store::KeyStore;
use tower_jwt_signer::{
    Algorithm, DirKeyStore, KeyRegistry, KeyRotator, RegistryError, RemoteJwks, RotationPolicy,
    SigningKey, Verifier,
};

use crate::support::chain::{AUDIENCE, Gateway, ISSUER, jwks_url, signer};
use crate::support::disk::{ENOSPC, FullAfterSaves, ReadOnly, SmallDisk, os_error};
use crate::support::logs::logs;
use crate::support::soak::{
    Audit, Backend, JwksServer, KidLog, Load, LoadStats, active_kid, key_files, published_kids,
    stored_keys, stored_kids, temp_files, wait_until,
};

const LIMIT: Duration = Duration::from_secs(60);
/// How long a wait for something the chain does by itself may take.
const WAIT: Duration = Duration::from_secs(20);
const CLIENTS: usize = 4;
const TOKEN_TTL: Duration = Duration::from_secs(5);
const LEEWAY: Duration = Duration::from_secs(1);
const CACHE_TTL: Duration = Duration::from_millis(250);
const COOLDOWN: Duration = Duration::from_millis(250);
const RETRY: Duration = Duration::from_millis(200);

/// The rotator's report of a failed step.
const STEP_FAILED: &str = "key rotation step failed";

async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("the test finished within its time limit")
}

/// A registry of [`TOKEN_TTL`] tokens on `store` with an ES256 key, built
/// off the runtime thread.
async fn open_registry(store: impl KeyStore + 'static, clock: Clock) -> KeyRegistry {
    tokio::task::spawn_blocking(move || {
        KeyRegistry::builder()
            .clock(clock)
            .token_ttl(TOKEN_TTL)
            .store(store)
            .generate_if_missing(Algorithm::ES256)
            .build()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The gateway and the backend, on the registry's clock.
struct Chain {
    remote: RemoteJwks,
    backend: Backend,
    gateway: Gateway,
}

/// Starts the chain. The backend fetches the JWKS from `jwks` if given,
/// else from the gateway's own JWKS route.
async fn chain(registry: &KeyRegistry, jwks: Option<&JwksServer>) -> Chain {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = jwks.map_or_else(|| jwks_url(&listener), JwksServer::url);
    let remote = RemoteJwks::builder(url)
        .cache_ttl_bounds(CACHE_TTL, CACHE_TTL)
        .refresh_cooldown(COOLDOWN)
        .build()
        .unwrap();
    let verifier = Verifier::builder(remote.clone())
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .leeway(LEEWAY)
        .clock(registry.clock().clone())
        .build()
        .unwrap();
    let backend = Backend::start(verifier, Audit::new(registry.clone())).await;
    // The registry's TOKEN_TTL.
    let signer = signer(registry.clone()).build().unwrap();
    let gateway = Gateway::start_with(signer, registry.clone(), listener, backend.addr);
    Chain {
        remote,
        backend,
        gateway,
    }
}

/// Rotation every `period`, the next key published a second before it
/// signs, failed steps retried after [`RETRY`].
fn policy(period: Duration, retain: Option<Duration>) -> RotationPolicy {
    let builder = RotationPolicy::builder(period)
        .verifier_leeway(LEEWAY)
        .prepublish(Duration::from_secs(1))
        .retry_after(RETRY);
    match retain {
        Some(retain) => builder.retain(retain),
        None => builder,
    }
    .build()
    .unwrap()
}

/// Waits until the registry signs with a key other than `old` and requests
/// signed with it have been answered 200; returns its kid.
async fn rotated_from(old: &str, registry: &KeyRegistry, clients: &LoadStats) -> String {
    let mut new = String::new();
    wait_until(
        &format!("a rotation from {old} that verifies"),
        WAIT,
        || {
            new = active_kid(registry);
            new != old && clients.ok_with(&new) >= 20
        },
    )
    .await;
    new
}

/// The lines where the rotator reported a failed step on `dir`.
fn step_failures(dir: &Path) -> Vec<String> {
    logs().matching(&[STEP_FAILED, &dir.display().to_string()])
}

/// What every fault test checks at the end: every request was answered and
/// none with a 5xx; no request reached the backend unsigned or with a token
/// the gateway did not sign; each 4xx was a refusal by the backend's
/// verifier; every key file parses and the directory holds exactly the
/// published keys, with no temporary file left.
fn nothing_lost_nothing_unsigned(
    dir: &Path,
    registry: &KeyRegistry,
    chain: &Chain,
    clients: &LoadStats,
) {
    let backend = &chain.backend.stats;
    eprintln!("clients: {}", clients.summary());
    eprintln!("backend: {}", backend.summary());
    assert_eq!(clients.transport_errors.load(Ordering::SeqCst), 0);
    assert_eq!(clients.server_errors.load(Ordering::SeqCst), 0);
    assert_eq!(backend.bad_arrivals(), 0, "{}", backend.summary());
    assert_eq!(
        clients.client_errors.load(Ordering::SeqCst),
        backend.refused_total(),
        "every 4xx came from the backend's verifier"
    );
    assert_eq!(
        clients.sent.load(Ordering::SeqCst),
        backend.arrivals.load(Ordering::SeqCst),
        "every request was forwarded, signed"
    );
    assert_eq!(stored_kids(dir), published_kids(registry));
    assert!(temp_files(dir).is_empty(), "{:?}", temp_files(dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_server_restarts_in_the_middle_of_a_run() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let registry = open_registry(DirKeyStore::open(&dir).unwrap(), Clock::system()).await;
        let mut jwks = JwksServer::start(&registry).await;
        let chain = chain(&registry, Some(&jwks)).await;
        let load = Load::start(chain.gateway.addr, CLIENTS);
        let clients = Arc::clone(load.stats());

        let first = active_kid(&registry);
        wait_until("requests verified with the first key", WAIT, || {
            clients.ok_with(&first) >= 50
        })
        .await;

        // The JWKS server goes away. Once its copy is stale, the backend
        // tries to refresh it, fails, and keeps verifying with the last
        // good set.
        jwks.stop().await;
        wait_until("a failed refresh", WAIT, || {
            chain.remote.last_error().is_some()
        })
        .await;
        eprintln!("refresh failed: {:?}", chain.remote.last_error());
        let ok = clients.ok();
        wait_until("requests verified with the last good set", WAIT, || {
            clients.ok() >= ok + 100
        })
        .await;
        assert_eq!(clients.failures(), 0, "{}", clients.summary());

        // A rotation while it is down: the backend cannot learn the new
        // kid, and refuses its tokens (401, unknown kid): it fails closed.
        let second = {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || {
                registry
                    .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
                    .unwrap();
                registry.rotate(Duration::from_secs(60)).unwrap()
            })
            .await
            .unwrap()
            .as_str()
            .to_owned()
        };
        wait_until("tokens of the new key refused", WAIT, || {
            chain.backend.stats.refused_total() >= 10
        })
        .await;
        assert_eq!(clients.ok_with(&second), 0);
        let fetches_while_down = jwks.fetches();

        // It comes back on the same port: the backend learns the new kid.
        jwks.restart().await;
        wait_until("the new kid learned", WAIT, || {
            clients.ok_with(&second) >= 20
        })
        .await;
        assert!(jwks.fetches() > fetches_while_down);
        // From then on, nothing is refused.
        let refused = chain.backend.stats.refused_total();
        wait_until("more requests with the new kid", WAIT, || {
            clients.ok_with(&second) >= 120
        })
        .await;
        assert_eq!(chain.backend.stats.refused_total(), refused);
        assert!(chain.remote.last_error().is_none());

        let clients = load.stop().await;
        let refused = chain.backend.stats.refused();
        assert!(
            refused.keys().all(|reason| reason == "401 UnknownKid"),
            "{refused:?}"
        );
        nothing_lost_nothing_unsigned(&dir, &registry, &chain, &clients);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_directory_becomes_read_only() {
    bounded(async {
        logs();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let registry = open_registry(DirKeyStore::open(&dir).unwrap(), Clock::system()).await;
        let period = Duration::from_secs(2);
        let rotator = KeyRotator::spawn(registry.clone(), policy(period, None)).unwrap();
        let chain = chain(&registry, None).await;
        let load = Load::start(chain.gateway.addr, CLIENTS);
        let clients = Arc::clone(load.stats());
        let first = active_kid(&registry);
        let second = rotated_from(&first, &registry, &clients).await;

        let mut read_only = ReadOnly::apply(&dir);
        eprintln!("read-only by {:?}", read_only.how());
        wait_until("a failed rotation step", WAIT, || {
            !step_failures(&dir).is_empty()
        })
        .await;
        eprintln!("reported: {}", step_failures(&dir)[0]);
        // From the first failure on, nothing changes: the same key signs
        // through more than a whole period of failed, retried steps.
        let signing = active_kid(&registry);
        let files = key_files(&dir);
        let published = published_kids(&registry);
        let (failures, ok) = (step_failures(&dir).len(), clients.ok_with(&signing));
        tokio::time::sleep(period + Duration::from_secs(1)).await;
        wait_until("more failed steps", WAIT, || {
            step_failures(&dir).len() >= failures + 3
        })
        .await;
        assert_eq!(active_kid(&registry), signing);
        assert_eq!(published_kids(&registry), published);
        assert!(clients.ok_with(&signing) > ok, "{}", clients.summary());
        assert_eq!(clients.failures(), 0, "{}", clients.summary());
        assert_eq!(key_files(&dir), files);

        // Writable again: the next retry rotates.
        read_only.undo();
        let next = rotated_from(&signing, &registry, &clients).await;
        assert_ne!(next, second);
        assert!(!logs().matching(&["key activated", &next]).is_empty());

        let clients = load.stop().await;
        rotator.stop().await;
        assert_eq!(clients.failures(), 0);
        nothing_lost_nothing_unsigned(&dir, &registry, &chain, &clients);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk() {
    bounded(async {
        logs();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let mut disk = SmallDisk::mount(&dir, "256k");
        let registry = open_registry(DirKeyStore::open(&dir).unwrap(), Clock::system()).await;
        let period = Duration::from_secs(2);
        // Old keys are kept past the end of the test: removing one would
        // free space, and the disk should stay full while it is.
        let rotator = KeyRotator::spawn(
            registry.clone(),
            policy(period, Some(Duration::from_secs(120))),
        )
        .unwrap();
        let chain = chain(&registry, None).await;
        let load = Load::start(chain.gateway.addr, CLIENTS);
        let clients = Arc::clone(load.stats());
        let first = active_kid(&registry);
        rotated_from(&first, &registry, &clients).await;

        disk.fill();
        wait_until("a failed rotation step", WAIT, || {
            !step_failures(&dir).is_empty()
        })
        .await;
        eprintln!("reported: {}", step_failures(&dir)[0]);
        let signing = active_kid(&registry);
        let files = key_files(&dir);
        let published = published_kids(&registry);
        let (failures, ok) = (step_failures(&dir).len(), clients.ok_with(&signing));

        // Adding a key by hand fails with the OS error, and publishes
        // nothing.
        let err = {
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || {
                registry.add_next(SigningKey::generate(Algorithm::ES256).unwrap())
            })
            .await
            .unwrap()
            .unwrap_err()
        };
        let RegistryError::Store(store_err) = &err else {
            panic!("not a store error: {err}");
        };
        assert_eq!(os_error(store_err), Some(ENOSPC), "{err}");
        assert_eq!(published_kids(&registry), published);

        tokio::time::sleep(period + Duration::from_secs(1)).await;
        wait_until("more failed steps", WAIT, || {
            step_failures(&dir).len() >= failures + 3
        })
        .await;
        assert_eq!(active_kid(&registry), signing);
        assert_eq!(published_kids(&registry), published);
        assert!(clients.ok_with(&signing) > ok, "{}", clients.summary());
        assert_eq!(clients.failures(), 0, "{}", clients.summary());
        // No partial or corrupt key file: the key files are the ones from
        // before, byte for byte, they load, and no temporary file is left.
        assert_eq!(key_files(&dir), files);
        assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
        assert_eq!(stored_kids(&dir), published);

        disk.free();
        rotated_from(&signing, &registry, &clients).await;

        let clients = load.stop().await;
        rotator.stop().await;
        nothing_lost_nothing_unsigned(&dir, &registry, &chain, &clients);
        // Nothing may hold a file on the tmpfs when it is unmounted.
        drop(chain);
        drop(registry);
    })
    .await;
}

/// The disk fills up in the middle of an activation: the old key's file
/// has been rewritten as retiring, the new key's cannot be written as
/// active, and the rollback cannot be written either. The directory then
/// holds no active key (never two: that order is on purpose); every file in
/// it is whole and loads; the published keys do not change, so the same key
/// keeps signing; the rotator retries and, once there is space, activates
/// the key that was published for it.
///
/// THE FAULT IS REAL, ONLY ITS MOMENT IS PICKED BY A WRAPPER. The key
/// directory is a real 256 KiB tmpfs. `FullAfterSaves` lets the
/// activation's first write (the old key as retiring) through, then fills
/// the tmpfs for real and hands the second write (the new key as active)
/// to the real `DirKeyStore`, which fails with the real `ENOSPC`, as does
/// the rollback. No timing from outside the store can land between those
/// two writes; everything else (temporary files, renames, clean-up) is the
/// real store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_up_in_the_middle_of_an_activation() {
    bounded(async {
        logs();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let _disk = SmallDisk::mount(&dir, "256k");
        let store = FullAfterSaves::open(&dir);
        let registry = open_registry(Arc::clone(&store), Clock::system()).await;
        let rotator = KeyRotator::spawn(
            registry.clone(),
            policy(Duration::from_secs(2), Some(Duration::from_secs(120))),
        )
        .unwrap();
        let chain = chain(&registry, None).await;
        let load = Load::start(chain.gateway.addr, CLIENTS);
        let clients = Arc::clone(load.stats());
        let first = active_kid(&registry);
        let signing = rotated_from(&first, &registry, &clients).await;

        // While a next key waits to sign (well before its time), the next
        // write is its activation's: one save goes through, then the disk
        // is full.
        let next = loop {
            let mut next = None;
            wait_until("a next key", WAIT, || {
                next = registry
                    .current()
                    .keys()
                    .iter()
                    .find(|key| key.state() == KeyState::Next)
                    .map(|key| (key.kid().as_str().to_owned(), key.activates_at()));
                next.is_some()
            })
            .await;
            let (kid, at) = next.unwrap();
            let at = at.expect("the rotator schedules its next keys");
            if registry.clock().now() + Duration::from_millis(300) < at {
                store.fill_after(1);
                break kid;
            }
            // Too close to call: the next one.
            wait_until("the next key signs", WAIT, || active_kid(&registry) == kid).await;
        };
        let dir_name = dir.display().to_string();
        wait_until("a rollback that failed", WAIT, || {
            !logs().matching(&["cannot roll back", &dir_name]).is_empty()
        })
        .await;
        assert!(store.is_full());
        // The real store's own error: the disk is full.
        let reported = logs().matching(&["cannot roll back", &dir_name]);
        assert!(
            reported[0].contains("No space left on device"),
            "{reported:?}"
        );
        eprintln!(
            "reported: {}",
            logs().matching(&["cannot roll back", &dir_name])[0]
        );
        let failures = step_failures(&dir).len();
        wait_until("the step retried", WAIT, || {
            step_failures(&dir).len() >= failures + 2
        })
        .await;

        // On disk: whole files, no active key, the old one retiring.
        let stored = stored_keys(&dir);
        let state = |kid: &str| {
            stored
                .iter()
                .find(|key| key.kid().as_str() == kid)
                .map(|key| key.state())
        };
        assert_eq!(state(&signing), Some(KeyState::Retiring));
        assert_eq!(state(&next), Some(KeyState::Next));
        assert!(stored.iter().all(|key| key.state() != KeyState::Active));
        assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
        // In the gateway: nothing changed, the same key signs.
        assert_eq!(active_kid(&registry), signing);
        let ok = clients.ok_with(&signing);
        wait_until("requests still signed", WAIT, || {
            clients.ok_with(&signing) >= ok + 20
        })
        .await;
        assert_eq!(clients.failures(), 0, "{}", clients.summary());

        // A process that starts on this directory now loads every key.
        let copy = tmp.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        std::fs::set_permissions(&copy, Permissions::from_mode(0o700)).unwrap();
        for (name, bytes) in key_files(&dir) {
            let path = copy.join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        }
        let restart = |generate: bool| {
            let copy = copy.clone();
            tokio::task::spawn_blocking(move || {
                let builder = KeyRegistry::builder().store(DirKeyStore::open(&copy).unwrap());
                if generate {
                    builder.generate_if_missing(Algorithm::ES256)
                } else {
                    builder
                }
                .build()
                .unwrap()
            })
        };
        let restarted = restart(false).await.unwrap();
        assert_eq!(published_kids(&restarted), stored_kids(&dir));
        assert!(restarted.current().active().is_none(), "it fails closed");
        // Asked to make sure a key signs, it activates the next key, which
        // was published, rather than a fresh one.
        let restarted = restart(true).await.unwrap();
        assert_eq!(active_kid(&restarted), next);
        assert_eq!(published_kids(&restarted), stored_kids(&dir));
        assert_eq!(stored_kids(&copy), stored_kids(&dir));

        // Space again: the retried step activates the published next key.
        store.free();
        let now = rotated_from(&signing, &registry, &clients).await;
        assert_eq!(now, next);

        let clients = load.stop().await;
        rotator.stop().await;
        nothing_lost_nothing_unsigned(&dir, &registry, &chain, &clients);
    })
    .await;
}

/// What a cut activation leaves on disk (the old key retiring, the new one
/// still next, none active), loaded by a process that starts with
/// `generate_if_missing`: the next key, published before the cut, signs;
/// no fresh (never published) key is made.
#[test]
fn a_restart_after_a_cut_activation_activates_the_published_next_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let store = DirKeyStore::open(&dir).unwrap();
    let now = SystemTime::now();
    let old = SigningKey::generate(Algorithm::ES256).unwrap();
    let older_next = SigningKey::generate(Algorithm::ES256).unwrap();
    let newer_next = SigningKey::generate(Algorithm::ES256).unwrap();
    let (old_kid, next_kid) = (old.kid().to_string(), older_next.kid().to_string());
    use tower_jwt_signer::store::{KeyStore as _, StoredKey};
    let second = Duration::from_secs(1);
    store
        .save(
            &StoredKey::new(old, KeyState::Retiring, now - 10 * second)
                .with_activated_at(Some(now - 10 * second))
                .with_retires_at(Some(now + 60 * second)),
        )
        .unwrap();
    store
        .save(
            &StoredKey::new(older_next, KeyState::Next, now - 2 * second)
                .with_activates_at(Some(now - second)),
        )
        .unwrap();
    store
        .save(&StoredKey::new(newer_next, KeyState::Next, now))
        .unwrap();
    let before = stored_kids(&dir);

    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(&dir).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    assert_eq!(active_kid(&registry), next_kid);
    assert_eq!(published_kids(&registry), before, "no fresh key");
    let stored = stored_keys(&dir);
    let state = |kid: &str| {
        stored
            .iter()
            .find(|key| key.kid().as_str() == kid)
            .unwrap()
            .state()
    };
    assert_eq!(state(&next_kid), KeyState::Active);
    assert_eq!(state(&old_kid), KeyState::Retiring);
    // An empty directory still gets a fresh key.
    let empty = tmp.path().join("empty");
    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(&empty).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    assert_eq!(stored_kids(&empty), vec![active_kid(&registry)]);
}

/// A wall clock that can jump: the system time plus an offset in seconds.
fn jumping_clock() -> (Clock, Arc<AtomicI64>) {
    let offset = Arc::new(AtomicI64::new(0));
    let by = Arc::clone(&offset);
    let clock = Clock::from_fn(move || {
        let offset = by.load(Ordering::SeqCst);
        let shift = Duration::from_secs(offset.unsigned_abs());
        if offset >= 0 {
            SystemTime::now() + shift
        } else {
            SystemTime::now() - shift
        }
    });
    (clock, offset)
}

/// Moves the clock to `offset` seconds from the system time while no
/// request is in flight (a token signed before a jump of hours is expired,
/// or not yet valid, after it: that is the clock's doing, not a fault).
async fn jump(load: &Load, clock: &AtomicI64, offset: i64) -> Instant {
    let hold = load.hold().await;
    clock.store(offset, Ordering::SeqCst);
    drop(hold);
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_jumps_forward_and_back() {
    const HOURS: i64 = 6 * 3600;
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let (clock, offset) = jumping_clock();
        let registry = open_registry(DirKeyStore::open(&dir).unwrap(), clock.clone()).await;
        let period = Duration::from_secs(1);
        let kids = KidLog::start(&registry);
        let rotator = KeyRotator::spawn(registry.clone(), policy(period, None)).unwrap();
        let retain = rotator.retain();
        let chain = chain(&registry, None).await;
        let load = Load::start(chain.gateway.addr, CLIENTS);
        let clients = Arc::clone(load.stats());
        // No more keys than one per period, plus the one a jump may bring
        // forward and one being published as the window closes.
        let no_burst = |since: Instant| {
            let window = since.elapsed();
            let allowed = (window.as_secs_f64() / period.as_secs_f64()).ceil() as usize + 2;
            let made = kids.count_since(since);
            eprintln!("{made} keys published in {window:.1?} (at most {allowed})");
            assert!(made <= allowed, "{made} keys in {window:?}");
        };
        wait_until("three keys", WAIT, || kids.count() >= 3).await;

        // Back by a few seconds: the keys' times are ahead of the clock for
        // that long; rotation then goes on, without a burst.
        let before = active_kid(&registry);
        let since = jump(&load, &offset, -4).await;
        rotated_from(&before, &registry, &clients).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        no_burst(since);

        // Forward by hours: the retiring keys (whose tokens are all expired
        // now) leave, the next key signs, and rotation goes on at its pace.
        let before = active_kid(&registry);
        let since = jump(&load, &offset, HOURS).await;
        let jumped_at = clock.now();
        rotated_from(&before, &registry, &clients).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        no_burst(since);
        let snapshot = registry.current();
        for key in snapshot.keys() {
            if key.state() == KeyState::Retiring {
                let until = key.retires_at().unwrap();
                assert!(until >= jumped_at, "a key retiring before the jump is gone");
                assert!(until <= clock.now() + retain + Duration::from_secs(1));
            }
        }
        // Active, next, and what retired within `retain` (one a period).
        let most = 2 + (retain.as_secs_f64() / period.as_secs_f64()).ceil() as usize + 2;
        assert!(
            snapshot.keys().len() <= most,
            "{:?}",
            published_kids(&registry)
        );

        // Back by hours: every key is now from the future. The active key
        // keeps signing, the rotator does not thrash, and no key leaves
        // early. (Rotation waits until the clock reaches the keys' times
        // again; the rotator looks again at least every minute.)
        let published = published_kids(&registry);
        let before = clients.ok_by_kid();
        let since = jump(&load, &offset, -4).await;
        let back_at = clock.now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        no_burst(since);
        // No key was activated once the clock went back: no activation time
        // falls between the jump and now. (A step that read the clock just
        // before the jump may still have activated its key: its time is
        // from before the jump.)
        let now = clock.now();
        for key in registry.current().keys() {
            if let Some(at) = key.activated_at() {
                assert!(
                    !(back_at..=now).contains(&at),
                    "{} activated at {at:?}, after the clock went back to {back_at:?}",
                    key.kid()
                );
            }
        }
        // The active key keeps signing: it signed 20 more answered requests
        // since the jump.
        let signing = active_kid(&registry);
        let gained = clients.ok_with(&signing) - before.get(&signing).copied().unwrap_or(0);
        assert!(gained >= 20, "{signing}: {gained}; {}", clients.summary());
        let still = published_kids(&registry);
        assert!(
            published.iter().all(|kid| still.contains(kid)),
            "no key leaves early: {published:?} then {still:?}"
        );

        let clients = load.stop().await;
        rotator.stop().await;
        // Across every jump, every request was verified.
        assert_eq!(
            clients.failures(),
            0,
            "{}; backend: {}",
            clients.summary(),
            chain.backend.stats.summary()
        );
        assert_eq!(chain.backend.stats.refused_total(), 0);
        nothing_lost_nothing_unsigned(&dir, &registry, &chain, &clients);
    })
    .await;
}
