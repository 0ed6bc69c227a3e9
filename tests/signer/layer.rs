//! The signing layer, driven with `service_fn` and `oneshot`: every token
//! is verified by an independent implementation against the JWKS the
//! registry publishes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::signer::{Seen, bearer, json_body, recording, segment, verify};
use http::{HeaderValue, Request, StatusCode};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::keys::{PublicJwk, SignError, SigningBackend};
use tower_jwt_signer::signer::{ClaimsRejection, ExistingToken, RequestClaims};
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry, SigningKey};

/// Sends one request through `layer` to a recording inner service.
async fn send(
    layer: &JwtSignerLayer,
    request: Request<()>,
) -> (
    http::Response<tower_jwt_signer::signer::ResponseBody<http_body_util::Full<bytes::Bytes>>>,
    Seen,
) {
    let seen = Seen::default();
    let service = layer.layer(recording(&seen));
    let response = tokio::time::timeout(Duration::from_secs(10), service.oneshot(request))
        .await
        .expect("bounded")
        .expect("infallible");
    (response, seen)
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn every_algorithm_signs_a_token_that_verifies_against_the_jwks() {
    for alg in Algorithm::ALL {
        let registry = KeyRegistry::generate(alg).unwrap();
        let kid = registry.current().active().unwrap().kid().clone();
        // The inner service is the backend: it verifies the token it
        // receives against the published JWKS and answers with what it
        // verified, or 401.
        let backend_registry = registry.clone();
        let backend = tower::service_fn(move |request: Request<()>| {
            let registry = backend_registry.clone();
            async move {
                let value = &request.headers()["authorization"];
                let (status, body) = match verify(&bearer(request.headers()), &registry) {
                    Ok(verified) => (
                        StatusCode::OK,
                        json!({
                            "sensitive": value.is_sensitive(),
                            "header": verified.header,
                            "claims": verified.claims,
                        }),
                    ),
                    Err(err) => (StatusCode::UNAUTHORIZED, json!({"error": err})),
                };
                let mut response = http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(body.to_string()),
                ));
                *response.status_mut() = status;
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let service = JwtSignerLayer::new(registry.clone()).layer(backend);
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            service.oneshot(Request::get("/").body(()).unwrap()),
        )
        .await
        .unwrap()
        .unwrap();
        let status = response.status();
        let body = json_body(response.into_body()).await;
        assert_eq!(status, StatusCode::OK, "{alg}: {body}");
        assert_eq!(body["sensitive"], true, "{alg}");

        // Header: exactly alg, typ, kid.
        assert_eq!(
            body["header"],
            json!({"alg": alg.as_str(), "typ": "JWT", "kid": kid.as_str()}),
            "{alg}"
        );
        // Claims: integer dates, 60 s lifetime, a 128-bit jti.
        let claims = &body["claims"];
        assert_eq!(
            keys(claims),
            ["exp", "iat", "jti", "nbf"].map(String::from).into(),
            "{alg}"
        );
        let iat = claims["iat"].as_u64().expect("integer iat");
        assert_eq!(claims["nbf"].as_u64(), Some(iat), "{alg}");
        assert_eq!(claims["exp"].as_u64(), Some(iat + 60), "{alg}");
        let jti = claims["jti"].as_str().unwrap();
        let jti_bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, jti).unwrap();
        assert_eq!(jti_bytes.len(), 16, "{alg}");
    }
}

#[tokio::test]
async fn the_verifier_in_these_tests_refuses_foreign_and_tampered_tokens() {
    // The check the tests rely on is real: another key, or a changed
    // payload, does not verify.
    for alg in [
        Algorithm::ES256,
        Algorithm::ES512,
        Algorithm::EdDSA,
        Algorithm::PS256,
    ] {
        let registry = KeyRegistry::generate(alg).unwrap();
        let layer = JwtSignerLayer::new(registry.clone());
        let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
        let token = bearer(&seen.only().headers);
        verify(&token, &registry).unwrap();
        let other = KeyRegistry::generate(alg).unwrap();
        assert!(verify(&token, &other).is_err(), "{alg}");
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims = segment(&parts[1]);
        claims["sub"] = json!("mallory");
        parts[1] = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            claims.to_string(),
        );
        assert!(verify(&parts.join("."), &registry).is_err(), "{alg}");
    }
}

