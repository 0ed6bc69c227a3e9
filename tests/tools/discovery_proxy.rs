//! `signing_proxy --route PREFIX=ALG --issuer http://127.0.0.1:PORT`, the
//! real binary: requests under each prefix get tokens of their algorithm
//! (the longest prefix wins), all verify with the one JWKS the proxy
//! serves (jsonwebtoken), its discovery document lists every algorithm, and
//! `verify_backend --discover` (the real binary) accepts every token through
//! that document.

use std::net::SocketAddr;

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tower_jwt_signer::JWKS_PATH;
use tower_jwt_signer::discovery::DISCOVERY_PATH;

use crate::signing_proxy::{get, jwks};
use crate::support::process::{Example, LIMIT, Running};
use crate::support::signer::{fetch, segment, verify_against};
use crate::support::upstream::Upstream;
use crate::support::verifier::get_bearer;

/// A port free now on 127.0.0.1 (the proxy must know its address before it
/// listens: it is in `--issuer`).
async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// The token the upstream received for `GET path` through the proxy.
async fn token_for(proxy: SocketAddr, upstream: &Upstream, path: &str) -> String {
    let before = upstream.received().len();
    let (parts, _) = fetch(
        Request::builder()
            .method(Method::GET)
            .uri(format!("http://{proxy}{path}"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::CREATED, "{path}");
    let received = upstream.received();
    assert_eq!(received.len(), before + 1);
    received[before].bearer().expect("a token")
}

fn alg_of(token: &str) -> String {
    segment(token.split('.').next().unwrap())["alg"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn proxy(upstream: &Upstream, issuer: &str, port: u16) -> (Running, SocketAddr) {
    let listen = format!("127.0.0.1:{port}");
    let running = Example::new("signing_proxy").spawn(&[
        "--listen",
        &listen,
        "--upstream",
        &upstream.url(),
        "--issuer",
        issuer,
        "--route",
        "/legacy=RS256",
        "--route",
        "/partners=EdDSA",
        "--route",
        "/partners/eu/=PS256",
    ]);
    let addr = running.address("signing proxy on").await;
    running
        .line_async("the discovery line", |line| {
            line.starts_with("discovery at ")
        })
        .await;
    (running, addr)
}

#[tokio::test]
async fn routes_sign_with_their_algorithms_and_a_discovering_backend_accepts_them() {
    let upstream = Upstream::start().await;
    let port = free_port().await;
    let issuer = format!("http://127.0.0.1:{port}");
    let (_proxy, addr) = proxy(&upstream, &issuer, port).await;

    let mut tokens = Vec::new();
    for (path, alg) in [
        ("/legacy/orders/1", "RS256"),
        ("/legacy", "RS256"),
        ("/partners/x", "EdDSA"),
        ("/partners/eu/7", "PS256"),
        ("/partners/eu", "PS256"),
        ("/partners/euro", "EdDSA"),
        ("/legacyish", "ES256"),
        ("/", "ES256"),
    ] {
        let token = token_for(addr, &upstream, path).await;
        assert_eq!(alg_of(&token), alg, "{path}");
        tokens.push(token);
    }

    // One JWKS with the four keys; every token verifies against it.
    let set = jwks(addr).await;
    let keys: serde_json::Value = serde_json::from_slice(&set).unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 4);
    for token in &tokens {
        let verified = verify_against(token, &set).unwrap();
        assert_eq!(verified.claims["iss"], issuer.as_str());
    }

    // The discovery document names the issuer, the JWKS and the four
    // algorithms.
    let (status, body) = get(addr, DISCOVERY_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}{JWKS_PATH}"),
            "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
        })
    );

    // A backend that knows only the issuer URL accepts every token.
    let backend = Example::new("verify_backend").spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--discover",
        &issuer,
        "--issuer",
        &issuer,
    ]);
    let fetched = backend
        .line_async("the first fetch", |line| line.starts_with("fetched "))
        .await;
    assert!(
        fetched.contains(&format!("{issuer}{JWKS_PATH}")),
        "{fetched}"
    );
    let backend_addr = backend.address("verifying backend on").await;
    for token in &tokens {
        let reply = get_bearer(backend_addr, token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", backend.transcript());
        assert_eq!(reply.json()["alg"], alg_of(token).as_str());
    }
    // A token of another gateway is refused.
    let reply = get_bearer(backend_addr, "e30.e30.e30").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn route_and_discovery_flags_that_do_not_go_together_are_refused() {
    for (flags, expected) in [
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--route",
                "legacy=RS256",
            ][..],
            "must be a path",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--route",
                "/legacy=RS256",
                "--cert-file",
                "/nonexistent/tls.crt",
                "--key-file",
                "/nonexistent/tls.key",
            ][..],
            "--route and --cert-file are exclusive",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--route",
                "/legacy=HS256",
            ][..],
            "HS256",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--route",
                "/a=RS256",
                "--route",
                "/a/=ES256",
            ][..],
            "--route /a is given twice",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--route",
                "/a=RS256",
                "--redis-url",
                "redis://127.0.0.1:1/",
                "--kek-file",
                "/nonexistent/kek",
            ][..],
            "--route is not supported with --redis-url",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--route",
                "/a=RS256",
                "--pkcs11-module",
                "/nonexistent.so",
            ][..],
            "--route is not supported with --pkcs11-module",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--issuer",
                "gw",
                "--jwks-uri",
                "https://gw.example/jwks",
            ][..],
            "--jwks-uri needs --issuer as an http(s) URL",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--issuer",
                "http://127.0.0.1:1",
                "--jwks-uri",
                "/relative",
            ][..],
            "(--jwks-uri)",
        ),
        (
            &[
                "--upstream",
                "http://127.0.0.1:1",
                "--issuer",
                "https://gw.example/?q",
            ][..],
            "(--issuer)",
        ),
    ] {
        let finished = Example::new("signing_proxy").run(flags, LIMIT);
        assert_eq!(finished.code(), Some(2), "{flags:?}: {finished:?}");
        assert!(
            finished.stderr.contains(expected),
            "{flags:?}: {}",
            finished.stderr
        );
        assert!(!finished.stdout.contains("signing proxy on"));
    }
}

