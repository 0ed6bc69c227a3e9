//! `signing_proxy --cert-file --key-file`, the real binary: it signs with
//! the key of a cert-manager style Secret volume and publishes the chain;
//! a renewal written the way the kubelet writes it (a new directory, then
//! the `..data` symlink swapped atomically) becomes the next key, then the
//! active one, while requests run through the proxy to a backend that
//! verifies every token through the proxy's JWKS, with no failed
//! verification. Flags that make no sense together are refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{Extension, Router};
use http::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tower_jwt_signer::Algorithm;
use tower_jwt_signer::{JWKS_PATH, JwtVerifierLayer, RemoteJwks, VerifiedClaims, Verifier};

use super::signing_proxy::{get, jwks, proxy};
use crate::support::certs::{self, Pki, days_from_now};
use crate::support::lifecycle::published_kids;
use crate::support::process::{Example, LIMIT};
use crate::support::upstream::Upstream;

/// Writes `tls.crt` and `tls.key` into `dir` as the kubelet updates a
/// Secret volume: the files in a new `..N` directory, a `..data` symlink
/// to it swapped in by `rename`, and `tls.crt -> ..data/tls.crt` (made
/// once). A reader sees the old pair or the new one, never half of each.
fn write_secret(dir: &Path, version: u32, crt: &str, key: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tls.crt"), crt).unwrap();
    std::fs::write(data.join("tls.key"), key).unwrap();
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

fn path(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// One round of the client: the kids the JWKS published just before, then
/// the request's status and the kid the backend verified.
#[derive(Debug, Clone)]
struct Round {
    published: Vec<String>,
    status: StatusCode,
    kid: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_becomes_the_next_key_then_the_active_one_with_no_failed_verification()
 {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("tls");
    let (first_key, first_pem) = certs::key(Algorithm::ES256);
    write_secret(&secret, 1, &pki.valid_chain_pem(&first_key), &first_pem);

    // The backend's listener first: the proxy forwards to it.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_url = format!("http://{}", backend.local_addr().unwrap());
    let (cert_file, key_file) = (path(&secret.join("tls.crt")), path(&secret.join("tls.key")));
    let (running, addr) = proxy(&[
        "--upstream",
        &backend_url,
        "--issuer",
        "gw",
        "--audience",
        "api",
        "--ttl",
        "5",
        "--jwks-max-age",
        "1",
        "--cert-file",
        &cert_file,
        "--key-file",
        &key_file,
        "--cert-poll",
        "1",
        "--cert-prepublish",
        "3",
    ])
    .await;
    running
        .line_async("the certificate line", |line| {
            line.starts_with("key and certificate from")
        })
        .await;

    // The backend verifies through the proxy's JWKS (cached for its
    // max-age, 1 s) and answers with the kid it verified.
    let remote = RemoteJwks::builder(format!("http://{addr}{JWKS_PATH}"))
        .cache_ttl_bounds(Duration::from_secs(1), Duration::from_secs(1))
        .build()
        .unwrap();
    let verifier = Verifier::builder(remote)
        .issuer("gw")
        .audience("api")
        .build()
        .unwrap();
    let app = Router::new()
        .fallback(|Extension(claims): Extension<VerifiedClaims>| async move {
            claims.kid().unwrap_or_default().to_owned()
        })
        .layer(JwtVerifierLayer::new(verifier));
    let server = tokio::spawn(async move { axum::serve(backend, app).await });

    let first = jwks(addr).await;
    let first_kids = published_kids(&first);
    assert_eq!(first_kids.len(), 1);
    let old_kid = first_kids[0].clone();
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(first["keys"][0]["x5c"].as_array().unwrap().len(), 3);

    // Requests, one after another, until told to stop.
    let rounds: Arc<Mutex<Vec<Round>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let (rounds, stop) = (Arc::clone(&rounds), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let published = published_kids(&jwks(addr).await);
                let (status, body) = get(addr, "/orders").await;
                rounds.lock().unwrap().push(Round {
                    published,
                    status,
                    kid: String::from_utf8_lossy(&body).into_owned(),
                });
            }
        })
    };
    let count = |kid: &str| {
        rounds
            .lock()
            .unwrap()
            .iter()
            .filter(|round| round.kid == kid)
            .count()
    };
    let wait_for = |what: &'static str, done: Box<dyn Fn() -> bool + Send>| async move {
        tokio::time::timeout(LIMIT, async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {LIMIT:?}"));
    };
    {
        let count_old = {
            let rounds = Arc::clone(&rounds);
            let old = old_kid.clone();
            move || {
                rounds
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|r| r.kid == old)
                    .count()
                    >= 20
            }
        };
        wait_for("requests signed by the first key", Box::new(count_old)).await;
    }

    // cert-manager renews: a new key and its certificate, swapped in.
    let (second_key, second_pem) = certs::key(Algorithm::ES256);
    write_secret(&secret, 2, &pki.valid_chain_pem(&second_key), &second_pem);
    let new_kid = tower_jwt_signer::SigningKey::from_pkcs8_pem(&second_pem, Algorithm::ES256)
        .unwrap()
        .kid()
        .to_string();
    {
        let rounds = Arc::clone(&rounds);
        let new = new_kid.clone();
        wait_for(
            "20 requests signed by the renewed key",
            Box::new(move || {
                rounds
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|r| r.kid == new)
                    .count()
                    >= 20
            }),
        )
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    client.await.unwrap();
    assert!(count(&new_kid) >= 20);

    let rounds = rounds.lock().unwrap().clone();
    // Zero failed verifications: every request reached the backend and
    // was verified there.
    let failed: Vec<&Round> = rounds
        .iter()
        .filter(|round| round.status != StatusCode::OK)
        .collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    // The first key, then the renewed one, never back.
    let switch = rounds
        .iter()
        .position(|round| round.kid == new_kid)
        .expect("the renewed key signed");
    assert!(rounds[..switch].iter().all(|round| round.kid == old_kid));
    assert!(rounds[switch..].iter().all(|round| round.kid == new_kid));
    // Published before it signed: rounds in which the JWKS listed it while
    // the first key still signed (it was the next key).
    let published = rounds
        .iter()
        .position(|round| round.published.contains(&new_kid))
        .unwrap();
    assert!(
        published < switch,
        "published at round {published}, signing at {switch}"
    );
    assert!(
        rounds[published..switch]
            .iter()
            .all(|round| round.published.contains(&old_kid) && round.published.contains(&new_kid))
    );
    // The old key stays published after the switch, for its tokens.
    assert!(
        rounds[switch].published.contains(&old_kid),
        "{:?}",
        rounds[switch]
    );

    // The JWKS now carries the renewed chain, and still the first key: its
    // tokens live for --ttl (5 s), verifiers allow 60 s more.
    let jwks_bytes = jwks(addr).await;
    assert!(published_kids(&jwks_bytes).contains(&old_kid));
    let jwks_now: Value = serde_json::from_slice(&jwks_bytes).unwrap();
    let renewed = jwks_now["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == new_kid.as_str())
        .unwrap();
    assert_eq!(renewed["x5c"].as_array().unwrap().len(), 3);
    assert_ne!(renewed["x5c"][0], first["keys"][0]["x5c"][0]);
    server.abort();
    drop(running);
}

