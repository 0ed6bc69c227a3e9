//! The signer: `JwtSignerLayer` and its service, offloaded signatures,
//! token reuse, composition with other tower layers, and the whole chain
//! from a signing gateway to a verifying backend.

#[path = "../support/mod.rs"]
mod support;

mod certificate;
mod chain;
mod composition;
mod config;
#[cfg(feature = "upstream")]
mod forward;
mod hardening;
mod layer;
mod offload;
mod refusals;
mod reuse;
mod strategies;
