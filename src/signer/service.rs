//! [`JwtSigner`]: the service, and the hot path that makes each token.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use tokio::sync::oneshot;

use super::future::Deferred;
use super::layer::{Config, ExistingToken, JwtSignerLayer};
use super::pool;
use super::reuse::{Lookup, NewEntry, ReuseCache};
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
///
/// The inner service must be `Clone` (axum's `Router`, hyper-util's client,
/// `service_fn` closures and tower's `Buffer` are): while a request waits
/// for a signature on the signing threads ([`Offload`](super::Offload)),
/// the inner service that was polled ready for it waits with it, and the
/// signer keeps a clone for the next request.
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
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        match self.shared.sign(&mut parts) {
            Ok(Signed::Ready) => {
                ResponseFuture::forwarded(self.inner.call(Request::from_parts(parts, body)))
            }
            Ok(Signed::Offload(signing)) => {
                // The ready service goes with the request; this service keeps
                // a clone that will be polled ready again before its next call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::offloaded(
                    signing,
                    Deferred {
                        inner,
                        parts,
                        body,
                        header_name: self.shared.config.header_name.clone(),
                    },
                )
            }
            Err(failure) => ResponseFuture::answered(failure.into_response()),
        }
    }
}

/// What [`Shared::sign`] did with a request.
enum Signed {
    /// The header is written (or kept): forward it.
    Ready,
    /// The signature is being computed on the signing threads; the value
    /// arrives here.
    Offload(oneshot::Receiver<Result<HeaderValue, Failure>>),
}

/// What every service built by one layer shares: the registry, the checked
/// configuration, the encoded JWT header of the current key and the reuse
/// cache.
pub(crate) struct Shared {
    registry: KeyRegistry,
    config: Config,
    header: ArcSwapOption<EncodedHeader>,
    reuse: Option<ReuseCache>,
}

/// `BASE64URL({"alg":..,"typ":..,"kid":..})` for one key, built once per key.
struct EncodedHeader {
    signer: Arc<dyn JwsSigner>,
    encoded: String,
    /// The length of this key's signatures: a guess from the algorithm
    /// until the first signature, then the real one (an RSA modulus can be
    /// 2048 to 16384 bits), so each token's buffer is allocated once, at
    /// its size.
    signature_len: AtomicUsize,
}

#[derive(serde::Serialize)]
struct JoseHeader<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// A token whose signing input is written and whose signature is due.
pub(crate) struct Pending {
    /// `<scheme> BASE64URL(header) "." BASE64URL(claims)`.
    value: String,
    /// The key that signs, with its encoded header.
    header: Arc<EncodedHeader>,
    /// Where the token goes in the reuse cache, when reuse is on.
    reuse: Option<NewEntry>,
}

/// The `jti` placeholder: 128 random bits are 22 base64url characters.
const JTI_LEN: usize = 22;

impl Shared {
    pub(crate) fn new(registry: KeyRegistry, config: Config) -> Self {
        let reuse = config
            .reuse
            .map(|settings| ReuseCache::new(settings, config.ttl));
        Shared {
            registry,
            config,
            header: ArcSwapOption::empty(),
            reuse,
        }
    }

