//! Every misconfiguration listed in SECURITY.md ("Bad configuration"), one
//! test each: the exact typed error it gives, and no panic.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderName;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use serde_json::{Value, json};
use tower_jwt_signer::jwks::JwksConfigError;
use tower_jwt_signer::keys::{InvalidKid, JwsSigner, PublicJwk, SignError};
use tower_jwt_signer::registry::RegistryError;
use tower_jwt_signer::rotation::{RotationConfigError, RotationPolicy};
use tower_jwt_signer::signer::{
    ExistingToken, Offload, SignerConfigError, TemplateError, TokenReuse,
};
use tower_jwt_signer::store::{
    DirKeyStore, FollowerConfigError, KeyStore, StoreError, StoreFollower, StoredKey,
};
use tower_jwt_signer::verifier::{
    JwkSet, RemoteJwks, RemoteJwksError, TokenSource, Verifier, VerifierConfigError, VerifyError,
};
use tower_jwt_signer::{
    Algorithm, JwksService, JwtSignerLayer, KeyError, KeyRegistry, KeyState, Kid, SigningKey,
};

use common::verifier::{JwksServer, Mode, bounded, claims, header_of, sign_with_header};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const CENTURY_AND_A_DAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600 + 86_400);

fn rsa_pem(bits: u32) -> Vec<u8> {
    let key = PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
    key.private_key_to_pem_pkcs8().unwrap()
}

fn layer() -> JwtSignerLayer {
    JwtSignerLayer::new(KeyRegistry::generate(Algorithm::ES256).unwrap())
}

fn es256() -> SigningKey {
    SigningKey::generate(Algorithm::ES256).unwrap()
}

// --- Keys -------------------------------------------------------------------

#[test]
fn rsa_1024_key_is_refused_on_import() {
    let pem = rsa_pem(1024);
    for alg in [Algorithm::RS256, Algorithm::PS512] {
        let err = SigningKey::from_pkcs8_pem(&pem, alg).unwrap_err();
        assert!(
            matches!(err, KeyError::RsaKeyTooSmall { bits: 1024 }),
            "{err:?}"
        );
    }
}

#[test]
fn rsa_512_key_is_refused_on_import() {
    let err = SigningKey::from_pkcs8_pem(rsa_pem(512), Algorithm::RS256).unwrap_err();
    assert!(
        matches!(err, KeyError::RsaKeyTooSmall { bits: 512 }),
        "{err:?}"
    );
}

#[test]
fn rsa_1024_key_is_refused_as_a_private_jwk() {
    // A 2048-bit JWK export with its members replaced by a 1024-bit key's.
    let rsa = Rsa::generate(1024).unwrap();
    let b64 = |n: &openssl::bn::BigNumRef| common::jose::b64(n.to_vec());
    let jwk = json!({
        "kty": "RSA", "alg": "RS256",
        "n": b64(rsa.n()), "e": b64(rsa.e()), "d": b64(rsa.d()),
        "p": b64(rsa.p().unwrap()), "q": b64(rsa.q().unwrap()),
        "dp": b64(rsa.dmp1().unwrap()), "dq": b64(rsa.dmq1().unwrap()),
        "qi": b64(rsa.iqmp().unwrap()),
    });
    let err = SigningKey::from_jwk(&jwk.to_string(), None).unwrap_err();
    assert!(
        matches!(err, KeyError::RsaKeyTooSmall { bits: 1024 }),
        "{err:?}"
    );
}

#[test]
fn rsa_1024_key_in_a_jwks_is_skipped_by_verifiers() {
    let rsa = Rsa::generate(1024).unwrap();
    let b64 = |n: &openssl::bn::BigNumRef| common::jose::b64(n.to_vec());
    let set =
        json!({"keys": [{"kty": "RSA", "kid": "weak", "n": b64(rsa.n()), "e": b64(rsa.e())}]});
    let set = JwkSet::parse(set.to_string().as_bytes()).unwrap();
    assert!(set.is_empty());
    assert_eq!(set.skipped().len(), 1);
    assert_eq!(set.skipped()[0].kid(), Some("\"weak\""));
    assert!(
        set.skipped()[0].reason().contains("1024"),
        "{:?}",
        set.skipped()
    );
}

