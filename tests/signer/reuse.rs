//! Opt-in token reuse: a request with the same claims gets the very same
//! token (which still verifies), a rotated key's token is never handed out
//! again, a token too close to its end is replaced, and the cache stays
//! within its bound whatever the number of subjects.
//!
//! Each request goes through a service built for it, so the layers here
//! share one `TokenCache` (a layer's own reuse cache belongs to each
//! service it builds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::signer::{Seen, bearer, recording, segment, verify};
use http::{Request, StatusCode};
use tower::{Layer, ServiceExt};
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::signer::{Offload, RequestClaims, TokenCache, TokenReuse};
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry, SigningKey};

/// Sends one request through `layer`; returns the token the inner service
/// received.
async fn token(layer: &JwtSignerLayer, request: Request<()>) -> String {
    let seen = Seen::default();
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        layer.layer(recording(&seen)).oneshot(request),
    )
    .await
    .expect("bounded")
    .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    bearer(&seen.only().headers)
}

fn for_user(user: &str) -> Request<()> {
    Request::get("/orders")
        .header("x-user", user)
        .body(())
        .unwrap()
}

/// A registry whose clock the test moves.
fn registry_at(alg: Algorithm, now: &Arc<AtomicU64>) -> KeyRegistry {
    let now = Arc::clone(now);
    KeyRegistry::builder()
        .clock(Clock::from_fn(move || {
            UNIX_EPOCH + Duration::from_secs(now.load(Ordering::SeqCst))
        }))
        .active(SigningKey::generate(alg).unwrap())
        .build()
        .unwrap()
}

fn wall_clock() -> Arc<AtomicU64> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Arc::new(AtomicU64::new(secs))
}

#[tokio::test]
async fn the_same_claims_get_the_same_token_and_it_verifies() {
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        let registry = KeyRegistry::generate(alg).unwrap();
        let cache = TokenCache::new(TokenReuse::new()).unwrap();
        let layer = JwtSignerLayer::builder(registry.clone())
            .issuer("gateway")
            .template_claim("sub", "${req.headers.x-user}")
            .reuse_tokens_in(cache.clone())
            .build()
            .unwrap();
        let first = token(&layer, for_user("alice")).await;
        let again = token(&layer, for_user("alice")).await;
        assert_eq!(first, again, "{alg}: reused");
        let verified = verify(&again, &registry).unwrap();
        assert_eq!(verified.claims["sub"], "alice");
        assert_eq!(verified.claims["iss"], "gateway");

        let bob = token(&layer, for_user("bob")).await;
        assert_ne!(bob, first, "{alg}: other claims, other token");
        assert_eq!(verify(&bob, &registry).unwrap().claims["sub"], "bob");
        assert_eq!(cache.len(), 2);
    }
}

#[tokio::test]
async fn reuse_is_off_by_default() {
    let layer = JwtSignerLayer::new(KeyRegistry::generate(Algorithm::ES256).unwrap());
    let first = token(&layer, for_user("alice")).await;
    let again = token(&layer, for_user("alice")).await;
    assert_ne!(first, again);
    assert_ne!(
        segment(first.split('.').nth(1).unwrap())["jti"],
        segment(again.split('.').nth(1).unwrap())["jti"]
    );
    assert_eq!(
        layer
            .layer(recording::<()>(&Seen::default()))
            .cached_tokens(),
        0
    );
}

#[tokio::test]
async fn per_request_claims_are_part_of_the_key() {
    let layer = JwtSignerLayer::builder(KeyRegistry::generate(Algorithm::ES256).unwrap())
        .request_claims(|parts| {
            let tenant = parts
                .headers
                .get("x-tenant")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            Ok(RequestClaims::new().claim("tenant", tenant)?)
        })
        .reuse_tokens_in(TokenCache::new(TokenReuse::new()).unwrap())
        .build()
        .unwrap();
    let request = |tenant: &str| {
        Request::get("/")
            .header("x-tenant", tenant)
            .body(())
            .unwrap()
    };
    let a = token(&layer, request("a")).await;
    let b = token(&layer, request("b")).await;
    assert_ne!(a, b);
    assert_eq!(token(&layer, request("a")).await, a);
    assert_eq!(segment(b.split('.').nth(1).unwrap())["tenant"], "b");
}

#[tokio::test]
async fn a_rotated_key_is_never_reused() {
    for offload in [Offload::Inline, Offload::Blocking] {
        let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
        let layer = JwtSignerLayer::builder(registry.clone())
            .offload(offload)
            .reuse_tokens_in(TokenCache::new(TokenReuse::new()).unwrap())
            .build()
            .unwrap();
        let old_kid = registry.current().active().unwrap().kid().clone();
        let before = token(&layer, for_user("alice")).await;
        assert_eq!(token(&layer, for_user("alice")).await, before);

        let new_kid = registry.rotate(Duration::from_secs(120)).unwrap();
        let after = token(&layer, for_user("alice")).await;
        assert_ne!(after, before, "{offload}: not the old key's token");
        let header = segment(after.split('.').next().unwrap());
        assert_eq!(header["kid"], new_kid.as_str());
        assert_ne!(header["kid"], old_kid.as_str());
        verify(&after, &registry).unwrap();
        // And the new key's token is reused from now on.
        assert_eq!(token(&layer, for_user("alice")).await, after);
    }
}

