//! The checks the fuzz targets run. They live in the main package's
//! `tests/fuzz_support/mod.rs`, which `tests/fuzz_inputs.rs` runs on
//! proptest inputs inside `cargo test`: one copy of the checks for both.

#[path = "../../tests/fuzz_support/mod.rs"]
pub mod support;
