//! The checks behind the fuzz targets.
//!
//! Each public function takes the raw bytes of one input, decodes them into
//! a call of the crate's public API and checks what came back. The fuzz
//! targets in `fuzz/fuzz_targets/` include this file and call one function
//! per target; `tests/fuzz_inputs.rs` calls the same functions with
//! proptest inputs, so `cargo test` runs the same checks. A check fails by
//! panicking, which the fuzzer reports as a crash.
//!
//! Input formats (the first byte selects a mode; parts are separated by a
//! `0x00` byte) are described on each function and in `fuzz/README.md`.

#![allow(dead_code, unreachable_pub)]

use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::fs;
use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use serde_json::{Map, Value, json};
use tower_jwt_signer::clock::Clock;
use tower_jwt_signer::signer::Offload;
use tower_jwt_signer::store::KeyStore as _;
use tower_jwt_signer::verifier::JwkSet;
use tower_jwt_signer::{
    Algorithm, DirKeyStore, JwtSignerLayer, KeyRegistry, Kid, SigningKey, VerifiedClaims, Verifier,
    VerifyError,
};
use tower_layer::Layer as _;
use tower_service::Service;

/// The fixed time every check runs at (2027-01-15).
pub const NOW: u64 = 1_800_000_000;
/// The `iss` the fixture verifier requires and the signer writes.
pub const ISSUER: &str = "https://gateway.fuzz";
/// The `aud` the fixture verifier requires.
pub const AUDIENCE: &str = "fuzz-api";
/// The `typ` the fixture verifier requires.
pub const TYP: &str = "JWT";
/// The verifier's default leeway, in seconds.
pub const LEEWAY: f64 = 30.0;
/// The verifier's default token size limit.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// JWK members that only private or symmetric keys have.
pub const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A clock stopped at [`NOW`].
pub fn fixed_clock() -> Clock {
    Clock::from_fn(|| UNIX_EPOCH + Duration::from_secs(NOW))
}

/// The fixture keys: fixed test keys committed next to this file (they
/// sign nothing but test tokens), so that seeds and crash inputs stay
/// valid from run to run, with fixed kids a fuzzer can find.
pub struct Fixture {
    /// ES256, ES512, EdDSA, RS256 and PS256 (the RS256 key again), with the
    /// kids `es256`, `es512`, `eddsa`, `rs256` and `rsa-pss`.
    pub keys: Vec<SigningKey>,
    /// Their public keys.
    pub set: JwkSet,
    /// Verifies against `set` at [`NOW`], requiring [`ISSUER`],
    /// [`AUDIENCE`] and [`TYP`].
    pub verifier: Verifier,
    /// A verifier with the default rules, for JWS checks.
    pub plain: Verifier,
}

/// The process-wide fixture.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = |pem: &str, alg: Algorithm, kid: &str| {
            SigningKey::from_pkcs8_pem(pem, alg)
                .expect("a fixture key")
                .with_kid(Kid::new(kid).expect("kid"))
        };
        let rsa = include_str!("keys/rs256.pem");
        let keys = vec![
            key(include_str!("keys/es256.pem"), Algorithm::ES256, "es256"),
            key(include_str!("keys/es512.pem"), Algorithm::ES512, "es512"),
            key(include_str!("keys/eddsa.pem"), Algorithm::EdDSA, "eddsa"),
            key(rsa, Algorithm::RS256, "rs256"),
            key(rsa, Algorithm::PS256, "rsa-pss"),
        ];
        let set = JwkSet::from_public_jwks(keys.iter().map(SigningKey::public_jwk));
        assert_eq!(set.len(), keys.len());
        let verifier = Verifier::builder(set.clone())
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .typ(TYP)
            .clock(fixed_clock())
            .build()
            .unwrap();
        let plain = Verifier::builder(set.clone())
            .clock(fixed_clock())
            .build()
            .unwrap();
        Fixture {
            keys,
            set,
            verifier,
            plain,
        }
    })
}

/// Strict base64url without padding.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of the given header and payload bytes, signed by `key`.
pub fn sign_compact(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = key.sign(input.as_bytes()).expect("the fixture key signs");
    format!("{input}.{}", b64(signature))
}

/// `bytes` as JSON, if serialising the parsed value gives the same bytes
/// back: then the text has no duplicate member names, no whitespace and no
/// number spellings that could be read two ways.
fn canonical_json(bytes: &[u8]) -> Option<Value> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    (serde_json::to_vec(&value).ok()? == bytes).then_some(value)
}

/// Whether two `typ` values name the same media type (RFC 7515 section
/// 4.1.9: without case, `application/` optional).
fn same_media_type(a: &str, b: &str) -> bool {
    let short = |t: &str| -> String {
        let lower = t.to_ascii_lowercase();
        match lower.strip_prefix("application/") {
            Some(rest) => rest.to_owned(),
            None => lower,
        }
    };
    short(a) == short(b)
}

// ---------------------------------------------------------------------------
// Target 1: token parsing and verification against a fixed key set.
// ---------------------------------------------------------------------------

