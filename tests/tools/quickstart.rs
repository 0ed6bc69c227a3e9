//! The quickstart example, the real binary, over real sockets on
//! 127.0.0.1: the gateway signs, the backend verifies with
//! `JwtVerifierLayer` and a `RemoteJwks` fetched from the gateway (or from
//! the URL `--jwks-url` gives).

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tower_jwt_signer::{Algorithm, JwksService, KeyRegistry, SigningKey, VerifyError};

use crate::support::jose::compact;
use crate::support::process::{Example, Finished, LIMIT, Running};
use crate::support::verifier::{JwksServer, Mode};

fn quickstart(args: &[&str]) -> Finished {
    Example::new("quickstart").run(args, LIMIT)
}

/// The JSON that follows `title` in `--once`'s output.
fn printed_json(stdout: &str, title: &str) -> Value {
    let start = stdout
        .find(title)
        .unwrap_or_else(|| panic!("no {title:?} in {stdout}"))
        + title.len();
    let mut values = serde_json::Deserializer::from_str(&stdout[start..]).into_iter::<Value>();
    values.next().expect("a JSON value").expect("valid JSON")
}

#[test]
fn flags() {
    let help = quickstart(&["--help"]);
    assert_eq!(help.code(), Some(0));
    assert!(help.stdout.contains("Usage: quickstart"), "{}", help.stdout);
    assert!(quickstart(&["-h"]).stdout.contains("Usage: quickstart"));
    for (bad, expected) in [
        (&["--alg", "HS256"][..], "HS256"),
        (&["--alg"], "a value is required for '--alg <ALG>'"),
        (&["--nope"], "unexpected argument '--nope'"),
        (&["once"], "unexpected argument 'once'"),
        (&["--once=yes"], "unexpected value 'yes' for '--once'"),
        (&["--listen", "here"], "for '--listen <ADDR>'"),
        (
            &["--backend-listen", "here"],
            "for '--backend-listen <ADDR>'",
        ),
        (
            &["--jwks-url"],
            "a value is required for '--jwks-url <URL>'",
        ),
        (&["--alg", "none"], "none"),
    ] {
        let finished = quickstart(bad);
        assert_eq!(finished.code(), Some(2), "{bad:?}: {finished:?}");
        assert!(
            finished.stderr.starts_with("error: ") && finished.stderr.contains(expected),
            "{bad:?}: {}",
            finished.stderr
        );
        assert!(finished.stdout.is_empty(), "{bad:?}");
    }
    // --alg=VALUE works as --alg VALUE (and --once prints the header).
    let once = quickstart(&["--alg=PS384", "--once"]);
    assert_eq!(once.code(), Some(0), "{once:?}");
    assert_eq!(printed_json(&once.stdout, "header:")["alg"], "PS384");
}

#[test]
fn once_verifies_the_round_trip() {
    let finished = quickstart(&["--once"]);
    assert_eq!(finished.code(), Some(0), "{finished:?}");
    let claims = printed_json(&finished.stdout, "verified claims:");
    assert_eq!(claims["iss"], "quickstart-gateway");
    assert_eq!(claims["aud"], "quickstart-backend");
}