#[tokio::test]
async fn an_expired_certificate_is_refused_with_503_until_renewed_and_a_mismatched_pair_does_not_start()
 {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let (key, pem) = certs::key(Algorithm::EdDSA);
    let crt: PathBuf = tmp.path().join("tls.crt");
    let key_file: PathBuf = tmp.path().join("tls.key");
    std::fs::write(
        &crt,
        pki.chain_pem(&key, days_from_now(-30), days_from_now(-1)),
    )
    .unwrap();
    std::fs::write(&key_file, &pem).unwrap();
    let upstream = Upstream::start().await;
    let (running, addr) = proxy(&[
        "--upstream",
        &upstream.url(),
        "--alg",
        "EdDSA",
        "--cert-file",
        &path(&crt),
        "--key-file",
        &path(&key_file),
        "--cert-poll",
        "1",
    ])
    .await;
    let (status, body) = get(addr, "/orders").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "certificate_expired");
    assert!(upstream.tokens().is_empty(), "never forwarded unsigned");
    running
        .line_async("the refusal's log line", |line| {
            line.contains("certificate has expired")
        })
        .await;
    let kids = published_kids(&jwks(addr).await);

    // The same key's certificate renewed (the file rewritten in place):
    // the same kid signs again, with the new chain.
    let renewed = pki.valid_chain_pem(&key);
    let staged = tmp.path().join(".tls.crt.new");
    std::fs::write(&staged, &renewed).unwrap();
    std::fs::rename(&staged, &crt).unwrap();
    running
        .line_async("the renewal line", |line| {
            line.contains("renewed certificate of the same key published")
        })
        .await;
    let (status, _) = get(addr, "/orders").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(published_kids(&jwks(addr).await), kids);
    let token = upstream.tokens()[0].clone();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some(kids[0].as_str()));
    drop(running);

    // Another key's certificate: the proxy does not start.
    let (other, _) = certs::key(Algorithm::EdDSA);
    std::fs::write(&crt, pki.valid_chain_pem(&other)).unwrap();
    let args = [
        "--upstream".to_owned(),
        "http://127.0.0.1:1".to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--alg".to_owned(),
        "EdDSA".to_owned(),
        "--cert-file".to_owned(),
        path(&crt),
        "--key-file".to_owned(),
        path(&key_file),
    ];
    let finished = tokio::task::spawn_blocking(move || {
        Example::new("signing_proxy")
            .run(&args.iter().map(String::as_str).collect::<Vec<_>>(), LIMIT)
    })
    .await
    .unwrap();
    assert_eq!(finished.code(), Some(1), "{finished:?}");
    assert!(
        finished
            .stderr
            .contains("the certificate does not match the key"),
        "{}",
        finished.stderr
    );
    assert!(!finished.stdout.contains("signing proxy on"));
}

