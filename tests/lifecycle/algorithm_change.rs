//! Changing a gateway's algorithm (RS256 to ES256) without a gap, with the
//! registry's own lifecycle: the ES256 key is published as **next** while
//! RS256 still signs, activated once verifiers hold it, and the RS256 key
//! stays published, **retiring**, for its tokens' lifetime. Tokens signed
//! before, during and after the switch all verify through one JWKS served
//! over HTTP on 127.0.0.1, with `RemoteJwks` and with jsonwebtoken.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tower::{Layer, ServiceExt};
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::registry::KeyState;
use tower_jwt_signer::{
    Algorithm, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry, KeyRotator, RemoteJwks,
    RotationPolicy, SigningKey, Verifier,
};

use crate::support::signer::{AbortOnDrop, Seen, bearer, recording, segment, verify_against};
use crate::support::verifier::get;

/// A token of a real signer on `registry`, with its header's `alg`.
async fn token(registry: &KeyRegistry) -> (String, String) {
    let seen = Seen::default();
    let signer = JwtSignerLayer::new(registry.clone()).layer(recording(&seen));
    signer
        .oneshot(Request::new(Full::<Bytes>::default()))
        .await
        .unwrap();
    let token = bearer(&seen.only().headers);
    let alg = segment(token.split('.').next().unwrap())["alg"]
        .as_str()
        .unwrap()
        .to_owned();
    (token, alg)
}

#[tokio::test]
async fn rs256_to_es256_without_a_gap() {
    let at = Arc::new(Mutex::new(SystemTime::now()));
    let clock_at = at.clone();
    let registry = KeyRegistry::builder()
        .clock(Clock::from_fn(move || *clock_at.lock().unwrap()))
        .active(SigningKey::generate(Algorithm::RS256).unwrap())
        .build()
        .unwrap();
    // The JWKS, counting its requests.
    let hits = Arc::new(AtomicUsize::new(0));
    let counting = hits.clone();
    let service = tower::ServiceBuilder::new()
        .map_request(move |request: Request<axum::body::Body>| {
            counting.fetch_add(1, Ordering::SeqCst);
            request
        })
        .service(JwksService::new(registry.clone()));
    let app = axum::Router::new().route_service(JWKS_PATH, service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = AbortOnDrop(tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    }));
    let jwks = RemoteJwks::new(format!("http://{addr}{JWKS_PATH}")).unwrap();
    let verifier = Verifier::new(jwks.clone());
    let published = || async { get(addr, JWKS_PATH, &[]).await.body };

    // Before: RS256 signs.
    let (before, alg) = token(&registry).await;
    assert_eq!(alg, "RS256");
    verifier.verify(&before).await.unwrap();

    // During: the ES256 key is published next; RS256 still signs. Verifiers
    // pick the set up on their schedule (here: a refresh now, as when their
    // cached copy expires).
    let es256 = registry
        .add_next(SigningKey::generate(Algorithm::ES256).unwrap())
        .unwrap();
    let (during, alg) = token(&registry).await;
    assert_eq!(alg, "RS256", "a next key does not sign");
    jwks.prefetch().await.unwrap();
    assert!(jwks.current().unwrap().get(es256.as_str()).is_some());

    // The switch, once every verifier holds the new key: ES256 signs, the
    // RS256 key retires for the tokens' lifetime plus the verifiers'
    // leeway.
    let retain = registry.token_ttl() + Duration::from_secs(60);
    assert_eq!(registry.rotate(retain).unwrap(), es256);
    let (after, alg) = token(&registry).await;
    assert_eq!(alg, "ES256");
    // No token needs a refresh: the ES256 key was known before it signed.
    let fetched = hits.load(Ordering::SeqCst);
    for token in [&before, &during, &after] {
        verifier.verify(token).await.unwrap();
    }
    assert_eq!(hits.load(Ordering::SeqCst), fetched);
    let set = published().await;
    for token in [&before, &during, &after] {
        verify_against(token, &set).unwrap();
    }
    let snapshot = registry.current();
    assert_eq!(snapshot.keys().len(), 2);
    let rs256 = snapshot
        .keys()
        .iter()
        .find(|k| k.algorithm() == Algorithm::RS256)
        .unwrap();
    assert_eq!(rs256.state(), KeyState::Retiring);

    // After: once the RS256 tokens have expired, their key leaves the JWKS;
    // the ES256 tokens keep verifying.
    *at.lock().unwrap() += retain - Duration::from_secs(1);
    assert!(registry.prune_expired().is_empty(), "kept for its tokens");
    *at.lock().unwrap() += Duration::from_secs(1);
    assert_eq!(registry.prune_expired().len(), 1);
    jwks.prefetch().await.unwrap();
    assert_eq!(jwks.current().unwrap().len(), 1);
    let set = published().await;
    verify_against(&after, &set).unwrap();
    verifier.verify(&after).await.unwrap();
    assert!(verify_against(&before, &set).is_err(), "RS256 is gone");
}

#[tokio::test]
async fn a_rotator_set_to_another_algorithm_publishes_its_next_key_before_it_signs() {
    let registry = KeyRegistry::generate(Algorithm::RS256).unwrap();
    let old = registry.current().active().unwrap().kid().clone();
    let policy = RotationPolicy::builder(Duration::from_secs(24 * 3600))
        .algorithm(Algorithm::ES256)
        .build()
        .unwrap();
    let rotator = KeyRotator::spawn(registry.clone(), policy).unwrap();
    let scheduled = rotator.rotate_now().await.unwrap();
    let snapshot = registry.current();
    let next = snapshot.get(scheduled.kid()).unwrap();
    assert_eq!(next.algorithm(), Algorithm::ES256);
    assert_eq!(next.state(), KeyState::Next);
    assert_eq!(snapshot.active().unwrap().kid(), &old, "RS256 still signs");
    assert!(
        scheduled.activates_at()
            >= SystemTime::now() + rotator.prepublish() - Duration::from_secs(1),
        "it signs only a prepublish time from now"
    );
    rotator.stop().await;
}