#[test]
fn rsa_generation_sizes_other_than_2048_3072_4096_are_refused() {
    for bits in [512, 1024, 2047, 8192] {
        let err = SigningKey::generate_with_rsa_bits(Algorithm::RS256, bits).unwrap_err();
        assert!(
            matches!(err, KeyError::RsaKeySizeNotOffered { bits: b } if b == bits),
            "{err:?}"
        );
    }
}

#[test]
fn algorithm_that_does_not_fit_the_key_is_refused() {
    let p256 = es256().to_pkcs8_pem().unwrap();
    for alg in [
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::RS256,
        Algorithm::EdDSA,
    ] {
        let err = SigningKey::from_pkcs8_pem(&p256, alg).unwrap_err();
        assert!(
            matches!(err, KeyError::WrongKeyType { algorithm, .. } if algorithm == alg),
            "{alg}: {err:?}"
        );
    }
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let err =
        SigningKey::from_pkcs8_der(&ed.to_pkcs8_der().unwrap(), Algorithm::ES256).unwrap_err();
    assert!(matches!(err, KeyError::WrongKeyType { .. }), "{err:?}");
    let rsa = rsa_pem(2048);
    let err = SigningKey::from_pkcs8_pem(&rsa, Algorithm::ES256).unwrap_err();
    assert!(matches!(err, KeyError::WrongKeyType { .. }), "{err:?}");
}

