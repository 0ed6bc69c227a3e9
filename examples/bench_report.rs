//! Measures the signing layer against the raw signature, the `jsonwebtoken`
//! crate, a pipeline that signs nothing and a static-bytes service, all in
//! one process, the cases interleaved (A B C ... A B C ...), and prints a
//! Markdown table of medians and one `ratio NAME: VALUE` line per target.
//!
//! ```text
//! cargo run --release --example bench_report            # about a minute
//! cargo run --release --example bench_report -- --quick # under 30 s
//! ```
//!
//! Every case makes the same token: header `{"alg","typ","kid"}`, claims
//! `iat nbf exp jti iss aud sub`. See `BENCHMARKS.md` for what each case and
//! ratio means.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;
use serde::Serialize;
use tower::util::MapRequestLayer;
use tower::{Layer, Service, service_fn};
use tower_jwt_signer::signer::{JwtSignerLayerBuilder, Offload, TokenReuse};
use tower_jwt_signer::verifier::JwkSet;
use tower_jwt_signer::{
    Algorithm, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry, SigningKey, Verifier,
};

/// One measured case: runs `n` operations.
struct Case {
    name: &'static str,
    run: Box<dyn FnMut(u64)>,
    /// Operations per batch, calibrated so a batch takes about the target.
    batch: u64,
    samples: Vec<f64>,
}

impl Case {
    fn new(name: &'static str, run: impl FnMut(u64) + 'static) -> Self {
        Case {
            name,
            run: Box::new(run),
            batch: 1,
            samples: Vec::new(),
        }
    }

    fn median(&self) -> f64 {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        }
    }
}

/// Polls a future that is expected to be ready at once (every service here
/// answers without waiting).
fn ready_now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the case's future was not ready at once"),
    }
}

fn poll_ready<S: Service<R>, R>(service: &mut S) {
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("the case's service was not ready"),
    }
}

fn request() -> Request<()> {
    Request::get("/orders").body(()).expect("a valid request")
}

/// The inner service of every pipeline: looks at the header, answers.
fn backend(request: Request<()>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
    black_box(request.headers().get(header::AUTHORIZATION).is_some());
    std::future::ready(Ok(Response::new(Full::default())))
}

/// The signing layer every signing case uses: the same claims, signed
/// inline (offloading is measured apart, see `examples/load.rs`).
fn layer(registry: &KeyRegistry) -> JwtSignerLayer {
    settings(registry).build().expect("valid claims")
}

/// The settings of [`layer`], to add to.
fn settings(registry: &KeyRegistry) -> JwtSignerLayerBuilder {
    JwtSignerLayer::builder(registry.clone())
        .issuer("https://gateway.example")
        .audience("orders-api")
        .subject("alice")
        .offload(Offload::Inline)
}

/// One request through `layer` to the backend, `n` times.
fn layer_case(name: &'static str, layer: JwtSignerLayer) -> Case {
    let mut service = layer.layer(service_fn(backend));
    Case::new(name, move |n| {
        for _ in 0..n {
            poll_ready(&mut service);
            let response = ready_now(service.call(request())).expect("infallible");
            assert!(response.status().is_success());
            black_box(response);
        }
    })
}

/// A token the layer makes, to take its signing input.
fn sample_token(layer: &JwtSignerLayer) -> String {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = seen.clone();
    let mut service = layer.layer(service_fn(move |request: Request<()>| {
        let value = request.headers()[header::AUTHORIZATION]
            .to_str()
            .expect("ASCII")
            .to_owned();
        *sink.lock().expect("not poisoned") = value;
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())))
    }));
    poll_ready(&mut service);
    ready_now(service.call(request())).expect("infallible");
    let value = seen.lock().expect("not poisoned").clone();
    value.strip_prefix("Bearer ").expect("Bearer").to_owned()
}

/// The raw primitive: OpenSSL (the `openssl` crate), the key parsed once,
/// the same signing input, producing the JWS signature (ECDSA as `r || s`).
/// It is the fastest of the OpenSSL paths measured (see `BENCHMARKS.md`).
fn raw_case(name: &'static str, key: &SigningKey, signing_input: Vec<u8>) -> Case {
    let pkey: PKey<Private> =
        PKey::private_key_from_pkcs8(&key.to_pkcs8_der().expect("export")).expect("parse");
    let alg = key.algorithm();
    let ec = (alg == Algorithm::ES256).then(|| pkey.ec_key().expect("an EC key"));
    Case::new(name, move |n| {
        for _ in 0..n {
            let signature = match alg {
                Algorithm::ES256 => {
                    let digest = openssl::sha::sha256(&signing_input);
                    let sig = EcdsaSig::sign(&digest, ec.as_ref().expect("EC")).expect("sign");
                    let mut out = sig.r().to_vec_padded(32).expect("r");
                    out.extend_from_slice(&sig.s().to_vec_padded(32).expect("s"));
                    out
                }
                Algorithm::EdDSA => Signer::new_without_digest(&pkey)
                    .and_then(|mut s| s.sign_oneshot_to_vec(&signing_input))
                    .expect("sign"),
                _ => Signer::new(MessageDigest::sha256(), &pkey)
                    .and_then(|mut s| s.sign_oneshot_to_vec(&signing_input))
                    .expect("sign"),
            };
            black_box(signature);
        }
    })
}

