//! Token minting: [`Minter`] holds one service's settings and runtime (the
//! encoded JWT header of the active key, the reuse cache) and makes each
//! request's token in a few named steps:
//!
//! 1. [`request_claims`](Minter::request_claims): the claims closure's
//!    decision (the service asks it first, under every policy);
//! 2. [`mint`](Minter::mint): one registry snapshot, its active key, the
//!    clock, then the steps below;
//! 3. [`write_claims`](Minter::write_claims): the claims JSON, with a
//!    placeholder for `jti`;
//! 4. [`look_up`](Minter::look_up): a token for equal claims to hand out
//!    again, when reuse is on;
//! 5. [`signing_input`](Minter::signing_input): `jti`, then the scheme,
//!    the encoded header and the claims in one buffer;
//! 6. [`sign`](Minter::sign): here, or on the signing threads;
//! 7. [`finish`](Minter::finish): the signature, the size limit, the
//!    header value, the reuse cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::HeaderValue;
use http::request::Parts;
use tokio::sync::oneshot;

use super::claims::RequestClaims;
use super::config::Config;
use super::failure::Failure;
use super::jti::{JTI_LEN, fill_jti};
use super::pool;
use super::reuse::{Lookup, NewEntry, TokenCache};
use super::template::RequestValues;
use crate::b64;
use crate::keys::{CertificateChain, EcCurve, KeyKind, SigningBackend};
use crate::metrics;
use crate::registry::PublishedKey;

/// What one service (and its clones) makes tokens with: the checked
/// settings, shared with the layer, and the runtime, made by
/// [`Layer::layer`](tower_layer::Layer::layer) for the service it builds.
pub(crate) struct Minter {
    config: Arc<Config>,
    /// The encoded JWT header of the active key, rebuilt when it changes.
    header: ArcSwapOption<EncodedHeader>,
    /// Token reuse, when it is on.
    reuse: Option<Reuse>,
}

/// The reuse cache, and how long before `exp` this service stops handing a
/// token out again.
struct Reuse {
    cache: TokenCache,
    min_remaining: u64,
}

/// The token of one request.
pub(crate) enum Token {
    /// `<scheme> <jwt>`, ready for the header.
    Ready(HeaderValue),
    /// Being signed on the signing threads; the value arrives here.
    Offloaded(oneshot::Receiver<Result<HeaderValue, Failure>>),
}

/// `BASE64URL({"alg":..,"typ":..,"kid":..})` for one key, built once per key.
struct EncodedHeader {
    backend: Arc<dyn SigningBackend>,
    encoded: String,
    /// The length of this key's signatures: a guess from the algorithm
    /// until the first signature, then the real one (an RSA modulus can be
    /// 2048 to 8192 bits), so each token's buffer is allocated once, at
    /// its size.
    signature_len: AtomicUsize,
    /// This key's metric handles (nothing without the `metrics` feature).
    metrics: metrics::KeyMetrics,
}

#[derive(serde::Serialize)]
struct JoseHeader<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    x5t_s256: Option<&'a str>,
}

/// The claims of one token, as JSON, while they are written.
struct Claims {
    /// `{"iat":..,"nbf":..,"exp":..,"jti":"<placeholder>", members...`;
    /// the closing brace comes last.
    json: Vec<u8>,
    /// Where the `jti` placeholder starts.
    jti_at: usize,
    /// Where the members after `jti` start: they are the reuse key.
    members_at: usize,
    iat: u64,
    exp: u64,
}

/// What the reuse cache said.
enum Reused {
    /// A token for these claims, handed out again.
    Hit(HeaderValue),
    /// None: sign, and remember the token here (when reuse is on).
    Miss(Option<NewEntry>),
}

/// A token whose signing input is written and whose signature is due.
struct Pending {
    /// `<scheme> BASE64URL(header) "." BASE64URL(claims)`.
    value: String,
    /// The key that signs, with its encoded header.
    header: Arc<EncodedHeader>,
    /// Where the token goes in the reuse cache, when reuse is on.
    remember: Option<NewEntry>,
    /// `iat`: now, in Unix seconds.
    iat: u64,
}

