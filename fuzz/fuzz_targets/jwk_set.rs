//! Fuzz target `jwk_set`: see `tests/support/fuzz/mod.rs` (`support::jwk_set`)
//! for the input format and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tower_jwt_signer_fuzz::support::jwk_set(data));
