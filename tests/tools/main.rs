//! The examples, run as real processes (the binaries `cargo test` builds
//! into `target/<profile>/examples/` before it runs the tests; with
//! `cargo test --test tools`, run `cargo build --examples` first), and the
//! threat model's claims that no other test shows.

#[path = "../support/mod.rs"]
mod support;

#[cfg(unix)]
mod cert_proxy;
mod cli;
mod discovery_proxy;
mod harness;
mod lifecycle_proxy;
#[cfg(feature = "metrics")]
mod proxy_metrics;
mod quickstart;
mod signing_proxy;
mod soak_tool;
mod threat_model;
mod verify_backend;
