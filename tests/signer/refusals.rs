//! The signer's own answers carry their typed cause (`signer::Refusal`) in
//! the response extensions: an outer `tower::util::MapResponseLayer`
//! re-renders each of them as an RFC 9457 problem document, and leaves the
//! backend's answers alone.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::util::MapResponseLayer;
use tower::{ServiceBuilder, ServiceExt};
use tower_jwt_signer::keys::{PublicJwk, SignError, SigningBackend};
use tower_jwt_signer::signer::{
    ClaimsRejection, ExistingToken, Refusal, RequestClaims, ResponseBody,
};
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry, SigningKey};

use crate::support::signer::{Seen, recording};

/// The outer layer: a refusal of the signer becomes
/// `application/problem+json` built from the extension alone (the signer's
/// JSON body is dropped); any other response goes on as it came.
fn problem(
    response: Response<ResponseBody<Full<Bytes>>>,
) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    let Some(refusal) = response.extensions().get::<Refusal>().cloned() else {
        return response.map(BodyExt::boxed_unsync);
    };
    let document = json!({
        "type": format!("urn:gateway:{}", refusal.error_code()),
        "title": refusal.reason(),
        "status": refusal.status().as_u16(),
    });
    Response::builder()
        .status(refusal.status())
        .header(header::CONTENT_TYPE, "application/problem+json")
        .body(Full::new(Bytes::from(document.to_string())).boxed_unsync())
        .unwrap()
}

/// A key backend that is down.
#[derive(Debug)]
struct BrokenHsm(PublicJwk);

impl SigningBackend for BrokenHsm {
    fn public_jwk(&self) -> &PublicJwk {
        &self.0
    }
    fn sign(&self, _: &[u8]) -> Result<Vec<u8>, SignError> {
        Err(SignError::Other("HSM unreachable at 10.0.0.9".into()))
    }
}

/// Sends `request` through the problem renderer and `signer` to a recording
/// backend; the answer's status, content type and body, and how many
/// requests the backend saw.
async fn send(signer: JwtSignerLayer, request: Request<()>) -> (StatusCode, String, Value, usize) {
    let seen = Seen::default();
    let service = ServiceBuilder::new()
        .layer(MapResponseLayer::new(problem))
        .layer(signer)
        .service(recording(&seen));
    let response = tokio::time::timeout(Duration::from_secs(10), service.oneshot(request))
        .await
        .expect("bounded")
        .expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map_or("", |v| v.to_str().unwrap())
        .to_owned();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, content_type, body, seen.count())
}

#[tokio::test]
async fn an_outer_layer_renders_every_refusal_from_its_cause() {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let signer = JwtSignerLayer::builder(registry)
        .request_claims(
            |parts| match parts.headers.get("x-case").map(|v| v.as_bytes()) {
                Some(b"401") => Err(ClaimsRejection::unauthorized("sign in first")),
                Some(b"403") => Err(ClaimsRejection::forbidden("tenant suspended")),
                Some(b"500") => Err(ClaimsRejection::internal("user store down at 10.0.0.7")),
                _ => Ok(RequestClaims::new()),
            },
        )
        .existing_token(ExistingToken::Reject)
        .template_claim("tenant", "${req.headers.x-tenant:public}")
        .template_claim("priority", "${number:req.query.priority:0}")
        .max_token_len(1024)
        .build()
        .unwrap();
    let get = |uri: &str, header: Option<(&str, String)>| {
        let mut request = Request::get(uri);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        request.body(()).unwrap()
    };
    let cases = [
        (
            get("/", Some(("authorization", "Bearer c".into()))),
            400,
            "token_present",
        ),
        (get("/?priority=high", None), 400, "claim_unavailable"),
        (
            get("/", Some(("x-tenant", "t".repeat(2000)))),
            400,
            "token_too_large",
        ),
        (
            get("/", Some(("x-case", "401".into()))),
            401,
            "unauthorized",
        ),
        (get("/", Some(("x-case", "403".into()))), 403, "forbidden"),
        (
            get("/", Some(("x-case", "500".into()))),
            500,
            "claims_failed",
        ),
    ];
    for (request, status, code) in cases {
        let (got, content_type, body, forwarded) = send(signer.clone(), request).await;
        assert_eq!(got.as_u16(), status, "{code}: {body}");
        assert_eq!(content_type, "application/problem+json", "{code}");
        assert_eq!(body["type"], format!("urn:gateway:{code}"));
        assert_eq!(body["status"], status);
        assert!(
            body["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{body}"
        );
        assert!(!body.to_string().contains("10.0.0.7"), "{body}");
        assert_eq!(forwarded, 0, "{code}: a refused request is not forwarded");
    }

    // A forwarded request: the backend's answer, untouched.
    let (status, content_type, body, forwarded) = send(signer, get("/", None)).await;
    assert_eq!((status, forwarded), (StatusCode::OK, 1));
    assert_eq!(content_type, "");
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn refusals_without_a_key_or_a_signature_carry_their_cause_too() {
    // No active key: 503.
    let (status, _, body, forwarded) =
        send(JwtSignerLayer::new(KeyRegistry::empty()), Request::new(())).await;
    assert_eq!((status.as_u16(), forwarded), (503, 0));
    assert_eq!(body["type"], "urn:gateway:no_signing_key");

    // A failing key backend, signing on the calling task (ES256) and on the
    // signer's threads (RS256): 500, without the backend's words.
    for alg in [Algorithm::ES256, Algorithm::RS256] {
        let key = SigningKey::generate(alg).unwrap();
        let registry = KeyRegistry::new(BrokenHsm(key.public_jwk().clone()));
        let (status, _, body, forwarded) =
            send(JwtSignerLayer::new(registry), Request::new(())).await;
        assert_eq!((status.as_u16(), forwarded), (500, 0), "{alg}");
        assert_eq!(body["type"], "urn:gateway:signing_failed", "{alg}");
        assert!(!body.to_string().contains("10.0.0.9"), "{body}");
    }
}