#[tokio::test]
async fn each_token_is_fresh_and_dates_are_json_integers() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::new(registry.clone());
    let mut jtis = BTreeSet::new();
    for _ in 0..20 {
        let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
        let token = bearer(&seen.only().headers);
        let payload = token.split('.').nth(1).unwrap();
        let raw = String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap(),
        )
        .unwrap();
        assert!(!raw.contains('.'), "no float in {raw}");
        jtis.insert(segment(payload)["jti"].as_str().unwrap().to_owned());
    }
    assert_eq!(jtis.len(), 20, "every jti is new");
}

#[tokio::test]
async fn dates_come_from_the_registry_clock() {
    let at = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let registry = KeyRegistry::builder()
        .clock(Clock::from_fn(move || at))
        .token_ttl(Duration::from_secs(300))
        .active(SigningKey::generate(Algorithm::EdDSA).unwrap())
        .build()
        .unwrap();
    // The registry's token lifetime, as the signer's default.
    let layer = JwtSignerLayer::builder(registry)
        .not_before_backdate(Duration::from_secs(5))
        .build()
        .unwrap();
    let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    let claims = segment(bearer(&seen.only().headers).split('.').nth(1).unwrap());
    assert_eq!(claims["iat"], 1_900_000_000u64);
    assert_eq!(claims["nbf"], 1_900_000_000u64 - 5);
    assert_eq!(claims["exp"], 1_900_000_000u64 + 300);
}

#[tokio::test(start_paused = true)]
async fn paused_tokio_time_moves_the_dates() {
    let registry = KeyRegistry::builder()
        .clock(Clock::tokio())
        .active(SigningKey::generate(Algorithm::ES256).unwrap())
        .build()
        .unwrap();
    let layer = JwtSignerLayer::new(registry);
    let iat = |seen: &Seen| {
        segment(bearer(&seen.only().headers).split('.').nth(1).unwrap())["iat"]
            .as_u64()
            .unwrap()
    };
    let (_, first) = send(&layer, Request::get("/").body(()).unwrap()).await;
    tokio::time::advance(Duration::from_secs(3600)).await;
    let (_, second) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(iat(&second) - iat(&first), 3600);
}

#[tokio::test]
async fn a_rotation_switches_the_kid_and_the_header() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .token_type("at+jwt")
        .build()
        .unwrap();
    let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    let before = verify(&bearer(&seen.only().headers), &registry).unwrap();

    let next = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let new_kid = registry.rotate_to(next, Duration::from_secs(120)).unwrap();
    let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    let after = verify(&bearer(&seen.only().headers), &registry).unwrap();
    assert_ne!(before.header["kid"], after.header["kid"]);
    assert_eq!(
        after.header,
        json!({"alg": "EdDSA", "typ": "at+jwt", "kid": new_kid.as_str()})
    );
}

#[tokio::test]
async fn replace_leaves_exactly_one_value_ours() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::new(registry.clone());
    let request = Request::get("/")
        .header("authorization", "Bearer client-token")
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .header("authorization", "Bearer third")
        .body(())
        .unwrap();
    let (response, seen) = send(&layer, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = seen.only().headers;
    let token = bearer(&headers); // asserts exactly one value
    verify(&token, &registry).unwrap();
}

