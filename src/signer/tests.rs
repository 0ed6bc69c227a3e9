//! Unit tests: configuration checks and the layer's own answers, driven
//! with `service_fn` and `oneshot`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};

use super::*;
use crate::{Algorithm, KeyRegistry};

fn layer() -> JwtSignerLayer {
    JwtSignerLayer::new(KeyRegistry::generate(Algorithm::ES256).unwrap())
}

fn builder() -> JwtSignerLayerBuilder {
    JwtSignerLayer::builder(KeyRegistry::generate(Algorithm::ES256).unwrap())
}

/// The setting `build()` refuses, checking that it says which.
#[track_caller]
fn refused(builder: JwtSignerLayerBuilder) -> crate::ConfigError {
    builder.build().unwrap_err()
}

#[test]
fn bad_settings_are_refused_when_the_layer_is_built() {
    for name in ["bad name", "x-a\r\nx-b", ""] {
        let err = refused(builder().header_name(name));
        assert_eq!(err.setting(), "header_name", "{name:?}");
        assert!(err.reason().contains("header name"), "{err}");
    }
    for reserved in [
        "Connection",
        "keep-alive",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Proxy-Authorization",
    ] {
        let err = refused(builder().header_name(reserved));
        assert_eq!(err.setting(), "header_name", "{reserved}");
        assert!(err.reason().contains("hop-by-hop"), "{err}");
    }
    for scheme in [
        "",
        "Bearer x",
        "Bearer\r\nX-Evil: 1",
        "Bea\"rer",
        "Bé",
        &"a".repeat(65),
    ] {
        assert_eq!(
            refused(builder().scheme(scheme)).setting(),
            "scheme",
            "{scheme:?}"
        );
    }
    for typ in ["", "a b", "a\"b", "jwt\n"] {
        assert_eq!(
            refused(builder().token_type(typ)).setting(),
            "token_type",
            "{typ:?}"
        );
    }
    // The registry's lifetime is 60 s here: 1 s to 60 s, whole seconds.
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(1500),
        Duration::from_secs(61),
        Duration::MAX,
    ] {
        assert_eq!(refused(builder().ttl(ttl)).setting(), "ttl", "{ttl:?}");
    }
    for backdate in [Duration::from_millis(10), Duration::from_secs(3601)] {
        assert_eq!(
            refused(builder().not_before_backdate(backdate)).setting(),
            "not_before_backdate"
        );
    }
    for (builder, setting) in [
        (builder().issuer(""), "issuer"),
        (builder().subject(""), "subject"),
        (builder().audience(""), "audience"),
        (builder().audiences(Vec::<String>::new()), "audiences"),
        (builder().audiences(["a", ""]), "audiences"),
    ] {
        let err = refused(builder);
        assert_eq!(err.setting(), setting);
        assert!(err.reason().contains("cannot be empty"), "{err}");
    }
    for name in ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"] {
        assert_eq!(
            refused(builder().claim(name, 1)).setting(),
            "claim",
            "{name}"
        );
    }
    for name in ["iat", "nbf", "exp", "jti"] {
        let err = refused(builder().template_claim(name, "${req.path}"));
        assert_eq!(err.setting(), "template_claim", "{name}");
    }
    assert_eq!(refused(builder().claim("", 1)).setting(), "claim");
    assert_eq!(
        refused(builder().template_claim("", "x")).setting(),
        "template_claim"
    );
    let err = refused(builder().template_claim("t", "${req.nope}"));
    assert!(err.reason().contains("unknown expression"), "{err}");
    let err = refused(builder().template_claim("sub", "${number:req.query.n}"));
    assert!(err.reason().contains("`sub` is a string"), "{err}");
    assert_eq!(
        refused(builder().max_token_len(0)).setting(),
        "max_token_len"
    );
    assert_eq!(
        "sometimes".parse::<ExistingToken>().unwrap_err().setting(),
        "existing_token"
    );
    assert_eq!("fast".parse::<Offload>().unwrap_err().setting(), "offload");

    // Messages say what to do.
    let message = refused(builder().ttl(Duration::ZERO)).to_string();
    assert!(message.contains("whole seconds"), "{message}");
    let message = refused(builder().claim("exp", 1)).to_string();
    assert!(message.contains("computed by the signer"), "{message}");

    // The first refusal, in the documented order, wins.
    let err = refused(
        builder()
            .issuer("")
            .ttl(Duration::ZERO)
            .header_name("bad name"),
    );
    assert_eq!(err.setting(), "header_name");
}

