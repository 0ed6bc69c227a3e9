//! Issue 16, the verifier's findings, end to end: a JWKS served on
//! 127.0.0.1, `RemoteJwks` and `JwtVerifierLayer` in front of a handler
//! that counts its calls.
//!
//! * Keys anyone can forge for (small-order Ed25519 points, an RSA modulus
//!   that is prime or has a small factor) are skipped: a token forged for
//!   them, whose signature OpenSSL itself accepts for that key, gets 401
//!   (503 when the set holds nothing else), never 200.
//! * A large JWKS is parsed on a blocking thread, not on the runtime's
//!   worker.
//!
//! Helpers are local to this file (the tests layout is being moved).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use openssl::bn::{BigNum, BigNumContext};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey};
use openssl::rsa::{Padding, Rsa};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt, service_fn};
use tower_jwt_signer::{Algorithm, JwtVerifierLayer, RemoteJwks, SigningKey, Verifier};

use crate::support::logs::logs;

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A server on 127.0.0.1 that answers every request with `body` as JSON.
struct JwksServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    async fn start(body: Bytes) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let body = body.clone();
                let service = hyper::service::service_fn(move |_: Request<_>| {
                    let body = body.clone();
                    async move {
                        let mut response = Response::new(Full::new(body));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer { addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }
}

/// Sends `token` through `JwtVerifierLayer` (keys from `remote`) to a
/// handler that counts its calls; returns the status and the count.
async fn status_for(remote: &RemoteJwks, token: &str) -> (StatusCode, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let backend =
        JwtVerifierLayer::new(Verifier::new(remote.clone())).layer(service_fn(move |_request| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::<Bytes>::default())) }
        }));
    let request = Request::builder()
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = backend.oneshot(request).await.unwrap();
    (response.status(), calls.load(Ordering::SeqCst))
}

fn signing_input(alg: &str, kid: &str, nonce: u32) -> String {
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    let claims = json!({"sub": "admin", "iat": now(), "exp": now() + 600, "jti": nonce});
    format!(
        "{}.{}",
        b64(serde_json::to_vec(&header).unwrap()),
        b64(serde_json::to_vec(&claims).unwrap())
    )
}

/// A good ES256 key, so that a set of weak keys is not empty.
fn good_key() -> SigningKey {
    SigningKey::generate(Algorithm::ES256).unwrap()
}

// ---------------------------------------------------------------- Ed25519

/// The y coordinates (little endian, sign bit clear) of the eight
/// small-order points of edwards25519, with the non-canonical y >= p: the
/// order-4 points (y = 0, and y = p), the identity (y = 1, and y = p + 1),
/// the two y of the four order-8 points, the order-2 point (y = p - 1).
fn small_order_ys() -> Vec<[u8; 32]> {
    let hex = |text: &str| -> [u8; 32] {
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    };
    let top = |low: u8| {
        let mut y = [0xff; 32];
        y[0] = low;
        y[31] = 0x7f;
        y
    };
    let mut one = [0; 32];
    one[0] = 1;
    vec![
        [0; 32],
        one,
        hex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        hex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        top(0xec),
        top(0xed),
        top(0xee),
    ]
}

/// Every encoding of a small-order point: each y above, with the sign bit
/// of x clear and set (14 encodings of 8 points).
fn small_order_encodings() -> Vec<[u8; 32]> {
    small_order_ys()
        .into_iter()
        .flat_map(|y| {
            let mut negative = y;
            negative[31] |= 0x80;
            [y, negative]
        })
        .collect()
}

/// Whether OpenSSL accepts `signature` on `input` for the raw Ed25519
/// public key `x`.
fn openssl_accepts_ed25519(x: &[u8], input: &[u8], signature: &[u8]) -> bool {
    let Ok(pkey) = PKey::public_key_from_raw_bytes(x, Id::ED25519) else {
        return false;
    };
    openssl::sign::Verifier::new_without_digest(&pkey)
        .and_then(|mut v| v.verify_oneshot(signature, input))
        .unwrap_or(false)
}

/// A forgery without any private key: R a small-order point, S = 0. Then
/// [S]B - [k]A = -[k]A lies in the small subgroup: with A the identity,
/// R = identity verifies for every message; otherwise R must be the point
/// -[k]A, and k = H(R || A || M) changes with R, so the forger tries every
/// R and, if none fits, another `jti` (as an attacker would).
fn forge_ed25519(x: &[u8; 32], kid: &str) -> Option<String> {
    (0..32).find_map(|nonce| {
        let input = signing_input("EdDSA", kid, nonce);
        small_order_encodings()
            .into_iter()
            .map(|r| {
                let mut signature = r.to_vec();
                signature.extend([0u8; 32]);
                signature
            })
            .find(|signature| openssl_accepts_ed25519(x, input.as_bytes(), signature))
            .map(|signature| format!("{input}.{}", b64(signature)))
    })
}