#[tokio::test]
async fn keep_forwards_the_client_values_untouched_and_signs_nothing() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry)
        .existing_token(ExistingToken::Keep)
        .build()
        .unwrap();
    let request = Request::get("/")
        .header("authorization", "Bearer client-token")
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .body(())
        .unwrap();
    let (response, seen) = send(&layer, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let values: Vec<_> = seen
        .only()
        .headers
        .get_all("authorization")
        .iter()
        .cloned()
        .collect();
    assert_eq!(values, ["Bearer client-token", "Basic YWxpY2U6c2VjcmV0"]);

    // Without a token, Keep still signs.
    let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert!(bearer(&seen.only().headers).starts_with("ey"));
}

#[tokio::test]
async fn reject_answers_400_and_never_calls_the_inner_service() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry)
        .existing_token(ExistingToken::Reject)
        .build()
        .unwrap();
    for count in [1, 2] {
        let mut request = Request::get("/").body(()).unwrap();
        for i in 0..count {
            request.headers_mut().append(
                "authorization",
                HeaderValue::from_str(&format!("Bearer t{i}")).unwrap(),
            );
        }
        let (response, seen) = send(&layer, request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(seen.count(), 0, "inner service not called");
        let body = json_body(response.into_body()).await;
        assert_eq!(body["error"], "token_present");
    }
    // Without a token, Reject signs.
    let (response, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    bearer(&seen.only().headers);
}

#[tokio::test]
async fn custom_header_without_scheme_and_custom_scheme() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .header_name("X-JWT-Token")
        .without_scheme()
        .build()
        .unwrap();
    let request = Request::get("/")
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .header("x-jwt-token", "forged")
        .body(())
        .unwrap();
    let (_, seen) = send(&layer, request).await;
    let headers = seen.only().headers;
    assert_eq!(
        headers["authorization"], "Basic YWxpY2U6c2VjcmV0",
        "another header is left alone"
    );
    let values: Vec<_> = headers.get_all("x-jwt-token").iter().collect();
    assert_eq!(values.len(), 1);
    assert!(values[0].is_sensitive());
    verify(values[0].to_str().unwrap(), &registry).unwrap();

    let layer = JwtSignerLayer::builder(registry.clone())
        .scheme("JWT")
        .build()
        .unwrap();
    let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    let value = seen.only().headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    let token = value.strip_prefix("JWT ").expect("custom scheme");
    verify(token, &registry).unwrap();
}

#[tokio::test]
async fn no_active_key_answers_503_and_forwards_nothing() {
    // An empty registry.
    let layer = JwtSignerLayer::new(KeyRegistry::empty());
    let (response, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count(), 0);
    assert_eq!(
        json_body(response.into_body()).await["error"],
        "no_signing_key"
    );

    // A registry whose active key was retired.
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::new(registry.clone());
    let (response, _) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let kid = registry.current().active().unwrap().kid().clone();
    registry
        .retire(&kid, SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    let (response, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.count(), 0);
}

/// A signer whose backend is down.
#[derive(Debug)]
struct BrokenHsm(PublicJwk);

impl SigningBackend for BrokenHsm {
    fn public_jwk(&self) -> &PublicJwk {
        &self.0
    }
    fn sign(&self, _: &[u8]) -> Result<Vec<u8>, SignError> {
        Err(SignError::Other("HSM unreachable".into()))
    }
}

#[tokio::test]
async fn a_signing_failure_answers_500_and_forwards_nothing() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let registry = KeyRegistry::new(BrokenHsm(key.public_jwk().clone()));
    let layer = JwtSignerLayer::new(registry);
    let request = Request::get("/")
        .header("authorization", "Bearer client")
        .body(())
        .unwrap();
    let (response, seen) = send(&layer, request).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(seen.count(), 0);
    let body = json_body(response.into_body()).await;
    assert_eq!(body["error"], "signing_failed");
    assert!(
        !body.to_string().contains("HSM"),
        "no internals in the body"
    );
}

