//! Tower middleware that signs every forwarded request with a short-lived
//! JWT, and a JWKS endpoint that publishes the public keys.
//!
//! A gateway in front of many APIs proves to each backend who is calling
//! without sharing a secret with any of them: it signs a short-lived token
//! with an asymmetric private key that never leaves the process, and
//! publishes only the public keys as a JWK Set at
//! [`JWKS_PATH`] (`/.well-known/otoroshi/security/jwks.json`, as the
//! Otoroshi gateway does). Every backend verifies tokens on its own, picking
//! the key by the token's `kid`.
//!
//! # Example
//!
//! A gateway: every request through it gets a fresh token, and the JWKS
//! route publishes the public keys.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower::ServiceBuilder;
//! use tower_http::trace::TraceLayer;
//! use tower_jwt_signer::{Algorithm, JWKS_PATH, JwksService, JwtSignerLayer, KeyRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One registry, shared by everything that signs or publishes.
//! let registry = KeyRegistry::generate(Algorithm::ES256)?;
//!
//! let signer = JwtSignerLayer::builder(registry.clone())
//!     .issuer("https://gateway.example")
//!     .audience("orders-api")
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/orders", get(|| async { "forwarded with a signed token" }))
//!     .layer(ServiceBuilder::new().layer(TraceLayer::new_for_http()).layer(signer))
//!     .route_service(JWKS_PATH, JwksService::new(registry));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let server = tokio::spawn(async move { axum::serve(listener, app).await });
//! # server.abort();
//! # let _ = addr;
//! # Ok(())
//! # }
//! ```
//!
//! # The pieces
//!
//! | piece | module |
//! |---|---|
//! | [`SigningKey`]: a private key with its [`Algorithm`] and [`Kid`] (generate, import PKCS#8 or JWK, export; with its X.509 chain, published as `x5c`); any [`SigningBackend`](keys::SigningBackend) (an HSM, a KMS) can stand in for it | [`keys`] |
//! | [`KeyRegistry`]: the shared keys (next, active, retiring), read as lock-free snapshots and rotated atomically; the one home of the token lifetime and the JWKS max-age | [`registry`] |
//! | [`JwksService`]: serves the registry's public keys with `Cache-Control` and `ETag`; [`JwksSource`](jwks::JwksSource): the keys of several registries as one set | [`jwks`] |
//! | [`DiscoveryService`]: the OpenID discovery document (`issuer`, `jwks_uri`, the algorithms), with the JWKS's HTTP semantics | [`discovery`] |
//! | [`JwtSignerLayer`] / [`JwtSigner`]: signs every forwarded request, fails closed | [`signer`] |
//! | [`JwtVerifierLayer`], [`Verifier`] (also a tower-http authorizer), [`RemoteJwks`]: the backend side; [`VerifiedClaims`] (and, with `axum`, `Claims<T>`) in the handler | [`verifier`] |
//! | [`DirKeyStore`] and any [`KeyStore`](store::KeyStore): keys that survive restarts, shared by replicas; `RedisKeyStore` (feature `redis`): one key set for a fleet of gateways | [`store`] |
//! | [`RotationPolicy`], [`KeyRotator`]: automatic rotation with overlap | [`rotation`] |
//! | `Forwarder` (feature `upstream`, default): the gateway's last step, each request sent on to an upstream (hop-by-hop headers removed, `X-Forwarded-For`, 502/504 answered) | `upstream` |
//! | `Pkcs11Token` (feature `pkcs11`): keys that never leave a PKCS#11 token (an HSM), made, rotated and destroyed inside it | `pkcs11` |
//! | [`Clock`](clock::Clock): the wall clock, which tests can drive with tokio's paused time | [`clock`] |
//! | the metric names (feature `metrics`: counters, gauges and histograms through the `metrics` facade) | [`metrics`] |
//! | conversions to and from `josekit::jwk::Jwk`, a josekit signer as a [`SigningBackend`](keys::SigningBackend) (feature `josekit`) | `josekit` |
//!
//! # One way to configure, one place for each item
//!
//! Everything is configured the same way, as with reqwest or rustls:
//! `X::new(..)` gives the defaults, and `X::builder(..)` returns a builder
//! whose setters only record their value and whose `build()` checks them all
//! once, returning the first refusal as a [`ConfigError`] that names the
//! setting. Nothing is checked per request: a layer or service that exists
//! works. Errors with a cause at run time (a store that fails, a token that
//! does not verify) have types of their own.
//!
//! The crate root re-exports the types you wire together and the errors
//! they return. Everything else (settings enums, snapshots, builders, the
//! traits you implement) lives at its module path only, at one path each:
//! import an item from the root when it is there, else from its module.
//!
//! # Security
//!
//! * Only asymmetric algorithms exist ([`Algorithm`]); `none` and HMAC do
//!   not parse. RSA keys are at least 2048 bits.
//! * Published JWKs are built from the public key and hold only public
//!   members; `Debug` never prints key material.
//! * Tokens carry exactly `alg`, `typ` and `kid` in their header; the
//!   algorithm comes from the key, never from a request.
//! * A request is never forwarded unsigned: if a token cannot be made, the
//!   signer answers the request itself. (Under
//!   [`ExistingToken::Keep`](signer::ExistingToken::Keep), a client's own token is forwarded as it came,
//!   not signed by the signer; its claims closure still decides.)
//! * A key with a certificate chain signs only while every certificate of
//!   the chain is valid (503 otherwise). The chain is published for
//!   verifiers that want it; the crate does not validate it to a root.
//! * The verifier takes the algorithm from the key a token's `kid` selects,
//!   and never fetches or trusts a key a token names (`jku`, `x5u`, `jwk`,
//!   `x5c`).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]

