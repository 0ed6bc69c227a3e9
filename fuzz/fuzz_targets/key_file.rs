//! Fuzz target `key_file`: see `tests/support/fuzz/mod.rs`
//! (`support::key_file`) for the input format and what is checked.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// One scratch directory per process, in memory when `/dev/shm` exists.
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        dir.expect("a scratch directory")
    })
    .path()
}

fuzz_target!(|data: &[u8]| tower_jwt_signer_fuzz::support::key_file(scratch(), data));
