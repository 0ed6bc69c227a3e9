//! The quickstart example, driven in-process over real sockets on
//! 127.0.0.1: the gateway signs, the backend verifies with
//! `JwtVerifierLayer` and a `RemoteJwks` fetched from the gateway.

#[allow(dead_code)]
#[path = "../../examples/quickstart.rs"]
mod quickstart;

use std::time::Duration;

use base64::Engine as _;
use quickstart::{Command, parse_args, request_once, start};
use tokio::net::TcpListener;
use tower_jwt_signer::verifier::VerifyError;
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
        let servers = start(registry, gateway, backend, &url).unwrap();
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
    let _other = start(other, other_gateway, other_backend, &other_url).unwrap();

    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let servers = start(registry, gateway, backend, &other_url).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), request_once(servers.gateway))
        .await
        .expect("bounded")
        .unwrap();
    assert!(!outcome.verified());
    assert_eq!(outcome.status, http::StatusCode::UNAUTHORIZED);
    assert!(
        outcome
            .challenge
            .as_deref()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\""),
        "{outcome:?}"
    );
    assert_eq!(outcome.body["verified"], false);
    assert_eq!(
        outcome.body["error"],
        VerifyError::UnknownKid.to_string(),
        "{outcome:?}"
    );

    // The backend alone, without a token: refused.
    let (status, challenge, body) = get(servers.backend, None).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    assert_eq!(body["error"], VerifyError::MissingToken.to_string());
}

/// `GET /hello` at `addr`, with a bearer token if given: the status, the
/// challenge and the JSON body.
async fn get(
    addr: std::net::SocketAddr,
    token: Option<&str>,
) -> (http::StatusCode, Option<String>, serde_json::Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = http::Request::get(format!("http://{addr}/hello"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(http_body_util::Full::default()).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("bounded")
        .unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get(http::header::WWW_AUTHENTICATE)
        .map(|value| value.to_str().unwrap().to_owned());
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, challenge, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn the_backend_checks_the_signature_and_the_claims() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let gateway = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = quickstart::jwks_url(gateway.local_addr().unwrap());
    let servers = start(registry.clone(), gateway, backend, &url).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), request_once(servers.gateway))
        .await
        .expect("bounded")
        .unwrap();
    assert!(outcome.verified(), "{outcome:?}");
    let token = outcome.body["token"].as_str().unwrap().to_owned();

    // The gateway's token, replayed straight to the backend: accepted.
    let (status, _, body) = get(servers.backend, Some(&token)).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(body["claims"]["jti"], outcome.body["claims"]["jti"]);

    // The same token with its payload changed: the signature no longer
    // matches.
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64().decode(parts[1]).unwrap()).unwrap();
    claims["path"] = "/admin".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64().encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    let (status, challenge, body) = get(servers.backend, Some(&tampered)).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains("invalid_token"));
    assert_eq!(body["error"], VerifyError::InvalidSignature.to_string());

    // A token the gateway's key signed for another audience: refused.
    claims["path"] = "/hello".into();
    claims["aud"] = "someone-else".into();
    let input = format!(
        "{}.{}",
        parts[0],
        b64().encode(serde_json::to_vec(&claims).unwrap())
    );
    let snapshot = registry.current();
    let signature = snapshot
        .active()
        .unwrap()
        .signer()
        .sign(input.as_bytes())
        .unwrap();
    let other_audience = format!("{input}.{}", b64().encode(signature));
    let (status, _, body) = get(servers.backend, Some(&other_audience)).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], VerifyError::WrongAudience.to_string());
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}