mod answer;
mod b64;
pub mod clock;
pub mod discovery;
mod error;
#[cfg(feature = "josekit")]
#[cfg_attr(docsrs, doc(cfg(feature = "josekit")))]
pub mod josekit;
pub mod jwks;
pub mod keys;
mod limits;
pub mod metrics;
mod number;
#[cfg(feature = "pkcs11")]
#[cfg_attr(docsrs, doc(cfg(feature = "pkcs11")))]
pub mod pkcs11;
pub mod registry;
pub mod rotation;
pub mod signer;
pub mod store;
#[cfg(feature = "upstream")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream")))]
pub mod upstream;
pub mod verifier;

#[doc(inline)]
pub use discovery::DiscoveryService;
#[doc(inline)]
pub use error::ConfigError;
#[doc(inline)]
pub use jwks::{JWKS_PATH, JwksService};
#[doc(inline)]
pub use keys::{Algorithm, KeyError, Kid, SigningKey};
#[cfg(feature = "pkcs11")]
#[cfg_attr(docsrs, doc(cfg(feature = "pkcs11")))]
#[doc(inline)]
pub use pkcs11::{Pkcs11Error, Pkcs11Token};
#[doc(inline)]
pub use registry::{KeyRegistry, RegistryError};
#[doc(inline)]
pub use rotation::{KeyRotator, RotationError, RotationPolicy};
#[doc(inline)]
pub use signer::{JwtSigner, JwtSignerLayer};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use store::redis::RedisKeyStore;
#[doc(inline)]
pub use store::{DirKeyStore, StoreError};
#[cfg(feature = "upstream")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream")))]
#[doc(inline)]
pub use upstream::Forwarder;
#[doc(inline)]
pub use verifier::{
    FetchError, JwtVerifier, JwtVerifierLayer, RemoteJwks, VerifiedClaims, Verifier, VerifyError,
};

// The README's examples compile as doctests, with the features they show
// (`cargo test --all-features`, as CI runs).
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "tower-http",
    feature = "upstream"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
