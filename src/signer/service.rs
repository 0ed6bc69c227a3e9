//! [`JwtSigner`]: the service, and the hot path that makes each token.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::layer::{Config, ExistingToken, JwtSignerLayer};
use super::template::RequestValues;
use super::{ResponseBody, ResponseFuture};
use crate::b64;
use crate::keys::{EcCurve, JwsSigner, KeyKind};
use crate::registry::{KeyRegistry, PublishedKey};

/// Signs each request with a fresh JWT, then calls the inner service. Built
/// by [`JwtSignerLayer`]; see the [module docs](super).
///
/// The inner service's errors pass through unchanged. Requests the signer
/// refuses get a response of its own (see [`ResponseBody`]) and never reach
/// the inner service.
pub struct JwtSigner<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> JwtSigner<S> {
    /// Wraps `inner` with the default configuration of
    /// [`JwtSignerLayer::new`].
    pub fn new(inner: S, registry: KeyRegistry) -> Self {
        tower_layer::Layer::layer(&JwtSignerLayer::new(registry), inner)
    }

    /// A [`JwtSignerLayer`] with the default configuration; configure it
    /// with its builder methods.
    pub fn layer(registry: KeyRegistry) -> JwtSignerLayer {
        JwtSignerLayer::new(registry)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        JwtSigner { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the signer, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for JwtSigner<S> {
    fn clone(&self) -> Self {
        JwtSigner {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for JwtSigner<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSigner")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for JwtSigner<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        match self.shared.sign(&mut parts) {
            Ok(()) => ResponseFuture::forwarded(self.inner.call(Request::from_parts(parts, body))),
            Err(failure) => ResponseFuture::answered(failure.into_response()),
        }
    }
}

/// What every service built by one layer shares: the registry, the checked
/// configuration and the encoded JWT header of the current key.
pub(crate) struct Shared {
    registry: KeyRegistry,
    config: Config,
    header: ArcSwapOption<EncodedHeader>,
}

/// `BASE64URL({"alg":..,"typ":..,"kid":..})` for one key, built once per key.
struct EncodedHeader {
    signer: Arc<dyn JwsSigner>,
    encoded: String,
}

#[derive(serde::Serialize)]
struct JoseHeader<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

impl Shared {
    pub(crate) fn new(registry: KeyRegistry, config: Config) -> Self {
        Shared {
            registry,
            config,
            header: ArcSwapOption::empty(),
        }
    }

    pub(crate) fn registry(&self) -> &KeyRegistry {
        &self.registry
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Only before any service uses it (the layer's copy on write).
    pub(crate) fn config_mut(&mut self) -> &mut Config {
        self.header = ArcSwapOption::empty();
        &mut self.config
    }

    /// Applies the existing-token policy and writes the token into `parts`.
    fn sign(&self, parts: &mut Parts) -> Result<(), Failure> {
        let config = &self.config;
        if parts.headers.contains_key(&config.header_name) {
            match config.existing {
                ExistingToken::Keep => return Ok(()),
                ExistingToken::Reject => {
                    tracing::info!(
                        header = %config.header_name,
                        "request refused: it already carries a token"
                    );
                    return Err(Failure {
                        status: StatusCode::BAD_REQUEST,
                        error: "token_present",
                        reason: format!(
                            "the request already carries a {} header",
                            config.header_name
                        )
                        .into(),
                    });
                }
                ExistingToken::Replace => {}
            }
        }
        let value = self.token_value(parts)?;
        // `insert` replaces every existing value of the header.
        parts.headers.insert(config.header_name.clone(), value);
        Ok(())
    }

    /// Builds `<scheme> <jwt>` for this request.
    fn token_value(&self, parts: &Parts) -> Result<HeaderValue, Failure> {
        let config = &self.config;
        let snapshot = self.registry.current();
        let Some(active) = snapshot.active() else {
            tracing::error!("request refused: the key registry has no active signing key");
            return Err(Failure {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "no_signing_key",
                reason: "no active signing key".into(),
            });
        };

        let per_request = match &config.request_claims {
            Some(claims) => Some((**claims)(parts).map_err(Failure::from_rejection)?),
            None => None,
        };
        let overridden = |name: &str| per_request.as_ref().is_some_and(|c| c.contains(name));

        // Claims: the signer's own first, then static, template and
        // per-request members; a name is never written twice.
        let now = self.registry.clock().unix_seconds();
        let mut claims = Vec::with_capacity(160 + config.statics_joined.len());
        write!(
            claims,
            r#"{{"iat":{now},"nbf":{},"exp":{},"jti":""#,
            now.saturating_sub(config.backdate),
            now.saturating_add(config.ttl),
        )
        .expect("writing to a Vec cannot fail");
        let mut jti = [0u8; 16];
        openssl::rand::rand_bytes(&mut jti).map_err(|err| {
            tracing::error!(error = %err, "request refused: no random bytes for jti");
            Failure::signing()
        })?;
        claims.extend_from_slice(b64::encode(jti).as_bytes());
        claims.push(b'"');
        if per_request.as_ref().is_none_or(|c| c.is_empty()) {
            claims.extend_from_slice(&config.statics_joined);
        } else {
            for claim in config.statics.iter().filter(|c| !overridden(&c.name)) {
                claims.extend_from_slice(&claim.member);
            }
        }
        if !config.templates.is_empty() {
            let values = RequestValues::new(parts, config.templates_read_query);
            for claim in config.templates.iter().filter(|c| !overridden(&c.name)) {
                claims.extend_from_slice(&claim.prefix);
                claim
                    .template
                    .render_json(&values, &mut claims)
                    .map_err(|err| {
                        tracing::info!(claim = %claim.name, error = %err, "request refused: a template claim cannot be built");
                        Failure {
                            status: StatusCode::BAD_REQUEST,
                            error: "claim_unavailable",
                            reason: format!("claim {:?}: {err}", claim.name).into(),
                        }
                    })?;
            }
        }
        if let Some(per_request) = &per_request {
            per_request.write_members(&mut claims);
        }
        claims.push(b'}');

        // Compact JWS: header.payload, signed, then .signature; the scheme
        // is written first so the whole value is built in one buffer.
        let header = self.header_for(active);
        let signature_len = signature_len(active);
        let mut value = String::with_capacity(
            config.prefix.len()
                + header.encoded.len()
                + claims.len().div_ceil(3) * 4
                + signature_len.div_ceil(3) * 4
                + 2,
        );
        value.push_str(&config.prefix);
        value.push_str(&header.encoded);
        value.push('.');
        b64::encode_into(&claims, &mut value);
        let signature = active
            .signer()
            .sign(&value.as_bytes()[config.prefix.len()..])
            .map_err(|err| {
                tracing::error!(kid = %active.kid(), error = %err, "request refused: signing failed");
                Failure::signing()
            })?;
        value.push('.');
        b64::encode_into(signature, &mut value);

        let mut value = HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| {
            tracing::error!("request refused: the token is not a valid header value");
            Failure::signing()
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The encoded header of `active`'s key: cached, rebuilt only when the
    /// active key changes.
    fn header_for(&self, active: &PublishedKey) -> Arc<EncodedHeader> {
        if let Some(cached) = self.header.load().as_ref()
            && std::ptr::addr_eq(Arc::as_ptr(&cached.signer), Arc::as_ptr(active.signer()))
        {
            return Arc::clone(cached);
        }
        let header = JoseHeader {
            alg: active.algorithm().as_str(),
            typ: &self.config.token_type,
            kid: active.kid().as_str(),
        };
        let json = serde_json::to_vec(&header).expect("the JOSE header serialises");
        let encoded = Arc::new(EncodedHeader {
            signer: Arc::clone(active.signer()),
            encoded: b64::encode(json),
        });
        self.header.store(Some(Arc::clone(&encoded)));
        encoded
    }
}

/// The length of a raw signature by `key`, to size the buffer.
fn signature_len(key: &PublishedKey) -> usize {
    match key.algorithm().key_kind() {
        KeyKind::Ec(EcCurve::P256) | KeyKind::Ed25519 => 64,
        KeyKind::Ec(EcCurve::P384) => 96,
        KeyKind::Ec(EcCurve::P521) => 132,
        _ => 512,
    }
}

/// An answer the signer gives itself.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    error: &'static str,
    reason: Cow<'static, str>,
}

impl Failure {
    fn signing() -> Self {
        Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "signing_failed",
            reason: "the request could not be signed".into(),
        }
    }

    fn from_rejection(rejection: super::ClaimsRejection) -> Self {
        let status = rejection.status();
        if status.is_server_error() {
            tracing::error!(
                reason = rejection.reason(),
                "request refused: the claims closure failed"
            );
            return Failure {
                status,
                error: "claims_failed",
                reason: "the token claims could not be built".into(),
            };
        }
        tracing::info!(%status, reason = rejection.reason(), "request refused by the claims closure");
        Failure {
            status,
            error: if status == StatusCode::FORBIDDEN {
                "forbidden"
            } else {
                "unauthorized"
            },
            reason: rejection.reason().to_owned().into(),
        }
    }

    fn into_response<B>(self) -> Response<ResponseBody<B>> {
        let body = serde_json::to_vec(&serde_json::json!({
            "error": self.error,
            "reason": self.reason,
        }))
        .expect("a JSON object of strings serialises");
        let len = body.len();
        let mut response = Response::new(ResponseBody::signer(Bytes::from(body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
