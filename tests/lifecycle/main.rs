//! The key lifecycle: the registry under concurrency, rotation and its
//! events, the key directory (also with a writer killed mid-write),
//! restarts and replicas, faults under load (read-only directory, full
//! disk, JWKS server restarts, clock jumps), and a soak with rotation.

#[path = "../support/mod.rs"]
mod support;

mod algorithm_change;
mod certificate;
mod config;
mod faults;
mod key_store_crash;
mod key_store_dir;
mod key_store_hardening;
mod registry_concurrency;
mod replicas;
mod restart;
mod rotation_events;
mod rotation_lifecycle;
mod short_period;
mod soak;
