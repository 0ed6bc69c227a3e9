//! The axum extractor for `VerifiedClaims` (feature `axum`).

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_jwt_signer::{
    Algorithm, JwtVerifierLayer, KeyRegistry, SigningKey, VerifiedClaims, Verifier,
};

use crate::support::jose::compact;
use crate::support::verifier::claims;

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
