//! The checks the fuzz targets run. They live in the main package's
//! `tests/support/fuzz/mod.rs`, which `tests/keys/fuzz_inputs.rs` runs on
//! proptest inputs inside `cargo test`: one copy of the checks for both.

#[path = "../../tests/support/fuzz/mod.rs"]
pub mod support;