#[test]
fn certificate_flags_that_make_no_sense_together_are_refused() {
    for (flags, expected) in [
        (
            &["--cert-file", "c.pem"][..],
            "the following required arguments were not provided:\n  --key-file <FILE>",
        ),
        (
            &["--key-file", "k.pem"][..],
            "the following required arguments were not provided:\n  --cert-file <FILE>",
        ),
        (
            &["--cert-file", "c", "--key-file", "k", "--key-dir", "d"][..],
            "--cert-file cannot go with --key-dir",
        ),
        (
            &[
                "--cert-file",
                "c",
                "--key-file",
                "k",
                "--rotate-every",
                "60",
            ][..],
            "--cert-file cannot go with --rotate-every",
        ),
        (
            &[
                "--cert-file",
                "c",
                "--key-file",
                "k",
                "--pkcs11-module",
                "m.so",
                "--pkcs11-token",
                "t",
                "--pkcs11-pin-file",
                "p",
            ][..],
            "--cert-file cannot go with --pkcs11-module",
        ),
        (
            &[
                "--cert-file",
                "c",
                "--key-file",
                "k",
                "--redis-url",
                "redis://127.0.0.1:1/",
                "--kek-file",
                "kek",
            ][..],
            "--cert-file cannot go with --redis-url",
        ),
        (
            &["--cert-prepublish", "5"][..],
            "--cert-prepublish and --header-x5t need --cert-file and --key-file",
        ),
        (
            &["--cert-file", "c", "--key-file", "k", "--cert-poll", "0"][..],
            "invalid value '0' for '--cert-poll <SECS>'",
        ),
    ] {
        let mut args = vec![
            "--upstream",
            "http://127.0.0.1:1",
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(flags);
        let finished = Example::new("signing_proxy").run(&args, LIMIT);
        assert_eq!(finished.code(), Some(2), "{flags:?}: {finished:?}");
        assert!(
            finished.stderr.starts_with(&format!("error: {expected}")),
            "{flags:?}: {}",
            finished.stderr
        );
    }
    // The help says why it polls.
    let help = Example::new("signing_proxy").run(&["--help"], LIMIT);
    assert!(
        help.stdout.contains("Polling, not SIGHUP"),
        "{}",
        help.stdout
    );
}
