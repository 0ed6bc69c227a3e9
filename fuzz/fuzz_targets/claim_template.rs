//! Fuzz target `claim_template`: see `tests/support/fuzz/mod.rs` (`support::claim_template`)
//! for the input format and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| tower_jwt_signer_fuzz::support::claim_template(data));