impl Minter {
    /// A fresh runtime for one service: an empty header cache, and the
    /// reuse cache (a new one, or the one the settings share).
    pub(crate) fn new(config: Arc<Config>) -> Self {
        let reuse = config.reuse.as_ref().map(|reuse| {
            let cache = reuse.cache();
            let min_remaining = cache.settings().min_remaining_secs(config.ttl);
            Reuse {
                cache,
                min_remaining,
            }
        });
        Minter {
            config,
            header: ArcSwapOption::empty(),
            reuse,
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// How many tokens the reuse cache holds (0 when reuse is off).
    pub(crate) fn cached_tokens(&self) -> usize {
        self.reuse.as_ref().map_or(0, |reuse| reuse.cache.len())
    }

    /// Step 1: the claims closure's decision. Its refusal is the answer,
    /// whatever the request carries.
    pub(crate) fn request_claims(&self, parts: &Parts) -> Result<Option<RequestClaims>, Failure> {
        match &self.config.request_claims {
            Some(claims) => (**claims)(parts).map(Some).map_err(Failure::from_rejection),
            None => Ok(None),
        }
    }

    /// Step 2: makes `<scheme> <jwt>` for this request from one snapshot of
    /// the registry: a token handed out again, one signed here, or one
    /// being signed on the signing threads.
    pub(crate) fn mint(
        self: &Arc<Self>,
        parts: &Parts,
        per_request: Option<&RequestClaims>,
    ) -> Result<Token, Failure> {
        let snapshot = self.config.registry.current();
        let active = snapshot.active().ok_or_else(Failure::no_signing_key)?;
        let now = self.config.registry.clock().unix_seconds();
        // A certificate-backed key signs only while its chain is valid.
        if let Some(chain) = active.public_jwk().certificate_chain() {
            chain
                .validity_at(now)
                .map_err(|expired| Failure::certificate_not_valid(active.kid(), chain, expired))?;
        }
        let claims = self.write_claims(parts, per_request, now)?;
        let remember = match self.look_up(&claims, active) {
            Reused::Hit(value) => return Ok(Token::Ready(value)),
            Reused::Miss(remember) => remember,
        };
        let pending = self.signing_input(claims, active, remember)?;
        self.sign(pending)
    }

    /// Step 3: the claims. The signer's own first (with room for `jti`),
    /// then static, template and per-request members; a name is never
    /// written twice.
    fn write_claims(
        &self,
        parts: &Parts,
        per_request: Option<&RequestClaims>,
        now: u64,
    ) -> Result<Claims, Failure> {
        let mut claims = self.registered_claims(now);
        let json = &mut claims.json;
        let config = &*self.config;
        let overridden = |name: &str| per_request.is_some_and(|c| c.contains(name));
        if per_request.is_none_or(RequestClaims::is_empty) {
            json.extend_from_slice(&config.statics_joined);
        } else {
            for claim in config.statics.iter().filter(|c| !overridden(&c.name)) {
                json.extend_from_slice(&claim.member);
            }
        }
        if !config.templates.is_empty() {
            let values = RequestValues::new(parts, config.templates_read_query);
            for claim in config.templates.iter().filter(|c| !overridden(&c.name)) {
                json.extend_from_slice(&claim.prefix);
                claim
                    .template
                    .render_json(&values, json)
                    .map_err(|err| Failure::claim_unavailable(&claim.name, &err))?;
            }
        }
        if let Some(per_request) = per_request {
            per_request.write_members(json);
        }
        Ok(claims)
    }

    /// `{"iat":..,"nbf":..,"exp":..,"jti":"<placeholder>"`, in a buffer
    /// with room for the static members.
    fn registered_claims(&self, now: u64) -> Claims {
        let config = &*self.config;
        let exp = now.saturating_add(config.ttl);
        let mut json = Vec::with_capacity(128 + config.statics_joined.len());
        let mut numbers = itoa::Buffer::new();
        json.extend_from_slice(br#"{"iat":"#);
        json.extend_from_slice(numbers.format(now).as_bytes());
        json.extend_from_slice(br#","nbf":"#);
        json.extend_from_slice(
            numbers
                .format(now.saturating_sub(config.backdate))
                .as_bytes(),
        );
        json.extend_from_slice(br#","exp":"#);
        json.extend_from_slice(numbers.format(exp).as_bytes());
        json.extend_from_slice(br#","jti":""#);
        let jti_at = json.len();
        json.extend_from_slice(&[b'A'; JTI_LEN]);
        json.push(b'"');
        Claims {
            members_at: json.len(),
            json,
            jti_at,
            iat: now,
            exp,
        }
    }

    /// Step 4: a token for equal claims, signed by the active key under
    /// these settings, that may still be handed out.
    fn look_up(&self, claims: &Claims, active: &PublishedKey) -> Reused {
        let Some(reuse) = &self.reuse else {
            return Reused::Miss(None);
        };
        let key = &claims.json[claims.members_at..];
        let hash = reuse.cache.hash(key);
        let lookup = Lookup {
            active: active.backend(),
            settings: self.config.id,
            now: claims.iat,
        };
        if let Some(value) = reuse.cache.get(hash, key, &lookup) {
            metrics::reuse(true);
            return Reused::Hit(value);
        }
        metrics::reuse(false);
        Reused::Miss(Some(NewEntry {
            hash,
            key: key.into(),
            backend: Arc::clone(active.backend()),
            settings: self.config.id,
            iat: claims.iat,
            until: claims.exp.saturating_sub(reuse.min_remaining),
        }))
    }

    /// Step 5: the signing input, `BASE64URL(header) "." BASE64URL(claims)`
    /// after the scheme, in one buffer sized for the whole value.
    fn signing_input(
        &self,
        claims: Claims,
        active: &PublishedKey,
        remember: Option<NewEntry>,
    ) -> Result<Pending, Failure> {
        let Claims {
            mut json,
            jti_at,
            iat,
            ..
        } = claims;
        json.push(b'}');
        fill_jti(&mut json[jti_at..jti_at + JTI_LEN]).map_err(|_| Failure::signing())?;

        let prefix = &self.config.prefix;
        let header = self.header_for(active);
        let signature_len = header.signature_len.load(Ordering::Relaxed);
        let mut value = String::with_capacity(
            prefix.len()
                + header.encoded.len()
                + json.len().div_ceil(3) * 4
                + signature_len.div_ceil(3) * 4
                + 2,
        );
        value.push_str(prefix);
        value.push_str(&header.encoded);
        value.push('.');
        b64::encode_into(&json, &mut value);
        Ok(Pending {
            value,
            header,
            remember,
            iat,
        })
    }

    /// Step 6: the signature, here or on the signing threads
    /// ([`Offload`](super::Offload)).
    fn sign(self: &Arc<Self>, pending: Pending) -> Result<Token, Failure> {
        if !self
            .config
            .offload
            .offloads_key(pending.header.backend.as_ref())
        {
            return self.finish(pending).map(Token::Ready);
        }
        let (answer, signing) = oneshot::channel();
        let minter = Arc::clone(self);
        let job = move || {
            // A request dropped before its turn needs no signature.
            if !answer.is_closed() {
                let _ = answer.send(minter.finish(pending));
            }
        };
        match pool::execute(job) {
            Ok(()) => Ok(Token::Offloaded(signing)),
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

    /// Step 7: signs a pending token, checks its size, makes the header
    /// value and remembers it for reuse (on the calling task, or on a
    /// signing thread).
    fn finish(&self, pending: Pending) -> Result<HeaderValue, Failure> {
        let Pending {
            mut value,
            header,
            remember,
            iat,
        } = pending;
        let prefix_len = self.config.prefix.len();
        let timer = metrics::Timer::start();
        let signature = header.backend.sign(&value.as_bytes()[prefix_len..]).map_err(|err| {
            tracing::error!(kid = %header.backend.public_jwk().kid(), error = %err, "request refused: signing failed");
            Failure::signing()
        })?;
        header
            .signature_len
            .store(signature.len(), Ordering::Relaxed);
        value.push('.');
        b64::encode_into(signature, &mut value);

        let token_len = value.len() - prefix_len;
        if token_len > self.config.max_token_len {
            return Err(Failure::token_too_large(
                token_len,
                self.config.max_token_len,
            ));
        }
        let mut value = HeaderValue::from_maybe_shared(Bytes::from(value)).map_err(|_| {
            tracing::error!("request refused: the token is not a valid header value");
            Failure::signing()
        })?;
        value.set_sensitive(true);
        header.metrics.signed(timer, iat);
        if let (Some(reuse), Some(entry)) = (&self.reuse, remember) {
            reuse.cache.insert(entry, value.clone());
        }
        Ok(value)
    }

    /// The encoded header of `active`'s key: cached, rebuilt only when the
    /// active key changes (which also drops the other keys' tokens from the
    /// reuse cache).
    fn header_for(&self, active: &PublishedKey) -> Arc<EncodedHeader> {
        if let Some(cached) = self.header.load().as_ref()
            && std::ptr::addr_eq(Arc::as_ptr(&cached.backend), Arc::as_ptr(active.backend()))
        {
            return Arc::clone(cached);
        }
        let header = JoseHeader {
            alg: active.algorithm().as_str(),
            typ: &self.config.token_type,
            kid: active.kid().as_str(),
            x5t_s256: self
                .config
                .header_x5t_s256
                .then(|| active.public_jwk().certificate_chain())
                .flatten()
                .map(CertificateChain::x5t_s256),
        };
        let json = serde_json::to_vec(&header).expect("the JOSE header serialises");
        let encoded = Arc::new(EncodedHeader {
            backend: Arc::clone(active.backend()),
            encoded: b64::encode(json),
            signature_len: AtomicUsize::new(signature_len(active)),
            metrics: metrics::KeyMetrics::new(
                active.algorithm().as_str(),
                active.kid().as_str(),
                active.activated_at().unwrap_or_else(|| active.created_at()),
            ),
        });
        let previous = self.header.swap(Some(Arc::clone(&encoded)));
        if previous.is_some()
            && let Some(reuse) = &self.reuse
        {
            // Tokens of the previous key are refused on lookup anyway; this
            // releases them (and that key) at once.
            reuse.cache.retain_backend(active.backend());
        }
        encoded
    }
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
