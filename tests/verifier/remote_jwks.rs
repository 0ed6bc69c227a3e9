//! `RemoteJwks` against a counting JWKS server on 127.0.0.1: first fetch,
//! caching and revalidation, unknown-kid refresh with cooldown and
//! single-flight, and every kind of server failure.
//!
//! Cache ages are driven by moving tokio's clock (`crate::support::verifier::advance`)
//! between requests; nothing depends on how fast the machine is.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::StatusCode;
use serde_json::json;
use tower_jwt_signer::verifier::JwkSetError;
use tower_jwt_signer::{
    Algorithm, FetchError, JwksService, KeyRegistry, RemoteJwks, SigningKey, Verifier, VerifyError,
};

use crate::support::jose::{b64, compact};
use crate::support::verifier::{
    Backend, JwksServer, Mode, advance, claims, eventually, get_bearer, sign_with_header,
};

fn es256() -> SigningKey {
    SigningKey::generate(Algorithm::ES256).unwrap()
}

const COOLDOWN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn before_the_first_good_fetch_requests_get_503_then_recover() {
    let key = es256();
    let registry = KeyRegistry::new(key.clone());
    let server = JwksServer::start(Mode::Status(500)).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    let backend = Backend::start(Verifier::new(remote.clone())).await;
    let token = compact(&key, &claims());

    let reply = get_bearer(backend.addr, &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.challenge().is_none());
    assert_eq!(server.hits(), 1);
    assert!(remote.last_error().unwrap().contains("500"));

    // Before the retry delay no new fetch is tried: still 503, at once.
    let reply = get_bearer(backend.addr, &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.hits(), 1);

    // With no set at all, retries back off from 1 s, doubling: the fetches
    // come after 1 s, then 2 s more, then 4 s more.
    let mut hits = 1;
    for wait in [1, 2, 4] {
        advance(Duration::from_millis(wait * 1000 - 500)).await;
        get_bearer(backend.addr, &token).await;
        assert_eq!(server.hits(), hits, "too early after {wait} s");
        advance(Duration::from_millis(600)).await;
        let reply = get_bearer(backend.addr, &token).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        hits += 1;
        assert_eq!(server.hits(), hits, "retried after {wait} s");
    }

    // The server recovers; the next retry fetches the set.
    server.set_mode(Mode::Jwks(JwksService::new(registry)));
    advance(Duration::from_secs(9)).await;
    let reply = get_bearer(backend.addr, &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["claims"]["sub"], "alice");
    assert_eq!(server.hits(), hits + 1);
    assert_eq!(
        backend.calls(),
        1,
        "only the good request reached the handler"
    );
}