/// Token parsing and verification (`Verifier::verify_with` against the
/// fixture's fixed [`JwkSet`], with `iss`, `aud` and `typ` required).
///
/// * even first byte: the rest is the token text (lossy UTF-8);
/// * odd first byte: `header 0x00 payload [0x00 tamper]`; the harness
///   signs `header.payload` with fixture key `(first >> 1) % 5`, and flips
///   a signature byte when `tamper` is not empty.
///
/// Checked: no panic; every refusal is a 401 with a description safe to
/// send; every accepted token names a fixture key by `kid`, with that
/// key's algorithm, and carries valid claims; in the second mode, when
/// the header and payload are canonical JSON, the result is exactly what
/// RFC 7515/7519 and the verifier's rules say it should be.
pub fn verify_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    if mode & 1 == 0 {
        let token = String::from_utf8_lossy(rest);
        let result = fx.verifier.verify_with(&token, &fx.set);
        check_verify_result(&token, &result);
        return;
    }
    let key = &fx.keys[usize::from(mode >> 1) % fx.keys.len()];
    let mut parts = rest.splitn(3, |b| *b == 0);
    let header = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let tamper = parts.next().filter(|t| !t.is_empty());
    let mut token = sign_compact(key, header, payload);
    if let Some(tamper) = tamper {
        let (input, signature) = token.rsplit_once('.').expect("three parts");
        let mut signature = URL_SAFE_NO_PAD.decode(signature).expect("our base64");
        let at = usize::from(tamper[0]) % signature.len();
        signature[at] ^= tamper.get(1).copied().unwrap_or(1).max(1);
        token = format!("{input}.{}", b64(signature));
    }
    let result = fx.verifier.verify_with(&token, &fx.set);
    check_verify_result(&token, &result);
    let Some(expected) = expected_verdict(&token, header, payload, key, tamper.is_some()) else {
        return;
    };
    match (&result, expected) {
        (Ok(claims), Ok(())) => {
            let payload: Map<String, Value> =
                serde_json::from_slice(payload).expect("canonical payload");
            assert_eq!(claims.claims(), &payload, "the claims are not the payload");
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(why)) => panic!("accepted a token that must be refused: {why}"),
        (Err(err), Ok(())) => panic!("refused a token that must be accepted: {err:?}"),
    }
}

/// What the rules say about a token the harness signed with `key` from
/// canonical JSON `header` and `payload`; `None` when the input is not
/// canonical (then only the general checks apply).
fn expected_verdict(
    token: &str,
    header: &[u8],
    payload: &[u8],
    key: &SigningKey,
    tampered: bool,
) -> Option<Result<(), String>> {
    let header = canonical_json(header)?;
    let payload = canonical_json(payload)?;
    Some((|| {
        if token.len() > MAX_TOKEN_LEN {
            return Err("too long".to_owned());
        }
        let Value::Object(header) = header else {
            return Err("the header is not an object".to_owned());
        };
        if header.contains_key("crit") {
            return Err("crit".to_owned());
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|name| name.parse::<Algorithm>().ok())
            .ok_or("no known alg")?;
        match header.get("typ") {
            Some(Value::String(typ)) if same_media_type(typ, TYP) => {}
            _ => return Err("typ".to_owned()),
        }
        match header.get("kid") {
            Some(Value::String(kid)) if kid == key.kid().as_str() => {}
            // Another kid selects another key (or none), a missing kid
            // cannot pick one of five keys: neither verifies this
            // signature.
            _ => return Err("kid".to_owned()),
        }
        if alg != key.algorithm() {
            return Err("alg does not fit the key".to_owned());
        }
        if tampered {
            return Err("tampered".to_owned());
        }
        check_claim_rules(&payload)
    })())
}

/// The claim rules of the fixture verifier, written from RFC 7519.
fn check_claim_rules(payload: &Value) -> Result<(), String> {
    let Value::Object(claims) = payload else {
        return Err("the payload is not an object".to_owned());
    };
    let now = NOW as f64;
    let number = |name: &str| -> Result<Option<f64>, String> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(format!("{name} is not a number")),
        }
    };
    match number("exp")? {
        None => return Err("no exp".to_owned()),
        Some(exp) if now >= exp + LEEWAY => return Err("expired".to_owned()),
        Some(_) => {}
    }
    if let Some(nbf) = number("nbf")?
        && now + LEEWAY < nbf
    {
        return Err("not yet valid".to_owned());
    }
    if let Some(iat) = number("iat")? {
        if iat < 0.0 {
            return Err("iat is negative".to_owned());
        }
        if now + LEEWAY < iat {
            return Err("issued in the future".to_owned());
        }
    }
    if claims.get("iss") != Some(&Value::from(ISSUER)) {
        return Err("iss".to_owned());
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == AUDIENCE,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    if !audience_ok {
        return Err("aud".to_owned());
    }
    Ok(())
}

