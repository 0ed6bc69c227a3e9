//! The examples, run as real processes (the binaries `cargo test` builds
//! into `target/<profile>/examples/`), and the threat model's claims that
//! no other test shows.

#[path = "../support/mod.rs"]
mod support;

mod lifecycle_proxy;
mod quickstart;
mod signing_proxy;
mod threat_model;
