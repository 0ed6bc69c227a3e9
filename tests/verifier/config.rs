//! Misconfigurations listed in SECURITY.md ("Bad configuration") for the
//! JWKS endpoint and the verifier, one test each: the exact typed error it
//! gives, and no panic. The other areas' are in the other test binaries'
//! `config.rs`.

use std::time::Duration;

use http::HeaderName;
use tower_jwt_signer::jwks::JwksConfigError;
use tower_jwt_signer::verifier::{
    RemoteJwks, RemoteJwksError, TokenSource, Verifier, VerifierConfigError, VerifyError,
};
use tower_jwt_signer::{Algorithm, JwksService, KeyRegistry, SigningKey};

use crate::support::verifier::{JwksServer, Mode, bounded, claims, header_of, sign_with_header};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const CENTURY_AND_A_DAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600 + 86_400);

fn es256() -> SigningKey {
    SigningKey::generate(Algorithm::ES256).unwrap()
}

// --- JWKS endpoint ------------------------------------------------------------

#[test]
fn jwks_path_without_a_leading_slash_or_with_a_query_is_refused() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    for path in [
        "",
        "jwks.json",
        ".well-known/jwks.json",
        "/jwks.json?x=1",
        "/jwks#frag",
        "/a b",
        "/é",
        "/a\r\nb",
    ] {
        let err = JwksService::new(registry.clone())
            .with_path(path)
            .unwrap_err();
        assert!(
            matches!(err, JwksConfigError::InvalidPath(_)),
            "{path:?}: {err:?}"
        );
    }
}

// --- Verifier -------------------------------------------------------------------

#[test]
fn verifier_with_an_empty_algorithm_list_is_refused() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let err = Verifier::new(registry)
        .with_algorithms(Vec::<Algorithm>::new())
        .unwrap_err();
    assert_eq!(err, VerifierConfigError::NoAlgorithms);
}

#[test]
fn token_source_names_that_cannot_appear_in_a_request_are_refused() {
    let auth = HeaderName::from_static("authorization");
    for scheme in ["Bearer\r\n", "Bear er", ""] {
        let err = TokenSource::header(auth.clone(), Some(scheme)).unwrap_err();
        assert_eq!(err, VerifierConfigError::InvalidName { what: "scheme" });
    }
    for name in ["", "a;b", "a=b", "a b"] {
        let err = TokenSource::cookie(name).unwrap_err();
        assert_eq!(
            err,
            VerifierConfigError::InvalidName {
                what: "cookie name"
            }
        );
    }
    for name in ["", "a b", "a&b", "a=b", "%41"] {
        let err = TokenSource::query(name).unwrap_err();
        assert_eq!(
            err,
            VerifierConfigError::InvalidName {
                what: "query parameter name"
            }
        );
    }
}

#[test]
fn remote_jwks_url_that_is_not_http_is_refused() {
    for url in [
        "ftp://gateway/jwks.json",
        "file://localhost/etc/jwks.json",
        "ws://gateway/jwks",
    ] {
        let err = RemoteJwks::new(url).unwrap_err();
        assert!(
            matches!(err, RemoteJwksError::UnsupportedScheme(_)),
            "{url}: {err:?}"
        );
    }
    // https needs the rustls feature.
    let https = RemoteJwks::new("https://gateway.example/jwks.json");
    if cfg!(feature = "rustls") {
        assert!(https.is_ok());
    } else {
        assert!(
            matches!(https, Err(RemoteJwksError::UnsupportedScheme(_))),
            "{https:?}"
        );
    }
}

#[test]
fn remote_jwks_url_that_is_not_absolute_is_refused() {
    for url in [
        "",
        "/jwks.json",
        "gateway/jwks.json",
        "http://",
        "not a url",
        "http:///jwks",
        "file:///etc/jwks.json",
    ] {
        let err = RemoteJwks::new(url).unwrap_err();
        assert!(
            matches!(err, RemoteJwksError::InvalidUrl(_)),
            "{url:?}: {err:?}"
        );
    }
}

#[test]
fn remote_jwks_url_with_credentials_is_refused_without_echoing_them() {
    for url in [
        "http://user:s3cr3t-pass@127.0.0.1:8080/jwks.json",
        "http://s3cr3t-pass@127.0.0.1/jwks.json",
    ] {
        let err = RemoteJwks::new(url).unwrap_err();
        assert_eq!(err, RemoteJwksError::Credentials);
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(!format!("{err:?}").contains("s3cr3t"));
    }
}

#[test]
fn remote_jwks_settings_out_of_range_are_refused() {
    let url = "http://127.0.0.1:1/jwks.json";
    let cases = [
        RemoteJwks::builder(url).timeout(Duration::ZERO),
        RemoteJwks::builder(url).max_response_len(0),
        RemoteJwks::builder(url).cache_ttl_bounds(HOUR, MINUTE),
        RemoteJwks::builder(url).max_stale(Duration::ZERO),
        RemoteJwks::builder(url).max_stale(Duration::MAX),
        RemoteJwks::builder(url).refresh_cooldown(Duration::MAX),
        RemoteJwks::builder(url).cache_ttl_bounds(MINUTE, Duration::MAX),
        RemoteJwks::builder(url).default_cache_ttl(CENTURY_AND_A_DAY),
        RemoteJwks::builder(url).timeout(CENTURY_AND_A_DAY),
    ];
    for builder in cases {
        let text = format!("{builder:?}");
        let err = builder.build().unwrap_err();
        assert!(
            matches!(err, RemoteJwksError::InvalidSetting(_)),
            "{text}: {err:?}"
        );
    }
}

/// Before the range checks, `max_stale(Duration::MAX)` ("keep the last
/// good set forever") panicked in the fetch task on the first successful
/// fetch (`Instant + Duration::MAX`), and the verifier then answered 503
/// for ever. The longest accepted settings now work end to end.
#[tokio::test]
async fn remote_jwks_with_the_longest_settings_fetches_and_verifies() {
    let key = es256();
    let registry = KeyRegistry::new(key.clone());
    let server = JwksServer::start(Mode::Jwks(JwksService::new(registry))).await;
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let remote = RemoteJwks::builder(server.url())
        .max_stale(century)
        .refresh_cooldown(century)
        .cache_ttl_bounds(century, century)
        .timeout(century)
        .build()
        .unwrap();
    bounded(remote.prefetch()).await.unwrap();
    let verifier = Verifier::new(remote);
    let good = sign_with_header(&key, &header_of(&key), &claims());
    bounded(verifier.verify(&good)).await.unwrap();
    // An unknown kid starts one refresh (and arms the century cooldown).
    let stranger = es256();
    let unknown = sign_with_header(&stranger, &header_of(&stranger), &claims());
    let err = bounded(verifier.verify(&unknown)).await.unwrap_err();
    assert_eq!(err, VerifyError::UnknownKid);
    assert_eq!(server.hits(), 2);
    bounded(verifier.verify(&good)).await.unwrap();
}