/// The registry is the one home of the token lifetime: a signer signs for
/// the registry's ttl by default, may sign shorter tokens, never longer.
#[test]
fn the_ttl_defaults_to_the_registrys_and_is_never_longer() {
    let registry = KeyRegistry::builder()
        .token_ttl(Duration::from_secs(120))
        .build()
        .unwrap();
    assert_eq!(
        JwtSignerLayer::new(registry.clone()).ttl(),
        Duration::from_secs(120)
    );
    let shorter = JwtSignerLayer::builder(registry.clone())
        .ttl(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(shorter.ttl(), Duration::from_secs(30));
    let same = JwtSignerLayer::builder(registry.clone())
        .ttl(Duration::from_secs(120))
        .build()
        .unwrap();
    assert_eq!(same.ttl(), Duration::from_secs(120));
    let err = JwtSignerLayer::builder(registry)
        .ttl(Duration::from_secs(121))
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "ttl");
    assert!(err.reason().contains("120 s"), "{err}");
    assert!(
        err.reason().contains("KeyRegistryBuilder::token_ttl"),
        "{err}"
    );
}

#[test]
fn good_settings_are_accepted() {
    let layer = builder()
        .header_name("X-JWT-Token")
        .scheme("JWT")
        .token_type("at+jwt")
        .ttl(Duration::from_secs(30))
        .not_before_backdate(Duration::from_secs(5))
        .template_claim("sub", "${req.headers.x-user:anonymous}")
        .template_claim("n", "${number:req.query.n:1}")
        .existing_token(ExistingToken::Reject)
        .build()
        .unwrap();
    let debug = format!("{layer:?}");
    assert!(
        debug.contains("x-jwt-token") && debug.contains("at+jwt"),
        "{debug}"
    );
    let debug = format!("{:?}", builder().issuer("gw"));
    assert!(debug.contains("JwtSignerLayerBuilder"), "{debug}");
}

#[tokio::test]
async fn the_signers_own_answers_have_a_json_body() {
    let service =
        JwtSignerLayer::new(KeyRegistry::empty()).layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let response = service
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = response.into_body();
    assert!(body.is_signer_response());
    let len = body.size_hint().exact().unwrap();
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(bytes.len() as u64, len);
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["error"], "no_signing_key");
    assert_eq!(json["reason"], "no active signing key");
}

/// Found by the `claim_template` fuzz target: a template that copies a
/// header many times made a token larger than the verifier's 8 KiB limit,
/// which the gateway forwarded and the backend refused. Such a request is
/// now answered 400 and not forwarded; the limit can be raised.
#[tokio::test]
async fn a_token_over_the_size_limit_is_refused_and_not_forwarded() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |request: Request<()>| {
        counter.fetch_add(1, Ordering::Relaxed);
        let len = request.headers()["authorization"].len();
        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(len.to_string())))) }
    });
    let template = "${req.headers.x-a}".repeat(10);
    let request = || {
        Request::get("/")
            .header("x-a", "a".repeat(1000))
            .body(())
            .unwrap()
    };
    let small = builder().template_claim("t", &template);
    let large = small.clone().max_token_len(64 * 1024).build().unwrap();
    let small = small.build().unwrap();
    let response = small.layer(inner.clone()).oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["error"], "token_too_large");
    assert_eq!(calls.load(Ordering::Relaxed), 0);

    let response = large.layer(inner.clone()).oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let len: usize = std::str::from_utf8(&bytes).unwrap().parse().unwrap();
    assert!(len > crate::limits::DEFAULT_MAX_TOKEN_LEN, "{len}");
}