#[test]
fn verify_backend_takes_a_jwks_url_or_an_issuer_not_both() {
    for (flags, expected) in [
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--jwks-url",
                "http://127.0.0.1:1/jwks",
                "--discover",
                "http://127.0.0.1:1",
            ][..],
            "cannot be used with",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--discover",
                "http://gateway.example.test",
            ][..],
            "plain http to a host that is not loopback",
        ),
        (
            &["--listen", "127.0.0.1:0", "--allow-http"][..],
            "--discover",
        ),
    ] {
        let finished = Example::new("verify_backend").run(flags, LIMIT);
        assert_eq!(finished.code(), Some(2), "{flags:?}: {finished:?}");
        assert!(
            finished.stderr.contains(expected),
            "{flags:?}: {}",
            finished.stderr
        );
    }
}

#[tokio::test]
async fn with_a_key_dir_each_route_algorithm_keeps_its_keys_in_a_subdirectory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let dir_flag = dir.to_str().unwrap().to_owned();
    let upstream = Upstream::start().await;
    let upstream_url = upstream.url();
    let flags = [
        "--upstream",
        &upstream_url,
        "--key-dir",
        &dir_flag,
        "--route",
        "/legacy=RS256",
    ];
    let kids_of = |set: &[u8]| {
        let set: serde_json::Value = serde_json::from_slice(set).unwrap();
        let mut kids: Vec<String> = set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        kids.sort();
        kids
    };

    let (first, addr) = crate::signing_proxy::proxy(&flags).await;
    let legacy = token_for(addr, &upstream, "/legacy/1").await;
    assert_eq!(alg_of(&legacy), "RS256");
    let kids = kids_of(&jwks(addr).await);
    assert_eq!(kids.len(), 2);
    let rs256_kid = segment(legacy.split('.').next().unwrap())["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        dir.join("RS256")
            .join(format!("{rs256_kid}.key.json"))
            .exists()
    );
    drop(first);

    // A restart keeps both keys: the old RS256 token still verifies.
    let (_again, addr) = crate::signing_proxy::proxy(&flags).await;
    let set = jwks(addr).await;
    assert_eq!(kids_of(&set), kids);
    verify_against(&legacy, &set).unwrap();
}

#[tokio::test]
async fn with_rotate_every_each_route_registry_rotates_on_its_own() {
    let upstream = Upstream::start().await;
    let upstream_url = upstream.url();
    let (_proxy, addr) = crate::signing_proxy::proxy(&[
        "--upstream",
        &upstream_url,
        "--route",
        "/legacy=RS256",
        "--rotate-every",
        "2",
        "--ttl",
        "5",
    ])
    .await;
    let kid_of = |token: &str| {
        segment(token.split('.').next().unwrap())["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first_legacy = token_for(addr, &upstream, "/legacy/1").await;
    let first_default = token_for(addr, &upstream, "/").await;
    assert_eq!(alg_of(&first_legacy), "RS256");
    assert_eq!(alg_of(&first_default), "ES256");

    // Each route's registry has its own rotator: both algorithms move on
    // to a new key, and the tokens signed before still verify with the one
    // JWKS (their keys are retained).
    let deadline = tokio::time::Instant::now() + LIMIT;
    let (legacy, default) = loop {
        let legacy = token_for(addr, &upstream, "/legacy/1").await;
        let default = token_for(addr, &upstream, "/").await;
        if kid_of(&legacy) != kid_of(&first_legacy) && kid_of(&default) != kid_of(&first_default) {
            break (legacy, default);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rotation of both registries within {LIMIT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(alg_of(&legacy), "RS256");
    assert_eq!(alg_of(&default), "ES256");
    let set = jwks(addr).await;
    for token in [&first_legacy, &first_default, &legacy, &default] {
        verify_against(token, &set).unwrap();
    }
}
