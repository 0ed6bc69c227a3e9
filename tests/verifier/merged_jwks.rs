//! Several registries behind one `JwksService` (`JwksSource::merged`),
//! served over a real socket on 127.0.0.1: tokens of an ES256 and an RS256
//! signer verify against the one set (with our `RemoteJwks` and with
//! jsonwebtoken), a rotation in either changes the ETag, and a kid that two
//! registries publish with different keys is refused while the previous set
//! (bytes and ETag) is still served.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tower::{Layer, ServiceExt};
use tower_jwt_signer::jwks::JwksSource;
use tower_jwt_signer::{
    Algorithm, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry, RemoteJwks, SigningKey,
    Verifier,
};

use crate::support::logs::logs;
use crate::support::signer::{AbortOnDrop, Seen, bearer, recording, verify_against};
use crate::support::verifier::{Reply, get};

/// `source`'s JWKS served by axum on 127.0.0.1.
async fn serve(source: JwksSource) -> (SocketAddr, AbortOnDrop) {
    let app = axum::Router::new().route_service(JWKS_PATH, JwksService::new(source));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, AbortOnDrop(task))
}

/// A token of the registry's signer (a real `JwtSignerLayer`).
async fn token(registry: &KeyRegistry) -> String {
    let seen = Seen::default();
    let signer = JwtSignerLayer::builder(registry.clone())
        .issuer("gateway")
        .build()
        .unwrap()
        .layer(recording(&seen));
    signer
        .oneshot(Request::new(Full::<Bytes>::default()))
        .await
        .unwrap();
    bearer(&seen.only().headers)
}

async fn jwks(addr: SocketAddr) -> Reply {
    let reply = get(addr, JWKS_PATH, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply
}

fn etag(reply: &Reply) -> String {
    reply.headers["etag"].to_str().unwrap().to_owned()
}

fn kids(reply: &Reply) -> Vec<String> {
    let set: Value = reply.json();
    set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn remote(addr: SocketAddr) -> RemoteJwks {
    RemoteJwks::builder(format!("http://{addr}{JWKS_PATH}"))
        .refresh_cooldown(Duration::ZERO)
        .build()
        .unwrap()
}

#[tokio::test]
async fn tokens_of_two_registries_verify_against_one_jwks_over_http() {
    let es = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let rs = KeyRegistry::generate(Algorithm::RS256).unwrap();
    let (addr, _server) = serve(JwksSource::merged([es.clone(), rs.clone()]).unwrap()).await;
    let reply = jwks(addr).await;
    assert_eq!(kids(&reply).len(), 2);
    let verifier = Verifier::new(remote(addr));
    for (registry, alg) in [(&es, "ES256"), (&rs, "RS256")] {
        let token = token(registry).await;
        // jsonwebtoken, from the fetched bytes alone.
        let verified = verify_against(&token, &reply.body).unwrap();
        assert_eq!(verified.header["alg"], alg);
        assert_eq!(verified.claims["iss"], "gateway");
        // Our RemoteJwks, from the same URL.
        let claims = verifier.verify(&token).await.unwrap();
        assert_eq!(claims.issuer(), Some("gateway"));
    }
}

#[tokio::test]
async fn a_rotation_in_either_registry_changes_the_etag() {
    let es = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let rs = KeyRegistry::generate(Algorithm::RS256).unwrap();
    let (addr, _server) = serve(JwksSource::merged([es.clone(), rs.clone()]).unwrap()).await;
    let verifier = Verifier::new(remote(addr));
    let first = jwks(addr).await;
    verifier.verify(&token(&es).await).await.unwrap();

    let mut etags = vec![etag(&first)];
    for registry in [&es, &rs, &es] {
        registry.rotate(Duration::from_secs(600)).unwrap();
        let reply = jwks(addr).await;
        assert!(
            !etags.contains(&etag(&reply)),
            "a new ETag after a rotation"
        );
        // The old ETag gets the new set, the new one a 304.
        let previous = etags.last().unwrap().clone();
        let revalidated = get(addr, JWKS_PATH, &[("if-none-match", &previous)]).await;
        assert_eq!(revalidated.status, StatusCode::OK);
        assert_eq!(revalidated.body, reply.body);
        let current = get(addr, JWKS_PATH, &[("if-none-match", &etag(&reply))]).await;
        assert_eq!(current.status, StatusCode::NOT_MODIFIED);
        etags.push(etag(&reply));
        // The new key's tokens verify, through both verifiers.
        let token = token(registry).await;
        verify_against(&token, &reply.body).unwrap();
        verifier.verify(&token).await.unwrap();
    }
    assert_eq!(
        kids(&jwks(addr).await).len(),
        5,
        "3 + 2 keys, retiring ones kept"
    );
}

#[tokio::test]
async fn an_ambiguous_kid_is_refused_and_the_previous_set_is_still_served() {
    logs();
    let es = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let rs = KeyRegistry::generate(Algorithm::RS256).unwrap();
    let (addr, _server) = serve(JwksSource::merged([es.clone(), rs.clone()]).unwrap()).await;
    let before = jwks(addr).await;
    let es_token = token(&es).await;

    // Another key under the ES256 registry's kid, published by the RS256
    // registry (as next: it does not sign).
    let kid = es.current().active().unwrap().kid().clone();
    let clash = SigningKey::generate(Algorithm::ES256)
        .unwrap()
        .with_kid(kid.clone());
    rs.add_next(clash).unwrap();
    for _ in 0..3 {
        let after = jwks(addr).await;
        assert_eq!(after.body, before.body, "the previous bytes");
        assert_eq!(etag(&after), etag(&before), "the previous ETag");
    }
    let revalidated = get(addr, JWKS_PATH, &[("if-none-match", &etag(&before))]).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    verify_against(&es_token, &jwks(addr).await.body).unwrap();
    let events = logs().matching(&["ERROR", kid.as_str(), "would be ambiguous"]);
    assert_eq!(events.len(), 1, "one event per refused change: {events:?}");

    // Once the registries agree again, their changes are published.
    rs.remove(&kid).unwrap();
    let next = rs
        .add_next(SigningKey::generate(Algorithm::RS256).unwrap())
        .unwrap();
    let agreed = jwks(addr).await;
    assert_ne!(etag(&agreed), etag(&before));
    assert!(kids(&agreed).contains(&next.to_string()));
    assert_eq!(kids(&agreed).len(), 3);

    // A source whose registries disagree from the start is refused.
    let other = KeyRegistry::new(
        SigningKey::generate(Algorithm::EdDSA)
            .unwrap()
            .with_kid(kid.clone()),
    );
    let err = JwksSource::merged([es, other]).unwrap_err();
    assert_eq!(err.setting(), "registries");
    assert!(err.to_string().contains(kid.as_str()), "{err}");
}

#[tokio::test]
async fn the_same_key_in_two_registries_is_published_once() {
    let shared = SigningKey::generate(Algorithm::ES256).unwrap();
    let a = KeyRegistry::new(shared.clone());
    let b = KeyRegistry::new(SigningKey::generate(Algorithm::EdDSA).unwrap());
    b.add_next(shared.clone()).unwrap();
    let source = JwksSource::merged([a, b]).unwrap();
    let (addr, _server) = serve(source.clone()).await;
    let reply = jwks(addr).await;
    let kids = kids(&reply);
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert_eq!(kids[0], shared.kid().as_str());
    assert_eq!(reply.body, source.jwks_bytes());
    assert!(JwksSource::merged([]).is_err());
}
