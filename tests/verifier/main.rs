//! The verifier: `Verifier`, `JwtVerifierLayer`, the tower-http authorizer,
//! `RemoteJwks` (also over TLS), the JWKS endpoint over HTTP,
//! interoperability with josekit and jsonwebtoken, and hostile tokens.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "axum")]
mod axum_extractor;
mod config;
mod discovery;
mod hardening;
mod hostile_tokens;
mod interop_josekit;
mod interop_jsonwebtoken;
mod jwks_http;
mod merged_jwks;
#[cfg(feature = "metrics")]
mod metrics;
mod remote_jwks;
#[cfg(feature = "rustls")]
mod remote_jwks_tls;
mod roundtrip;
#[cfg(feature = "tower-http")]
mod tower_http_auth;
mod verify;