    pub(crate) fn registry(&self) -> &KeyRegistry {
        &self.registry
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Only before any service uses it (the layer's copy on write); call
    /// [`config_changed`](Self::config_changed) after the change.
    pub(crate) fn config_mut(&mut self) -> &mut Config {
        self.header = ArcSwapOption::empty();
        &mut self.config
    }

    /// Rebuilds what depends on the configuration.
    pub(crate) fn config_changed(&mut self) {
        self.reuse = self
            .config
            .reuse
            .map(|settings| ReuseCache::new(settings, self.config.ttl));
    }

    pub(crate) fn cached_tokens(&self) -> usize {
        self.reuse.as_ref().map_or(0, ReuseCache::len)
    }

    /// Applies the existing-token policy and writes the token into `parts`,
    /// or hands the signature to the signing threads.
    fn sign(self: &Arc<Self>, parts: &mut Parts) -> Result<Signed, Failure> {
        let config = &self.config;
        if parts.headers.contains_key(&config.header_name) {
            match config.existing {
                ExistingToken::Keep => return Ok(Signed::Ready),
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
        match self.token(parts)? {
            Token::Ready(value) => {
                // `insert` replaces every existing value of the header.
                parts.headers.insert(config.header_name.clone(), value);
                Ok(Signed::Ready)
            }
            Token::Offload(signing) => {
                // Every existing value goes now; ours is written when the
                // signature is there.
                parts.headers.remove(&config.header_name);
                Ok(Signed::Offload(signing))
            }
        }
    }

    /// Builds `<scheme> <jwt>` for this request, or everything but the
    /// signature, which goes to the signing threads.
    fn token(self: &Arc<Self>, parts: &Parts) -> Result<Token, Failure> {
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

        // Claims: the signer's own first (with room for `jti`), then static,
        // template and per-request members; a name is never written twice.
        // The members after `jti` are the reuse key.
        let now = self.registry.clock().unix_seconds();
        let exp = now.saturating_add(config.ttl);
        let mut claims = Vec::with_capacity(128 + config.statics_joined.len());
        let mut numbers = itoa::Buffer::new();
        claims.extend_from_slice(br#"{"iat":"#);
        claims.extend_from_slice(numbers.format(now).as_bytes());
        claims.extend_from_slice(br#","nbf":"#);
        claims.extend_from_slice(
            numbers
                .format(now.saturating_sub(config.backdate))
                .as_bytes(),
        );
        claims.extend_from_slice(br#","exp":"#);
        claims.extend_from_slice(numbers.format(exp).as_bytes());
        claims.extend_from_slice(br#","jti":""#);
        let jti_at = claims.len();
        claims.extend_from_slice(&[b'A'; JTI_LEN]);
        claims.push(b'"');
        let members_at = claims.len();
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

        let reuse = match &self.reuse {
            Some(cache) => {
                let key = &claims[members_at..];
                let hash = cache.hash(key);
                let lookup = Lookup {
                    active: active.signer(),
                    now,
                };
                if let Some(value) = cache.get(hash, key, &lookup) {
                    return Ok(Token::Ready(value));
                }
                Some(NewEntry {
                    hash,
                    key: key.into(),
                    signer: Arc::clone(active.signer()),
                    iat: now,
                    exp,
                })
            }
            None => None,
        };
        claims.push(b'}');
        fill_jti(&mut claims[jti_at..jti_at + JTI_LEN])?;

        // Compact JWS: header.payload, signed, then .signature; the scheme
        // is written first so the whole value is built in one buffer.
        let header = self.header_for(active);
        let signature_len = header.signature_len.load(Ordering::Relaxed);
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
        let pending = Pending {
            value,
            header,
            reuse,
        };
        if !config.offload.offloads(active.algorithm()) {
            return self.finish(pending).map(Token::Ready);
        }
        let (answer, signing) = oneshot::channel();
        let shared = Arc::clone(self);
        let job = move || {
            // A request dropped before its turn needs no signature.
            if !answer.is_closed() {
                let _ = answer.send(shared.finish(pending));
            }
        };
        match pool::execute(job) {
            Ok(()) => Ok(Token::Offload(signing)),
            // No signing thread could be started: sign here.
            Err(job) => {
                job();
                let mut signing = signing;
                match signing.try_recv() {
                    Ok(result) => result.map(Token::Ready),
                    Err(_) => Err(Failure::signing()),
                }
            }
        }
    }

    /// Signs a pending token and makes the header value (on the calling
    /// task, or on a signing thread).
    pub(crate) fn finish(&self, pending: Pending) -> Result<HeaderValue, Failure> {
        let Pending {
            mut value,
            header,
            reuse,
        } = pending;
        let signature = header
            .signer
            .sign(&value.as_bytes()[self.config.prefix.len()..])
            .map_err(|err| {
                tracing::error!(kid = %header.signer.public_jwk().kid(), error = %err, "request refused: signing failed");
                Failure::signing()
            })?;
        header
            .signature_len
            .store(signature.len(), Ordering::Relaxed);
        value.push('.');
        b64::encode_into(signature, &mut value);
        let token_len = value.len() - self.config.prefix.len();
        if token_len > self.config.max_token_len {
            tracing::info!(
                len = token_len,
                max = self.config.max_token_len,
                "request refused: the token would be too large"
            );
            return Err(Failure {
                status: StatusCode::BAD_REQUEST,
                error: "token_too_large",
                reason: format!(
                    "the token would be {token_len} bytes long, the limit is {}",
                    self.config.max_token_len
                )
                .into(),
            });
        }

        let mut value = HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| {
            tracing::error!("request refused: the token is not a valid header value");
            Failure::signing()
        })?;
        value.set_sensitive(true);
        if let (Some(cache), Some(entry)) = (&self.reuse, reuse) {
            cache.insert(entry, value.clone());
        }
        Ok(value)
    }

    /// The encoded header of `active`'s key: cached, rebuilt only when the
    /// active key changes (which also empties the reuse cache).
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
            signature_len: AtomicUsize::new(signature_len(active)),
        });
        let previous = self.header.swap(Some(Arc::clone(&encoded)));
        if previous.is_some()
            && let Some(cache) = &self.reuse
        {
            // Tokens of the previous key are refused on lookup anyway; this
            // releases them (and that key) at once.
            cache.clear();
        }
        encoded
    }
}

/// The token of one request.
enum Token {
    Ready(HeaderValue),
    /// Being signed on the signing threads.
    Offload(oneshot::Receiver<Result<HeaderValue, Failure>>),
}

thread_local! {
    /// Random bytes for `jti`, drawn from OpenSSL in batches: one
    /// `RAND_bytes` call costs about as much as 30 base64 passes, so each
    /// thread takes 64 ids' worth at a time.
    static JTI_POOL: std::cell::RefCell<(usize, [u8; JTI_POOL_LEN])> =
        const { std::cell::RefCell::new((JTI_POOL_LEN, [0; JTI_POOL_LEN])) };
}

const JTI_BYTES: usize = 16;
const JTI_POOL_LEN: usize = 64 * JTI_BYTES;

/// Writes 128 fresh random bits, base64url, into `out` (22 bytes).
fn fill_jti(out: &mut [u8]) -> Result<(), Failure> {
    let mut jti = [0u8; JTI_BYTES];
    JTI_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (used, bytes) = &mut *pool;
        if *used == JTI_POOL_LEN {
            openssl::rand::rand_bytes(bytes).map_err(|err| {
                tracing::error!(error = %err, "request refused: no random bytes for jti");
                Failure::signing()
            })?;
            *used = 0;
        }
        jti.copy_from_slice(&bytes[*used..*used + JTI_BYTES]);
        // Each id is handed out once.
        bytes[*used..*used + JTI_BYTES].fill(0);
        *used += JTI_BYTES;
        Ok::<_, Failure>(())
    })?;
    let written = URL_SAFE_NO_PAD
        .encode_slice(jti, out)
        .map_err(|_| Failure::signing())?;
    debug_assert_eq!(written, JTI_LEN);
    Ok(())
}

/// The length of a raw signature by `key`, to size the buffer.
fn signature_len(key: &PublishedKey) -> usize {
    match key.algorithm().key_kind() {
        KeyKind::Ec(EcCurve::P256) | KeyKind::Ed25519 => 64,
        KeyKind::Ec(EcCurve::P384) => 96,
        KeyKind::Ec(EcCurve::P521) => 132,
        // RSA: a 2048-bit modulus until the first signature tells.
        _ => 256,
    }
}

/// An answer the signer gives itself.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    error: &'static str,
    reason: Cow<'static, str>,
}

impl Failure {
    pub(crate) fn signing() -> Self {
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

    pub(crate) fn into_response<B>(self) -> Response<ResponseBody<B>> {
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