/// Checks that hold for any token and any outcome.
fn check_verify_result(token: &str, result: &Result<VerifiedClaims, VerifyError>) {
    match result {
        Err(err) => {
            assert_eq!(
                err.status(),
                StatusCode::UNAUTHORIZED,
                "a bad token is a 401: {err:?}"
            );
            let description = err.description();
            assert!(
                description
                    .chars()
                    .all(|c| (' '..='~').contains(&c) && c != '"' && c != '\\'),
                "unsafe description {description:?}"
            );
            if token.len() >= 24 {
                assert!(
                    !err.to_string().contains(token),
                    "an error quotes the token"
                );
            }
        }
        Ok(claims) => {
            let fx = fixture();
            assert!(token.len() <= MAX_TOKEN_LEN);
            let mut parts = token.split('.');
            let header = parts.next().expect("a header part");
            let header: Map<String, Value> = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(header)
                    .expect("an accepted header is base64url"),
            )
            .expect("an accepted header is a JSON object");
            assert!(!header.contains_key("crit"), "accepted a crit header");
            assert_eq!(
                header.get("alg").and_then(Value::as_str),
                Some(claims.alg().as_str()),
                "the algorithm is not the header's"
            );
            let kid = claims.kid().expect("five keys: only a kid can pick one");
            let key = fx
                .keys
                .iter()
                .find(|k| k.kid().as_str() == kid)
                .expect("accepted a kid the set does not hold");
            assert_eq!(
                key.algorithm(),
                claims.alg(),
                "the token chose an algorithm its key does not have"
            );
            check_claim_rules(&Value::Object(claims.claims().clone()))
                .unwrap_or_else(|why| panic!("accepted claims that break a rule: {why}"));
        }
    }
}

// ---------------------------------------------------------------------------
// Target 2: JWK and JWK Set parsing (what RemoteJwks does with a body).
// ---------------------------------------------------------------------------

/// JWK Set parsing (`JwkSet::parse`, the path a `RemoteJwks` body takes).
///
/// * even first byte: the rest is the JWK Set document;
/// * odd first byte: the rest is one JWK, wrapped as `{"keys":[<rest>]}`.
///
/// Checked: no panic; a document is refused whole exactly when it is not
/// a JSON object with a `keys` array, or a key holds a private member, or
/// two keys share a kid; otherwise every entry is either usable or listed
/// as skipped, in order; no usable key has a private member or an
/// oversized kid; and a token signed by a fixture key verifies against a
/// usable key only if that key's public members are the fixture key's.
pub fn jwk_set(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let document: Cow<'_, [u8]> = if mode & 1 == 0 {
        Cow::Borrowed(rest)
    } else {
        let mut wrapped = b"{\"keys\":[".to_vec();
        wrapped.extend_from_slice(rest);
        wrapped.extend_from_slice(b"]}");
        Cow::Owned(wrapped)
    };
    let parsed = JwkSet::parse(&document);
    let value: Option<Value> = serde_json::from_slice(&document).ok();
    let entries = value
        .as_ref()
        .and_then(|v| v.get("keys"))
        .and_then(Value::as_array);
    let must_refuse = match entries {
        None => true,
        Some(entries) => {
            let mut kids = HashSet::new();
            entries.iter().filter_map(Value::as_object).any(|jwk| {
                PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m))
                    || jwk
                        .get("kid")
                        .and_then(Value::as_str)
                        .is_some_and(|kid| !kids.insert(kid))
            })
        }
    };
    let set = match parsed {
        Err(err) => {
            let _ = err.to_string();
            assert!(must_refuse, "refused a valid JWK Set document: {err:?}");
            return;
        }
        Ok(set) => {
            assert!(!must_refuse, "accepted a document that must be refused");
            set
        }
    };
    let entries = entries.expect("accepted, so a keys array");
    assert_eq!(
        set.len() + set.skipped().len(),
        entries.len(),
        "an entry is neither usable nor skipped"
    );
    let skipped: Vec<usize> = set.skipped().iter().map(|s| s.index()).collect();
    assert!(
        skipped.windows(2).all(|w| w[0] < w[1]),
        "skipped out of order"
    );
    let usable: Vec<&Map<String, Value>> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| !skipped.contains(i))
        .map(|(_, e)| e.as_object().expect("a usable entry is an object"))
        .collect();
    assert_eq!(usable.len(), set.len());
    for (key, entry) in set.keys().iter().zip(&usable) {
        assert_eq!(key.kid(), entry.get("kid").and_then(Value::as_str));
        if let Some(kid) = key.kid() {
            // The verifier takes kids of 1 to 256 bytes.
            assert!(!kid.is_empty() && kid.len() <= 256);
            assert!(std::ptr::eq(&**set.get(kid).expect("get by kid"), &**key));
        }
        if let Some(alg) = key.algorithm() {
            assert!(key.fits(alg), "a key whose own alg does not fit it");
        }
    }
    // Signatures: a fixture key's token verifies against a usable key
    // only if it is the same public key.
    let fx = fixture();
    for (key, entry) in set.keys().iter().zip(&usable).take(4) {
        for signer in fx.keys.iter().take(3) {
            let mut header = Map::new();
            header.insert("alg".into(), signer.algorithm().as_str().into());
            if let Some(kid) = key.kid() {
                header.insert("kid".into(), kid.into());
            }
            let header = serde_json::to_vec(&header).expect("JSON");
            let token = sign_compact(signer, &header, b"{}");
            if fx.plain.verify_jws_with(&token, &set).is_ok() {
                assert!(
                    same_public_key(entry, signer),
                    "a token verified against a key that is not its signer's"
                );
            }
        }
    }
}

