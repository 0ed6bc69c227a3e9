//! The one support tree of the integration tests, included by each area's
//! `main.rs` with `#[path = "../support/mod.rs"] mod support;`. Each binary
//! uses a part of it, hence the `dead_code` allowance.
#![allow(dead_code, unreachable_pub)]

pub mod certs;
pub mod chain;
pub mod disk;
pub mod fuzz;
pub mod jose;
pub mod lifecycle;
pub mod logs;
pub mod process;
pub mod signer;
pub mod soak;
#[cfg(unix)]
pub mod softhsm;
pub mod upstream;
pub mod verifier;