#[derive(Serialize)]
struct Claims<'a> {
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
}

/// The `jsonwebtoken` crate making the same token the way a user would:
/// `EncodingKey` built once from the PKCS#8 PEM, `encode` per token with
/// the same header and claims. Its jti comes from a pool made up front, so
/// it pays nothing for randomness (we do).
fn jsonwebtoken_case(name: &'static str, key: &SigningKey) -> Case {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let pem = key.to_pkcs8_pem().expect("export");
    let (alg, encoding_key) = match key.algorithm() {
        Algorithm::ES256 => (
            jsonwebtoken::Algorithm::ES256,
            EncodingKey::from_ec_pem(pem.as_bytes()),
        ),
        Algorithm::EdDSA => (
            jsonwebtoken::Algorithm::EdDSA,
            EncodingKey::from_ed_pem(pem.as_bytes()),
        ),
        Algorithm::RS256 => (
            jsonwebtoken::Algorithm::RS256,
            EncodingKey::from_rsa_pem(pem.as_bytes()),
        ),
        other => panic!("no jsonwebtoken case for {other}"),
    };
    let encoding_key = encoding_key.expect("jsonwebtoken takes the key");
    let mut header = Header::new(alg);
    header.kid = Some(key.kid().as_str().to_owned());
    let jtis: Vec<String> = (0..1024)
        .map(|_| {
            let mut bytes = [0u8; 16];
            openssl::rand::rand_bytes(&mut bytes).expect("random");
            base64_url(&bytes)
        })
        .collect();
    let mut next = 0;
    Case::new(name, move |n| {
        for _ in 0..n {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after 1970")
                .as_secs();
            let claims = Claims {
                iat: now,
                nbf: now,
                exp: now + 60,
                jti: &jtis[next % jtis.len()],
                iss: "https://gateway.example",
                aud: "orders-api",
                sub: "alice",
            };
            next += 1;
            black_box(encode(&header, &claims, &encoding_key).expect("encode"));
        }
    })
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Our verifier on a token of `key`, the key set parsed once.
fn verify_case(name: &'static str, registry: &KeyRegistry, token: String) -> Case {
    let snapshot = registry.current();
    let keys = JwkSet::from_public_jwks(snapshot.keys().iter().map(|k| k.public_jwk()));
    let verifier = Verifier::new(registry.clone());
    Case::new(name, move |n| {
        for _ in 0..n {
            black_box(verifier.verify_with(&token, &keys).expect("verifies"));
        }
    })
}

struct Options {
    quick: bool,
}

fn main() {
    let mut options = Options { quick: false };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "-h" | "--help" => {
                println!("usage: bench_report [--quick]");
                return;
            }
            other => {
                eprintln!("unknown argument {other:?}; usage: bench_report [--quick]");
                std::process::exit(2);
            }
        }
    }
    let (rounds, batch_time) = if options.quick {
        (25, Duration::from_millis(20))
    } else {
        (61, Duration::from_millis(40))
    };
    let started = Instant::now();

    let es256 = SigningKey::generate(Algorithm::ES256).expect("key");
    let eddsa = SigningKey::generate(Algorithm::EdDSA).expect("key");
    let rs256 = SigningKey::generate(Algorithm::RS256).expect("key");
    let registry = |key: &SigningKey| KeyRegistry::new(key.clone());
    let (es256_registry, eddsa_registry, rs256_registry) =
        (registry(&es256), registry(&eddsa), registry(&rs256));

    let input = |registry: &KeyRegistry| {
        let token = sample_token(&layer(registry));
        let cut = token.rfind('.').expect("a compact JWS");
        (token.as_bytes()[..cut].to_vec(), token)
    };
    let (es256_input, es256_token) = input(&es256_registry);
    let (eddsa_input, eddsa_token) = input(&eddsa_registry);
    let (rs256_input, rs256_token) = input(&rs256_registry);

    // The no-signing floor: the same pipeline, but the layer only inserts a
    // ready header value.
    let ready = HeaderValue::from_str(&format!("Bearer {es256_token}")).expect("a header value");
    let mut floor = MapRequestLayer::new(move |mut request: Request<()>| {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, ready.clone());
        request
    })
    .layer(service_fn(backend));

    // JwksService against a service answering the same bytes and headers
    // from constants.
    let jwks_registry = es256_registry.clone();
    let mut jwks = JwksService::new(jwks_registry.clone());
    let snapshot = jwks_registry.current();
    let (body, etag) = (snapshot.jwks_bytes().clone(), snapshot.etag().clone());
    let content_length = HeaderValue::from(body.len());
    let mut fixed = service_fn(move |_: Request<()>| {
        let mut response = Response::new(Full::new(body.clone()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, content_length.clone());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        headers.insert(header::ETAG, etag.clone());
        std::future::ready(Ok::<_, Infallible>(response))
    });

    let mut cases = vec![
        raw_case("ES256 raw OpenSSL", &es256, es256_input),
        layer_case("ES256 JwtSigner", layer(&es256_registry)),
        jsonwebtoken_case("ES256 jsonwebtoken", &es256),
        raw_case("EdDSA raw OpenSSL", &eddsa, eddsa_input),
        layer_case("EdDSA JwtSigner", layer(&eddsa_registry)),
        jsonwebtoken_case("EdDSA jsonwebtoken", &eddsa),
        raw_case("RS256 raw OpenSSL", &rs256, rs256_input),
        layer_case("RS256 JwtSigner", layer(&rs256_registry)),
        jsonwebtoken_case("RS256 jsonwebtoken", &rs256),
        Case::new("no-signing floor", move |n| {
            for _ in 0..n {
                poll_ready(&mut floor);
                black_box(ready_now(floor.call(request())).expect("infallible"));
            }
        }),
        layer_case(
            "ES256 JwtSigner, token reused",
            settings(&es256_registry)
                .reuse_tokens(TokenReuse::new())
                .build()
                .expect("valid settings"),
        ),
        Case::new("JwksService", move |n| {
            for _ in 0..n {
                let request = Request::get(JWKS_PATH).body(()).expect("request");
                let response = ready_now(Service::call(&mut jwks, request)).expect("infallible");
                black_box(response);
            }
        }),
        Case::new("static-bytes service", move |n| {
            for _ in 0..n {
                let request = Request::get(JWKS_PATH).body(()).expect("request");
                black_box(ready_now(fixed.call(request)).expect("infallible"));
            }
        }),
        verify_case("ES256 verify", &es256_registry, es256_token),
        verify_case("EdDSA verify", &eddsa_registry, eddsa_token),
        verify_case("RS256 verify", &rs256_registry, rs256_token),
    ];

    // Warm up (first calls pay for lazy initialisation, in jsonwebtoken's
    // backend for one), then calibrate: a batch lasts about `batch_time`.
    for case in &mut cases {
        let warm_up = Instant::now();
        while warm_up.elapsed() < batch_time * 2 {
            (case.run)(1);
        }
        let mut n = 1;
        loop {
            let start = Instant::now();
            (case.run)(n);
            let elapsed = start.elapsed();
            if elapsed >= batch_time / 2 || n >= 1 << 24 {
                let per_op = elapsed.as_secs_f64() / n as f64;
                case.batch = ((batch_time.as_secs_f64() / per_op) as u64).max(1);
                break;
            }
            n *= 2;
        }
    }
    // Interleaved rounds; the order rotates each round so no case always
    // runs right after the same neighbour.
    let count = cases.len();
    for round in 0..rounds {
        for i in 0..count {
            let case = &mut cases[(i + round) % count];
            let start = Instant::now();
            (case.run)(case.batch);
            let ns = start.elapsed().as_nanos() as f64 / case.batch as f64;
            case.samples.push(ns);
        }
    }

    eprintln!(
        "{} cases, {rounds} interleaved rounds, {:.1} s",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    println!("| case | ops/s | ns/op |");
    println!("|---|---:|---:|");
    for case in &cases {
        let ns = case.median();
        println!("| {} | {:.0} | {:.0} |", case.name, 1e9 / ns, ns);
    }
    println!();
    let median = |name: &str| {
        cases
            .iter()
            .find(|c| c.name == name)
            .map(Case::median)
            .expect("a measured case")
    };
    // Each ratio is (ops/s of the first) / (ops/s of the second), from the
    // medians: above 1 means the first is faster.
    let ratio = |fast: &str, slow: &str| median(slow) / median(fast);
    let ratios = [
        (
            "es256_layer_vs_raw",
            ratio("ES256 JwtSigner", "ES256 raw OpenSSL"),
        ),
        (
            "eddsa_layer_vs_raw",
            ratio("EdDSA JwtSigner", "EdDSA raw OpenSSL"),
        ),
        (
            "rs256_layer_vs_raw",
            ratio("RS256 JwtSigner", "RS256 raw OpenSSL"),
        ),
        (
            "es256_layer_vs_jsonwebtoken",
            ratio("ES256 JwtSigner", "ES256 jsonwebtoken"),
        ),
        (
            "rs256_layer_vs_jsonwebtoken",
            ratio("RS256 JwtSigner", "RS256 jsonwebtoken"),
        ),
        (
            "reuse_vs_floor",
            ratio("ES256 JwtSigner, token reused", "no-signing floor"),
        ),
        (
            "jwks_vs_static",
            ratio("JwksService", "static-bytes service"),
        ),
    ];
    for (name, value) in ratios {
        println!("ratio {name}: {value:.3}");
    }
}