#[tokio::test]
async fn the_claims_closure_can_refuse_with_401_403_or_500() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry)
        .request_claims(
            |parts| match parts.headers.get("x-case").and_then(|v| v.to_str().ok()) {
                Some("401") => Err(ClaimsRejection::unauthorized("sign in first")),
                Some("403") => Err(ClaimsRejection::forbidden("tenant suspended")),
                Some("500") => Err(ClaimsRejection::internal("user store down at 10.0.0.7")),
                Some("reserved") => Ok(RequestClaims::new().claim("exp", "never")?),
                _ => Ok(RequestClaims::new()),
            },
        )
        .build()
        .unwrap();
    for (case, status, error, reason) in [
        ("401", 401, "unauthorized", Some("sign in first")),
        ("403", 403, "forbidden", Some("tenant suspended")),
        ("500", 500, "claims_failed", None),
        ("reserved", 500, "claims_failed", None),
    ] {
        let request = Request::get("/").header("x-case", case).body(()).unwrap();
        let (response, seen) = send(&layer, request).await;
        assert_eq!(response.status().as_u16(), status, "{case}");
        assert_eq!(seen.count(), 0, "{case}: inner service not called");
        let body = json_body(response.into_body()).await;
        assert_eq!(body["error"], error, "{case}");
        match reason {
            Some(reason) => assert_eq!(body["reason"], reason),
            None => assert!(
                !body.to_string().contains("10.0.0.7"),
                "500 reasons stay in the log"
            ),
        }
    }
    let (response, _) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[derive(Clone)]
struct User(&'static str);

#[tokio::test]
async fn the_closure_reads_extensions_placed_by_an_earlier_layer() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .request_claims(|parts| {
            let user = parts
                .extensions
                .get::<User>()
                .ok_or_else(|| ClaimsRejection::unauthorized("no user"))?;
            Ok(RequestClaims::new()
                .subject(user.0)
                .claim("roles", json!(["admin"]))?)
        })
        .build()
        .unwrap();
    let mut request = Request::get("/").body(()).unwrap();
    request.extensions_mut().insert(User("alice"));
    let (_, seen) = send(&layer, request).await;
    let parts = seen.only();
    assert!(parts.extensions.get::<User>().is_some(), "extensions kept");
    let claims = verify(&bearer(&parts.headers), &registry).unwrap().claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["roles"], json!(["admin"]));
}

#[tokio::test]
async fn precedence_request_over_template_over_static_and_dates_stay_ours() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let base = JwtSignerLayer::builder(registry.clone())
        .subject("static-sub")
        .claim("tenant", "static")
        .claim("only-static", 1);
    let with_templates = base
        .clone()
        .template_claim("tenant", "${req.headers.x-tenant}")
        .template_claim("sub", "${req.headers.x-user}")
        .template_claim("only-template", "${req.method}");
    let with_closure = with_templates
        .clone()
        .request_claims(|_| {
            Ok(RequestClaims::new()
                .subject("closure-sub")
                .claim("tenant", "closure")?)
        })
        .build()
        .unwrap();
    let (base, with_templates) = (base.build().unwrap(), with_templates.build().unwrap());
    let request = || {
        Request::post("/")
            .header("x-tenant", "template")
            .header("x-user", "template-sub")
            .body(())
            .unwrap()
    };
    let claims = |layer: JwtSignerLayer| {
        let registry = registry.clone();
        async move {
            let (_, seen) = send(&layer, request()).await;
            let token = bearer(&seen.only().headers);
            // A name appears once in the payload.
            let raw = String::from_utf8(
                base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    token.split('.').nth(1).unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
            assert_eq!(raw.matches("\"tenant\"").count(), 1, "{raw}");
            assert!(raw.matches("\"sub\"").count() <= 1, "{raw}");
            verify(&token, &registry).unwrap().claims
        }
    };

    let c = claims(base).await;
    assert_eq!(
        (c["sub"].as_str(), c["tenant"].as_str()),
        (Some("static-sub"), Some("static"))
    );
    let c = claims(with_templates).await;
    assert_eq!(
        (c["sub"].as_str(), c["tenant"].as_str()),
        (Some("template-sub"), Some("template"))
    );
    assert_eq!(c["only-template"], "POST");
    assert_eq!(c["only-static"], 1);
    let c = claims(with_closure).await;
    assert_eq!(
        (c["sub"].as_str(), c["tenant"].as_str()),
        (Some("closure-sub"), Some("closure"))
    );
    assert_eq!(c["only-template"], "POST");
    assert_eq!(c["only-static"], 1);
    assert!(c["exp"].is_u64() && c["iat"].is_u64() && c["nbf"].is_u64());

    // The order of the builder calls does not matter: a static claim set
    // after a template of the same name still loses.
    let layer = JwtSignerLayer::builder(registry.clone())
        .template_claim("tenant", "${req.headers.x-tenant}")
        .claim("tenant", "static")
        .build()
        .unwrap();
    assert_eq!(claims(layer).await["tenant"], "template");
}