fn okp_jwk(x: &[u8], kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(x), "kid": kid, "alg": "EdDSA", "use": "sig"})
}

#[tokio::test]
async fn tokens_forged_for_small_order_ed25519_keys_are_refused() {
    let good = good_key();
    let mut keys = vec![good.public_jwk().to_value()];
    let mut forged = Vec::new();
    for (i, x) in small_order_encodings().iter().enumerate() {
        let kid = format!("small-order-{i}");
        keys.push(okp_jwk(x, &kid));
        if let Some(token) = forge_ed25519(x, &kid) {
            forged.push((kid, token));
        }
    }
    // The forgery is real: OpenSSL accepts it for the identity and the
    // order-2 point at least (y = 1 and y = p - 1, sign bit clear).
    let kids: Vec<&str> = forged.iter().map(|(kid, _)| kid.as_str()).collect();
    assert!(
        kids.contains(&"small-order-2") && kids.contains(&"small-order-8"),
        "{kids:?}"
    );

    let server =
        JwksServer::start(serde_json::to_vec(&json!({"keys": keys})).unwrap().into()).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    let set = remote.current().unwrap();
    assert_eq!(set.len(), 1, "only the good key is usable: {set:?}");
    assert_eq!(set.skipped().len(), 14);
    for skipped in set.skipped() {
        assert!(
            skipped.reason().contains("small-order"),
            "{}",
            skipped.reason()
        );
    }
    for (kid, token) in &forged {
        let (status, calls) = status_for(&remote, token).await;
        assert_eq!(
            (status, calls),
            (StatusCode::UNAUTHORIZED, 0),
            "forged token for {kid}"
        );
    }
}

#[tokio::test]
async fn a_set_of_only_small_order_keys_has_no_usable_key() {
    let identity = small_order_encodings()[2];
    let token = forge_ed25519(&identity, "identity").expect("the identity forges");
    let body = json!({"keys": [okp_jwk(&identity, "identity")]});
    let server = JwksServer::start(serde_json::to_vec(&body).unwrap().into()).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    let (status, calls) = status_for(&remote, &token).await;
    assert_eq!((status, calls), (StatusCode::SERVICE_UNAVAILABLE, 0));
}

// -------------------------------------------------------------------- RSA

/// An RS256 signature made with the private exponent `d` of modulus `n`,
/// computed by hand (EMSA-PKCS1-v1_5, RFC 8017 section 9.2).
fn sign_rs256_raw(n: &BigNum, d: &BigNum, input: &[u8]) -> Vec<u8> {
    const SHA256_DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let len = usize::try_from(n.num_bits()).unwrap().div_ceil(8);
    let mut t = SHA256_DIGEST_INFO.to_vec();
    t.extend(openssl::sha::sha256(input));
    let mut em = vec![0x00, 0x01];
    em.resize(len - t.len() - 1, 0xff);
    em.push(0x00);
    em.extend(t);
    let mut ctx = BigNumContext::new().unwrap();
    let mut s = BigNum::new().unwrap();
    s.mod_exp(&BigNum::from_slice(&em).unwrap(), d, n, &mut ctx)
        .unwrap();
    s.to_vec_padded(i32::try_from(len).unwrap()).unwrap()
}

/// e = 65537 and its inverse modulo `lambda`.
fn exponents(lambda: &BigNum) -> (BigNum, BigNum) {
    let e = BigNum::from_u32(65_537).unwrap();
    let mut d = BigNum::new().unwrap();
    d.mod_inverse(&e, lambda, &mut BigNumContext::new().unwrap())
        .unwrap();
    (e, d)
}

/// RFC 3526's 2048-bit MODP prime: a public prime of exactly 2048 bits.
fn prime_2048() -> BigNum {
    BigNum::get_rfc3526_prime_2048().unwrap()
}

/// A modulus that is prime: lambda(n) = n - 1, so anyone has d.
fn prime_modulus() -> (BigNum, BigNum, BigNum) {
    let n = prime_2048();
    let mut lambda = n.to_owned().unwrap();
    lambda.sub_word(1).unwrap();
    let (e, d) = exponents(&lambda);
    (n, e, d)
}

