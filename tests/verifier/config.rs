//! Misconfigurations listed in SECURITY.md ("Bad configuration") for the
//! JWKS endpoint and the verifier, one test each: the exact typed error it
//! gives, and no panic. The other areas' are in the other test binaries'
//! `config.rs`.

use std::time::Duration;

use http::HeaderName;
use tower_jwt_signer::verifier::TokenSource;
use tower_jwt_signer::{
    Algorithm, JwksService, JwtVerifierLayer, KeyRegistry, RemoteJwks, SigningKey, Verifier,
    VerifyError,
};

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
        let err = JwksService::builder(registry.clone())
            .path(path)
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "path", "{path:?}: {err:?}");
    }
}

#[test]
fn jwks_max_age_longer_than_the_registrys_or_fractional_is_refused() {
    let registry = KeyRegistry::builder()
        .active(es256())
        .jwks_max_age(Duration::from_secs(60))
        .build()
        .unwrap();
    for max_age in [Duration::from_secs(61), Duration::from_millis(500)] {
        let err = JwksService::builder(registry.clone())
            .max_age(max_age)
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "max_age", "{max_age:?}: {err:?}");
    }
    let jwks = JwksService::builder(registry)
        .max_age(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(jwks.max_age(), Duration::from_secs(30));
}

// --- Verifier -------------------------------------------------------------------

#[test]
fn verifier_with_an_empty_algorithm_list_is_refused() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let err = Verifier::builder(registry)
        .algorithms(Vec::<Algorithm>::new())
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "algorithms");
    assert!(err.reason().contains("no token could ever verify"), "{err}");
}

/// The same checks as the signer's (`tests/signer/config.rs`): a verifier
/// that could never accept a token, or only a malformed one, is refused.
#[test]
fn verifier_with_an_empty_issuer_audience_typ_or_claim_name_is_refused() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let builder = || Verifier::builder(registry.clone());
    for (builder, setting) in [
        (builder().issuer(""), "issuer"),
        (builder().audience(""), "audience"),
        (builder().typ(""), "typ"),
        (builder().required_claims(["exp", ""]), "required_claims"),
    ] {
        let err = builder.build().unwrap_err();
        assert_eq!(err.setting(), setting, "{err}");
    }
    assert!(
        builder()
            .issuer("gw")
            .audience("api")
            .typ("JWT")
            .required_claims(["exp", "sub"])
            .build()
            .is_ok()
    );
}

#[test]
fn verifier_with_a_zero_size_limit_is_refused() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let err = Verifier::builder(registry.clone())
        .max_token_len(0)
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "max_token_len");
    assert!(Verifier::builder(registry).max_token_len(1).build().is_ok());
}

#[test]
fn verifier_leeway_over_a_day_is_refused() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    for leeway in [Duration::from_secs(86_401), Duration::MAX] {
        let err = Verifier::builder(registry.clone())
            .leeway(leeway)
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "leeway", "{leeway:?}");
    }
    for leeway in [Duration::ZERO, Duration::from_secs(86_400)] {
        assert!(
            Verifier::builder(registry.clone())
                .leeway(leeway)
                .build()
                .is_ok()
        );
    }
}

#[test]
fn token_source_names_that_cannot_appear_in_a_request_are_refused() {
    let verifier = Verifier::new(KeyRegistry::generate(Algorithm::ES256).unwrap());
    let build = |source: TokenSource| {
        JwtVerifierLayer::builder(verifier.clone())
            .token_source(source)
            .build()
    };
    let auth = HeaderName::from_static("authorization");
    let mut refused = Vec::new();
    for scheme in ["Bearer\r\n", "Bear er", ""] {
        refused.push((TokenSource::header(auth.clone(), Some(scheme)), "scheme"));
    }
    for name in ["", "a;b", "a=b", "a b"] {
        refused.push((TokenSource::cookie(name), "cookie name"));
    }
    for name in ["", "a b", "a&b", "a=b", "%41"] {
        refused.push((TokenSource::query(name), "query parameter name"));
    }
    for (source, what) in refused {
        let text = format!("{source:?}");
        let err = build(source).unwrap_err();
        assert_eq!(err.setting(), "token_source", "{text}");
        assert!(err.reason().contains(what), "{text}: {err}");
    }
    for source in [
        TokenSource::bearer(),
        TokenSource::header(auth, None),
        TokenSource::cookie("gw"),
        TokenSource::query("access_token"),
    ] {
        assert!(build(source).is_ok());
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
        assert_eq!(err.setting(), "url", "{url}: {err:?}");
        assert!(err.reason().contains("unsupported scheme"), "{url}: {err}");
    }
    // https needs the rustls feature.
    let https = RemoteJwks::new("https://gateway.example/jwks.json");
    if cfg!(feature = "rustls") {
        assert!(https.is_ok());
    } else {
        let err = https.unwrap_err();
        assert!(err.reason().contains("rustls feature"), "{err}");
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
        assert_eq!(err.setting(), "url", "{url:?}: {err:?}");
        assert!(err.reason().contains("absolute URL"), "{url:?}: {err}");
    }
}

#[test]
fn remote_jwks_url_with_credentials_is_refused_without_echoing_them() {
    for url in [
        "http://user:s3cr3t-pass@127.0.0.1:8080/jwks.json",
        "http://s3cr3t-pass@127.0.0.1/jwks.json",
    ] {
        let err = RemoteJwks::new(url).unwrap_err();
        assert_eq!(err.setting(), "url");
        assert_eq!(err.value(), None);
        assert!(err.reason().contains("credentials"), "{err}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(!format!("{err:?}").contains("s3cr3t"));
    }
}

#[test]
fn remote_jwks_settings_out_of_range_are_refused() {
    let url = "http://127.0.0.1:1/jwks.json";
    let cases = [
        (RemoteJwks::builder(url).timeout(Duration::ZERO), "timeout"),
        (
            RemoteJwks::builder(url).max_response_len(0),
            "max_response_len",
        ),
        (
            RemoteJwks::builder(url).cache_ttl_bounds(HOUR, MINUTE),
            "cache_ttl_bounds",
        ),
        (
            RemoteJwks::builder(url).max_stale(Duration::ZERO),
            "max_stale",
        ),
        (
            RemoteJwks::builder(url).max_stale(Duration::MAX),
            "max_stale",
        ),
        (
            RemoteJwks::builder(url).refresh_cooldown(Duration::MAX),
            "refresh_cooldown",
        ),
        (
            RemoteJwks::builder(url).cache_ttl_bounds(MINUTE, Duration::MAX),
            "cache_ttl_bounds",
        ),
        (
            RemoteJwks::builder(url).default_cache_ttl(CENTURY_AND_A_DAY),
            "default_cache_ttl",
        ),
        (
            RemoteJwks::builder(url).timeout(CENTURY_AND_A_DAY),
            "timeout",
        ),
    ];
    for (builder, setting) in cases {
        let text = format!("{builder:?}");
        let err = builder.build().unwrap_err();
        assert_eq!(err.setting(), setting, "{text}: {err:?}");
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
