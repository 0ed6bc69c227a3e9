//! The backend side: verify the gateway's tokens.
//!
//! [`JwtVerifierLayer`] wraps a backend service. It takes the token from the
//! request (`Authorization: Bearer` by default; see [`TokenSource`]),
//! verifies it with a [`Verifier`], puts the [`VerifiedClaims`] in the
//! request extensions and calls the inner service. A request whose token is
//! missing or bad never reaches the inner service.
//!
//! The keys come from a [`KeySource`]: a [`KeyRegistry`](crate::KeyRegistry)
//! in the same process, a [`RemoteJwks`] (the gateway's JWKS URL, cached),
//! or a fixed [`JwkSet`]. Each public key is parsed once per set, never per
//! request.
//!
//! # What is checked
//!
//! 1. The size (8 KiB by default), before any parsing.
//! 2. The shape: exactly three strict base64url parts; the header a JSON
//!    object without duplicate members.
//! 3. The header: `alg` must name one of the allowed [`Algorithm`]s
//!    (`none`, `HS*` and unknown names never are); `crit` is refused; `jku`,
//!    `x5u`, `jwk` and `x5c` are ignored: nothing is ever fetched from or
//!    trusted in a token; `typ` when configured.
//! 4. The key: the one whose `kid` is the token's (a `kid` is required when
//!    the set holds more than one key). The token's `alg` must fit that key's
//!    type and curve and the key's own `alg` when it has one: **the key
//!    decides the algorithm**, the token only names it.
//! 5. The signature (RSA signatures exactly as long as the modulus, ECDSA
//!    exactly `r || s` with `0 < r, s < n`, Ed25519 64 bytes). ECDSA
//!    signatures are malleable, as RFC 7518 allows: `(r, n - s)` verifies
//!    too, so never use the token's bytes as a replay-cache key (use `jti`).
//! 6. The claims: a JSON object without duplicate members; `exp` (required
//!    by default) and `nbf` with a leeway (30 s by default); `iat`, when
//!    present, a number that is not negative and not later than now plus
//!    the leeway; `iss` and `aud` when configured; any other required
//!    claims; every number keeps its value (below).
//!
//! # Numbers in the claims
//!
//! [`VerifiedClaims`] holds `serde_json` values: integers that fit in `u64`
//! or `i64` exactly, anything else as the nearest `f64`. A token with a
//! number that would not keep its value there (an integer beyond 64 bits
//! such as `444444444444444444444444`, or a decimal with more significant
//! digits than an `f64` holds) is refused with
//! [`VerifyError::InexactNumber`] (401), because two different numbers
//! would otherwise become the same claim. Every number that a JSON library
//! writes from an `f64` or a 64-bit integer passes. Send larger
//! identifiers as strings. (Keeping every number exact with serde_json's
//! `arbitrary_precision` was measured and not chosen: that feature is
//! switched on for every crate in the build, and it breaks their
//! `#[serde(untagged)]` and `#[serde(flatten)]` types that hold an `f64`.)
//!
//! # Responses
//!
//! | reason | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no token (or another scheme) | 401 | `Bearer` |
//! | malformed request: the token header, cookie or parameter repeated, a non-ASCII header, a scheme without a token | 400 | `Bearer error="invalid_request", error_description="..."` |
//! | any bad token | 401 | `Bearer error="invalid_token", error_description="..."` |
//! | no keys available: the remote set never fetched or too old, or no usable key in the source | 503 | none |
//!
//! Bodies are empty: the service needs only `ResBody: Default`, which
//! axum's `Body`, `http_body_util::Full`/`Empty` and boxed bodies all
//! implement. The [`VerifyError`] is in the response extensions for an
//! outer layer that wants to render a body. The description is a fixed text
//! that never quotes the request. Each refusal is logged at `debug` level
//! with its reason; token contents are never logged.
//!
//! # With tower-http
//!
//! With the `tower-http` feature (on by default), a verifier is also a
//! tower-http authorizer: `AsyncRequireAuthorizationLayer::new(verifier.authorizer())`
//! ([`Verifier::authorizer`], [`JwtVerifierLayer::authorizer`] for another
//! [`TokenSource`]) checks what the layer checks and gives the same
//! answers, made by the same function. See [`Authorizer`].
//!
//! # In the handler
//!
//! The [`VerifiedClaims`] are in the request extensions: read them by name
//! ([`subject`](VerifiedClaims::subject), [`issuer`](VerifiedClaims::issuer),
//! [`audience`](VerifiedClaims::audience), [`get`](VerifiedClaims::get)) or
//! as your own type ([`VerifiedClaims::deserialize`]). With the `axum`
//! feature, `VerifiedClaims` is an extractor, and `Claims<T>` deserialises
//! them into the handler's `T`, answering 401 `invalid_token` (the
//! challenge above) when they do not fit.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_jwt_signer::{Algorithm, JwtVerifierLayer, KeyRegistry, VerifiedClaims, Verifier};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//! // In a backend: Verifier::builder(RemoteJwks::new("http://gateway/.well-known/...")?)
//! let verifier = Verifier::builder(registry.clone()).issuer("gateway").build()?;
//!
//! let backend = ServiceBuilder::new()
//!     .layer(JwtVerifierLayer::new(verifier))
//!     .service(service_fn(|request: Request<Full<Bytes>>| async move {
//!         let claims = request.extensions().get::<VerifiedClaims>().unwrap();
//!         let body = format!("hello {}", claims.subject().unwrap_or("?"));
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
//!     }));
//!
//! // No token: 401, and the handler is not called.
//! let response = backend
//!     .clone()
//!     .oneshot(Request::new(Full::default()))
//!     .await?;
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(response.headers()["www-authenticate"], "Bearer");
//! # Ok(())
//! # }
//! ```

mod answer;
#[cfg(feature = "tower-http")]
mod authorize;
mod claims;
#[cfg(feature = "axum")]
mod extract;
mod future;
mod jwk;
mod layer;
mod remote;
mod service;
mod source;
mod token;

#[cfg(feature = "tower-http")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower-http")))]
pub use authorize::{AuthorizeFuture, Authorizer};
pub use claims::VerifiedClaims;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::{Claims, ClaimsError};
pub use future::ResponseFuture;
pub use jwk::{JwkSet, JwkSetError, SkippedKey, VerifyingKey};
pub use layer::{JwtVerifierLayer, JwtVerifierLayerBuilder};
pub use remote::{DiscoveryError, FetchError, RemoteJwks, RemoteJwksBuilder};
pub use service::JwtVerifier;
pub use source::TokenSource;
pub use token::{KeySource, Verifier, VerifierBuilder, VerifyError};

#[cfg(doc)]
use crate::keys::Algorithm;
