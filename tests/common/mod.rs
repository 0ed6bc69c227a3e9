//! Helpers shared by the integration tests. Each test crate uses a part of
//! them, hence the `dead_code` allowance.
#![allow(dead_code, unreachable_pub)]

pub mod chain;
pub mod jose;
pub mod signer;
pub mod soak;
pub mod verifier;
