//! The signing proxy's key flags: `--key-dir` keeps the keys (and kids)
//! across restarts, `--rotate-every`, `--prepublish` and `--retain` drive
//! the rotator, and settings that cannot work are refused before start.

#[allow(dead_code)]
#[path = "../../examples/signing_proxy.rs"]
mod signing_proxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::lifecycle::{published_kids, verify_with_jwks};
use crate::support::signer::{AbortOnDrop, fetch};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use signing_proxy::{Command, Options, open_registry, parse_args, rotation_policy, serve};
use tokio::net::TcpListener;
use tower_jwt_signer::rotation::{KeyRotator, RotationConfigError};
use tower_jwt_signer::{Algorithm, Clock, JWKS_PATH, KeyRegistry, KeyState};

fn options(flags: &[&str]) -> Options {
    let mut all = vec!["--upstream", "http://127.0.0.1:1"];
    all.extend_from_slice(flags);
    match parse_args(all.iter().map(|s| (*s).to_owned())).unwrap() {
        Command::Run(options) => *options,
        Command::Help => panic!("not help"),
    }
}

#[test]
fn rotation_flags_and_their_defaults() {
    // No --rotate-every: no rotation.
    assert!(rotation_policy(&options(&[])).unwrap().is_none());

    // prepublish: the smaller of half the period and the JWKS max-age;
    // retain: ttl + leeway.
    let policy = rotation_policy(&options(&["--rotate-every", "86400"]))
        .unwrap()
        .unwrap();
    assert_eq!(policy.rotate_every(), Duration::from_secs(86400));
    assert_eq!(policy.prepublish(), Duration::from_secs(300));
    assert_eq!(policy.retain(), Duration::from_secs(60 + 60));
    let policy = rotation_policy(&options(&[
        "--rotate-every",
        "120",
        "--ttl",
        "30",
        "--alg",
        "EdDSA",
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(policy.prepublish(), Duration::from_secs(60));
    assert_eq!(policy.retain(), Duration::from_secs(30 + 60));
    assert_eq!(policy.algorithm(), Some(Algorithm::EdDSA));
    let policy = rotation_policy(&options(&[
        "--rotate-every",
        "3600",
        "--jwks-max-age",
        "60",
        "--prepublish",
        "900",
        "--retain",
        "7200",
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(policy.prepublish(), Duration::from_secs(900));
    assert_eq!(policy.retain(), Duration::from_secs(7200));

    // Settings that cannot work.
    let refused = |flags: &[&str]| rotation_policy(&options(flags)).unwrap_err();
    assert_eq!(
        refused(&["--rotate-every", "0"]),
        RotationConfigError::ZeroPeriod
    );
    assert!(matches!(
        refused(&["--rotate-every", "3600", "--prepublish", "3601"]),
        RotationConfigError::PrepublishLongerThanPeriod { .. }
    ));
    assert!(matches!(
        refused(&["--rotate-every", "3600", "--retain", "100"]),
        RotationConfigError::RetainTooShort { .. }
    ));
    let parse = |flags: &[&str]| {
        let mut all = vec!["--upstream", "http://x"];
        all.extend_from_slice(flags);
        parse_args(all.iter().map(|s| (*s).to_owned()))
    };
    for (flags, expected) in [
        (
            &["--prepublish", "10"][..],
            "--prepublish needs --rotate-every",
        ),
        (&["--retain", "10"][..], "--retain needs --rotate-every"),
        (&["--rotate-every", "daily"][..], "--rotate-every"),
        (&["--key-dir"][..], "--key-dir needs a value"),
    ] {
        let err = parse(flags).unwrap_err();
        assert!(err.contains(expected), "{flags:?}: {err}");
    }
}

/// An upstream that records the bearer tokens it receives.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>, AbortOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&tokens);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        if let Some(value) = request.headers().get("authorization") {
                            let value = value.to_str().unwrap();
                            seen.lock()
                                .unwrap()
                                .push(value.strip_prefix("Bearer ").unwrap().to_owned());
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, tokens, AbortOnDrop(task))
}

/// Starts the proxy as `run` does (registry from the options), on a free
/// port; returns its address, registry and task.
async fn start(options: Options) -> (SocketAddr, KeyRegistry, AbortOnDrop) {
    let options = Arc::new(options);
    let opening = Arc::clone(&options);
    let registry = tokio::task::spawn_blocking(move || open_registry(&opening, Clock::system()))
        .await
        .unwrap()
        .unwrap();
    let layer = signing_proxy::signer_layer(&options, registry.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = serve(listener, &options, layer).await;
    });
    (addr, registry, AbortOnDrop(task))
}

async fn get(url: String) -> (StatusCode, Bytes) {
    let (parts, body) = fetch(
        Request::builder()
            .method(Method::GET)
            .uri(url)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    (parts.status, body)
}

#[tokio::test]
async fn key_dir_keeps_the_kid_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let dir_flag = dir.to_str().unwrap().to_owned();
    let (upstream_addr, tokens, _upstream) = upstream().await;
    let upstream_url = format!("http://{upstream_addr}");
    let flags = ["--upstream", &upstream_url, "--key-dir", &dir_flag];

    // First run: a key is created in the directory and signs.
    let (addr, registry, proxy) = start(options(&flags)).await;
    let (status, _) = get(format!("http://{addr}/orders")).await;
    assert_eq!(status, StatusCode::OK);
    let token = tokens.lock().unwrap()[0].clone();
    let (_, jwks) = get(format!("http://{addr}{JWKS_PATH}")).await;
    let kids = published_kids(&jwks);
    assert_eq!(kids.len(), 1);
    verify_with_jwks(&token, &jwks).unwrap();
    assert!(dir.join(format!("{}.key.json", kids[0])).exists());
    drop(proxy);
    drop(registry);

    // Second run: the same kid; the old token verifies through the new
    // proxy's JWKS, and new tokens use the same key.
    let (addr, _registry, _proxy) = start(options(&flags)).await;
    let (_, jwks_again) = get(format!("http://{addr}{JWKS_PATH}")).await;
    assert_eq!(published_kids(&jwks_again), kids);
    verify_with_jwks(&token, &jwks_again).unwrap();
    let (status, _) = get(format!("http://{addr}/again")).await;
    assert_eq!(status, StatusCode::OK);
    let second = tokens.lock().unwrap()[1].clone();
    let header = jsonwebtoken::decode_header(&second).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kids[0].as_str()));

    // Without --key-dir a restart gets a new key.
    let (addr, _registry, _proxy) = start(options(&["--upstream", &upstream_url])).await;
    let (_, jwks_memory) = get(format!("http://{addr}{JWKS_PATH}")).await;
    assert_ne!(published_kids(&jwks_memory), kids);
}

#[test]
fn key_dir_with_keys_of_another_algorithm_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let dir_flag = dir.to_str().unwrap().to_owned();
    open_registry(&options(&["--key-dir", &dir_flag]), Clock::system()).unwrap();
    let err = open_registry(
        &options(&["--key-dir", &dir_flag, "--alg", "RS256"]),
        Clock::system(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains(".key.json"), "{message}");
    assert!(
        message.contains("its key is for ES256, but this key store is for RS256"),
        "{message}"
    );
}

#[tokio::test(start_paused = true)]
async fn rotate_every_rotates_the_keys_in_the_key_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let dir_flag = dir.to_str().unwrap().to_owned();
    let options = options(&[
        "--key-dir",
        &dir_flag,
        "--rotate-every",
        "600",
        "--ttl",
        "30",
    ]);
    let clock = Clock::tokio();
    let registry = open_registry(&options, clock.clone()).unwrap();
    let first = registry.current().active().unwrap().kid().clone();
    let policy = rotation_policy(&options).unwrap().unwrap();
    let rotator = KeyRotator::spawn(registry.clone(), policy);

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
    let again = open_registry(&options, Clock::system()).unwrap();
    assert_eq!(again.current().active().unwrap().kid(), &next);
}
