//! Measures, for each of the ten algorithms, the signing layer against the
//! raw aws-lc-rs signature and the `jsonwebtoken` crate, and our verifier
//! against `jsonwebtoken::decode`; then a pipeline that signs nothing and a
//! static-bytes service. All in one process, the cases interleaved
//! (A B C ... A B C ...); prints a Markdown table of medians, one
//! `ratio NAME: VALUE` line per target and a table of the targets.
//!
//! ```text
//! cargo run --release --example bench_report            # about two minutes
//! cargo run --release --example bench_report -- --quick # about a minute
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
    name: String,
    run: Box<dyn FnMut(u64)>,
    /// Operations per batch, calibrated so a batch takes about the target.
    batch: u64,
    /// The cases of a group run one after the other in each round, and
    /// the ratios compare cases of the same group.
    group: usize,
    samples: Vec<f64>,
}

impl Case {
    fn new(name: String, run: impl FnMut(u64) + 'static) -> Self {
        Case {
            name,
            run: Box::new(run),
            batch: 1,
            group: 0,
            samples: Vec::new(),
        }
    }

    fn in_group(mut self, group: usize) -> Self {
        self.group = group;
        self
    }

    fn median(&self) -> f64 {
        median(self.samples.clone())
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
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
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .subject("alice")
        .offload(Offload::Inline)
}

/// One request through `layer` to the backend, `n` times.
fn layer_case(name: String, layer: JwtSignerLayer) -> Case {
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

/// The raw primitive: aws-lc-rs (the `aws-lc-rs` crate), the key parsed
/// once from our PKCS#8 export, the same signing input, producing the JWS
/// signature (ECDSA as fixed `r || s`, RSA-PSS with a salt as long as the
/// hash), one fresh `Vec` per signature as the layer makes.
fn raw_case(name: String, key: &SigningKey, signing_input: Vec<u8>) -> Case {
    use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
    enum Raw {
        Rsa(RsaKeyPair, &'static sig::RsaSignatureEncoding),
        Ecdsa(EcdsaKeyPair),
        Ed25519(Ed25519KeyPair),
    }
    let der = key.to_pkcs8_der().expect("export");
    let raw = match key.algorithm() {
        Algorithm::ES256 => Raw::Ecdsa(
            EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &der).expect("P-256"),
        ),
        Algorithm::ES384 => Raw::Ecdsa(
            EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, &der).expect("P-384"),
        ),
        Algorithm::ES512 => Raw::Ecdsa(
            EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P521_SHA512_FIXED_SIGNING, &der).expect("P-521"),
        ),
        Algorithm::EdDSA => {
            Raw::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).expect("Ed25519"))
        }
        alg => {
            let encoding = match alg {
                Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                _ => &sig::RSA_PSS_SHA512,
            };
            Raw::Rsa(RsaKeyPair::from_pkcs8(&der).expect("RSA"), encoding)
        }
    };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    Case::new(name, move |n| {
        for _ in 0..n {
            let signature = match &raw {
                Raw::Rsa(pair, encoding) => {
                    let mut out = vec![0; pair.public_modulus_len()];
                    pair.sign(*encoding, &rng, &signing_input, &mut out)
                        .expect("sign");
                    out
                }
                Raw::Ecdsa(pair) => pair
                    .sign(&rng, &signing_input)
                    .expect("sign")
                    .as_ref()
                    .to_vec(),
                Raw::Ed25519(pair) => pair.sign(&signing_input).as_ref().to_vec(),
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

/// The `jsonwebtoken` crate's name for `alg`; it has no ES512.
fn jsonwebtoken_alg(alg: Algorithm) -> Option<jsonwebtoken::Algorithm> {
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
        Algorithm::ES512 => return None,
    })
}

/// The `jsonwebtoken` crate making the same token the way a user would:
/// `EncodingKey` built once from the PKCS#8 PEM, `encode` per token with
/// the same header and claims. Its jti comes from a pool made up front, so
/// it pays nothing for randomness (we do).
fn jsonwebtoken_case(name: String, key: &SigningKey, alg: jsonwebtoken::Algorithm) -> Case {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use tower_jwt_signer::keys::KeyKind;
    let pem = key.to_pkcs8_pem().expect("export");
    let encoding_key = match key.algorithm().key_kind() {
        KeyKind::Rsa => EncodingKey::from_rsa_pem(pem.as_bytes()),
        KeyKind::Ed25519 => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(pem.as_bytes()),
    };
    let encoding_key = encoding_key.expect("jsonwebtoken takes the key");
    let mut header = Header::new(alg);
    header.kid = Some(key.kid().as_str().to_owned());
    let jtis: Vec<String> = (0..1024)
        .map(|_| {
            let mut bytes = [0u8; 16];
            aws_lc_rs::rand::fill(&mut bytes).expect("random");
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
                iss: ISSUER,
                aud: AUDIENCE,
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

const ISSUER: &str = "https://gateway.example";
const AUDIENCE: &str = "orders-api";

/// Our verifier on a token of `key`, the key set parsed once; it checks the
/// signature, `exp`, `nbf` (and `iat`), `iss` and `aud`.
/// A token of the layer's, made again once it is 20 s old: a full run takes
/// minutes, longer than a token lives. The rare new signature falls in one
/// batch of one round; the medians do not see it.
#[derive(Clone)]
struct FreshToken(std::rc::Rc<std::cell::RefCell<(Instant, String, JwtSignerLayer)>>);

impl FreshToken {
    fn new(layer: JwtSignerLayer) -> Self {
        let token = sample_token(&layer);
        FreshToken(std::rc::Rc::new(std::cell::RefCell::new((
            Instant::now(),
            token,
            layer,
        ))))
    }

    fn get(&self) -> String {
        let mut fresh = self.0.borrow_mut();
        if fresh.0.elapsed() > Duration::from_secs(20) {
            fresh.1 = sample_token(&fresh.2);
            fresh.0 = Instant::now();
        }
        fresh.1.clone()
    }
}

fn verify_case(name: String, registry: &KeyRegistry, token: FreshToken) -> Case {
    let snapshot = registry.current();
    let keys = JwkSet::from_public_jwks(snapshot.keys().iter().map(|k| k.public_jwk()));
    let verifier = Verifier::builder(registry.clone())
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()
        .expect("a valid verifier");
    Case::new(name, move |n| {
        let token = token.get();
        for _ in 0..n {
            black_box(verifier.verify_with(&token, &keys).expect("verifies"));
        }
    })
}

/// `jsonwebtoken::decode` on the same token, the `DecodingKey` built once
/// from the public JWK, with the same checks: signature, `exp`, `nbf`,
/// `iss`, `aud`; the claims come out as a JSON map, as ours do.
fn jsonwebtoken_verify_case(
    name: String,
    key: &SigningKey,
    alg: jsonwebtoken::Algorithm,
    token: FreshToken,
) -> Case {
    use jsonwebtoken::{DecodingKey, Validation, decode, jwk::Jwk};
    let jwk: Jwk = serde_json::from_value(key.public_jwk().to_value()).expect("a JWK");
    let decoding_key = DecodingKey::from_jwk(&jwk).expect("jsonwebtoken takes the key");
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    Case::new(name, move |n| {
        let token = token.get();
        for _ in 0..n {
            let data = decode::<serde_json::Map<String, serde_json::Value>>(
                &token,
                &decoding_key,
                &validation,
            )
            .expect("verifies");
            black_box(data);
        }
    })
}

/// One algorithm's cases and ratios.
struct PerAlgorithm {
    alg: Algorithm,
    key: SigningKey,
    registry: KeyRegistry,
    input: Vec<u8>,
    token: String,
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

    let per_alg: Vec<PerAlgorithm> = Algorithm::ALL
        .into_iter()
        .map(|alg| {
            let key = SigningKey::generate(alg).expect("key");
            let registry = KeyRegistry::new(key.clone());
            let token = sample_token(&layer(&registry));
            let cut = token.rfind('.').expect("a compact JWS");
            PerAlgorithm {
                alg,
                input: token.as_bytes()[..cut].to_vec(),
                token,
                key,
                registry,
            }
        })
        .collect();
    let es256 = &per_alg[6];
    assert_eq!(es256.alg, Algorithm::ES256);
    let es256_registry = es256.registry.clone();

    // The no-signing floor: the same pipeline, but the layer only inserts a
    // ready header value.
    let ready = HeaderValue::from_str(&format!("Bearer {}", es256.token)).expect("a header value");
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

    // Groups: each algorithm's signing cases, its verifying cases, the
    // floor and the reuse path, the two JWKS services.
    let mut cases = Vec::new();
    for (i, one) in per_alg.iter().enumerate() {
        let alg = one.alg;
        let (sign, verify) = (2 * i, 2 * i + 1);
        cases.push(
            raw_case(format!("{alg} raw aws-lc-rs"), &one.key, one.input.clone()).in_group(sign),
        );
        cases.push(layer_case(format!("{alg} JwtSigner"), layer(&one.registry)).in_group(sign));
        if let Some(theirs) = jsonwebtoken_alg(alg) {
            cases.push(
                jsonwebtoken_case(format!("{alg} jsonwebtoken"), &one.key, theirs).in_group(sign),
            );
        }
        let token = FreshToken::new(layer(&one.registry));
        cases.push(
            verify_case(format!("{alg} verify"), &one.registry, token.clone()).in_group(verify),
        );
        if let Some(theirs) = jsonwebtoken_alg(alg) {
            cases.push(
                jsonwebtoken_verify_case(
                    format!("{alg} jsonwebtoken verify"),
                    &one.key,
                    theirs,
                    token.clone(),
                )
                .in_group(verify),
            );
        }
    }
    let (floor_group, jwks_group) = (2 * per_alg.len(), 2 * per_alg.len() + 1);
    cases.extend([
        Case::new("no-signing floor".to_owned(), move |n| {
            for _ in 0..n {
                poll_ready(&mut floor);
                black_box(ready_now(floor.call(request())).expect("infallible"));
            }
        })
        .in_group(floor_group),
        layer_case(
            "ES256 JwtSigner, token reused".to_owned(),
            settings(&es256_registry)
                .reuse_tokens(TokenReuse::new())
                .build()
                .expect("valid settings"),
        )
        .in_group(floor_group),
        Case::new("JwksService".to_owned(), move |n| {
            for _ in 0..n {
                let request = Request::get(JWKS_PATH).body(()).expect("request");
                let response = ready_now(Service::call(&mut jwks, request)).expect("infallible");
                black_box(response);
            }
        })
        .in_group(jwks_group),
        Case::new("static-bytes service".to_owned(), move |n| {
            for _ in 0..n {
                let request = Request::get(JWKS_PATH).body(()).expect("request");
                black_box(ready_now(fixed.call(request)).expect("infallible"));
            }
        })
        .in_group(jwks_group),
    ]);

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
    // Interleaved rounds: each round runs every group, and within a group
    // its cases one right after the other, so that the cases a ratio
    // compares share the machine's load of that moment. The order of the
    // groups and of the cases within each group rotates each round.
    let groups = jwks_group + 1;
    for round in 0..rounds {
        for g in 0..groups {
            let group = (g + round) % groups;
            let members: Vec<usize> = (0..cases.len())
                .filter(|&i| cases[i].group == group)
                .collect();
            for k in 0..members.len() {
                let case = &mut cases[members[(k + round) % members.len()]];
                let start = Instant::now();
                (case.run)(case.batch);
                let ns = start.elapsed().as_nanos() as f64 / case.batch as f64;
                case.samples.push(ns);
            }
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
    let case = |name: &str| {
        cases
            .iter()
            .find(|c| c.name == name)
            .expect("a measured case")
    };
    // Each ratio is (ops/s of the first) / (ops/s of the second): the
    // median over the rounds of the ratio within each round (the two ran
    // back to back). Above 1 means the first is faster.
    let ratio = |fast: &str, slow: &str| {
        let (fast, slow) = (case(fast), case(slow));
        assert_eq!(fast.group, slow.group, "a ratio compares one group");
        median(
            fast.samples
                .iter()
                .zip(&slow.samples)
                .map(|(fast, slow)| slow / fast)
                .collect(),
        )
    };
    let mut ratios: Vec<(String, f64, f64)> = Vec::new();
    for one in &per_alg {
        let alg = one.alg;
        let lower = alg.as_str().to_ascii_lowercase();
        let fast_enough = if alg.is_rsa() { 0.95 } else { 0.90 };
        ratios.push((
            format!("{lower}_layer_vs_raw"),
            ratio(&format!("{alg} JwtSigner"), &format!("{alg} raw aws-lc-rs")),
            fast_enough,
        ));
        if jsonwebtoken_alg(alg).is_some() {
            ratios.push((
                format!("{lower}_layer_vs_jsonwebtoken"),
                ratio(&format!("{alg} JwtSigner"), &format!("{alg} jsonwebtoken")),
                1.15,
            ));
            ratios.push((
                format!("{lower}_verify_vs_jsonwebtoken"),
                ratio(
                    &format!("{alg} verify"),
                    &format!("{alg} jsonwebtoken verify"),
                ),
                1.0,
            ));
        }
    }
    ratios.push((
        "reuse_vs_floor".to_owned(),
        ratio("ES256 JwtSigner, token reused", "no-signing floor"),
        0.25,
    ));
    ratios.push((
        "jwks_vs_static".to_owned(),
        ratio("JwksService", "static-bytes service"),
        0.5,
    ));
    for (name, value, _) in &ratios {
        println!("ratio {name}: {value:.3}");
    }
    println!();
    println!("| ratio | target | measured | met |");
    println!("|---|---:|---:|---|");
    for (name, value, target) in &ratios {
        let met = if value >= target { "yes" } else { "**no**" };
        println!("| `{name}` | >= {target:.2} | {value:.3} | {met} |");
    }
}