/// n = 3 q with q prime: dividing by 3 factors it.
fn small_factor_modulus() -> (BigNum, BigNum, BigNum) {
    let q = prime_2048();
    let mut n = q.to_owned().unwrap();
    n.mul_word(3).unwrap();
    let mut lambda = q.to_owned().unwrap(); // lcm(3 - 1, q - 1) = q - 1
    lambda.sub_word(1).unwrap();
    let (e, d) = exponents(&lambda);
    (n, e, d)
}

fn forge_rs256(n: &BigNum, e: &BigNum, d: &BigNum, kid: &str) -> String {
    let input = signing_input("RS256", kid, 0);
    let signature = sign_rs256_raw(n, d, input.as_bytes());
    // The forgery is real: OpenSSL accepts it for (n, e).
    let rsa =
        Rsa::from_public_components((**n).to_owned().unwrap(), (**e).to_owned().unwrap()).unwrap();
    let pkey = PKey::from_rsa(rsa).unwrap();
    let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &pkey).unwrap();
    verifier.set_rsa_padding(Padding::PKCS1).unwrap();
    verifier.update(input.as_bytes()).unwrap();
    assert!(verifier.verify(&signature).unwrap(), "forgery for {kid}");
    format!("{input}.{}", b64(signature))
}

fn rsa_jwk(n: &BigNum, e: &BigNum, kid: &str) -> Value {
    json!({"kty": "RSA", "n": b64(n.to_vec()), "e": b64(e.to_vec()), "kid": kid, "alg": "RS256", "use": "sig"})
}

#[tokio::test]
async fn tokens_forged_for_a_prime_or_small_factor_rsa_modulus_are_refused() {
    let good = good_key();
    let (pn, pe, pd) = prime_modulus();
    let (sn, se, sd) = small_factor_modulus();
    let body = json!({"keys": [
        good.public_jwk().to_value(),
        rsa_jwk(&pn, &pe, "prime"),
        rsa_jwk(&sn, &se, "three-q"),
    ]});
    let forged = [
        ("prime", forge_rs256(&pn, &pe, &pd, "prime")),
        ("three-q", forge_rs256(&sn, &se, &sd, "three-q")),
    ];
    let server = JwksServer::start(serde_json::to_vec(&body).unwrap().into()).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    let set = remote.current().unwrap();
    assert_eq!(set.len(), 1, "only the good key is usable: {set:?}");
    let reasons: Vec<(Option<&str>, &str)> = set
        .skipped()
        .iter()
        .map(|s| (s.kid(), s.reason()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].1.contains("prime"), "{reasons:?}");
    assert!(reasons[1].1.contains("factor 3"), "{reasons:?}");
    for (kid, token) in &forged {
        let (status, calls) = status_for(&remote, token).await;
        assert_eq!(
            (status, calls),
            (StatusCode::UNAUTHORIZED, 0),
            "forged token for {kid}"
        );
    }
}

// ------------------------------------------------------------ JWKS parse

/// Issue 16: about 1 MB of keys took 4.3 s of CPU inside the async fetch,
/// on the runtime's worker. Here the runtime has one worker, the test's
/// own thread: the parse must run on another thread (tokio's blocking
/// pool), never on it.
#[tokio::test]
async fn the_jwks_is_parsed_on_a_blocking_thread_not_on_the_runtime_worker() {
    // Installed before the fetch, so that its events are captured.
    let logs = logs();
    let worker = std::thread::current().name().unwrap().to_owned();
    let keys: Vec<Value> = (0..20)
        .map(|_| {
            SigningKey::generate(Algorithm::ES512)
                .unwrap()
                .public_jwk()
                .to_value()
        })
        .collect();
    let server =
        JwksServer::start(serde_json::to_vec(&json!({"keys": keys})).unwrap().into()).await;
    let remote = RemoteJwks::new(server.url()).unwrap();
    remote.prefetch().await.unwrap();
    assert_eq!(remote.current().unwrap().len(), 20);

    let url = remote.url().to_string();
    let parsing = logs.matching(&["parsing the JWKS", &url]);
    assert_eq!(parsing.len(), 1, "{:?}", logs.lines());
    // `<time> DEBUG <thread name> <target>: parsing the JWKS ...`
    let thread = parsing[0].split_whitespace().nth(2).unwrap();
    assert_ne!(thread, worker, "parsed on the runtime's worker thread");
    // A thread of tokio's blocking pool ("tokio-rt-worker" in tokio 1.54).
    assert!(thread.starts_with("tokio"), "{}", parsing[0]);
}
