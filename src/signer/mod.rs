//! Middleware that signs every forwarded request with a short-lived JWT.
//!
//! [`JwtSignerLayer`] wraps any `Service<http::Request<B>>` in a
//! [`JwtSigner`]. For each request it takes one snapshot of the
//! [`KeyRegistry`](crate::KeyRegistry), signs a fresh token with the active
//! key, writes it into the request (by default `Authorization: Bearer
//! <jwt>`, marked sensitive) and calls the inner service. Backends verify
//! the token with the public keys the [`JwksService`](crate::JwksService)
//! publishes. This is the Otoroshi gateway's "JWT Signer" plugin as tower
//! middleware.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_jwt_signer::{Algorithm, JwtSignerLayer, KeyRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! let signer = JwtSignerLayer::builder(registry.clone())
//!     .issuer("https://gateway.example")
//!     .audience("orders-api")
//!     .template_claim("tenant", "${req.headers.x-tenant:public}")
//!     .build()?;
//!
//! let backend = service_fn(|request: Request<String>| async move {
//!     // The backend receives a signed token; it would verify it against
//!     // the JWKS.
//!     let value = request.headers()["authorization"].to_str()?.to_owned();
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response::new(value))
//! });
//! let service = ServiceBuilder::new().layer(signer).service(backend);
//!
//! let response = service
//!     .oneshot(Request::get("/orders").body(String::new())?)
//!     .await?;
//! let (_, body) = response.into_parts();
//! # use http_body_util::BodyExt;
//! let value = String::from_utf8(body.collect().await?.to_bytes().to_vec())?;
//! assert!(value.starts_with("Bearer ey"));
//! # Ok(())
//! # }
//! ```
//!
//! # The token
//!
//! The JWT header is exactly `{"alg","typ","kid"}`: the algorithm and kid of
//! the active key (never anything taken from the request) and `typ` (`JWT`
//! by default, see [`JwtSignerLayerBuilder::token_type`]). It is encoded once per
//! key, not per request. For a certificate-backed key (see
//! [`CertificateChain`](crate::keys::CertificateChain)),
//! [`header_x5t_s256`](JwtSignerLayerBuilder::header_x5t_s256) adds the
//! certificate's `x5t#S256` (off by default). Such a key signs only while
//! its chain is valid: before `notBefore` or after `notAfter` the signer
//! answers 503 (see the [status table](#answers-the-signer-gives-itself)).
//!
//! | claim | value |
//! |---|---|
//! | `iat` | now, from the registry's [`Clock`](crate::clock::Clock), an integer |
//! | `nbf` | `iat`, or `iat` minus [`not_before_backdate`](JwtSignerLayerBuilder::not_before_backdate) |
//! | `exp` | `iat` + [`ttl`](JwtSignerLayerBuilder::ttl) (the registry's [token lifetime](crate::KeyRegistry::token_ttl), 60 s by default) |
//! | `jti` | 128 random bits, base64url |
//! | `iss`, `sub`, `aud` | when set: [`issuer`](JwtSignerLayerBuilder::issuer), [`subject`](JwtSignerLayerBuilder::subject), [`audience`](JwtSignerLayerBuilder::audience) / [`audiences`](JwtSignerLayerBuilder::audiences), a template, or the per-request closure |
//! | anything else | [static claims](JwtSignerLayerBuilder::claim), [templates](JwtSignerLayerBuilder::template_claim), [per-request claims](JwtSignerLayerBuilder::request_claims) |
//!
//! `iat`, `nbf`, `exp` and `jti` always come from the signer: no source can
//! set them, so they are always JSON integers (or, for `jti`, a random
//! string).
//!
//! ## Precedence
//!
//! When several sources set the same claim, the first of these wins:
//!
//! 1. the per-request closure ([`JwtSignerLayerBuilder::request_claims`]);
//! 2. templates ([`JwtSignerLayerBuilder::template_claim`]);
//! 3. static claims ([`JwtSignerLayerBuilder::claim`], `issuer`, `subject`,
//!    `audience`);
//! 4. the signer's defaults (`iat`, `nbf`, `exp`, `jti`), which the other
//!    sources cannot override: setting them is refused at configuration
//!    time (by [`JwtSignerLayerBuilder::build`]), or by
//!    [`RequestClaims::claim`].
//!
//! A claim name appears once in a token.
//!
//! # Templates
//!
//! A template claim is a string with `${...}` expressions, compiled once
//! when the layer is built and rendered from each request:
//!
//! | expression | value |
//! |---|---|
//! | `${req.headers.NAME}` | the header's value; several lines are joined with `", "` (RFC 9110); bytes that are not UTF-8 become U+FFFD |
//! | `${req.query.NAME}` | the first query parameter with that name, percent-decoded (`+` is a space) |
//! | `${req.path}` | the URI path as received (still percent-encoded) |
//! | `${req.method}` | the method |
//! | `${req.host}` | `host[:port]`: the URI's authority (an absolute-form request target, HTTP/2 `:authority`) wins over the `Host` header (RFC 9112, section 3.2.2); a `user:password@` part is never copied |
//!
//! Each takes an optional default after a colon:
//! `${req.headers.x-tenant:public}` (the default runs to the closing brace
//! and cannot hold a `}`). Literal text around expressions is kept; `$${`
//! writes a literal `${`.
//!
//! Every value is a JSON string, unless the whole template is exactly one
//! expression prefixed with `number:` or `boolean:`:
//! `${number:req.headers.x-priority:0}` renders a JSON number, written
//! exactly as received (strict JSON syntax: no spaces, no `+`, finite), and
//! `${boolean:req.query.debug:false}` a JSON boolean (`true` or `false`).
//! A number must also keep its value when read as a 64-bit integer or a
//! double, the rule this crate's [`Verifier`](crate::Verifier) applies
//! (see [numbers in the claims](crate::verifier#numbers-in-the-claims)):
//! `444444444444444444444444` is refused, so send larger identifiers as
//! strings. Defaults of typed expressions are checked when the layer is
//! built.
//!
//! Request values are data. They are escaped as JSON string content, so
//! quotes, backslashes, control characters (a `%0D%0A` in the query),
//! unicode or very long values can never add a claim, change another
//! claim, or add a header. A request that lacks a value an expression
//! needs (no such header and no default), or whose value is not a number
//! (that keeps its value) or boolean where one is required, is answered
//! `400` with a JSON body and is not forwarded.
//!
//! # Existing tokens
//!
//! When the request already carries the target header (once or several
//! times), [`ExistingToken`] decides: [`Replace`](ExistingToken::Replace)
//! (default: every value removed, exactly one written, ours),
//! [`Keep`](ExistingToken::Keep) or [`Reject`](ExistingToken::Reject)
//! (`400`).
//!
//! [`Keep`](ExistingToken::Keep) forwards the client's own value(s) of the
//! header, byte for byte, and signs nothing: that value is **not signed by
//! this signer**, and the backend must verify it as it would any client's
//! token (a client can put anything there). A request without the header
//! is signed as usual.
//!
//! The claims closure ([`JwtSignerLayerBuilder::request_claims`]) runs first,
//! under every policy: a request it refuses is refused (401, 403 or 500)
//! whatever the client sent, even under `Keep` (where its claims are then
//! not used) and under `Reject` (its answer comes before `token_present`).
//! Templates run only when a token is made.
//!
//! # What the backend receives
//!
//! The signer makes sure the header it writes is the one that arrives:
//!
//! * A look-alike of the token header, a header whose name is the same
//!   when `_` and `-` are read alike (`X_JWT_Token` or `x-jwt_token` next
//!   to `X-JWT-Token`), could be read instead of ours by a backend that
//!   maps `_` to `-` (CGI, WSGI and the servers in front of them). The
//!   signer removes every look-alike from every request it forwards,
//!   under every [`ExistingToken`] policy: a look-alike never counts as the
//!   header (under `Reject` it is removed and the request signed; under
//!   `Keep` only the header itself is kept). `Authorization`, with neither
//!   character, has no look-alike.
//! * A client's `Connection` header can name the token header
//!   (`Connection: close, authorization`), which makes it hop-by-hop: any
//!   compliant proxy between the signer and the backend would drop it
//!   (RFC 9110, section 7.6.1). The signer removes the header's name
//!   (or a look-alike, in any case) from every `Connection` line of
//!   every request it forwards, keeps the other names in their order, and
//!   drops the `Connection` header when no name is left.
//!
//! # Answers the signer gives itself
//!
//! A request is never forwarded without a token this signer made, but for
//! the client's own value under [`ExistingToken::Keep`]. In these cases the
//! inner service is not called; the client gets a small JSON body
//! `{"error":"...","reason":"..."}` (with `Cache-Control: no-store`) and a
//! `tracing` event records why:
//!
//! | case | status | `error` | [`Refusal`] |
//! |---|---|---|---|
//! | [`ExistingToken::Reject`] and the header is present | 400 | `token_present` | [`TokenPresent`](Refusal::TokenPresent) |
//! | a template needs a value the request lacks, or of the wrong type (a number that would not keep its value, too) | 400 | `claim_unavailable` | [`ClaimUnavailable`](Refusal::ClaimUnavailable) |
//! | the claims closure returns [`ClaimsRejection::unauthorized`] / [`forbidden`](ClaimsRejection::forbidden) | 401 / 403 | `unauthorized` / `forbidden` | [`Unauthorized`](Refusal::Unauthorized) / [`Forbidden`](Refusal::Forbidden) |
//! | the claims closure returns [`ClaimsRejection::internal`] (or a [`ReservedClaim`] error) | 500 | `claims_failed` | [`ClaimsFailed`](Refusal::ClaimsFailed) |
//! | the token would be longer than [`max_token_len`](JwtSignerLayerBuilder::max_token_len) (8 KiB by default) | 400 | `token_too_large` | [`TokenTooLarge`](Refusal::TokenTooLarge) |
//! | the registry has no active key | 503 | `no_signing_key` | [`NoSigningKey`](Refusal::NoSigningKey) |
//! | the active key is certificate-backed and its chain has expired / is not valid yet | 503 | `certificate_expired` / `certificate_not_yet_valid` | [`CertificateExpired`](Refusal::CertificateExpired) / [`CertificateNotYetValid`](Refusal::CertificateNotYetValid) |
//! | signing fails (the key backend, the random source) | 500 | `signing_failed` | [`SigningFailed`](Refusal::SigningFailed) |
//!
//! The response extensions hold the typed cause, a [`Refusal`] (as the
//! verifier's hold its `VerifyError`), with the `error` code, the status
//! and the reason of the body: an outer layer can render the refusal its
//! own way (an RFC 9457 problem document, an HTML page) with
//! `tower::util::MapResponseLayer` or axum's `map_response`, and tell the
//! signer's answers from the backend's.
//!
//! # Strategies: pass-through and re-signing
//!
//! The signer makes a token for every request: Otoroshi's `DefaultToken`
//! strategy. Otoroshi's verifiers have two more, for a client that comes
//! with a token of an identity provider, and this crate's layers compose
//! to do both, with a [`JwtVerifierLayer`](crate::JwtVerifierLayer) over
//! the provider's JWKS in front:
//!
//! | strategy | the gateway's stack, outer first | the backend receives | the backend verifies against |
//! |---|---|---|---|
//! | `PassThrough` | verifier (provider), forwarder | the client's token, unchanged | the provider's JWKS |
//! | `Sign` / `Transform` | verifier (provider), signer (gateway key, [`CopyClaims`]), forwarder | a token of the gateway, with claims mapped from the client's | the gateway's JWKS ([`JwksService`](crate::JwksService)) |
//!
//! A token the provider did not sign, expired, for another audience or
//! issuer, is refused by the verifier (401 with a `WWW-Authenticate`
//! challenge, see the [verifier's answers](crate::verifier#responses)) and
//! reaches neither the signer nor the backend. To re-sign, the signer's
//! claims closure reads the [`VerifiedClaims`](crate::VerifiedClaims) the
//! verifier put in the request extensions; [`CopyClaims`] is that closure
//! ready-made: it copies the claims you name, renamed if you like, and
//! nothing else (the provider's `iss`, `aud`, `exp`, `jti` stay behind:
//! the signer writes its own). Require the claims you copy on the
//! provider's verifier, so a token without them is refused there.
//!
//! The provider's token must not travel on to the backend. The signer
//! replaces every value of the header it writes
//! ([`ExistingToken::Replace`], the default), so the verifier must read
//! the client's token from that header (both default to
//! `Authorization: Bearer`). A client's token read from somewhere else (a
//! cookie, another header) stays in the request unless you remove it.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, service_fn};
//! use tower_jwt_signer::signer::CopyClaims;
//! use tower_jwt_signer::{
//!     Algorithm, JwksService, JwtSignerLayer, JwtVerifierLayer, KeyRegistry, RemoteJwks, Verifier,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The provider's tokens: its keys, its issuer, this gateway as audience.
//! let provider = Verifier::builder(RemoteJwks::new("http://idp.internal/.well-known/jwks.json")?)
//!     .issuer("https://idp.example")
//!     .audience("gateway")
//!     .required_claims(["exp", "sub", "email"])
//!     .build()?;
//!
//! // A real gateway forwards `request` upstream here.
//! let forwarder = service_fn(|_request: Request<String>| async {
//!     Ok::<_, Infallible>(Response::new(String::new()))
//! });
//!
//! // PassThrough: verify the client's token and forward it unchanged.
//! let pass_through = ServiceBuilder::new()
//!     .layer(JwtVerifierLayer::new(provider.clone()))
//!     .service(forwarder);
//!
//! // Sign / Transform: verify it, then forward a token of the gateway's
//! // own, with `sub` copied and `email` renamed.
//! let gateway = KeyRegistry::generate(Algorithm::ES256)?;
//! let copy = CopyClaims::builder()
//!     .claim("sub")
//!     .rename("email", "user_email")
//!     .build()?;
//! let signer = JwtSignerLayer::builder(gateway.clone())
//!     .issuer("https://gateway.example")
//!     .audience("orders-api")
//!     .request_claims(move |parts| copy.claims_for(parts))
//!     .build()?;
//! let resign = ServiceBuilder::new()
//!     .layer(JwtVerifierLayer::new(provider))
//!     .layer(signer)
//!     .service(forwarder);
//! // The backends of `resign` verify against the gateway's keys.
//! let jwks = JwksService::new(gateway);
//! # let _ = (pass_through, resign, jwks);
//! # Ok(())
//! # }
//! ```
//!
//! # Settings and runtime
//!
//! A [`JwtSignerLayer`] holds settings only, checked once by
//! [`JwtSignerLayerBuilder::build`] and shared (behind an `Arc`) by every
//! service it builds: nothing is checked per request. What changes while
//! requests are served belongs to a service: each call of
//! [`Layer::layer`](tower_layer::Layer::layer) gives the service it builds
//! a runtime of its own (the encoded JWT header of the active key and, with
//! [`JwtSignerLayerBuilder::reuse_tokens`], a token reuse cache), as tower's
//! `ConcurrencyLimitLayer` makes a fresh semaphore for each service. Clones
//! of a service share its runtime; [`JwtSigner::cached_tokens`] reports its
//! cache. axum's `Router::layer` builds one service per route, so each
//! route has its own reuse cache; one [`TokenCache`] given to
//! [`JwtSignerLayerBuilder::reuse_tokens_in`] is shared instead, by every service
//! built with it (as tower's `GlobalConcurrencyLimitLayer` shares one
//! semaphore).
//!
//! # Response body
//!
//! The response body is [`ResponseBody<B>`]: the inner service's body `B`
//! untouched, or the signer's JSON body. It implements `http_body::Body`
//! whenever `B: Body<Data = Bytes>`, so it works as it is with axum's
//! `Body` (in `Router::layer`), with hyper's `Incoming` (a reverse proxy
//! returning upstream responses), with `Full<Bytes>` and boxed bodies. No
//! bound is put on `B` itself.
//!
//! # Security
//!
//! * Clocks: `nbf` equals `iat` unless backdated; backends whose clock runs
//!   behind the gateway's need a small leeway, or set
//!   [`not_before_backdate`](JwtSignerLayerBuilder::not_before_backdate).
//! * Lifetime: keep tokens short (60 s by default, at most a day). The
//!   lifetime is the registry's
//!   [`token_ttl`](crate::registry::KeyRegistryBuilder::token_ttl), which the
//!   rotator also reads to keep a retiring key published long enough; a
//!   signer may sign shorter tokens, never longer ones (see the
//!   [registry docs](crate::registry#token-lifetime-and-jwks-max-age)).
//! * Where signing runs: ECDSA P-256 and EdDSA take tens of microseconds
//!   and are signed on the calling task; RSA, RSA-PSS, ES384 and ES512
//!   (hundreds of microseconds) go to the signer's own threads (one per
//!   core) by default so they do not hold an async worker. See [`Offload`].
//!
//! # Performance
//!
//! The JWT header is encoded once per key, static claims are serialised
//! once, and each token is written into one buffer with one base64 pass
//! before the signature. Through the layer, a token costs within a few
//! percent of the bare signature (`BENCHMARKS.md` has the figures and the
//! command that measures them on your machine). Opt-in
//! [`TokenReuse`] skips the signature for requests whose claims equal those
//! of a recent token.

mod body;
mod claims;
mod config;
mod copy;
mod failure;
mod future;
mod jti;
mod layer;
mod mint;
mod offload;
mod pool;
mod reuse;
mod scrub;
mod service;
mod template;

pub use body::ResponseBody;
pub use claims::{ClaimsRejection, RequestClaims, ReservedClaim};
pub use config::ExistingToken;
pub use copy::{CopyClaims, CopyClaimsBuilder};
pub use failure::Refusal;
pub use future::ResponseFuture;
pub use layer::{JwtSignerLayer, JwtSignerLayerBuilder};
pub use offload::Offload;
pub use reuse::{TokenCache, TokenReuse};
pub use service::JwtSigner;

#[cfg(feature = "pkcs11")]
pub(crate) use pool::signing_threads;

#[cfg(test)]
mod tests;
