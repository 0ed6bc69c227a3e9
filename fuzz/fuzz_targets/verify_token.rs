//! Fuzz target `verify_token`: see `tests/support/fuzz/mod.rs` (`support::verify_token`)
//! for the input format and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tower_jwt_signer_fuzz::support::verify_token(data));