#[test]
fn ed448_key_for_eddsa_is_refused() {
    let pem = PKey::generate_ed448()
        .unwrap()
        .private_key_to_pem_pkcs8()
        .unwrap();
    let err = SigningKey::from_pkcs8_pem(&pem, Algorithm::EdDSA).unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::WrongKeyType {
                algorithm: Algorithm::EdDSA,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn jwk_whose_alg_disagrees_with_the_requested_one_is_refused() {
    let jwk = es256().to_private_jwk().unwrap();
    let err = SigningKey::from_jwk(&jwk, Some(Algorithm::ES384)).unwrap_err();
    assert!(
        matches!(
            &err,
            KeyError::AlgorithmMismatch { jwk_alg, requested: Some(Algorithm::ES384) } if jwk_alg == "ES256"
        ),
        "{err:?}"
    );
}

#[test]
fn jwk_with_a_symmetric_or_none_alg_is_refused() {
    let mut jwk: Value = serde_json::from_str(&es256().to_private_jwk().unwrap()).unwrap();
    for alg in ["HS256", "none"] {
        jwk["alg"] = alg.into();
        let err = SigningKey::from_jwk(&jwk.to_string(), None).unwrap_err();
        assert!(
            matches!(&err, KeyError::AlgorithmMismatch { jwk_alg, requested: None } if jwk_alg == alg),
            "{err:?}"
        );
    }
    let oct = json!({"kty": "oct", "k": "c2VjcmV0", "alg": "ES256"});
    let err = SigningKey::from_jwk(&oct.to_string(), None).unwrap_err();
    assert!(matches!(err, KeyError::WrongKeyType { .. }), "{err:?}");
}

#[test]
fn rsa_jwk_without_an_algorithm_is_refused() {
    let key = SigningKey::generate(Algorithm::RS256).unwrap();
    let mut jwk: Value = serde_json::from_str(&key.to_private_jwk().unwrap()).unwrap();
    jwk.as_object_mut().unwrap().remove("alg");
    let err = SigningKey::from_jwk(&jwk.to_string(), None).unwrap_err();
    assert!(matches!(err, KeyError::AlgorithmRequired), "{err:?}");
}

#[test]
fn public_keys_and_certificates_are_refused_as_signing_keys() {
    let key = PKey::private_key_from_pem(es256().to_pkcs8_pem().unwrap().as_bytes()).unwrap();
    let public = key.public_key_to_pem().unwrap();
    let err = SigningKey::from_pkcs8_pem(&public, Algorithm::ES256).unwrap_err();
    assert!(matches!(err, KeyError::PublicOnly { .. }), "{err:?}");
    let der = key.public_key_to_der().unwrap();
    let err = SigningKey::from_pkcs8_der(&der, Algorithm::ES256).unwrap_err();
    assert!(matches!(err, KeyError::PublicOnly { .. }), "{err:?}");
    let public_jwk = serde_json::to_string(es256().public_jwk()).unwrap();
    let err = SigningKey::from_jwk(&public_jwk, None).unwrap_err();
    assert!(matches!(err, KeyError::PublicOnly { .. }), "{err:?}");
}

#[test]
fn encrypted_and_traditional_pem_keys_are_refused_with_a_hint() {
    let key = PKey::private_key_from_pem(&rsa_pem(2048)).unwrap();
    let traditional = key.rsa().unwrap().private_key_to_pem().unwrap();
    let err = SigningKey::from_pkcs8_pem(&traditional, Algorithm::RS256).unwrap_err();
    assert!(
        matches!(&err, KeyError::Malformed { reason, .. } if reason.contains("openssl pkcs8")),
        "{err:?}"
    );
    let encrypted = key
        .private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_256_cbc(), b"pass")
        .unwrap();
    let err = SigningKey::from_pkcs8_pem(&encrypted, Algorithm::RS256).unwrap_err();
    assert!(
        matches!(&err, KeyError::Malformed { reason, .. } if reason.contains("encrypted")),
        "{err:?}"
    );
}

#[test]
fn kid_with_a_slash_or_other_unsafe_characters_is_refused() {
    assert_eq!(
        Kid::new("keys/2026").unwrap_err(),
        InvalidKid::BadCharacter { found: '/' }
    );
    assert_eq!(
        Kid::new("../etc/passwd").unwrap_err(),
        InvalidKid::BadCharacter { found: '/' }
    );
    assert_eq!(
        Kid::new("a\r\nb").unwrap_err(),
        InvalidKid::BadCharacter { found: '\r' }
    );
    assert_eq!(Kid::new("").unwrap_err(), InvalidKid::Empty);
    assert_eq!(
        Kid::new("k".repeat(129)).unwrap_err(),
        InvalidKid::TooLong { len: 129 }
    );
    // The same rule on import: a JWK's kid with a slash.
    let mut jwk: Value = serde_json::from_str(&es256().to_private_jwk().unwrap()).unwrap();
    jwk["kid"] = "../../etc/passwd".into();
    let err = SigningKey::from_jwk(&jwk.to_string(), None).unwrap_err();
    assert!(
        matches!(
            err,
            KeyError::InvalidKid(InvalidKid::BadCharacter { found: '/' })
        ),
        "{err:?}"
    );
}

#[test]
fn symmetric_and_none_algorithms_do_not_exist() {
    for name in ["none", "HS256", "HS512", "es256", "RSA-OAEP", ""] {
        assert!(name.parse::<Algorithm>().is_err(), "{name}");
    }
}

// --- Registry -----------------------------------------------------------------

#[test]
fn two_active_keys_are_refused() {
    let err = KeyRegistry::builder()
        .active(es256())
        .active(es256())
        .build()
        .unwrap_err();
    assert!(matches!(err, RegistryError::SeveralActiveKeys), "{err:?}");
}

#[test]
fn two_keys_with_one_kid_are_refused() {
    let key = es256();
    let err = KeyRegistry::builder()
        .active(key.clone())
        .next(key.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::DuplicateKid(kid) if kid == key.kid()),
        "{err:?}"
    );
}

#[test]
fn removing_the_active_key_is_refused() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let kid = registry.current().active().unwrap().kid().clone();
    let err = registry.remove(&kid).unwrap_err();
    assert!(matches!(err, RegistryError::KeyIsActive(k) if k == kid));
}

#[test]
fn rotating_a_registry_without_keys_is_refused() {
    let err = KeyRegistry::empty().rotate(MINUTE).unwrap_err();
    assert!(matches!(err, RegistryError::NoActiveKey), "{err:?}");
}

/// A signer that is not a `SigningKey` (an HSM, a KMS).
#[derive(Debug)]
struct Hsm(SigningKey);

impl JwsSigner for Hsm {
    fn public_jwk(&self) -> &PublicJwk {
        self.0.public_jwk()
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.0.sign(input)
    }
}

#[test]
fn a_key_that_cannot_be_stored_is_refused_by_a_store_backed_registry() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(tmp.path().join("keys")).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    let err = registry.add_next(Hsm(es256())).unwrap_err();
    assert!(
        matches!(err, RegistryError::Store(StoreError::NotStorable { .. })),
        "{err:?}"
    );
}