/// Whether the JWK `entry` holds the public key of `key`.
fn same_public_key(entry: &Map<String, Value>, key: &SigningKey) -> bool {
    let ours = key.public_jwk().to_value();
    let bytes = |jwk: &Map<String, Value>, name: &str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
    };
    let ours = ours.as_object().expect("an object");
    let members: &[&str] = match ours.get("kty").and_then(Value::as_str) {
        Some("RSA") => &["n", "e"],
        Some("EC") => &["x", "y"],
        _ => &["x"],
    };
    entry.get("kty") == ours.get("kty")
        && (ours.get("crv").is_none() || entry.get("crv") == ours.get("crv"))
        && members.iter().all(|m| {
            let theirs = bytes(entry, m).map(|mut b| {
                // RSA integers may carry leading zero octets.
                let zeros = b.iter().take_while(|x| **x == 0).count();
                if *m == "n" || *m == "e" {
                    b.drain(..zeros);
                }
                b
            });
            theirs.is_some() && theirs == bytes(ours, m)
        })
}

// ---------------------------------------------------------------------------
// Target 3: claim template expansion through JwtSignerLayer.
// ---------------------------------------------------------------------------

/// A service that keeps the request it is called with.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Parts>>>);

impl Service<Request<()>> for Capture {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        *self.0.lock().expect("not poisoned") = Some(request.into_parts().0);
        std::future::ready(Ok(Response::new(Full::default())))
    }
}

/// Runs `request` through `layer` (which signs inline): `Ok(parts)` as the
/// inner service got them, or `Err((status, error))` of the signer's own
/// answer, `error` from its JSON body.
fn run_signer(layer: &JwtSignerLayer, request: Request<()>) -> Result<Parts, (StatusCode, String)> {
    let capture = Capture::default();
    let mut service = layer.layer(capture.clone());
    let mut future = pin!(service.call(request));
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
        panic!("the signer's answer is not ready at once");
    };
    match capture.0.lock().expect("not poisoned").take() {
        Some(parts) => Ok(parts),
        None => {
            let status = response.status();
            assert_ne!(status, StatusCode::OK);
            let mut body = pin!(response.into_body());
            let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) else {
                panic!("the signer's answer has no body");
            };
            let json: Value = serde_json::from_slice(frame.data_ref().expect("data"))
                .expect("the signer's body is JSON");
            let error = json["error"].as_str().expect("an error code").to_owned();
            Err((status, error))
        }
    }
}

/// The registry the template checks sign with: one ES256 key, the fixed
/// clock.
fn template_registry() -> &'static KeyRegistry {
    static REGISTRY: OnceLock<KeyRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        KeyRegistry::builder()
            .clock(fixed_clock())
            .active(fixture().keys[0].clone())
            .build()
            .expect("a registry")
    })
}

/// The static claims every templated token also carries.
fn static_claims() -> (Value, Value) {
    (
        json!({"nested": ["a\"b", 1, {"c": null}]}),
        Value::from("line\r\nbreak \"quoted\" \\"),
    )
}

/// The expressions a structured template is made of, by spec byte.
const EXPRESSIONS: [&str; 10] = [
    "${req.headers.x-a}",
    "${req.headers.x-a:dflt}",
    "${req.query.q}",
    "${req.query.q:d\"q}",
    "${req.path}",
    "${req.method}",
    "${req.host}",
    "${req.headers.x-missing}",
    "${req.headers.x-missing:}",
    "$${",
];

