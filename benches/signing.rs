//! Criterion benches: one signed request through `JwtSigner` per algorithm
//! (in process, a `service_fn` inner service, no network), the raw aws-lc-rs
//! signature on the same signing input (key parsed once), the `jsonwebtoken` crate making the
//! same token, the no-signing floor and the token-reuse path.
//!
//! `cargo bench --bench signing`. `examples/bench_report.rs` runs the
//! headline cases interleaved and prints the ratios.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use tower::util::MapRequestLayer;
use tower::{Layer, Service, service_fn};
use tower_jwt_signer::signer::{JwtSignerLayerBuilder, Offload, TokenReuse};
use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry, SigningKey};

fn ready_now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("not ready at once"),
    }
}

fn backend(request: Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    black_box(request.headers().get(header::AUTHORIZATION).is_some());
    std::future::ready(Ok(Response::new(Full::default())))
}

fn request() -> Request<()> {
    Request::get("/orders").body(()).unwrap()
}

fn layer(registry: &KeyRegistry) -> JwtSignerLayer {
    settings(registry).build().unwrap()
}

/// The settings every signing case uses.
fn settings(registry: &KeyRegistry) -> JwtSignerLayerBuilder {
    JwtSignerLayer::builder(registry.clone())
        .issuer("https://gateway.example")
        .audience("orders-api")
        .subject("alice")
        .offload(Offload::Inline)
}

/// One request through `layer`, returning the token it carried.
fn one_token(layer: &JwtSignerLayer) -> String {
    let token = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = token.clone();
    let mut service = layer.layer(service_fn(move |request: Request<()>| {
        *sink.lock().unwrap() = request.headers()[header::AUTHORIZATION]
            .to_str()
            .unwrap()
            .trim_start_matches("Bearer ")
            .to_owned();
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())))
    }));
    ready_now(service.call(request())).unwrap();
    token.lock().unwrap().clone()
}

/// A key pair parsed once by aws-lc-rs, as the raw baseline.
enum Raw {
    Rsa(
        aws_lc_rs::signature::RsaKeyPair,
        &'static aws_lc_rs::signature::RsaSignatureEncoding,
    ),
    Ecdsa(aws_lc_rs::signature::EcdsaKeyPair),
    Ed25519(aws_lc_rs::signature::Ed25519KeyPair),
}

impl Raw {
    fn new(key: &SigningKey) -> Self {
        use aws_lc_rs::signature as sig;
        let der = key.to_pkcs8_der().unwrap();
        let ecdsa = |alg| Raw::Ecdsa(sig::EcdsaKeyPair::from_pkcs8(alg, &der).unwrap());
        let rsa = |encoding| Raw::Rsa(sig::RsaKeyPair::from_pkcs8(&der).unwrap(), encoding);
        match key.algorithm() {
            Algorithm::RS256 => rsa(&sig::RSA_PKCS1_SHA256),
            Algorithm::RS384 => rsa(&sig::RSA_PKCS1_SHA384),
            Algorithm::RS512 => rsa(&sig::RSA_PKCS1_SHA512),
            Algorithm::PS256 => rsa(&sig::RSA_PSS_SHA256),
            Algorithm::PS384 => rsa(&sig::RSA_PSS_SHA384),
            Algorithm::PS512 => rsa(&sig::RSA_PSS_SHA512),
            Algorithm::ES256 => ecdsa(&sig::ECDSA_P256_SHA256_FIXED_SIGNING),
            Algorithm::ES384 => ecdsa(&sig::ECDSA_P384_SHA384_FIXED_SIGNING),
            Algorithm::ES512 => ecdsa(&sig::ECDSA_P521_SHA512_FIXED_SIGNING),
            Algorithm::EdDSA => {
                Raw::Ed25519(sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap())
            }
        }
    }

    /// The JWS signature (ECDSA as fixed `r || s`).
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Raw::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(*encoding, &rng, input, &mut out).unwrap();
                out
            }
            Raw::Ecdsa(pair) => pair.sign(&rng, input).unwrap().as_ref().to_vec(),
            Raw::Ed25519(pair) => pair.sign(input).as_ref().to_vec(),
        }
    }
}

fn theirs(alg: Algorithm) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm as J;
    Some(match alg {
        Algorithm::RS256 => J::RS256,
        Algorithm::RS384 => J::RS384,
        Algorithm::RS512 => J::RS512,
        Algorithm::PS256 => J::PS256,
        Algorithm::PS384 => J::PS384,
        Algorithm::PS512 => J::PS512,
        Algorithm::ES256 => J::ES256,
        Algorithm::ES384 => J::ES384,
        Algorithm::EdDSA => J::EdDSA,
        _ => return None,
    })
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
}

fn signing(c: &mut Criterion) {
    let mut group = c.benchmark_group("sign");
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).unwrap();
        let registry = KeyRegistry::new(key.clone());
        let layer = layer(&registry);

        let mut service = layer.layer(service_fn(backend));
        group.bench_function(BenchmarkId::new("JwtSigner", alg), |b| {
            b.iter(|| ready_now(service.call(request())).unwrap())
        });

        let token = one_token(&layer);
        let input = token.as_bytes()[..token.rfind('.').unwrap()].to_vec();
        let raw = Raw::new(&key);
        group.bench_function(BenchmarkId::new("raw aws-lc-rs", alg), |b| {
            b.iter(|| raw.sign(black_box(&input)))
        });

        if let Some(their_alg) = theirs(alg) {
            use jsonwebtoken::{EncodingKey, Header, encode};
            let pem = key.to_pkcs8_pem().unwrap();
            let encoding_key = match alg.key_kind() {
                tower_jwt_signer::keys::KeyKind::Rsa => EncodingKey::from_rsa_pem(pem.as_bytes()),
                tower_jwt_signer::keys::KeyKind::Ed25519 => {
                    EncodingKey::from_ed_pem(pem.as_bytes())
                }
                _ => EncodingKey::from_ec_pem(pem.as_bytes()),
            }
            .unwrap();
            let mut header = Header::new(their_alg);
            header.kid = Some(key.kid().as_str().to_owned());
            group.bench_function(BenchmarkId::new("jsonwebtoken", alg), |b| {
                b.iter(|| {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let claims = Claims {
                        iat: now,
                        nbf: now,
                        exp: now + 60,
                        jti: "Vb2ZJ0n1q3Jm1cPpY6cQbQ",
                        iss: "https://gateway.example",
                        aud: "orders-api",
                        sub: "alice",
                    };
                    encode(&header, &claims, &encoding_key).unwrap()
                })
            });
        }
    }
    group.finish();
}

fn floor_and_reuse(c: &mut Criterion) {
    let registry = KeyRegistry::generate(Algorithm::ES256).unwrap();
    let token = one_token(&layer(&registry));
    let ready = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    let mut floor = MapRequestLayer::new(move |mut request: Request<()>| {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, ready.clone());
        request
    })
    .layer(service_fn(backend));
    c.bench_function("no-signing floor", |b| {
        b.iter(|| ready_now(floor.call(request())).unwrap())
    });

    let mut reused = settings(&registry)
        .reuse_tokens(TokenReuse::new())
        .build()
        .unwrap()
        .layer(service_fn(backend));
    c.bench_function("ES256 JwtSigner, token reused", |b| {
        b.iter(|| ready_now(reused.call(request())).unwrap())
    });
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
    targets = signing, floor_and_reuse
}
criterion_main!(benches);