// --- Signer -------------------------------------------------------------------

#[test]
fn ttl_zero_fractional_or_longer_than_a_day_is_refused() {
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(1500),
        Duration::from_secs(24 * 3600 + 1),
        Duration::MAX,
    ] {
        let err = layer().ttl(ttl).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidTtl(t) if t == ttl),
            "{ttl:?}: {err:?}"
        );
    }
}

#[test]
fn nbf_backdate_over_an_hour_or_fractional_is_refused() {
    for backdate in [
        Duration::from_secs(3601),
        Duration::from_millis(10),
        Duration::MAX,
    ] {
        let err = layer().not_before_backdate(backdate).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidBackdate(b) if b == backdate),
            "{err:?}"
        );
    }
}

#[test]
fn invalid_header_name_is_refused() {
    for name in ["", "bad header", "x-jwt\r\nx-evil", "x-jwt:", "é"] {
        let err = layer().header_name(name).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidHeaderName(_)),
            "{name:?}: {err:?}"
        );
    }
}

#[test]
fn hop_by_hop_and_framing_header_names_are_refused() {
    for name in [
        "Connection",
        "keep-alive",
        "TE",
        "trailer",
        "Transfer-Encoding",
        "upgrade",
        "host",
        "content-length",
        "proxy-authorization",
    ] {
        let err = layer().header_name(name).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::ReservedHeaderName(_)),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn scheme_with_cr_lf_space_or_nothing_is_refused() {
    for scheme in [
        "Bearer\r\nX-Evil: 1",
        "Bearer\n",
        "Bear er",
        "",
        "Bearer:",
        &"B".repeat(65),
    ] {
        let err = layer().scheme(scheme).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidScheme(_)),
            "{scheme:?}: {err:?}"
        );
    }
}

#[test]
fn empty_issuer_subject_or_audience_is_refused() {
    let err = layer().issuer("").unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("iss")),
        "{err:?}"
    );
    let err = layer().subject("").unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("sub")),
        "{err:?}"
    );
    let err = layer().audience("").unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("aud")),
        "{err:?}"
    );
    let err = layer().audiences(Vec::<String>::new()).unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("aud")),
        "{err:?}"
    );
    let err = layer().audiences(["a", ""]).unwrap_err();
    assert!(
        matches!(err, SignerConfigError::EmptyClaim("aud")),
        "{err:?}"
    );
}

#[test]
fn invalid_token_type_is_refused() {
    for typ in ["", "J W T", "jwt\r\n", &"j".repeat(65)] {
        let err = layer().token_type(typ).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidTokenType(_)),
            "{typ:?}: {err:?}"
        );
    }
}

#[test]
fn the_signers_own_claims_cannot_be_set() {
    for name in ["iat", "nbf", "exp", "jti"] {
        let err = layer().claim(name, 1).unwrap_err();
        assert!(
            matches!(&err, SignerConfigError::ReservedClaim(c) if c.name() == name),
            "{err:?}"
        );
        let err = layer().template_claim(name, "${req.path}").unwrap_err();
        assert!(
            matches!(&err, SignerConfigError::ReservedClaim(c) if c.name() == name),
            "{err:?}"
        );
    }
    // iss, sub and aud have their own setters, which check them.
    let err = layer().claim("iss", "").unwrap_err();
    assert!(
        matches!(err, SignerConfigError::ReservedClaim(_)),
        "{err:?}"
    );
    let err = layer().claim("", 1).unwrap_err();
    assert!(
        matches!(err, SignerConfigError::InvalidClaimName(_)),
        "{err:?}"
    );
}

