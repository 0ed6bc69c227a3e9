//! The seed's whole chain with the crate's own code on both ends, over real
//! sockets on 127.0.0.1, for every algorithm: a client calls a gateway
//! whose `JwtSignerLayer` signs and forwards each request to a backend; the
//! backend's `JwtVerifierLayer` verifies the token with a `RemoteJwks`
//! pointed at the gateway's `JwksService` and answers with the claims.
//!
//! Fetches of the gateway's JWKS are counted at its route. The backends'
//! caches are set to live for an hour, so every fetch in these tests comes
//! from an explicit trigger (the first request, an unknown kid), never from
//! the passing of time.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;
use tower_jwt_signer::verifier::VerifierBuilder;
use tower_jwt_signer::{Algorithm, KeyRegistry, RemoteJwks, SigningKey, Verifier};

use crate::support::chain::{AUDIENCE, Backend, Gateway, ISSUER, jwks_url};
use crate::support::signer::segment;
use crate::support::verifier::{Reply, bounded, get, get_bearer};

const HOUR: Duration = Duration::from_secs(60 * 60);

/// A remote JWKS whose cache outlives the test; `cooldown` rate limits the
/// refreshes for unknown kids.
fn remote(url: &str, cooldown: Duration) -> RemoteJwks {
    RemoteJwks::builder(url)
        .cache_ttl_bounds(HOUR, 24 * HOUR)
        .refresh_cooldown(cooldown)
        .build()
        .unwrap()
}

/// The backend's verifier: the gateway's issuer and audience.
fn verifier(remote: &RemoteJwks) -> VerifierBuilder {
    Verifier::builder(remote.clone())
        .issuer(ISSUER)
        .audience(AUDIENCE)
}

/// The kid the registry signs with now.
fn active_kid(registry: &KeyRegistry) -> String {
    registry
        .current()
        .active()
        .unwrap()
        .kid()
        .as_str()
        .to_owned()
}

/// The kids of the backend's cached copy of the JWKS.
fn cached_kids(remote: &RemoteJwks) -> Vec<String> {
    let mut kids: Vec<String> = remote
        .current()
        .expect("fetched")
        .keys()
        .iter()
        .map(|key| key.kid().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

fn assert_ok(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{what}: {:?} {:?}",
        reply.challenge(),
        reply.body
    );
}

fn assert_invalid_token(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
    let challenge = reply.challenge().unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{what}: {challenge}"
    );
}

/// One algorithm through the chain: the claims come back, a request without
/// the gateway is refused, and so is a token from another gateway's key.
async fn round_trip(alg: Algorithm, registry: KeyRegistry, other: KeyRegistry) {
    let kid = active_kid(&registry);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = remote(&jwks_url(&listener), HOUR);
    let backend = Backend::start(verifier(&remote).algorithms([alg]).build().unwrap()).await;
    let gateway = Gateway::start(registry, listener, backend.addr);
    let other_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_gateway = Gateway::start(other, other_listener, backend.addr);

    // Through the gateway: the claims it wrote come back verified.
    let reply = get(
        gateway.addr,
        "/orders/42?priority=7",
        &[("x-user", "alice"), ("x-tenant", "acme")],
    )
    .await;
    assert_ok(&reply, alg.as_str());
    let body = reply.json();
    let claims = &body["claims"];
    assert_eq!(claims["iss"], ISSUER, "{alg}");
    assert_eq!(claims["aud"], AUDIENCE, "{alg}");
    assert_eq!(claims["sub"], "alice", "{alg}");
    assert_eq!(claims["tenant"], "acme", "{alg}");
    assert_eq!(claims["priority"], 7, "{alg}");
    assert_eq!(claims["path"], "/orders/42", "{alg}");
    let iat = claims["iat"].as_u64().expect("integer iat");
    assert_eq!(claims["nbf"].as_u64(), Some(iat), "{alg}");
    assert_eq!(claims["exp"].as_u64(), Some(iat + 60), "{alg}");
    assert!(claims["jti"].as_str().is_some_and(|jti| jti.len() >= 22));
    assert_eq!(body["kid"], kid.as_str(), "{alg}");
    assert_eq!(body["alg"], alg.as_str(), "{alg}");
    // The token the backend received has exactly the header the signer
    // writes.
    let token = backend.last_token();
    assert_eq!(
        segment(token.split('.').next().unwrap()),
        json!({"alg": alg.as_str(), "typ": "JWT", "kid": kid}),
        "{alg}"
    );
    assert_eq!(
        gateway.jwks_fetches(),
        1,
        "{alg}: the first request fetched"
    );

    // Defaults of the templates, a new token, and the cached set.
    let reply = get(gateway.addr, "/", &[("x-user", "bob")]).await;
    assert_ok(&reply, alg.as_str());
    let claims = &reply.json()["claims"];
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["tenant"], "public");
    assert_eq!(claims["priority"], 0);
    assert_ne!(
        backend.last_token(),
        token,
        "{alg}: a fresh token per request"
    );
    assert_eq!(gateway.jwks_fetches(), 1, "{alg}: served from the cache");
    assert_eq!(backend.calls(), 2);

    // Straight to the backend without a token: 401, the handler is not
    // called.
    let reply = get(backend.addr, "/orders/42", &[("x-user", "alice")]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{alg}");
    assert_eq!(reply.challenge(), Some("Bearer"), "{alg}");

    // Through another gateway (same algorithm, its own key) to the same
    // backend: the kid is unknown, one refresh of the trusted JWKS does not
    // bring it, 401. The other gateway's JWKS is never asked.
    let reply = get(other_gateway.addr, "/orders/42", &[("x-user", "alice")]).await;
    assert_invalid_token(&reply, alg.as_str());
    assert_eq!(gateway.jwks_fetches(), 2, "{alg}: one refresh for the kid");
    assert_eq!(other_gateway.jwks_fetches(), 0, "{alg}");
    // Again: within the cooldown no further fetch.
    let reply = get(other_gateway.addr, "/", &[("x-user", "alice")]).await;
    assert_invalid_token(&reply, alg.as_str());
    assert_eq!(gateway.jwks_fetches(), 2, "{alg}: rate limited");
    assert_eq!(backend.calls(), 2, "{alg}: refused requests never reach it");

    // A valid token of the right gateway still passes, sent directly.
    assert_ok(&get_bearer(backend.addr, &token).await, alg.as_str());
}

