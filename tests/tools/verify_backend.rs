//! The verify_backend example, the real binary: it fetches a gateway's
//! JWKS (here a test JWKS server on 127.0.0.1), answers 200 with the
//! verified claims, and refuses what does not verify.

use http::StatusCode;
use serde_json::json;
use tower_jwt_signer::{Algorithm, JwksService, KeyRegistry, SigningKey, VerifyError};

use crate::support::jose::compact;
use crate::support::process::{Example, LIMIT};
use crate::support::verifier::{JwksServer, Mode, get, get_bearer, now};

#[tokio::test]
async fn it_answers_verified_claims_and_refuses_the_rest() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = JwksServer::start(Mode::Jwks(JwksService::new(KeyRegistry::new(key.clone())))).await;
    let backend = Example::new("verify_backend").spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--jwks-url",
        &jwks.url(),
        "--issuer",
        "gw",
        "--audience",
        "api",
    ]);
    backend
        .line_async("the first fetch", |line| line.starts_with("fetched "))
        .await;
    let addr = backend.address("verifying backend on").await;

    let claims =
        json!({"iss": "gw", "aud": "api", "sub": "alice", "iat": now(), "exp": now() + 60});
    let reply = get_bearer(addr, &compact(&key, &claims)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["claims"]["sub"], "alice", "{body}");
    assert_eq!(body["kid"], key.kid().as_str());
    assert_eq!(body["alg"], "ES256");

    // No token: a bare challenge.
    let reply = get(addr, "/", &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.challenge(), Some("Bearer"));
    // Refusals name their reason in the challenge.
    let forger = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut other_audience = claims.clone();
    other_audience["aud"] = json!("elsewhere");
    for (token, refusal) in [
        (compact(&forger, &claims), VerifyError::UnknownKid),
        (compact(&key, &other_audience), VerifyError::WrongAudience),
    ] {
        let reply = get_bearer(addr, &token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.challenge().unwrap(),
            format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                refusal.description()
            )
        );
    }
}

#[test]
fn bad_flags_are_refused_before_it_listens() {
    for (flags, expected) in [
        (
            &["--jwks-url", "http://127.0.0.1:1/jwks"][..],
            "the following required arguments were not provided:\n  --listen <ADDR>",
        ),
        (
            &["--listen", "127.0.0.1:0"][..],
            "the following required arguments were not provided:\n  <--jwks-url <URL>|--discover <ISSUER_URL>>",
        ),
        (
            &["--listen", "nowhere", "--jwks-url", "x"][..],
            "invalid value 'nowhere' for '--listen <ADDR>'",
        ),
        (
            &["--listen"][..],
            "a value is required for '--listen <ADDR>'",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--jwks-url",
                "ftp://example.com/jwks",
            ][..],
            "(--jwks-url)",
        ),
        (
            &["--frobnicate", "1"][..],
            "unexpected argument '--frobnicate'",
        ),
        // Settings the verifier refuses, before it fetches or listens.
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--jwks-url",
                "http://127.0.0.1:1/jwks",
                "--issuer",
                "",
            ][..],
            "invalid issuer \"\"",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--jwks-url",
                "http://127.0.0.1:1/jwks",
                "--leeway",
                "86401",
            ][..],
            "invalid leeway",
        ),
    ] {
        let finished = Example::new("verify_backend").run(flags, LIMIT);
        assert_eq!(finished.code(), Some(2), "{flags:?}: {finished:?}");
        assert!(
            finished.stderr.contains(expected),
            "{flags:?}: {}",
            finished.stderr
        );
        assert!(!finished.stderr.contains("verifying backend on"));
    }
}