#[test]
fn broken_claim_templates_are_refused() {
    type Check = fn(&TemplateError) -> bool;
    let cases: [(&str, Check); 6] = [
        ("${req.headers.x", |e| {
            matches!(e, TemplateError::Unterminated { at: 0 })
        }),
        ("${req.body}", |e| {
            matches!(e, TemplateError::UnknownExpression { .. })
        }),
        ("${req.headers.bad name}", |e| {
            matches!(e, TemplateError::InvalidName { .. })
        }),
        ("${req.query.}", |e| {
            matches!(e, TemplateError::InvalidName { .. })
        }),
        ("id-${number:req.headers.x}", |e| {
            matches!(e, TemplateError::TypedNotAlone { expected: "number" })
        }),
        ("${boolean:req.query.debug:yes}", |e| {
            matches!(
                e,
                TemplateError::InvalidDefault {
                    expected: "boolean",
                    ..
                }
            )
        }),
    ];
    for (template, expected) in cases {
        let err = layer().template_claim("t", template).unwrap_err();
        match &err {
            SignerConfigError::Template { claim, source } => {
                assert_eq!(claim, "t");
                assert!(expected(source), "{template}: {source:?}");
            }
            other => panic!("{template}: {other:?}"),
        }
    }
    let err = layer()
        .template_claim("iss", "${number:req.headers.x}")
        .unwrap_err();
    assert!(
        matches!(err, SignerConfigError::TemplateType { .. }),
        "{err:?}"
    );
}

#[test]
fn unknown_existing_token_policy_is_refused() {
    for policy in ["", "Replace", "fail", "keep "] {
        let err = policy.parse::<ExistingToken>().unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidPolicy(_)),
            "{err:?}"
        );
    }
}

#[test]
fn token_size_limit_of_zero_is_refused() {
    let err = layer().max_token_len(0).unwrap_err();
    assert!(
        matches!(err, SignerConfigError::InvalidMaxTokenLen(0)),
        "{err:?}"
    );
}

#[test]
fn token_reuse_bounds_out_of_range_are_refused() {
    for entries in [0, TokenReuse::MAX_ENTRIES + 1, usize::MAX] {
        let err = TokenReuse::new().max_entries(entries).unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidReuseEntries(e) if e == entries),
            "{err:?}"
        );
    }
    for percent in [0, 101, u8::MAX] {
        let err = TokenReuse::new()
            .min_remaining_percent(percent)
            .unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidReusePercent(p) if p == percent),
            "{err:?}"
        );
    }
}

#[test]
fn unknown_offload_mode_is_refused() {
    for mode in ["", "Inline", "threads", "auto "] {
        let err = mode.parse::<Offload>().unwrap_err();
        assert!(
            matches!(err, SignerConfigError::InvalidOffload(_)),
            "{err:?}"
        );
    }
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

// --- Rotation -------------------------------------------------------------------

#[test]
fn rotation_ttl_zero_is_refused() {
    let err = RotationPolicy::builder(HOUR, Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, RotationConfigError::ZeroTokenTtl);
}

#[test]
fn rotation_period_or_retry_zero_is_refused() {
    let err = RotationPolicy::builder(Duration::ZERO, MINUTE)
        .build()
        .unwrap_err();
    assert_eq!(err, RotationConfigError::ZeroPeriod);
    let err = RotationPolicy::builder(HOUR, MINUTE)
        .retry_after(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err, RotationConfigError::ZeroRetry);
}

#[test]
fn rotation_durations_over_a_century_are_refused() {
    let err = RotationPolicy::builder(Duration::MAX, MINUTE)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            RotationConfigError::TooLong {
                what: "rotate_every",
                ..
            }
        ),
        "{err:?}"
    );
    let err = RotationPolicy::builder(HOUR, MINUTE)
        .leeway(Duration::MAX)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, RotationConfigError::TooLong { what: "leeway", .. }),
        "{err:?}"
    );
}