/// Claim template expansion, through a [`JwtSignerLayer`] with a template
/// claim `t` (and static claims `iss`, `static`, `s2` around it).
///
/// Input: `mode spec 0x00 x-a 0x00 x-a-again 0x00 uri 0x00 host`.
///
/// * `mode % 3 == 0`: `spec` is the template text (lossy UTF-8);
/// * `mode % 3 == 1`: `spec` builds a string template: bytes `1..=10` pick
///   an expression, other bytes are literal text (`$` becomes `_`);
/// * `mode % 3 == 2`: a `${number:...}` or `${boolean:...}` template on
///   the `x-a` header or the `q` query parameter, picked by `spec[0]`.
///
/// `x-a` lines, `uri` and `host` are used when they are valid (a second
/// `x-a` line only when `mode & 4`).
///
/// Checked: no panic; a template either is refused at configuration time
/// or every request gets a token that verifies and holds exactly the
/// claims `iat nbf exp jti iss static s2 t` with the static values
/// untouched, or a 400; in the structured modes `t` is exactly the
/// expected value, and a 400 happens exactly when a value is missing, is
/// not of the template's type, or is a number that would not keep its
/// value (which this crate's verifier would refuse).
pub fn claim_template(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.split(|b| *b == 0);
    let spec = parts.next().unwrap_or_default();
    let header_a = parts.next();
    let header_a2 = parts.next().filter(|_| mode & 4 != 0);
    let uri = parts.next();
    let host = parts.next();

    let (template, expected_kind) = match mode % 3 {
        0 => (String::from_utf8_lossy(spec).into_owned(), Kind::Unknown),
        1 => {
            let (template, pieces) = structured_template(spec);
            (template, Kind::Text(pieces))
        }
        _ => {
            let pick = spec.first().copied().unwrap_or(0);
            let (typed, source) = if pick & 1 == 0 {
                (
                    "number",
                    if pick & 2 == 0 {
                        "req.headers.x-a"
                    } else {
                        "req.query.q"
                    },
                )
            } else {
                (
                    "boolean",
                    if pick & 2 == 0 {
                        "req.headers.x-a"
                    } else {
                        "req.query.q"
                    },
                )
            };
            let default = match (typed, pick & 4 != 0) {
                (_, false) => "",
                ("number", true) => ":-1.5e3",
                (_, true) => ":false",
            };
            let piece = match source {
                "req.headers.x-a" => Piece::HeaderA(default.strip_prefix(':').map(str::to_owned)),
                _ => Piece::Query(default.strip_prefix(':').map(str::to_owned)),
            };
            let kind = if typed == "number" {
                Kind::Number(piece)
            } else {
                Kind::Boolean(piece)
            };
            (format!("${{{typed}:{source}{default}}}"), kind)
        }
    };

    let (nested, line) = static_claims();
    let settings = JwtSignerLayer::builder(template_registry().clone())
        .offload(Offload::Inline)
        .issuer(ISSUER)
        .claim("static", nested.clone())
        .claim("s2", line.clone())
        .template_claim("t", &template);
    let layer = match settings.clone().build() {
        Ok(layer) => layer,
        Err(err) => {
            let _ = err.to_string();
            assert!(
                matches!(expected_kind, Kind::Unknown),
                "refused a well-formed template {template:?}: {err}"
            );
            return;
        }
    };

    let build = || {
        let mut builder = Request::builder().method("GET");
        if let Some(uri) = uri.and_then(|u| http::Uri::try_from(u).ok()) {
            builder = builder.uri(uri);
        }
        for value in [header_a, header_a2].into_iter().flatten() {
            if let Ok(value) = http::HeaderValue::from_bytes(value) {
                builder = builder.header("x-a", value);
            }
        }
        if let Some(host) = host.and_then(|h| http::HeaderValue::from_bytes(h).ok()) {
            builder = builder.header(http::header::HOST, host);
        }
        builder.body(()).ok()
    };
    let Some(request) = build() else {
        return;
    };
    let expected = expected_value(&expected_kind, &request);
    let parts = match run_signer(&layer, request) {
        Err((StatusCode::BAD_REQUEST, error)) if error == "token_too_large" => {
            // Without the limit, the same request gets a token over it.
            let unlimited = settings.max_token_len(usize::MAX).build().expect("a limit");
            let parts = run_signer(&unlimited, build().expect("built once"))
                .expect("refused only for its size");
            assert!(
                token_of(&parts).len() > MAX_TOKEN_LEN,
                "refused a small token"
            );
            parts
        }
        Err((status, error)) => {
            assert_eq!(status, StatusCode::BAD_REQUEST, "template {template:?}");
            assert_eq!(error, "claim_unavailable");
            if let Some(expected) = expected {
                assert!(
                    expected.is_none(),
                    "refused a request whose value is there: {expected:?}"
                );
            }
            return;
        }
        Ok(parts) => {
            assert!(
                token_of(&parts).len() <= MAX_TOKEN_LEN,
                "a token over the limit"
            );
            parts
        }
    };
    // The signer refuses a `${number:...}` value that would not keep its
    // value (issue 10), so its verifier never meets one (`InexactNumber`).
    let claims = token_claims(&parts, template_registry());
    let names: Vec<&str> = claims.claims().keys().map(String::as_str).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["exp", "iat", "iss", "jti", "nbf", "s2", "static", "t"],
        "template {template:?} changed the set of claims"
    );
    assert_eq!(claims.get("iss"), Some(&Value::from(ISSUER)));
    assert_eq!(claims.get("static"), Some(&nested));
    assert_eq!(claims.get("s2"), Some(&line));
    assert_eq!(claims.get("iat"), Some(&Value::from(NOW)));
    assert_eq!(claims.get("exp"), Some(&Value::from(NOW + 60)));
    let t = claims.get("t").expect("t");
    match expected {
        Some(Some(value)) => assert_eq!(t, &value, "template {template:?}"),
        Some(None) => panic!("forwarded a request that lacks a value: {t}"),
        None => assert!(t.is_string() || t.is_number() || t.is_boolean()),
    }
}

