//! Criterion benches: `JwksService` against a service that answers the same
//! bytes and headers from constants, and token verification per algorithm.
//!
//! `cargo bench --bench jwks_verify`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, service_fn};
use tower_jwt_signer::signer::Offload;
use tower_jwt_signer::verifier::JwkSet;
use tower_jwt_signer::{Algorithm, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry, Verifier};

fn ready_now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("not ready at once"),
    }
}

fn jwks(c: &mut Criterion) {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let mut service = JwksService::new(registry.clone());
    c.bench_function("JwksService", |b| {
        b.iter(|| {
            let request = Request::get(JWKS_PATH).body(()).unwrap();
            ready_now(Service::call(&mut service, request)).unwrap()
        })
    });

    let snapshot = registry.current();
    let (body, etag) = (snapshot.jwks_bytes().clone(), snapshot.etag().clone());
    let length = HeaderValue::from(body.len());
    let mut fixed = service_fn(move |_: Request<()>| {
        let mut response = Response::new(Full::new(body.clone()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, length.clone());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        headers.insert(header::ETAG, etag.clone());
        std::future::ready(Ok::<_, Infallible>(response))
    });
    c.bench_function("static-bytes service", |b| {
        b.iter(|| {
            let request = Request::get(JWKS_PATH).body(()).unwrap();
            ready_now(fixed.call(request)).unwrap()
        })
    });
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for alg in Algorithm::ALL {
        let registry = KeyRegistry::generate(alg).unwrap();
        let token = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = token.clone();
        let mut signer = JwtSignerLayer::builder(registry.clone())
            .offload(Offload::Inline)
            .build()
            .unwrap()
            .layer(service_fn(move |request: Request<()>| {
                *sink.lock().unwrap() = request.headers()[header::AUTHORIZATION]
                    .to_str()
                    .unwrap()
                    .trim_start_matches("Bearer ")
                    .to_owned();
                std::future::ready(Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())))
            }));
        ready_now(signer.call(Request::new(()))).unwrap();
        let token = token.lock().unwrap().clone();
        let keys =
            JwkSet::from_public_jwks(registry.current().keys().iter().map(|k| k.public_jwk()));
        let verifier = Verifier::new(registry.clone());
        group.bench_function(BenchmarkId::from_parameter(alg), |b| {
            b.iter(|| verifier.verify_with(black_box(&token), &keys).unwrap())
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = jwks, verify
}
criterion_main!(benches);