#[tokio::test]
async fn template_values_stay_data() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .template_claim("h", "${req.headers.x-evil}")
        .template_claim("q", "prefix-${req.query.q}-suffix")
        .template_claim("exp_attempt", "${req.query.exp}")
        .template_claim("n", "${number:req.query.n:0}")
        .template_claim("sub", "${req.headers.x-user}")
        // The long value below makes a token far over the default 8 KiB.
        .max_token_len(1 << 20)
        .build()
        .unwrap();
    let long = "A\"}".repeat(20_000);
    let evil_header = format!(r#"x", "exp": "never", "admin": true, "z": "\u0000\\ {long}"#);
    let unicode = "名前 ✓ \u{1F600}";
    let request = Request::get(
        "/p?q=%22%2C%22exp%22%3A%22x%22%7D%0D%0AX-Injected%3A%201%5C&exp=%22later%22&n=42",
    )
    .header("x-evil", HeaderValue::from_str(&evil_header).unwrap())
    .header(
        "x-user",
        HeaderValue::from_bytes(unicode.as_bytes()).unwrap(),
    )
    .body(())
    .unwrap();
    let (response, seen) = send(&layer, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let parts = seen.only();
    assert!(parts.headers.get("x-injected").is_none());
    let value = parts.headers["authorization"].to_str().unwrap();
    let token = value.strip_prefix("Bearer ").unwrap();
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "the header value is the scheme and base64url only"
    );
    let claims = verify(&bearer(&parts.headers), &registry).unwrap().claims;
    assert_eq!(
        keys(&claims),
        [
            "exp",
            "exp_attempt",
            "h",
            "iat",
            "jti",
            "n",
            "nbf",
            "q",
            "sub"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(claims["h"], evil_header);
    assert_eq!(
        claims["q"],
        "prefix-\",\"exp\":\"x\"}\r\nX-Injected: 1\\-suffix"
    );
    assert_eq!(claims["exp_attempt"], "\"later\"");
    assert_eq!(claims["n"], 42);
    assert_eq!(claims["sub"], unicode);
    assert!(claims["exp"].is_u64());

    // A number template never takes a crafted value.
    for n in [
        "1%2C%22exp%22%3A%22x%22",
        "1%7D",
        "NaN",
        "%201",
        "1e999",
        "true",
    ] {
        let uri = format!("/?n={n}");
        let request = Request::get(uri.as_str())
            .header("x-evil", "a")
            .header("x-user", "b")
            .body(())
            .unwrap();
        let (response, seen) = send(&layer, request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{n}");
        assert_eq!(seen.count(), 0);
        assert_eq!(
            json_body(response.into_body()).await["error"],
            "claim_unavailable"
        );
    }
}

#[tokio::test]
async fn a_missing_template_value_without_default_is_refused() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .template_claim("tenant", "${req.headers.x-tenant}")
        .template_claim("region", "${req.query.region:eu}")
        .build()
        .unwrap();
    let (response, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(seen.count(), 0);
    let body = json_body(response.into_body()).await;
    assert_eq!(body["error"], "claim_unavailable");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("req.headers.x-tenant")
    );

    let request = Request::get("/")
        .header("x-tenant", "acme")
        .body(())
        .unwrap();
    let (_, seen) = send(&layer, request).await;
    let claims = verify(&bearer(&seen.only().headers), &registry)
        .unwrap()
        .claims;
    assert_eq!(
        (claims["tenant"].as_str(), claims["region"].as_str()),
        (Some("acme"), Some("eu"))
    );
}

/// The verifier refuses a token whose numbers would not keep their value
/// (`VerifyError::InexactNumber`). The signer used to forward such a
/// `${number:...}` value exactly, in a token its own verifier then refused;
/// now it answers 400 `claim_unavailable` saying to send a string, and
/// forwards nothing.
#[tokio::test]
async fn a_number_that_would_not_keep_its_value_is_refused_not_forwarded() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = JwtSignerLayer::builder(registry.clone())
        .template_claim("account", "${number:req.headers.x-account}")
        .build()
        .unwrap();
    for inexact in [
        "444444444444444444444444",
        "18446744073709551616",
        "0.30000000000000000000001",
    ] {
        let request = Request::get("/")
            .header("x-account", inexact)
            .body(())
            .unwrap();
        let (response, seen) = send(&layer, request).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{inexact}");
        assert_eq!(seen.count(), 0, "{inexact}: forwarded");
        let body = json_body(response.into_body()).await;
        assert_eq!(body["error"], "claim_unavailable");
        let reason = body["reason"].as_str().unwrap();
        assert!(reason.contains("send it as a string"), "{reason}");
    }
    // The largest u64 keeps its value: signed, and our verifier accepts it.
    let request = Request::get("/")
        .header("x-account", "18446744073709551615")
        .body(())
        .unwrap();
    let (_, seen) = send(&layer, request).await;
    let token = bearer(&seen.only().headers);
    tower_jwt_signer::Verifier::new(registry.clone())
        .verify(&token)
        .await
        .expect("our verifier accepts what our signer signs");
    let claims = verify(&token, &registry).unwrap().claims;
    assert_eq!(claims["account"], json!(18_446_744_073_709_551_615_u64));

    // A default that would not keep its value is refused when the layer is
    // built.
    let err = JwtSignerLayer::builder(registry)
        .template_claim(
            "account",
            "${number:req.headers.x-account:444444444444444444444444}",
        )
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "template_claim");
    assert!(err.reason().contains("would not keep its value"), "{err}");
}

