//! `signing_proxy --pkcs11-*`: the real binary (built with the `pkcs11`
//! feature, as `cargo test --all-features` builds it) in the test's
//! SoftHSM child, whose environment it inherits: a key made in the token on
//! first start and found again with its kid after a restart; a key
//! provisioned by hand; a wrong PIN stops the start.

use std::net::SocketAddr;

use bytes::Bytes;
use cryptoki::object::ObjectClass;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower_jwt_signer::{Algorithm, JWKS_PATH, SigningKey};

use crate::support::process::{Example, LIMIT, Running};
use crate::support::signer::{fetch, verify_against};
use crate::support::softhsm::{SoftHsm, TOKEN, isolated, runtime, write_private};
use crate::support::upstream::Upstream;
use crate::test_name;
use crate::util::{labels, module, session};

/// `--pkcs11-module`, `--pkcs11-token`, `--pkcs11-pin-file` of the test's
/// token, and `extra`.
fn flags(hsm: &SoftHsm, upstream: &Upstream, extra: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.url(),
        "--pkcs11-module",
        hsm.module.to_str().unwrap(),
        "--pkcs11-token",
        TOKEN,
        "--pkcs11-pin-file",
        hsm.pin_file().to_str().unwrap(),
    ]
    .iter()
    .map(|flag| (*flag).to_owned())
    .collect();
    flags.extend(extra.iter().map(|flag| (*flag).to_owned()));
    flags
}

async fn start(flags: &[String]) -> (Running, SocketAddr, String) {
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let running = Example::new("signing_proxy").spawn(&args);
    let addr = running.address("signing proxy on").await;
    let line = running.line("the start line", |l| l.contains("signing proxy on"));
    let kid = line
        .split("kid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the start line names the kid")
        .to_owned();
    (running, addr, kid)
}

/// One request through the proxy: the token the upstream received,
/// verified against the JWKS the proxy serves.
async fn signed(addr: SocketAddr, upstream: &Upstream) -> String {
    let before = upstream.received().len();
    let (parts, _) = fetch(
        Request::get(format!("http://{addr}/orders"))
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::CREATED);
    let token = upstream.received()[before].bearer().expect("a token");
    let (parts, jwks) = fetch(
        Request::get(format!("http://{addr}{JWKS_PATH}"))
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    verify_against(&token, &jwks).unwrap();
    token
}

#[test]
fn the_proxy_makes_its_key_in_the_token_on_first_start_and_a_restart_keeps_the_kid() {
    isolated(test_name!(), |hsm| {
        let dir = hsm.dir.join("keys");
        runtime(false).block_on(async {
            let upstream = Upstream::start().await;
            let flags = flags(
                hsm,
                &upstream,
                &["--alg", "ES384", "--key-dir", dir.to_str().unwrap()],
            );
            let (proxy, addr, kid) = start(&flags).await;
            let token = signed(addr, &upstream).await;
            let header = crate::support::signer::segment(token.split('.').next().unwrap());
            assert_eq!(header["kid"], kid.as_str());
            assert_eq!(header["alg"], "ES384");
            assert!(
                proxy.transcript().contains("keys in PKCS#11 token"),
                "{}",
                proxy.transcript()
            );
            // The key is in the token, the directory holds its reference.
            let pkcs11 = module(hsm);
            let own = session(&pkcs11);
            assert_eq!(
                labels(&own, ObjectClass::PRIVATE_KEY),
                vec![format!("tower-jwt-signer:{kid}")]
            );
            let file = std::fs::read_to_string(dir.join(format!("{kid}.key.json"))).unwrap();
            assert!(
                file.contains("\"reference\"") && !file.contains("private_jwk"),
                "{file}"
            );
            drop(proxy);

            let (_proxy, addr, again) = start(&flags).await;
            assert_eq!(again, kid, "a restart signs with the same key");
            signed(addr, &upstream).await;
            assert_eq!(
                labels(&own, ObjectClass::PRIVATE_KEY).len(),
                1,
                "no second key made"
            );
        });
    });
}

#[test]
fn the_proxy_signs_with_a_key_provisioned_by_hand() {
    isolated(test_name!(), |hsm| {
        let provisioned = SigningKey::generate(Algorithm::PS256).unwrap();
        hsm.import(&provisioned.to_pkcs8_pem().unwrap(), "gateway-key", "42");
        runtime(false).block_on(async {
            let upstream = Upstream::start().await;
            let flags = flags(
                hsm,
                &upstream,
                &["--alg", "PS256", "--pkcs11-key", "gateway-key"],
            );
            let (_proxy, addr, kid) = start(&flags).await;
            assert_eq!(kid, provisioned.kid().as_str());
            for _ in 0..3 {
                signed(addr, &upstream).await;
            }
        });
    });
}

#[test]
fn the_proxy_refuses_to_start_with_a_wrong_pin_or_a_missing_key() {
    isolated(test_name!(), |hsm| {
        runtime(false).block_on(async {
            let upstream = Upstream::start().await;
            let wrong = hsm.dir.join("wrong-pin");
            write_private(&wrong, b"0000\n");
            let mut args = flags(hsm, &upstream, &["--pkcs11-key", "k"]);
            let at = args.iter().position(|a| a == "--pkcs11-pin-file").unwrap();
            args[at + 1] = wrong.to_str().unwrap().to_owned();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let finished = Example::new("signing_proxy").run(&args, LIMIT);
            assert_ne!(finished.code(), Some(0));
            assert!(finished.stderr.contains("wrong PIN"), "{}", finished.stderr);

            let args = flags(hsm, &upstream, &["--pkcs11-key", "no-such-key"]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let finished = Example::new("signing_proxy").run(&args, LIMIT);
            assert_ne!(finished.code(), Some(0));
            assert!(
                finished.stderr.contains("no-such-key"),
                "{}",
                finished.stderr
            );

            // Without --pkcs11-key, a key directory is required.
            let args = flags(hsm, &upstream, &[]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let finished = Example::new("signing_proxy").run(&args, LIMIT);
            assert_eq!(finished.code(), Some(2));
            assert!(finished.stderr.contains("--key-dir"), "{}", finished.stderr);
        });
    });
}
