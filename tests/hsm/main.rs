//! Keys that never leave a PKCS#11 token, against SoftHSM2 (feature
//! `pkcs11`): every algorithm the token offers signs through
//! `JwtSignerLayer` and verifies with our verifier and with jsonwebtoken;
//! the private key cannot be read; faults fail closed and recover; keys
//! rotate inside the token and survive a restart with their kids; every
//! configuration error names what is missing.
//!
//! Each test has a token of its own, in a temporary directory, and runs in
//! a child process whose `SOFTHSM2_CONF` points at it
//! (`tests/support/softhsm.rs` says why). Without SoftHSM2 the tests fail
//! with "install softhsm2"; `.ci/run` installs it.

#[path = "../support/mod.rs"]
mod support;

mod algorithms;
mod config;
mod faults;
mod proxy;
mod rotation;
mod util;