#[tokio::test]
async fn static_registered_claims_and_audience_lists() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let settings = JwtSignerLayer::builder(registry.clone())
        .issuer("https://gw.example")
        .audiences(["a", "b"])
        .claim("scope", json!({"read": true, "ids": [1, 2]}));
    let layer = settings.clone().build().unwrap();
    let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    let claims = verify(&bearer(&seen.only().headers), &registry)
        .unwrap()
        .claims;
    assert_eq!(claims["iss"], "https://gw.example");
    assert_eq!(claims["aud"], json!(["a", "b"]));
    assert_eq!(claims["scope"], json!({"read": true, "ids": [1, 2]}));
    let layer = settings.audience("single").build().unwrap();
    let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
    let claims = verify(&bearer(&seen.only().headers), &registry)
        .unwrap()
        .claims;
    assert_eq!(claims["aud"], "single");
}

#[tokio::test]
async fn a_layer_shared_by_many_tasks_signs_every_request() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let layer = Arc::new(JwtSignerLayer::new(registry.clone()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let layer = Arc::clone(&layer);
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let (_, seen) = send(&layer, Request::get("/").body(()).unwrap()).await;
                verify(&bearer(&seen.only().headers), &registry).unwrap();
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .unwrap()
            .unwrap();
    }
}
