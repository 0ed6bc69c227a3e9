//! The verifier's and `RemoteJwks`'s metrics (feature `metrics`), read from
//! a Prometheus recorder installed for this test's thread only (a local
//! recorder: the other tests of the binary record elsewhere).

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::{Layer, ServiceExt, service_fn};
use tower_jwt_signer::{
    Algorithm, JwksService, JwtVerifierLayer, KeyRegistry, RemoteJwks, SigningKey, Verifier,
};

use crate::support::verifier::{JwksServer, Mode, claims, header_of, now, sign_with_header};

/// The value of the sample `name` (labels included, as printed).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn refusals_by_reason_and_remote_fetches_are_counted() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let key = SigningKey::generate(Algorithm::ES256).unwrap();
            let registry = KeyRegistry::new(key.clone());
            let server = JwksServer::start(Mode::Jwks(JwksService::new(registry))).await;
            let remote = RemoteJwks::new(server.url()).unwrap();
            remote.prefetch().await.unwrap();
            let dead = RemoteJwks::new("http://127.0.0.1:1/jwks").unwrap();
            dead.prefetch().await.unwrap_err();

            let verifier = Verifier::new(remote);
            let backend = service_fn(|_: Request<Empty<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            });
            let service = JwtVerifierLayer::new(verifier).layer(backend);
            let send = |authorization: Option<String>| {
                let mut request = Request::get("/");
                if let Some(value) = authorization {
                    request = request.header("authorization", value);
                }
                service.clone().oneshot(request.body(Empty::new()).unwrap())
            };
            let mut expired = claims();
            expired["exp"] = (now() - 3600).into();
            for (authorization, status) in [
                (None, StatusCode::UNAUTHORIZED),
                (Some("Bearer a.b".to_owned()), StatusCode::UNAUTHORIZED),
                (
                    Some(format!(
                        "Bearer {}",
                        sign_with_header(&key, &header_of(&key), &expired)
                    )),
                    StatusCode::UNAUTHORIZED,
                ),
                (
                    Some(format!(
                        "Bearer {}",
                        sign_with_header(&key, &header_of(&key), &claims())
                    )),
                    StatusCode::OK,
                ),
            ] {
                assert_eq!(send(authorization).await.unwrap().status(), status);
            }
        });
    });
    let text = handle.render();
    for (name, value) in [
        ("tjs_verifier_refusals_total{reason=\"missing_token\"}", 1.0),
        ("tjs_verifier_refusals_total{reason=\"malformed\"}", 1.0),
        ("tjs_verifier_refusals_total{reason=\"expired\"}", 1.0),
        ("tjs_remote_jwks_fetches_total", 2.0),
        ("tjs_remote_jwks_fetch_failures_total", 1.0),
        ("tjs_jwks_requests_total", 1.0),
    ] {
        assert_eq!(sample(&text, name), Some(value), "{name}: {text}");
    }
    assert_eq!(
        text.matches("tjs_verifier_refusals_total{").count(),
        3,
        "the valid token is not a refusal: {text}"
    );
}