#[tokio::test]
async fn the_inner_body_and_error_pass_through() {
    let service = layer().layer(service_fn(|request: Request<()>| async move {
        if request.uri().path() == "/fail" {
            return Err("inner failure");
        }
        Ok(Response::new(Full::new(Bytes::from_static(b"inner"))))
    }));
    let response = service
        .clone()
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert!(!response.body().is_signer_response());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"inner");
    let err = service
        .oneshot(Request::get("/fail").body(()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err, "inner failure");
}

#[test]
fn service_accessors() {
    let mut signer = JwtSigner::new(7u8, KeyRegistry::empty());
    assert_eq!(*signer.get_ref(), 7);
    *signer.get_mut() = 8;
    assert_eq!(signer.clone().into_inner(), 8);
    let _layer: JwtSignerLayer = JwtSigner::<()>::layer(KeyRegistry::empty());
    assert!(format!("{signer:?}").contains("JwtSigner"));
}

/// The token the inner service receives, echoed back in the body.
async fn token_through<S>(service: &S) -> Bytes
where
    S: tower::Service<
            Request<()>,
            Response = Response<ResponseBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone,
{
    let response = service
        .clone()
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap().to_bytes()
}

fn echo_token() -> impl tower::Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|request: Request<()>| async move {
        let value = request.headers()["authorization"].as_bytes().to_vec();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(value))))
    })
}

#[tokio::test]
async fn each_service_of_a_layer_has_its_own_reuse_cache_and_its_clones_share_it() {
    let layer = builder().reuse_tokens(TokenReuse::new()).build().unwrap();
    let first = layer.layer(echo_token());
    let second = layer.layer(echo_token());

    let token = token_through(&first).await;
    assert_eq!(token_through(&first).await, token, "a clone reuses it");
    assert_eq!(first.cached_tokens(), 1);
    assert_eq!(second.cached_tokens(), 0, "another service, another cache");
    assert_ne!(token_through(&second).await, token);
    assert_eq!(second.cached_tokens(), 1);
    assert_eq!(first.cached_tokens(), 1);
}

#[tokio::test]
async fn services_given_one_token_cache_share_it() {
    let cache = TokenCache::new(TokenReuse::new()).unwrap();
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let settings = JwtSignerLayer::builder(registry).reuse_tokens_in(cache.clone());
    let layer = settings.clone().build().unwrap();
    let first = layer.layer(echo_token());
    let second = layer.clone().layer(echo_token());

    let token = token_through(&first).await;
    assert_eq!(token_through(&second).await, token, "one cache");
    assert_eq!(cache.len(), 1);
    assert_eq!(first.cached_tokens(), 1);
    assert_eq!(second.cached_tokens(), 1);

    // Other settings share the bound, never the tokens.
    let other = settings.scheme("JWT").build().unwrap().layer(echo_token());
    let theirs = token_through(&other).await;
    assert!(theirs.starts_with(b"JWT ey"), "{theirs:?}");
    assert_eq!(cache.len(), 2);
    assert_eq!(token_through(&first).await, token);
    assert_eq!(token_through(&other).await, theirs);
}

/// The inner service of the hardening tests: counts its calls and answers
/// with the values of `name` it received, joined with `|`.
fn echo_header(
    name: &'static str,
    calls: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let calls = calls.clone();
    service_fn(move |request: Request<()>| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let values: Vec<&str> = request
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let body = Bytes::from(values.join("|"));
        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
    })
}