/// The token of exactly one `Authorization: Bearer <jwt>` header.
fn token_of(parts: &Parts) -> &str {
    let mut values = parts.headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next().expect("an Authorization header");
    assert!(values.next().is_none(), "two Authorization headers");
    let value = value.to_str().expect("visible ASCII");
    value.strip_prefix("Bearer ").expect("the Bearer scheme")
}

/// The claims of the request's token, which verifies against `registry`'s
/// keys (whatever its size).
fn token_claims(parts: &Parts, registry: &KeyRegistry) -> VerifiedClaims {
    verify_own_token(parts, registry)
        .unwrap_or_else(|err| panic!("our own token does not verify: {err:?}"))
}

/// The request's token verified against `registry`'s keys.
fn verify_own_token(parts: &Parts, registry: &KeyRegistry) -> Result<VerifiedClaims, VerifyError> {
    let token = token_of(parts);
    let verifier = Verifier::builder(registry.clone())
        .clock(fixed_clock())
        .max_token_len(usize::MAX)
        .build()
        .unwrap();
    let set = JwkSet::from_public_jwks(registry.current().keys().iter().map(|k| k.public_jwk()));
    verifier.verify_with(token, &set)
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    HeaderA(Option<String>),
    Query(Option<String>),
    Path,
    Method,
    Host,
    Missing(Option<String>),
}

#[derive(Debug)]
enum Kind {
    Unknown,
    Text(Vec<Piece>),
    Number(Piece),
    Boolean(Piece),
}

/// A string template from spec bytes, and the pieces it is made of.
fn structured_template(spec: &[u8]) -> (String, Vec<Piece>) {
    let mut template = String::new();
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let flush = |literal: &mut Vec<u8>, template: &mut String, pieces: &mut Vec<Piece>| {
        if !literal.is_empty() {
            let text = String::from_utf8_lossy(literal).replace('$', "_");
            template.push_str(&text);
            pieces.push(Piece::Literal(text));
            literal.clear();
        }
    };
    for &byte in spec {
        if (1..=10).contains(&byte) {
            flush(&mut literal, &mut template, &mut pieces);
            let index = usize::from(byte - 1);
            template.push_str(EXPRESSIONS[index]);
            pieces.push(match index {
                0 => Piece::HeaderA(None),
                1 => Piece::HeaderA(Some("dflt".into())),
                2 => Piece::Query(None),
                3 => Piece::Query(Some("d\"q".into())),
                4 => Piece::Path,
                5 => Piece::Method,
                6 => Piece::Host,
                7 => Piece::Missing(None),
                8 => Piece::Missing(Some(String::new())),
                _ => Piece::Literal("${".into()),
            });
        } else {
            literal.push(byte);
        }
    }
    flush(&mut literal, &mut template, &mut pieces);
    (template, pieces)
}

/// The value of one piece for `request`, computed from the `http` types
/// directly; `None` when the request lacks it and there is no default.
fn piece_value(piece: &Piece, request: &Request<()>) -> Option<String> {
    let lossy = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    match piece {
        Piece::Literal(text) => Some(text.clone()),
        Piece::HeaderA(default) => {
            let lines: Vec<String> = request.headers().get_all("x-a").iter().map(lossy).collect();
            if lines.is_empty() {
                default.clone()
            } else {
                Some(lines.join(", "))
            }
        }
        Piece::Query(default) => request
            .uri()
            .query()
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(name, _)| name == "q")
                    .map(|(_, value)| value.into_owned())
            })
            .or_else(|| default.clone()),
        Piece::Path => Some(request.uri().path().to_owned()),
        Piece::Method => Some(request.method().as_str().to_owned()),
        Piece::Host => request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| request.headers().get(http::header::HOST).map(lossy)),
        Piece::Missing(default) => default.clone(),
    }
}

/// The expected value of `t`: `None` when unknown (raw templates),
/// `Some(None)` when the request must be refused.
fn expected_value(kind: &Kind, request: &Request<()>) -> Option<Option<Value>> {
    match kind {
        Kind::Unknown => None,
        Kind::Text(pieces) => Some(
            pieces
                .iter()
                .map(|p| piece_value(p, request))
                .collect::<Option<String>>()
                .map(Value::String),
        ),
        Kind::Number(piece) => Some(piece_value(piece, request).and_then(|text| {
            // A JSON number exactly as written: no whitespace around it.
            if text.trim() != text || text.is_empty() {
                return None;
            }
            match serde_json::from_str::<Value>(&text) {
                // Refused when it would not keep its value: the number
                // serde_json read, written back, must be the one sent.
                Ok(value @ Value::Number(_)) if same_number(&text, &value.to_string()) => {
                    Some(value)
                }
                _ => None,
            }
        })),
        Kind::Boolean(piece) => Some(piece_value(piece, request).and_then(
            |text| match text.as_str() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
        )),
    }
}

