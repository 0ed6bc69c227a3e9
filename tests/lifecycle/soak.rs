//! Soak under load with rotation: 32 clients send requests through a
//! signing gateway (`JwtSignerLayer`, real socket) to a backend that
//! verifies with a `RemoteJwks` pointed at the gateway's JWKS, while a
//! `KeyRotator` rotates the gateway's keys (kept in a `DirKeyStore`) every
//! second.
//!
//! How the backend learns each key in time: the rotation policy publishes
//! the next key `PREPUBLISH` (1 s, the whole period) before it signs, and the
//! backend's cached copy lives `CACHE_TTL` (500 ms, whatever the JWKS's
//! `max-age` says): a copy is refreshed (in the background, on the first
//! request after it went stale) long before a key published after it signs.
//! Should a refresh come late (a loaded machine), the first token with the
//! unknown kid makes the backend refetch at once, rate limited by
//! `COOLDOWN` (500 ms), which is shorter than the period, so each new kid
//! may trigger one.
//!
//! Counted and asserted: requests (at least [`MIN_REQUESTS`], "some real
//! load happened", far below what a 2-core machine does), verification
//! failures (0, at the backend and at the clients), 5xx (0), requests that
//! reached the backend without a token the gateway signed (0, checked
//! independently with jsonwebtoken), the kids that signed (at least 3: the
//! keys did rotate under load), and JWKS fetches (see [`fetch_bound`]).
//! No timing threshold: a slow machine sends fewer requests and rotates no
//! less safely. The long run with memory over time is `examples/soak.rs`,
//! whose flags and a short run are checked in `tools::soak_tool`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tower_jwt_signer::{
    Algorithm, DirKeyStore, KeyRegistry, KeyRotator, RemoteJwks, RotationPolicy, Verifier,
};

use crate::support::chain::{AUDIENCE, Gateway, ISSUER, jwks_url, signer};
use crate::support::soak::{Audit, Backend, KidLog, Load, published_kids, stored_keys, temp_files};

const CLIENTS: usize = 32;
/// How long the clients send requests.
const LOAD: Duration = Duration::from_secs(20);
/// The whole test, set-up and checks included.
const LIMIT: Duration = Duration::from_secs(60);
const MIN_REQUESTS: u64 = 500;

const PERIOD: Duration = Duration::from_secs(1);
const PREPUBLISH: Duration = Duration::from_secs(1);
const TOKEN_TTL: Duration = Duration::from_secs(5);
const LEEWAY: Duration = Duration::from_secs(1);
const CACHE_TTL: Duration = Duration::from_millis(500);
const COOLDOWN: Duration = Duration::from_millis(500);
/// Fetches the bound allows beyond the rate limits: one refresh that was
/// starting when the clock was read, one retry.
const FETCH_SLACK: u64 = 2;

/// The most JWKS fetches the backend may make in `elapsed`: the first one,
/// one refresh per `CACHE_TTL` (a refresh starts only once the copy is
/// stale, and a fetch restarts its lifetime), one per `COOLDOWN` for
/// unknown kids, and [`FETCH_SLACK`].
fn fetch_bound(elapsed: Duration) -> u64 {
    let per = |every: Duration| (elapsed.as_secs_f64() / every.as_secs_f64()).ceil() as u64;
    1 + per(CACHE_TTL) + per(COOLDOWN) + FETCH_SLACK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_through_a_gateway_that_rotates_every_second() {
    tokio::time::timeout(LIMIT, soak())
        .await
        .expect("the soak finished within its time limit");
}

async fn soak() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let registry = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            KeyRegistry::builder()
                .token_ttl(TOKEN_TTL)
                .store(DirKeyStore::open(&dir).unwrap())
                .generate_if_missing(Algorithm::ES256)
                .build()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let policy = RotationPolicy::builder(PERIOD)
        .verifier_leeway(LEEWAY)
        .prepublish(PREPUBLISH)
        .build()
        .unwrap();
    let kids = KidLog::start(&registry);
    let rotator = KeyRotator::spawn(registry.clone(), policy).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = RemoteJwks::builder(jwks_url(&listener))
        .cache_ttl_bounds(CACHE_TTL, CACHE_TTL)
        .refresh_cooldown(COOLDOWN)
        .build()
        .unwrap();
    let verifier = Verifier::builder(remote.clone())
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .leeway(LEEWAY)
        .build()
        .unwrap();
    let backend = Backend::start(verifier, Audit::new(registry.clone())).await;
    // The registry's TOKEN_TTL.
    let signer = signer(registry.clone()).build().unwrap();
    let gateway = Gateway::start_with(signer, registry.clone(), listener, backend.addr);

    let started = Instant::now();
    let load = Load::start(gateway.addr, CLIENTS);
    tokio::time::sleep(LOAD).await;
    let clients = load.stop().await;
    let elapsed = started.elapsed();
    rotator.stop().await;

    let fetches = gateway.jwks_fetches() as u64;
    let requests = clients.sent.load(Ordering::SeqCst);
    let backend_stats = &backend.stats;
    eprintln!(
        "soak: {requests} requests in {elapsed:.1?} ({:.0}/s) by {CLIENTS} clients; \
         {} kids signed, {} published; {fetches} JWKS fetches (bound {}); \
         clients: {}; backend: {}",
        requests as f64 / elapsed.as_secs_f64(),
        clients.ok_by_kid().len(),
        kids.count(),
        fetch_bound(elapsed),
        clients.summary(),
        backend_stats.summary(),
    );

    // Some real load happened, and every request was answered 200.
    assert!(requests >= MIN_REQUESTS, "{}", clients.summary());
    assert_eq!(clients.ok(), requests, "{}", clients.summary());
    assert_eq!(clients.failures(), 0, "{}", clients.summary());
    assert_eq!(clients.server_errors.load(Ordering::SeqCst), 0);
    // The backend verified every request; none arrived unsigned or with a
    // token the gateway did not sign; the verifier refused none.
    assert_eq!(
        backend_stats.refused_total(),
        0,
        "{}",
        backend_stats.summary()
    );
    assert_eq!(
        backend_stats.bad_arrivals(),
        0,
        "{}",
        backend_stats.summary()
    );
    assert_eq!(
        backend_stats.verified.load(Ordering::SeqCst),
        requests,
        "{}",
        backend_stats.summary()
    );
    assert_eq!(
        backend_stats.arrivals.load(Ordering::SeqCst),
        requests,
        "{}",
        backend_stats.summary()
    );
    // The keys did rotate under load.
    assert!(
        clients.ok_by_kid().len() >= 3,
        "kids that signed: {:?}",
        clients.ok_by_kid()
    );
    // Fetches were rate limited, and happened.
    assert!(fetches >= 1);
    assert!(
        fetches <= fetch_bound(elapsed),
        "{fetches} JWKS fetches in {elapsed:?}, more than {}",
        fetch_bound(elapsed)
    );
    assert!(remote.last_error().is_none(), "{:?}", remote.last_error());

    // The key directory holds exactly the published keys, every file
    // parses, and no write was left half done.
    let stored: Vec<String> = {
        let mut kids: Vec<String> = stored_keys(&dir)
            .iter()
            .map(|key| key.kid().as_str().to_owned())
            .collect();
        kids.sort();
        kids
    };
    assert_eq!(stored, published_kids(&registry));
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
}
