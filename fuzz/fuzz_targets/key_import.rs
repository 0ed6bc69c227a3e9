//! Fuzz target `key_import`: see `tests/support/fuzz/mod.rs` (`support::key_import`)
//! for the input format and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tower_jwt_signer_fuzz::support::key_import(data));