#[tokio::test]
async fn prefetch_fails_fast_and_then_succeeds() {
    // A port nobody listens on.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let remote = RemoteJwks::new(format!("http://{closed}/jwks.json")).unwrap();
    let err = remote.prefetch().await.unwrap_err();
    assert!(matches!(err, FetchError::Http(_)), "{err:?}");
    assert!(remote.current().is_none());

    let registry = KeyRegistry::generate(Algorithm::EdDSA).unwrap();
    let server = JwksServer::start(Mode::Jwks(JwksService::new(registry.clone()))).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    assert_eq!(remote.current().unwrap().len(), 1);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_fetch() {
    let old = es256();
    let registry = KeyRegistry::new(old.clone());
    let (release, held) = tokio::sync::watch::channel(false);
    let server = JwksServer::start(Mode::Jwks(JwksService::new(registry.clone()))).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    assert_eq!(server.hits(), 1);

    // The gateway rotates; the backend has not seen the new key.
    let new = es256();
    registry
        .rotate_to(new.clone(), Duration::from_secs(600))
        .unwrap();
    server.set_mode(Mode::Held(JwksService::new(registry.clone()), held));

    // 50 callers with the new kid are all waiting when the one fetch is
    // answered: each of them verifies, so each joined that fetch (a caller
    // turned away by the cooldown would get UnknownKid).
    let verifier = Verifier::new(remote.clone());
    let tokens: Vec<String> = (0..50)
        .map(|i| {
            let mut claims = claims();
            claims["n"] = json!(i);
            compact(&new, &claims)
        })
        .collect();
    let mut all = std::pin::pin!(join_all(tokens.iter().map(|t| verifier.verify(t))));
    // One poll: every caller starts the fetch or joins it, and waits.
    std::future::poll_fn(|cx| {
        assert!(all.as_mut().poll(cx).is_pending());
        std::task::Poll::Ready(())
    })
    .await;
    release.send_replace(true);
    let results = tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("callers finished in time");
    for result in &results {
        assert_eq!(result.as_ref().unwrap().get("sub").unwrap(), "alice");
    }
    assert_eq!(server.hits(), 2, "one fetch for 50 callers");
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let server = JwksServer::start(Mode::Jwks(JwksService::new(registry))).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    let backend = Backend::start(Verifier::new(remote.clone())).await;
    let attacker = es256();
    let flood = |round: usize| {
        let attacker = &attacker;
        let addr = backend.addr;
        join_all((0..50).map(move |i| {
            let header =
                json!({"alg": "ES256", "typ": "JWT", "kid": format!("unknown-{round}-{i}")});
            let token = sign_with_header(attacker, &header, &claims());
            async move { get_bearer(addr, &token).await.status }
        }))
    };

    let statuses = flood(0).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(server.hits(), 2, "prefetch + one refresh");

    let statuses = flood(1).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(server.hits(), 2, "cooldown: no refresh");

    advance(COOLDOWN + Duration::from_secs(1)).await;
    let statuses = flood(2).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(server.hits(), 3, "one refresh after the cooldown");
    assert_eq!(backend.calls(), 0);
}

#[tokio::test]
async fn rotation_is_learned_on_demand_and_old_tokens_verify_while_published() {
    let first = es256();
    let registry = KeyRegistry::new(first.clone());
    let server = JwksServer::start(Mode::Jwks(JwksService::new(registry.clone()))).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    let backend = Backend::start(Verifier::new(remote.clone())).await;
    let old_token = compact(&first, &claims());
    assert_eq!(
        get_bearer(backend.addr, &old_token).await.status,
        StatusCode::OK
    );
    assert_eq!(server.hits(), 1);

    let second = SigningKey::generate(Algorithm::ES256).unwrap();
    registry
        .rotate_to(second.clone(), Duration::from_secs(600))
        .unwrap();
    let new_token = compact(&second, &claims());
    let reply = get_bearer(backend.addr, &new_token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["kid"], second.kid().as_str());
    assert_eq!(server.hits(), 2, "the new kid cost exactly one fetch");

    // The old key is retiring but still published: its tokens verify.
    assert_eq!(
        get_bearer(backend.addr, &old_token).await.status,
        StatusCode::OK
    );
    assert_eq!(server.hits(), 2);

    // Once it is gone from the JWKS and the cache has expired, it stops.
    registry.remove(first.kid()).unwrap();
    advance(Duration::from_secs(301)).await;
    assert_eq!(
        get_bearer(backend.addr, &new_token).await.status,
        StatusCode::OK
    );
    eventually("the refreshed set drops the old key", || {
        remote
            .current()
            .is_some_and(|set| set.get(first.kid()).is_none())
    })
    .await;
    let reply = get_bearer(backend.addr, &old_token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(backend.calls(), 4);
}

#[tokio::test]
async fn cache_control_is_honoured_and_304_keeps_the_set() {
    let key = es256();
    let registry = KeyRegistry::builder()
        .active(key.clone())
        .jwks_max_age(Duration::from_secs(120))
        .build()
        .unwrap();
    let service = JwksService::new(registry.clone());
    let server = JwksServer::start(Mode::Jwks(service)).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    let verifier = Verifier::new(remote.clone());
    let token = compact(&key, &claims());
    let first_set = remote.current().unwrap();
    assert_eq!(server.seen()[0].if_none_match, None);

    advance(Duration::from_secs(119)).await;
    verifier.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 1, "still fresh");

    advance(Duration::from_secs(2)).await;
    verifier.verify(&token).await.unwrap();
    eventually("a revalidation", || {
        server.seen().get(1).is_some_and(|s| s.status.is_some())
    })
    .await;
    let seen = server.seen();
    let etag = registry.current().etag().to_str().unwrap().to_owned();
    assert_eq!(seen[1].if_none_match.as_deref(), Some(etag.as_str()));
    assert_eq!(seen[1].status, Some(304));
    eventually("the 304 is applied", || remote.last_error().is_none()).await;
    assert!(
        Arc::ptr_eq(&remote.current().unwrap(), &first_set),
        "304 keeps the set"
    );

    // The 304 restarted the lifetime: fresh for another 120 s.
    advance(Duration::from_secs(119)).await;
    verifier.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 2);

    // A max-age below the minimum is clamped to 60 s.
    server.set_mode(Mode::Body {
        body: Bytes::copy_from_slice(registry.current().jwks_bytes()),
        cache_control: Some("max-age=1"),
    });
    remote.prefetch().await.unwrap();
    assert_eq!(server.hits(), 3);
    advance(Duration::from_secs(30)).await;
    verifier.verify(&token).await.unwrap();
    assert_eq!(server.hits(), 3, "max-age=1 counts as 60 s");
    advance(Duration::from_secs(31)).await;
    verifier.verify(&token).await.unwrap();
    eventually("a refresh after 60 s", || server.hits() == 4).await;
}