#[test]
fn the_backend_verifies_tokens_of_every_algorithm_family() {
    for alg in ["ES256", "ES512", "EdDSA", "PS256", "RS256"] {
        let finished = quickstart(&["--once", "--alg", alg]);
        assert_eq!(finished.code(), Some(0), "{alg}: {finished:?}");
        let header = printed_json(&finished.stdout, "header:");
        let claims = printed_json(&finished.stdout, "verified claims:");
        assert_eq!(header["alg"], alg);
        assert!(header["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
        assert_eq!(claims["iss"], "quickstart-gateway");
        assert_eq!(claims["path"], "/hello");
        assert_eq!(claims["method"], "GET");
        assert_eq!(claims["client"], "quickstart --once");
        assert!(claims["exp"].is_u64());
        // The token printed is the one whose header and claims these are.
        let token = finished
            .stdout
            .lines()
            .skip_while(|line| *line != "token:")
            .nth(1)
            .expect("the token line");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        let decoded =
            |part: &str| -> Value { serde_json::from_slice(&b64().decode(part).unwrap()).unwrap() };
        assert_eq!(decoded(parts[0]), header);
        assert_eq!(decoded(parts[1]), claims);
    }
}

#[tokio::test]
async fn the_backend_refuses_a_token_it_cannot_verify() {
    // The backend trusts another gateway's JWKS: the token names a kid that
    // set does not hold, so verification fails and `--once` exits 1.
    let other = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let jwks = JwksServer::start(Mode::Jwks(JwksService::new(other))).await;
    let url = jwks.url();
    let finished = tokio::task::spawn_blocking(move || quickstart(&["--once", "--jwks-url", &url]))
        .await
        .unwrap();
    assert_eq!(finished.code(), Some(1), "{finished:?}");
    assert!(finished.stdout.is_empty(), "{}", finished.stdout);
    let stderr = &finished.stderr;
    assert!(
        stderr.starts_with("the backend did not verify the token (401 Unauthorized, WWW-Authenticate: Bearer error=\"invalid_token\""),
        "{stderr}"
    );
    let body = printed_json(stderr, "):");
    assert_eq!(body["verified"], false);
    assert_eq!(
        body["error"],
        VerifyError::UnknownKid.to_string(),
        "{stderr}"
    );
    assert!(jwks.hits() >= 1, "the backend fetched the other JWKS");
}

/// The quickstart running until killed, on free ports, its backend
/// trusting `jwks_url` if given: the process, the gateway and the backend.
async fn running(jwks_url: Option<&str>) -> (Running, SocketAddr, SocketAddr) {
    let mut args = vec!["--listen", "127.0.0.1:0", "--backend-listen", "127.0.0.1:0"];
    if let Some(url) = jwks_url {
        args.extend(["--jwks-url", url]);
    }
    let process = Example::new("quickstart").spawn(&args);
    let gateway = process.address("gateway on").await;
    let backend = process.address("backend on").await;
    (process, gateway, backend)
}

/// `GET /hello` at `addr`, with a bearer token if given: the status, the
/// challenge and the JSON body.
async fn get(addr: SocketAddr, token: Option<&str>) -> (http::StatusCode, Option<String>, Value) {
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
    let (_process, gateway, backend) = running(None).await;
    let (status, _, outcome) = get(gateway, None).await;
    assert_eq!(status, http::StatusCode::OK, "{outcome}");
    assert_eq!(outcome["verified"], true);
    let token = outcome["token"].as_str().unwrap().to_owned();

    // The gateway's token, replayed straight to the backend: accepted.
    let (status, _, body) = get(backend, Some(&token)).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(body["claims"]["jti"], outcome["claims"]["jti"]);

    // The same token with its payload changed: the signature no longer
    // matches.
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64().decode(parts[1]).unwrap()).unwrap();
    claims["path"] = "/admin".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64().encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    let (status, challenge, body) = get(backend, Some(&tampered)).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().contains("invalid_token"));
    assert_eq!(body["error"], VerifyError::InvalidSignature.to_string());

    // The backend alone, without a token: refused.
    let (status, challenge, body) = get(backend, None).await;
    assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    assert_eq!(body["error"], VerifyError::MissingToken.to_string());
}

#[tokio::test]
async fn the_backend_requires_the_gateways_issuer_and_audience() {
    // The backend trusts a JWKS whose key the test holds, so the test can
    // sign what the gateway never would.
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = JwksServer::start(Mode::Jwks(JwksService::new(KeyRegistry::new(key.clone())))).await;
    let (_process, _, backend) = running(Some(&jwks.url())).await;
    let now = crate::support::verifier::now();
    let good = json!({
        "iss": "quickstart-gateway", "aud": "quickstart-backend",
        "iat": now, "exp": now + 60, "path": "/hello",
    });
    let (status, _, body) = get(backend, Some(&compact(&key, &good))).await;
    assert_eq!(status, http::StatusCode::OK, "{body}");
    for (change, refusal) in [
        (json!({"aud": "someone-else"}), VerifyError::WrongAudience),
        (json!({"iss": "another-gateway"}), VerifyError::WrongIssuer),
        (json!({"exp": now - 3600}), VerifyError::Expired),
    ] {
        let mut claims = good.clone();
        for (name, value) in change.as_object().unwrap() {
            claims[name] = value.clone();
        }
        let (status, _, body) = get(backend, Some(&compact(&key, &claims))).await;
        assert_eq!(status, http::StatusCode::UNAUTHORIZED, "{change}");
        assert_eq!(body["error"], refusal.to_string(), "{change}");
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}