#[tokio::test]
async fn every_algorithm_round_trips_through_the_signer_and_a_remote_jwks() {
    for alg in Algorithm::ALL {
        // Key generation (RSA) is done before the bounded part.
        let registry = KeyRegistry::generate(alg).unwrap();
        let other = KeyRegistry::generate(alg).unwrap();
        bounded(round_trip(alg, registry, other)).await;
    }
}

#[tokio::test]
async fn a_rotation_at_the_gateway_reaches_the_backend_through_the_chain() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let next = SigningKey::generate(Algorithm::ES256).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    // No cooldown: every unknown kid may refresh, so each fetch below is
    // caused by exactly one request and nothing depends on time.
    let remote = remote(&jwks_url(&listener), Duration::ZERO);
    let backend = Backend::start(verifier(&remote).build().unwrap()).await;
    let gateway = Gateway::start(registry.clone(), listener, backend.addr);
    let through = || get(gateway.addr, "/", &[("x-user", "alice")]);

    bounded(async {
        // The first request fetches the set; its token is kept.
        let kid_a = registry.current().active().unwrap().kid().clone();
        let removed = kid_a.clone();
        let kid_a = kid_a.as_str().to_owned();
        let reply = through().await;
        assert_ok(&reply, "first request");
        assert_eq!(reply.json()["kid"], kid_a.as_str());
        assert_eq!(gateway.jwks_fetches(), 1);
        let token_a = backend.last_token();

        // A next key is published; it does not sign yet and the backend
        // has no reason to look.
        let kid_b = registry.add_next(next).unwrap().as_str().to_owned();
        let reply = through().await;
        assert_ok(&reply, "after add_next");
        assert_eq!(reply.json()["kid"], kid_a.as_str());
        assert_eq!(gateway.jwks_fetches(), 1);

        // Rotation: B signs, A is retiring and still published. The backend
        // learns B on demand with exactly one fetch.
        let retain = Duration::from_secs(600);
        assert_eq!(registry.rotate(retain).unwrap().as_str(), kid_b);
        let reply = through().await;
        assert_ok(&reply, "after rotate");
        assert_eq!(reply.json()["kid"], kid_b.as_str());
        assert_eq!(gateway.jwks_fetches(), 2, "one fetch for the new kid");
        let reply = through().await;
        assert_ok(&reply, "after rotate, again");
        assert_eq!(reply.json()["kid"], kid_b.as_str());
        assert_eq!(gateway.jwks_fetches(), 2, "the new kid is cached");
        let mut both = vec![kid_a.clone(), kid_b.clone()];
        both.sort();
        assert_eq!(cached_kids(&remote), both);

        // A token signed before the rotation still verifies while its key
        // is published.
        let reply = get_bearer(backend.addr, &token_a).await;
        assert_ok(&reply, "old token, key retiring");
        assert_eq!(reply.json()["kid"], kid_a.as_str());
        assert_eq!(reply.json()["claims"]["sub"], "alice");
        assert_eq!(gateway.jwks_fetches(), 2);

        // A is removed from the gateway's JWKS. The backend's copy is a
        // cache: until it refreshes, A is still known there.
        registry.remove(&removed).unwrap();
        assert_ok(
            &get_bearer(backend.addr, &token_a).await,
            "old token, before the backend refreshed",
        );
        assert_eq!(gateway.jwks_fetches(), 2);

        // The next rotation (a fresh key C) makes the backend refresh: one
        // fetch, and its copy no longer holds A.
        let kid_c = registry.rotate(retain).unwrap().as_str().to_owned();
        let reply = through().await;
        assert_ok(&reply, "after the second rotation");
        assert_eq!(reply.json()["kid"], kid_c.as_str());
        assert_eq!(gateway.jwks_fetches(), 3);
        let mut current = vec![kid_b.clone(), kid_c.clone()];
        current.sort();
        assert_eq!(cached_kids(&remote), current);

        // Now the old token is refused. Its kid is unknown, so the backend
        // looks once more (no cooldown here) and still does not find it.
        let calls = backend.calls();
        let reply = get_bearer(backend.addr, &token_a).await;
        assert_invalid_token(&reply, "old token, key removed");
        assert_eq!(gateway.jwks_fetches(), 4);
        assert_eq!(backend.calls(), calls, "the handler is not called");

        // Tokens of the current key keep working without another fetch.
        assert_ok(&through().await, "after the refusal");
        assert_eq!(gateway.jwks_fetches(), 4);
    })
    .await;
}
