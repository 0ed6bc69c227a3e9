//! The axum extractors (feature `axum`): `VerifiedClaims`, and
//! `Claims<T>`, the claims deserialised into the handler's type.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use tower::ServiceExt;
use tower_jwt_signer::verifier::{Claims, ClaimsError};
use tower_jwt_signer::{
    Algorithm, JwtVerifierLayer, KeyRegistry, SigningKey, VerifiedClaims, Verifier, VerifyError,
};

use crate::support::jose::compact;
use crate::support::verifier::{claims, now};

async fn whoami(claims: VerifiedClaims) -> String {
    format!("{} ({})", claims.subject().unwrap_or("?"), claims.alg())
}

async fn maybe(claims: Option<VerifiedClaims>) -> String {
    claims.map_or("anonymous".to_owned(), |c| {
        c.subject().unwrap_or("?").to_owned()
    })
}

async fn text(response: http::Response<Body>) -> String {
    String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_extractor_reads_the_claims_the_layer_put_there() {
    let key = SigningKey::generate(Algorithm::ES384).unwrap();
    let verifier = Verifier::new(KeyRegistry::new(key.clone()));
    let app = Router::new()
        .route("/me", get(whoami))
        .layer(JwtVerifierLayer::new(verifier))
        .route("/open", get(whoami))
        .route("/maybe", get(maybe));

    let token = compact(&key, &claims());
    let request = Request::get("/me")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "alice (ES384)");

    let response = app
        .clone()
        .oneshot(Request::get("/me").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // A route outside the layer: the extractor reports the misconfiguration.
    let response = app
        .clone()
        .oneshot(Request::get("/open").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // Option<VerifiedClaims> is None there.
    let response = app
        .oneshot(Request::get("/maybe").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(text(response).await, "anonymous");
}

/// What an orders handler needs from the token.
#[derive(Deserialize)]
struct Caller {
    sub: String,
    tenant: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn orders(Claims(caller): Claims<Caller>, claims: VerifiedClaims) -> String {
    let audiences: Vec<&str> = claims.audience().collect();
    format!(
        "{}@{} roles={} aud={}",
        caller.sub,
        caller.tenant,
        caller.roles.join("+"),
        audiences.join("+")
    )
}

async fn maybe_orders(caller: Option<Claims<Caller>>) -> String {
    caller.map_or("anonymous".to_owned(), |Claims(caller)| caller.sub)
}

fn get_with(path: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn claims_of_the_handlers_type_or_401_invalid_token() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let verifier = Verifier::builder(KeyRegistry::new(key.clone()))
        .audience("orders")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/orders", get(orders))
        .route("/maybe", get(maybe_orders))
        .layer(JwtVerifierLayer::new(verifier))
        .route("/open", get(orders))
        .route("/open-maybe", get(maybe_orders));
    let exp = now() + 600;

    // Claims that fit, with two audiences.
    let fits = compact(
        &key,
        &json!({"sub": "alice", "tenant": "acme", "roles": ["r", "w"],
                "aud": ["billing", "orders"], "exp": exp}),
    );
    let response = app
        .clone()
        .oneshot(get_with("/orders", Some(&fits)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        text(response).await,
        "alice@acme roles=r+w aud=billing+orders"
    );

    // A token that verifies but lacks `tenant`, or has it of another type:
    // 401 with the verifier's challenge style and the cause in the
    // extensions; the handler never runs.
    for claims in [
        json!({"sub": "alice", "aud": "orders", "exp": exp}),
        json!({"sub": "alice", "tenant": 7, "aud": "orders", "exp": exp}),
    ] {
        let token = compact(&key, &claims);
        for path in ["/orders", "/maybe"] {
            let response = app
                .clone()
                .oneshot(get_with(path, Some(&token)))
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{path} {claims}"
            );
            assert_eq!(
                response.headers()[header::WWW_AUTHENTICATE],
                "Bearer error=\"invalid_token\", \
                 error_description=\"the token claims do not have the expected form\""
            );
            let cause = response
                .extensions()
                .get::<ClaimsError>()
                .expect("the cause");
            assert!(matches!(cause, ClaimsError::Mismatch { .. }), "{cause:?}");
            assert_eq!(cause.status(), StatusCode::UNAUTHORIZED);
            assert!(
                text(response).await.is_empty(),
                "no body, as the verifier's"
            );
        }
    }

    // A token the verifier refuses never reaches the extractor: its answer
    // and cause are the verifier's.
    let wrong_audience = compact(
        &key,
        &json!({"sub": "alice", "tenant": "acme", "aud": "x", "exp": exp}),
    );
    let response = app
        .clone()
        .oneshot(get_with("/orders", Some(&wrong_audience)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.extensions().get::<VerifyError>(),
        Some(&VerifyError::WrongAudience)
    );
    assert!(response.extensions().get::<ClaimsError>().is_none());

    // Outside the layer: 500 for Claims<T>, None for Option<Claims<T>>.
    let response = app
        .clone()
        .oneshot(get_with("/open", Some(&fits)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(
        response.extensions().get::<ClaimsError>(),
        Some(ClaimsError::NotVerified)
    ));
    let response = app.oneshot(get_with("/open-maybe", None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, "anonymous");
}
