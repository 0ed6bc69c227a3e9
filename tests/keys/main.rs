//! Keys: generation, import and export, the published JWK and its
//! thumbprint, known answers from the RFCs, Wycheproof, and the fuzz
//! targets' checks on proptest inputs.

#[path = "../support/mod.rs"]
mod support;

mod certificate;
mod config;
mod fuzz_inputs;
#[cfg(feature = "josekit")]
mod josekit_adapter;
mod signing_key;
mod stored;
mod vectors;
mod wycheproof;