/// Whether two JSON number literals are the same number, whatever their
/// spelling (`1E-3` and `0.001`, `-0` and `0`): compared as scientific
/// notation with the digits' leading and trailing zeros dropped. The
/// harness's own oracle, written apart from the crate's.
fn same_number(a: &str, b: &str) -> bool {
    fn scientific(text: &str) -> (bool, String, i64) {
        let (negative, text) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match text.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
            None => (text, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = format!("{int}{frac}");
        let trimmed = digits.trim_start_matches('0');
        let leading = digits.len() - trimmed.len();
        let significant = trimmed.trim_end_matches('0');
        if significant.is_empty() {
            return (false, String::new(), 0);
        }
        let point = int.len() as i64 - leading as i64 + exponent;
        (negative, significant.to_owned(), point)
    }
    scientific(a) == scientific(b)
}

// ---------------------------------------------------------------------------
// Target 4: key import.
// ---------------------------------------------------------------------------

/// Key import: `mode alg body`; `mode % 4` picks `from_pkcs8_pem`,
/// `from_pkcs8_der`, `from_jwk` with the algorithm, or `from_jwk` without
/// one; `alg` picks one of `Algorithm::ALL`.
///
/// Checked: no panic; a refusal's message never contains the JWK's `d`;
/// an imported key has the requested algorithm, an RSA modulus of at
/// least 2048 bits, a public JWK with only public members, survives export
/// and import (JWK, PKCS#8 DER and PEM) unchanged, signs tokens that
/// verify against its public JWK, and its `Debug` shows no key material.
pub fn key_import(data: &[u8]) {
    let [mode, alg, body @ ..] = data else {
        return;
    };
    let alg = Algorithm::ALL[usize::from(*alg) % Algorithm::ALL.len()];
    let (result, requested, secret) = match mode % 4 {
        0 => (SigningKey::from_pkcs8_pem(body, alg), Some(alg), None),
        1 => (SigningKey::from_pkcs8_der(body, alg), Some(alg), None),
        m => {
            let text = String::from_utf8_lossy(body);
            let requested = (m == 2).then_some(alg);
            (
                SigningKey::from_jwk(&text, requested),
                requested,
                jwk_secret(&text),
            )
        }
    };
    match result {
        Err(err) => {
            if let Some(secret) = secret {
                assert!(!err.to_string().contains(&secret), "an error quotes d");
                assert!(!format!("{err:?}").contains(&secret), "an error quotes d");
            }
        }
        Ok(key) => check_imported_key(&key, requested),
    }
}

/// The `d` member of a JWK text, when it is long enough to be a secret.
fn jwk_secret(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    secret_of(&value)
}

/// The `d` member of a JWK, when it is long enough to be a secret and no
/// other string of the JWK holds it (an error may quote the `alg` or `kty`
/// it was given; when they hold the same text, that is not a leak).
fn secret_of(jwk: &Value) -> Option<String> {
    let d = jwk.get("d")?.as_str()?;
    let elsewhere = jwk
        .as_object()?
        .iter()
        .any(|(name, value)| name.contains(d) || (name != "d" && value.to_string().contains(d)));
    (d.len() >= 8 && !elsewhere).then(|| d.to_owned())
}

/// Everything an imported key must satisfy.
pub fn check_imported_key(key: &SigningKey, requested: Option<Algorithm>) {
    if let Some(alg) = requested {
        assert_eq!(key.algorithm(), alg, "imported for another algorithm");
    }
    let public = key.public_jwk().to_value();
    let public = public.as_object().expect("a JSON object");
    for member in PRIVATE_MEMBERS {
        assert!(!public.contains_key(member), "public JWK holds {member}");
    }
    assert_eq!(
        public.get("kid").and_then(Value::as_str),
        Some(key.kid().as_str())
    );
    assert_eq!(
        public.get("alg").and_then(Value::as_str),
        Some(key.algorithm().as_str())
    );
    assert_eq!(public.get("use").and_then(Value::as_str), Some("sig"));
    let member = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(public.get(name).and_then(Value::as_str).expect(name))
            .expect("base64url")
    };
    match public.get("kty").and_then(Value::as_str) {
        Some("RSA") => {
            let n = member("n");
            assert_ne!(n[0], 0, "n has a leading zero octet");
            let bits = n.len() * 8 - n[0].leading_zeros() as usize;
            assert!(bits >= 2048, "an RSA key of {bits} bits");
            let e = member("e");
            assert!(e.last().is_some_and(|b| b & 1 == 1), "even exponent");
            assert!(e.len() > 1 || e[0] > 1, "exponent 1");
        }
        Some("EC") => {
            let len = match public.get("crv").and_then(Value::as_str) {
                Some("P-256") => 32,
                Some("P-384") => 48,
                Some("P-521") => 66,
                other => panic!("curve {other:?}"),
            };
            assert_eq!(member("x").len(), len);
            assert_eq!(member("y").len(), len);
        }
        Some("OKP") => {
            assert_eq!(public.get("crv").and_then(Value::as_str), Some("Ed25519"));
            assert_eq!(member("x").len(), 32);
        }
        other => panic!("kty {other:?}"),
    }
    // Export and import again: the same public key, the same kid.
    let jwk = key.to_private_jwk().expect("JWK export");
    let again = SigningKey::from_jwk(&jwk, None).expect("our own JWK imports");
    assert!(again.public_jwk() == key.public_jwk(), "JWK round trip");
    let der = key.to_pkcs8_der().expect("DER export");
    let again = SigningKey::from_pkcs8_der(&der, key.algorithm()).expect("our own DER imports");
    assert_eq!(
        again.public_jwk().thumbprint(),
        key.public_jwk().thumbprint()
    );
    let pem = key.to_pkcs8_pem().expect("PEM export");
    let again = SigningKey::from_pkcs8_pem(&pem, key.algorithm()).expect("our own PEM imports");
    assert_eq!(
        again.public_jwk().thumbprint(),
        key.public_jwk().thumbprint()
    );
    // It signs tokens that verify against its public JWK alone.
    let set = JwkSet::from_public_jwks([key.public_jwk()]);
    assert_eq!(
        set.len(),
        1,
        "our public JWK is not usable: {:?}",
        set.skipped()
    );
    let header = json!({"alg": key.algorithm().as_str(), "kid": key.kid().as_str()});
    let token = sign_compact(key, header.to_string().as_bytes(), b"{\"x\":1}");
    fixture()
        .plain
        .verify_jws_with(&token, &set)
        .expect("a token of an imported key verifies");
    // Debug shows no key material.
    let d = serde_json::from_str::<Value>(&jwk).expect("JSON")["d"]
        .as_str()
        .expect("d")
        .to_owned();
    assert!(!format!("{key:?}").contains(&d), "Debug shows d");
}