#[tokio::test]
async fn a_retired_active_key_fails_closed_instead_of_reusing() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .reuse_tokens_in(TokenCache::new(TokenReuse::new()).unwrap())
        .build()
        .unwrap();
    token(&layer, for_user("alice")).await;
    let kid = registry.current().active().unwrap().kid().clone();
    registry
        .retire(&kid, SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let seen = Seen::default();
    let response = layer
        .layer(recording(&seen))
        .oneshot(for_user("alice"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count(), 0);
}

#[tokio::test]
async fn a_token_is_replaced_once_too_little_lifetime_remains() {
    let now = wall_clock();
    let start = now.load(Ordering::SeqCst);
    let registry = registry_at(Algorithm::ES256, &now);
    // 60 s tokens, handed out again while at least 25 % (15 s) remain.
    let layer = JwtSignerLayer::builder(registry.clone())
        .ttl(Duration::from_secs(60))
        .reuse_tokens_in(TokenCache::new(TokenReuse::new().min_remaining_percent(25)).unwrap())
        .build()
        .unwrap();
    let first = token(&layer, for_user("alice")).await;
    now.store(start + 45, Ordering::SeqCst);
    assert_eq!(token(&layer, for_user("alice")).await, first, "15 s left");
    now.store(start + 46, Ordering::SeqCst);
    let second = token(&layer, for_user("alice")).await;
    assert_ne!(second, first, "14 s left: a new token");
    let claims = segment(second.split('.').nth(1).unwrap());
    assert_eq!(claims["iat"], start + 46);
    assert_eq!(claims["exp"], start + 106);
    // A clock that goes back never hands out a token from its future.
    now.store(start + 10, Ordering::SeqCst);
    let third = token(&layer, for_user("alice")).await;
    assert_ne!(third, second);
    assert_eq!(segment(third.split('.').nth(1).unwrap())["iat"], start + 10);
}

#[tokio::test]
async fn the_default_share_is_half_the_lifetime() {
    let now = wall_clock();
    let start = now.load(Ordering::SeqCst);
    let layer = JwtSignerLayer::builder(registry_at(Algorithm::EdDSA, &now))
        .reuse_tokens_in(TokenCache::new(TokenReuse::new()).unwrap())
        .build()
        .unwrap();
    let first = token(&layer, for_user("alice")).await;
    now.store(start + 30, Ordering::SeqCst);
    assert_eq!(token(&layer, for_user("alice")).await, first);
    now.store(start + 31, Ordering::SeqCst);
    assert_ne!(token(&layer, for_user("alice")).await, first);
}

#[tokio::test]
async fn the_cache_stays_bounded_under_many_subjects() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let cache = TokenCache::new(TokenReuse::new().max_entries(100)).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .template_claim("sub", "${req.headers.x-user}")
        .reuse_tokens_in(cache.clone())
        .build()
        .unwrap();
    let seen = Seen::default();
    let service = layer.layer(recording(&seen));
    for i in 0..2_000 {
        let response = service
            .clone()
            .oneshot(for_user(&format!("user-{i}")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(cache.len() <= 100, "after {i} subjects");
    }
    assert!(!cache.is_empty());
    // The most recent subject is still served from the cache, and what it
    // gets verifies.
    let last = token(&layer, for_user("user-1999")).await;
    assert_eq!(token(&layer, for_user("user-1999")).await, last);
    assert_eq!(verify(&last, &registry).unwrap().claims["sub"], "user-1999");
}

#[test]
fn the_default_bound_is_ten_thousand() {
    assert_eq!(TokenReuse::new().max_entries_value(), 10_000);
    assert_eq!(TokenReuse::new().min_remaining_percent_value(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_share_the_cache_safely() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let cache = TokenCache::new(TokenReuse::new().max_entries(64)).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .template_claim("sub", "${req.headers.x-user}")
        .reuse_tokens_in(cache.clone())
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..8 {
        let layer = layer.clone();
        let registry = registry.clone();
        tasks.spawn(async move {
            for i in 0..300 {
                let user = format!("user-{}", (i * 7 + task) % 40);
                let token = token(&layer, for_user(&user)).await;
                let claims = verify(&token, &registry).unwrap().claims;
                assert_eq!(
                    claims["sub"],
                    user.as_str(),
                    "never another subject's token"
                );
                if task == 0 && i > 150 {
                    // Every request that starts after the rotation gets
                    // a token of the new key, never a cached old one.
                    let active = registry.current().active().unwrap().kid().clone();
                    let header = segment(token.split('.').next().unwrap());
                    assert_eq!(header["kid"], active.as_str());
                }
                if task == 0 && i == 150 {
                    registry.rotate(Duration::from_secs(120)).unwrap();
                }
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
    })
    .await
    .expect("bounded");
    assert!(cache.len() <= 64);
}