#[tokio::test]
async fn failing_servers_leave_the_last_good_set_in_use() {
    let key = es256();
    let registry = KeyRegistry::new(key.clone());
    let server = JwksServer::start(Mode::Jwks(JwksService::new(registry.clone()))).await;
    let remote = RemoteJwks::builder(server.url())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    remote.prefetch().await.unwrap();
    let backend = Backend::start(Verifier::new(remote.clone())).await;
    let token = compact(&key, &claims());
    let stranger = sign_with_header(
        &es256(),
        &json!({"alg": "ES256", "kid": "stranger"}),
        &claims(),
    );

    let public = key.public_jwk().to_value();
    let private: serde_json::Value = serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap();
    let set = |keys: serde_json::Value| Bytes::from(json!({ "keys": keys }).to_string());
    let huge = Bytes::from(vec![b' '; 2 * 1024 * 1024]);
    let failures: Vec<(Mode, &str)> = vec![
        (Mode::Status(500), "answered 500"),
        (Mode::Status(404), "answered 404"),
        (Mode::Redirect, "redirects are not followed"),
        (
            Mode::Body {
                body: Bytes::from_static(b"<html>garbage"),
                cache_control: None,
            },
            "not JSON",
        ),
        (
            Mode::Body {
                body: Bytes::from_static(b"{\"keys\": 5}"),
                cache_control: None,
            },
            "not a JWK Set",
        ),
        (
            Mode::Body {
                body: huge.clone(),
                cache_control: None,
            },
            "larger than 1048576",
        ),
        (Mode::Chunked(huge), "larger than 1048576"),
        (
            Mode::Body {
                body: set(json!([public, private])),
                cache_control: None,
            },
            "private member",
        ),
        (
            Mode::Body {
                body: set(json!([public, public])),
                cache_control: None,
            },
            "several keys",
        ),
        (Mode::Hang, "no answer within"),
    ];
    for (mode, expected) in failures {
        server.set_mode(mode);
        // Stale, and past the retry cooldown of the previous failure.
        advance(Duration::from_secs(301)).await;
        let before = server.hits();
        let reply = get_bearer(backend.addr, &token).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{expected}: the stale set serves"
        );
        eventually(expected, || {
            remote.last_error().is_some_and(|e| e.contains(expected))
        })
        .await;
        assert_eq!(server.hits(), before + 1, "{expected}");
        assert_eq!(
            get_bearer(backend.addr, &token).await.status,
            StatusCode::OK
        );
        let reply = get_bearer(backend.addr, &stranger).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{expected}");
        assert_eq!(remote.current().unwrap().len(), 1);
        // The server recovers: the next fetch clears the error.
        server.set_mode(Mode::Jwks(JwksService::new(registry.clone())));
        remote.prefetch().await.unwrap();
        assert_eq!(remote.last_error(), None);
    }
    assert_eq!(backend.calls(), 20);

    // The last good set is kept for 24 h after its last good fetch, then
    // requests get 503 (keys unavailable), never a verdict on stale keys.
    server.set_mode(Mode::Status(500));
    advance(Duration::from_secs(24 * 3600)).await;
    let reply = get_bearer(backend.addr, &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let err = Verifier::new(remote.clone())
        .verify(&token)
        .await
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::KeysUnavailable(ref reason) if reason.contains("too old")),
        "{err}"
    );
}

