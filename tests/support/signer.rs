//! Helpers for the signer's tests: an independent verifier (jsonwebtoken,
//! or OpenSSL for ES512) that checks a token against the JWKS a registry
//! publishes, and an inner service that records what it receives.
#![allow(dead_code)] // each test binary uses a part

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower_jwt_signer::{Algorithm, KeyRegistry};

use super::jose::jsonwebtoken_alg;

/// A token checked by an implementation other than ours.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) header: Value,
    pub(crate) claims: Value,
}

/// Decodes one base64url JSON segment.
pub(crate) fn segment(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// Verifies `token` against the JWKS `registry` publishes now: the key is
/// picked by the token's kid and the algorithm comes from the published
/// JWK, never from the token. Checks `exp` and `nbf` with the verifier's
/// own clock.
pub(crate) fn verify(token: &str, registry: &KeyRegistry) -> Result<Verified, String> {
    verify_against(token, registry.current().jwks_bytes())
}

/// [`verify`] against JWKS bytes (as fetched from a gateway).
pub(crate) fn verify_against(token: &str, jwks: &[u8]) -> Result<Verified, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(format!("not a compact JWS: {} parts", parts.len()));
    }
    let header = segment(parts[0]);
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let jwks: Value = serde_json::from_slice(jwks).map_err(|e| format!("JWKS: {e}"))?;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .ok_or_else(|| format!("kid {kid} not published"))?
        .clone();
    let alg: Algorithm = jwk["alg"].as_str().unwrap().parse().unwrap();
    if header["alg"] != alg.as_str() {
        return Err(format!("token alg {} but key alg {alg}", header["alg"]));
    }
    let claims = match jsonwebtoken_alg(alg) {
        Some(their_alg) => {
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk).unwrap();
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
            let mut validation = jsonwebtoken::Validation::new(their_alg);
            validation.set_required_spec_claims(&["exp", "nbf", "iat"]);
            validation.validate_nbf = true;
            validation.validate_aud = false;
            jsonwebtoken::decode::<Value>(token, &key, &validation)
                .map_err(|e| format!("{alg}: {e}"))?
                .claims
        }
        None => {
            verify_es512(&parts, &jwk)?;
            let claims = segment(parts[1]);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let exp = claims["exp"].as_u64().ok_or("exp not an integer")?;
            let nbf = claims["nbf"].as_u64().ok_or("nbf not an integer")?;
            if exp + 60 < now || nbf > now + 60 {
                return Err("ES512 token not valid now".into());
            }
            claims
        }
    };
    Ok(Verified { header, claims })
}

fn verify_es512(parts: &[&str], jwk: &Value) -> Result<(), String> {
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::ecdsa::EcdsaSig;
    use openssl::nid::Nid;
    if jwk["crv"] != "P-521" {
        return Err("ES512 key not on P-521".into());
    }
    let coordinate = |name: &str| {
        BigNum::from_slice(&URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap()).unwrap()
    };
    let group = EcGroup::from_curve_name(Nid::SECP521R1).unwrap();
    let key = EcKey::from_public_key_affine_coordinates(&group, &coordinate("x"), &coordinate("y"))
        .map_err(|e| e.to_string())?;
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .map_err(|e| e.to_string())?;
    if signature.len() != 132 {
        return Err(format!("ES512 signature of {} bytes", signature.len()));
    }
    let r = BigNum::from_slice(&signature[..66]).unwrap();
    let s = BigNum::from_slice(&signature[66..]).unwrap();
    let signature = EcdsaSig::from_private_components(r, s).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    let digest = openssl::sha::sha512(input.as_bytes());
    match signature.verify(&digest, &key) {
        Ok(true) => Ok(()),
        _ => Err("ES512 signature does not verify".into()),
    }
}

/// The token of a `Bearer` Authorization header.
pub(crate) fn bearer(headers: &HeaderMap) -> String {
    let values: Vec<_> = headers.get_all("authorization").iter().collect();
    assert_eq!(values.len(), 1, "exactly one Authorization value");
    values[0]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .expect("Bearer scheme")
        .to_owned()
}

/// What the inner service saw.
#[derive(Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<Vec<http::request::Parts>>>);

impl Seen {
    pub(crate) fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The parts of the only request seen.
    pub(crate) fn only(&self) -> http::request::Parts {
        let seen = self.0.lock().unwrap();
        assert_eq!(seen.len(), 1, "the inner service saw one request");
        seen[0].clone()
    }
}

/// An inner service that records each request and answers 200 "ok".
pub(crate) fn recording<B: Send + 'static>(
    seen: &Seen,
) -> impl tower::Service<
    Request<B>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    let seen = seen.clone();
    tower::service_fn(move |request: Request<B>| {
        let (parts, _) = request.into_parts();
        seen.0.lock().unwrap().push(parts);
        async { Ok(Response::new(Full::new(Bytes::from_static(b"ok")))) }
    })
}

/// A response body as JSON.
pub(crate) async fn json_body<B>(body: B) -> Value
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = body.collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
}

/// A plain HTTP/1 client for tests.
pub(crate) fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends `request` (bounded to 10 s) and collects the answer.
pub(crate) async fn fetch(request: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client().request(request),
    )
    .await
    .expect("answered in time")
    .expect("request sent");
    let (parts, body) = response.into_parts();
    let bytes = tokio::time::timeout(std::time::Duration::from_secs(10), body.collect())
        .await
        .expect("body in time")
        .expect("body read")
        .to_bytes();
    (parts, bytes)
}

/// Aborts a spawned server when dropped, so a failing test cleans up too.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