async fn status_and_body<S>(service: &S, request: Request<()>) -> (StatusCode, String)
where
    S: tower::Service<
            Request<()>,
            Response = Response<ResponseBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone,
{
    let response = service.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// Issue 16: under `ExistingToken::Keep`, a client that sent any value in
/// the header had it forwarded and the claims closure (the access check
/// that answers 401/403) never ran.
#[tokio::test]
async fn the_claims_closure_decides_under_every_policy() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let checked = |builder: JwtSignerLayerBuilder| {
        builder
            .request_claims(|parts| match parts.headers.get("x-user") {
                Some(user) if user == "banned" => Err(ClaimsRejection::forbidden("suspended")),
                Some(user) => Ok(RequestClaims::new().subject(user.to_str().unwrap())),
                None => Err(ClaimsRejection::unauthorized("not signed in")),
            })
            .build()
            .unwrap()
    };
    let with_token = |user: Option<&str>| {
        let mut request = Request::get("/").header("authorization", "Bearer forged");
        if let Some(user) = user {
            request = request.header("x-user", user);
        }
        request.body(()).unwrap()
    };
    for policy in [
        ExistingToken::Keep,
        ExistingToken::Reject,
        ExistingToken::Replace,
    ] {
        let calls = Arc::new(AtomicUsize::new(0));
        let service =
            checked(builder().existing_token(policy)).layer(echo_header("authorization", &calls));

        let (status, body) = status_and_body(&service, with_token(None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{policy}: {body}");
        assert!(body.contains("\"unauthorized\""), "{policy}: {body}");
        let (status, _) = status_and_body(&service, with_token(Some("banned"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{policy}");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{policy}: never forwarded");

        // An accepted request goes on as the policy says.
        let (status, body) = status_and_body(&service, with_token(Some("alice"))).await;
        match policy {
            ExistingToken::Keep => {
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body, "Bearer forged", "the client's own value, unsigned");
            }
            ExistingToken::Reject => assert_eq!(status, StatusCode::BAD_REQUEST),
            _ => {
                assert_eq!(status, StatusCode::OK);
                assert!(body.starts_with("Bearer ey"), "{body}");
            }
        }
    }
}

type Seen = std::sync::Arc<std::sync::Mutex<Vec<http::HeaderMap>>>;

/// An inner service that keeps the headers of every request it receives.
fn keep_headers(
    seen: &Seen,
) -> impl tower::Service<
    Request<()>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let seen = seen.clone();
    service_fn(move |request: Request<()>| {
        seen.lock().unwrap().push(request.headers().clone());
        async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) }
    })
}

/// Sends `request` through `layer` and returns the headers the inner
/// service received.
async fn received(layer: &JwtSignerLayer, request: Request<()>) -> http::HeaderMap {
    let seen = Seen::default();
    let response = layer
        .layer(keep_headers(&seen))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    seen.pop().unwrap()
}

fn lines<'a>(headers: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// Issue 16: a client's `Connection: close, authorization` named the
/// signed header as hop-by-hop, so that any compliant proxy between the
/// signer and the backend dropped the token.
#[tokio::test]
async fn the_token_header_is_taken_out_of_every_connection_line() {
    let request = |connection: &[&str]| {
        let mut request = Request::get("/");
        for line in connection {
            request = request.header("connection", *line);
        }
        request.body(()).unwrap()
    };
    for offload in [Offload::Inline, Offload::Blocking] {
        let default = builder().offload(offload).build().unwrap();
        let headers = received(&default, request(&["close, authorization"])).await;
        assert_eq!(lines(&headers, "connection"), ["close"], "{offload}");
        assert_eq!(lines(&headers, "authorization").len(), 1);
        assert!(
            headers["authorization"]
                .to_str()
                .unwrap()
                .starts_with("Bearer ey")
        );

        let headers = received(
            &default,
            request(&[
                "Authorization",
                "keep-alive",
                "x-other ,\tAUTHORIZATION ,, te",
            ]),
        )
        .await;
        assert_eq!(
            lines(&headers, "connection"),
            ["keep-alive", "x-other, te"],
            "{offload}: the other tokens stay, in order"
        );

        let headers = received(&default, request(&["authorization", " AuThOrIzAtIoN "])).await;
        assert!(
            headers.get("connection").is_none(),
            "{offload}: nothing left, no Connection header"
        );

        let custom = builder()
            .offload(offload)
            .header_name("X-JWT-Token")
            .without_scheme()
            .build()
            .unwrap();
        let headers = received(&custom, request(&["X-JWT-TOKEN,  upgrade", "close"])).await;
        assert_eq!(
            lines(&headers, "connection"),
            ["upgrade", "close"],
            "{offload}"
        );
        assert!(headers["x-jwt-token"].to_str().unwrap().starts_with("ey"));
        let headers = received(&custom, request(&["close, authorization"])).await;
        assert_eq!(
            lines(&headers, "connection"),
            ["close, authorization"],
            "{offload}: another header's name stays"
        );
    }

    // Keep forwards the client's value: it is not named away either.
    let keep = builder()
        .existing_token(ExistingToken::Keep)
        .build()
        .unwrap();
    let mut request = request(&["close, authorization"]);
    request
        .headers_mut()
        .insert("authorization", "Bearer client".parse().unwrap());
    let headers = received(&keep, request).await;
    assert_eq!(lines(&headers, "connection"), ["close"]);
    assert_eq!(lines(&headers, "authorization"), ["Bearer client"]);
}