// ---------------------------------------------------------------------------
// Target 4b: key files of the directory store.
// ---------------------------------------------------------------------------

/// Key files of [`DirKeyStore`]: the input is written (mode 0600) as the
/// only key file of the empty directory `dir`, named after its `kid`
/// member when that is a valid kid, else `fuzz.key.json`; the store
/// loads it and a registry is built on the store.
///
/// Checked: no panic; a refusal never quotes the private key; a loaded
/// file yields exactly its key, under its file name's kid, which passes
/// [`check_imported_key`]; a registry built on it publishes only public
/// members, and when it has an active key, signs tokens that verify.
pub fn key_file(dir: &Path, data: &[u8]) {
    for entry in fs::read_dir(dir).expect("the scratch directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            fs::remove_dir_all(&path).expect("clean up");
        } else {
            fs::remove_file(&path).expect("clean up");
        }
    }
    let value: Option<Value> = serde_json::from_slice(data).ok();
    let kid = value
        .as_ref()
        .and_then(|v| v.get("kid"))
        .and_then(Value::as_str)
        .and_then(|k| Kid::new(k).ok())
        .filter(|k| !k.starts_with('.'))
        .unwrap_or_else(|| Kid::new("fuzz").expect("kid"));
    let secret = value
        .as_ref()
        .and_then(|v| v.get("private_jwk"))
        .and_then(secret_of)
        .filter(|d| {
            // Not a leak when the file quotes it elsewhere (its kid, say).
            let outside = value
                .as_ref()
                .and_then(Value::as_object)
                .is_some_and(|file| {
                    file.iter().any(|(name, v)| {
                        name.contains(d.as_str())
                            || (name != "private_jwk" && v.to_string().contains(d.as_str()))
                    })
                });
            !outside
        });
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(dir.join(format!("{kid}.key.json")))
            .expect("a key file");
        file.write_all(data).expect("written");
    }
    let store = DirKeyStore::builder(dir)
        .create(false)
        .open()
        .expect("the scratch directory opens");
    let quiet = |text: String| {
        if let Some(secret) = &secret {
            assert!(!text.contains(secret.as_str()), "an error quotes d");
        }
    };
    let loaded = match store.load() {
        Err(err) => {
            quiet(err.to_string());
            quiet(format!("{err:?}"));
            return;
        }
        Ok(loaded) => loaded,
    };
    assert_eq!(loaded.len(), 1, "one file, one key");
    assert_eq!(
        loaded[0].kid(),
        &kid,
        "a key under another kid than its file's"
    );
    check_imported_key(loaded[0].key().unwrap(), None);
    let registry = match KeyRegistry::builder()
        .clock(fixed_clock())
        .store(store)
        .build()
    {
        Err(err) => {
            quiet(err.to_string());
            return;
        }
        Ok(registry) => registry,
    };
    let snapshot = registry.current();
    let jwks: Value = serde_json::from_slice(snapshot.jwks_bytes()).expect("JWKS is JSON");
    for jwk in jwks["keys"].as_array().expect("a keys array") {
        for member in PRIVATE_MEMBERS {
            assert!(jwk.get(member).is_none(), "the JWKS publishes {member}");
        }
    }
    let set = JwkSet::parse(snapshot.jwks_bytes()).expect("our JWKS parses");
    assert_eq!(set.len(), snapshot.keys().len());
    if snapshot.active().is_some() {
        let layer = JwtSignerLayer::builder(registry.clone())
            .offload(Offload::Inline)
            .build()
            .unwrap();
        let parts = run_signer(&layer, Request::new(())).expect("signed and forwarded");
        token_claims(&parts, &registry);
    }
    let _ = registry.prune_expired();
}