#[tokio::test]
async fn bad_keys_are_skipped_and_bad_sets_refused() {
    let good = es256();
    let tiny_rsa = openssl::rsa::Rsa::generate(1024).unwrap();
    let mut on_no_curve = es256().public_jwk().to_value();
    on_no_curve["y"] = json!(b64([7u8; 32]));
    let mut for_encryption = es256().public_jwk().to_value();
    for_encryption["use"] = json!("enc");
    let body = json!({"keys": [
        {"kty": "RSA", "kid": "tiny", "n": b64(tiny_rsa.n().to_vec()), "e": b64(tiny_rsa.e().to_vec())},
        on_no_curve,
        good.public_jwk().to_value(),
        for_encryption,
        {"kty": "OKP", "crv": "X25519", "kid": "dh", "x": b64([9u8; 32])},
        "not an object",
    ]});
    let server = JwksServer::start(Mode::Body {
        body: Bytes::from(body.to_string()),
        cache_control: None,
    })
    .await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    let set = remote.current().unwrap();
    assert_eq!(set.len(), 1);
    assert_eq!(set.skipped().len(), 5);
    assert!(set.skipped()[0].reason().contains("1024 bits"));
    let verifier = Verifier::new(remote.clone());
    verifier.verify(&compact(&good, &claims())).await.unwrap();

    // A set with a private member is refused whole: never a partial set.
    let private: serde_json::Value = serde_json::from_str(&good.to_private_jwk().unwrap()).unwrap();
    server.set_mode(Mode::Body {
        body: Bytes::from(json!({"keys": [private]}).to_string()),
        cache_control: None,
    });
    let fresh = RemoteJwks::new(server.url()).unwrap();
    let err = fresh.prefetch().await.unwrap_err();
    assert!(matches!(
        err,
        FetchError::InvalidSet(JwkSetError::PrivateMember { member: "d", .. })
    ));
    let err = Verifier::new(fresh)
        .verify(&compact(&good, &claims()))
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::KeysUnavailable(_)), "{err}");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_empty_set_is_keys_unavailable_and_is_refetched_on_demand() {
    let registry = KeyRegistry::empty();
    let server = JwksServer::start(Mode::Jwks(JwksService::new(registry.clone()))).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    assert!(remote.current().unwrap().is_empty());
    let backend = Backend::start(Verifier::new(remote.clone())).await;
    let key = es256();
    let token = compact(&key, &claims());

    // The empty set is refreshed once for the unknown kid, then 503.
    let reply = get_bearer(backend.addr, &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.hits(), 2);
    let reply = get_bearer(backend.addr, &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.hits(), 2, "cooldown");

    // The gateway gets a key: after the cooldown the backend learns it.
    registry.add_next(key.clone()).unwrap();
    advance(COOLDOWN + Duration::from_secs(1)).await;
    let reply = get_bearer(backend.addr, &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(server.hits(), 3);
}