#[test]
fn prepublish_longer_than_the_period_is_refused() {
    let err = RotationPolicy::builder(HOUR, MINUTE)
        .prepublish(2 * HOUR)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        RotationConfigError::PrepublishLongerThanPeriod {
            prepublish: 2 * HOUR,
            rotate_every: HOUR,
            defaulted: false,
        }
    );
    // The default prepublish (the JWKS max-age, 5 min) does not fit a
    // one-minute period either.
    let err = RotationPolicy::builder(MINUTE, Duration::from_secs(10))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            RotationConfigError::PrepublishLongerThanPeriod {
                defaulted: true,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn retain_shorter_than_the_token_lifetime_is_refused() {
    let err = RotationPolicy::builder(HOUR, 5 * MINUTE)
        .retain(MINUTE)
        .build()
        .unwrap_err();
    // ttl + the default 60 s leeway.
    assert_eq!(
        err,
        RotationConfigError::RetainTooShort {
            retain: MINUTE,
            minimum: 6 * MINUTE
        }
    );
}

// --- Key store --------------------------------------------------------------------

#[test]
fn key_dir_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("keys");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = DirKeyStore::open(&file).unwrap_err();
    match &err {
        StoreError::Io {
            path,
            action: "open directory",
            source,
        } => {
            assert_eq!(path, &file);
            assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_key_dir_is_refused_when_it_may_not_be_created() {
    let tmp = tempfile::tempdir().unwrap();
    let err = DirKeyStore::options(tmp.path().join("missing"))
        .create(false)
        .open()
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

#[cfg(unix)]
#[test]
fn key_dir_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = DirKeyStore::open(&dir).unwrap_err();
    assert!(
        matches!(err, StoreError::LoosePermissions { mode, .. } if mode & 0o777 == 0o777),
        "{err:?}"
    );
}

#[cfg(unix)]
#[test]
fn key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let store = DirKeyStore::open(tmp.path().join("keys")).unwrap();
    let key = es256();
    let path = store.key_path(key.kid()).unwrap();
    store
        .save(&StoredKey::new(key, KeyState::Active, SystemTime::now()))
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = DirKeyStore::open(tmp.path().join("keys"))
        .unwrap()
        .load()
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::LoosePermissions { path: p, .. } if p == &path),
        "{err:?}"
    );
}

#[test]
fn key_of_another_algorithm_than_the_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirKeyStore::options(tmp.path().join("keys"))
        .algorithm(Algorithm::ES256)
        .open()
        .unwrap();
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let err = store
        .save(&StoredKey::new(ed, KeyState::Next, SystemTime::now()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::WrongAlgorithm {
                found: Algorithm::EdDSA,
                expected: Algorithm::ES256,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn kid_that_would_be_a_hidden_file_is_refused_by_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirKeyStore::open(tmp.path().join("keys")).unwrap();
    let key = es256().with_kid(Kid::new(".hidden").unwrap());
    let err = store.key_path(key.kid()).unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedKid { .. }), "{err:?}");
    let err = store
        .save(&StoredKey::new(key, KeyState::Next, SystemTime::now()))
        .unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedKid { .. }), "{err:?}");
}

#[test]
fn key_file_under_another_kid_than_its_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let store = DirKeyStore::open(&dir).unwrap();
    let key = es256();
    let path = store.key_path(key.kid()).unwrap();
    store
        .save(&StoredKey::new(key, KeyState::Active, SystemTime::now()))
        .unwrap();
    let renamed = dir.join("other.key.json");
    std::fs::rename(&path, &renamed).unwrap();
    let err = DirKeyStore::open(&dir).unwrap().load().unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if path == &renamed),
        "{err:?}"
    );
    // And a registry on that store refuses to start.
    let err = KeyRegistry::builder()
        .store(DirKeyStore::open(&dir).unwrap())
        .build()
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Store(StoreError::Corrupt { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn follower_with_a_zero_or_endless_interval_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = KeyRegistry::builder()
        .store(DirKeyStore::open(tmp.path().join("keys")).unwrap())
        .generate_if_missing(Algorithm::ES256)
        .build()
        .unwrap();
    for interval in [Duration::ZERO, Duration::MAX, CENTURY_AND_A_DAY] {
        let err = StoreFollower::spawn(registry.clone(), interval).unwrap_err();
        assert_eq!(err, FollowerConfigError::InvalidInterval(interval));
    }
    let follower = StoreFollower::spawn(registry, Duration::from_secs(5)).unwrap();
    follower.stop().await;
}

/// Loading a registry from a store with two active keys (two writers that
/// both activated a key, a hand-edited directory) is refused.
#[test]
fn store_with_two_active_keys_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(DirKeyStore::open(tmp.path().join("keys")).unwrap());
    for _ in 0..2 {
        store
            .save(&StoredKey::new(
                es256(),
                KeyState::Active,
                SystemTime::now(),
            ))
            .unwrap();
    }
    let err = KeyRegistry::builder().store(store).build().unwrap_err();
    assert!(matches!(err, RegistryError::SeveralActiveKeys), "{err:?}");
}