/// The names in `headers` that read as `name` once `_` is read as `-`.
fn spelled_like<'a>(headers: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|key| key.replace('_', "-") == name.replace('_', "-"))
        .collect()
}

/// Issue 16: with a custom header name holding a `-`, a client header
/// spelled with `_` (`X_JWT_Token`) was forwarded next to ours, and a
/// backend mapping `_` to `-` (CGI, WSGI) could read the client's.
#[tokio::test]
async fn look_alikes_of_the_token_header_never_reach_the_backend() {
    let custom = |policy: ExistingToken, offload: Offload| {
        builder()
            .header_name("X-JWT-Token")
            .without_scheme()
            .existing_token(policy)
            .offload(offload)
            .build()
            .unwrap()
    };
    let request = |own: Option<&str>| {
        let mut request = Request::get("/")
            .header("X_JWT_Token", "forged")
            .header("x-jwt_token", "forged")
            .header("X_Jwt-TOKEN", "forged")
            .header("x-jwt-tokens", "unrelated")
            .header("x_user", "alice");
        if let Some(own) = own {
            request = request.header("x-jwt-token", own);
        }
        request.body(()).unwrap()
    };
    let only_ours = |headers: &http::HeaderMap, label: &str| {
        assert_eq!(
            spelled_like(headers, "x-jwt-token"),
            ["x-jwt-token"],
            "{label}"
        );
        assert_eq!(lines(headers, "x-jwt-token").len(), 1, "{label}");
        assert_eq!(headers["x-jwt-tokens"], "unrelated", "{label}");
        assert_eq!(headers["x_user"], "alice", "{label}");
    };
    for offload in [Offload::Inline, Offload::Blocking] {
        for policy in [
            ExistingToken::Replace,
            ExistingToken::Keep,
            ExistingToken::Reject,
        ] {
            let label = format!("{policy}, {offload}");
            // Without the header itself: every policy signs.
            let headers = received(&custom(policy, offload), request(None)).await;
            only_ours(&headers, &label);
            assert!(headers["x-jwt-token"].to_str().unwrap().starts_with("ey"));
        }
        let label = format!("replace, {offload}");
        let replace = custom(ExistingToken::Replace, offload);
        let headers = received(&replace, request(Some("client"))).await;
        only_ours(&headers, &label);
        assert!(headers["x-jwt-token"].to_str().unwrap().starts_with("ey"));
    }
    // Keep forwards the client's value of the header itself, and no
    // look-alike.
    let keep = custom(ExistingToken::Keep, Offload::Inline);
    let headers = received(&keep, request(Some("client"))).await;
    only_ours(&headers, "keep");
    assert_eq!(headers["x-jwt-token"], "client");

    // A name with `_` loses its `-` look-alikes the same way.
    let underscored = builder().header_name("x_jwt").build().unwrap();
    let headers = received(
        &underscored,
        Request::get("/")
            .header("X-JWT", "forged")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!(spelled_like(&headers, "x_jwt"), ["x_jwt"]);
    // Authorization has no look-alike; nothing else is touched.
    let headers = received(
        &layer(),
        Request::get("/")
            .header("x_user", "alice")
            .header("x-user", "bob")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!(headers["x_user"], "alice");
    assert_eq!(headers["x-user"], "bob");
}

/// Each answer the signer gives itself carries its typed cause in the
/// response extensions, saying what the body says; a forwarded response
/// carries none.
#[tokio::test]
async fn each_refusal_puts_its_cause_in_the_response_extensions() {
    use http::HeaderName;

    let inner = service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
    });
    let closure = builder()
        .request_claims(
            |parts| match parts.headers.get("x-case").map(|v| v.as_bytes()) {
                Some(b"401") => Err(ClaimsRejection::unauthorized("sign in first")),
                Some(b"403") => Err(ClaimsRejection::forbidden("tenant suspended")),
                Some(b"500") => Err(ClaimsRejection::internal("user store down at 10.0.0.7")),
                _ => Ok(RequestClaims::new()),
            },
        )
        .existing_token(ExistingToken::Reject)
        .template_claim("tenant", "${req.headers.x-tenant}")
        .max_token_len(400)
        .build()
        .unwrap();
    let request = |headers: &[(&str, &str)]| {
        let mut request = Request::get("/").header("x-tenant", "acme");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    };
    let cases = [
        (
            &closure,
            request(&[("authorization", "Bearer client")]),
            Refusal::TokenPresent {
                header: HeaderName::from_static("authorization"),
            },
        ),
        (
            &closure,
            Request::get("/").body(()).unwrap(),
            Refusal::ClaimUnavailable {
                claim: "tenant".to_owned(),
                problem: String::new(),
            },
        ),
        (
            &closure,
            request(&[("x-case", "401")]),
            Refusal::Unauthorized {
                reason: "sign in first".into(),
            },
        ),
        (
            &closure,
            request(&[("x-case", "403")]),
            Refusal::Forbidden {
                reason: "tenant suspended".into(),
            },
        ),
        (
            &closure,
            request(&[("x-case", "500")]),
            Refusal::ClaimsFailed,
        ),
        (
            &closure,
            request(&[("x-tenant", &"t".repeat(400))]),
            Refusal::TokenTooLarge { len: 0, max: 400 },
        ),
        (
            &JwtSignerLayer::new(KeyRegistry::empty()),
            Request::get("/").body(()).unwrap(),
            Refusal::NoSigningKey,
        ),
    ];
    for (layer, request, expected) in cases {
        let response = layer.layer(inner).oneshot(request).await.unwrap();
        let refusal = response
            .extensions()
            .get::<Refusal>()
            .unwrap_or_else(|| panic!("no cause for {expected:?}"))
            .clone();
        match (&refusal, &expected) {
            // The length and the template's words are the signer's: only the
            // kind, the limit and the claim are checked here.
            (Refusal::TokenTooLarge { len, max }, Refusal::TokenTooLarge { max: want, .. }) => {
                assert!(*len > *max && max == want, "{refusal:?}");
            }
            (Refusal::ClaimUnavailable { claim, .. }, Refusal::ClaimUnavailable { .. }) => {
                assert_eq!(claim, "tenant");
            }
            _ => assert_eq!(refusal, expected),
        }
        assert_eq!(response.status(), refusal.status(), "{refusal:?}");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["error"], refusal.error_code(), "{refusal:?}");
        assert_eq!(json["reason"], *refusal.reason(), "{refusal:?}");
        assert!(!refusal.to_string().contains("10.0.0.7"), "{refusal}");
    }

    let response = closure.layer(inner).oneshot(request(&[])).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.extensions().get::<Refusal>().is_none());
}
