//! The quickstart example, driven in-process over real sockets on
//! 127.0.0.1: the gateway signs, the backend verifies with the JWKS it
//! fetches over HTTP.

#[allow(dead_code)]
#[path = "../examples/quickstart.rs"]
mod quickstart;

use std::time::Duration;

use quickstart::{Command, parse_args, request_once, start};
use tokio::net::TcpListener;
use tower_jwt_signer::{Algorithm, KeyRegistry};

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn flags() {
    assert_eq!(
        parse_args(args(&[])).unwrap(),
        Command::Run {
            alg: Algorithm::ES256,
            once: false
        }
    );
    assert_eq!(
        parse_args(args(&["--alg", "EdDSA", "--once"])).unwrap(),
        Command::Run {
            alg: Algorithm::EdDSA,
            once: true
        }
    );
    assert_eq!(
        parse_args(args(&["--alg=PS384"])).unwrap(),
        Command::Run {
            alg: Algorithm::PS384,
            once: false
        }
    );
    assert_eq!(parse_args(args(&["--help"])).unwrap(), Command::Help);
    assert_eq!(parse_args(args(&["-h"])).unwrap(), Command::Help);
    for bad in [
        &["--alg", "HS256"][..],
        &["--alg"],
        &["--nope"],
        &["once"],
        &["--once=yes"],
    ] {
        let err = parse_args(args(bad)).unwrap_err();
        assert!(!err.is_empty(), "{bad:?}");
    }
    assert!(
        parse_args(args(&["--alg", "none"]))
            .unwrap_err()
            .contains("none")
    );
}

#[tokio::test]
async fn once_verifies_the_round_trip() {
    let verified =
        tokio::time::timeout(Duration::from_secs(60), quickstart::once(Algorithm::ES256))
            .await
            .expect("bounded")
            .expect("ran");
    assert!(verified);
}

#[tokio::test]
async fn the_backend_verifies_tokens_of_every_algorithm_family() {
    for alg in [
        Algorithm::ES256,
        Algorithm::ES512,
        Algorithm::EdDSA,
        Algorithm::PS256,
        Algorithm::RS256,
    ] {
        let registry = KeyRegistry::generate(alg).unwrap();
        let kid = registry.current().active().unwrap().kid().clone();
        let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = quickstart::jwks_url(gateway.local_addr().unwrap());
        let servers = start(registry, gateway, backend, url).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(30), request_once(servers.gateway))
            .await
            .expect("bounded")
            .unwrap();
        assert!(outcome.verified(), "{alg}: {outcome:?}");
        assert_eq!(outcome.body["header"]["alg"], alg.as_str());
        assert_eq!(outcome.body["header"]["kid"], kid.as_str());
        assert_eq!(outcome.body["claims"]["iss"], "quickstart-gateway");
        assert_eq!(outcome.body["claims"]["path"], "/hello");
        assert!(outcome.body["claims"]["exp"].is_u64());
    }
}

#[tokio::test]
async fn the_backend_refuses_a_token_it_cannot_verify() {
    // The backend trusts another gateway's JWKS: the token names a kid that
    // set does not hold, so verification fails and `--once` would exit 1.
    let other = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let other_gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_url = quickstart::jwks_url(other_gateway.local_addr().unwrap());
    let _other = start(other, other_gateway, other_backend, other_url.clone()).unwrap();

    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let servers = start(registry, gateway, backend, other_url).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), request_once(servers.gateway))
        .await
        .expect("bounded")
        .unwrap();
    assert!(!outcome.verified());
    assert_eq!(outcome.status, http::StatusCode::UNAUTHORIZED);
    assert!(
        outcome.body["error"]
            .as_str()
            .unwrap()
            .contains("not in the JWKS")
    );

    // The backend alone, without a token: refused.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{}/hello", servers.backend).parse().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
}
