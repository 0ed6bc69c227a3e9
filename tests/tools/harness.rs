//! The process harness itself: an example binary that is missing, or older
//! than a source file it is built from, is refused, so a stale build never
//! passes a test.

use std::fs::File;
use std::time::{Duration, SystemTime};

use crate::support::process::{built_from, check_fresh};

#[test]
fn a_missing_or_stale_example_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let binary = tmp.path().join("example");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("deep")).unwrap();
    let source = src.join("deep").join("lib.rs");
    let sources = [src.clone(), tmp.path().join("Cargo.toml")];

    let missing = check_fresh(&binary, &sources).unwrap_err();
    assert!(missing.contains("is missing"), "{missing}");

    let now = SystemTime::now();
    File::create(&source)
        .unwrap()
        .set_modified(now - Duration::from_secs(60))
        .unwrap();
    File::create(&binary)
        .unwrap()
        .set_modified(now - Duration::from_secs(30))
        .unwrap();
    check_fresh(&binary, &sources).unwrap();

    // A source file changed after the build, however deep.
    File::options()
        .write(true)
        .open(&source)
        .unwrap()
        .set_modified(now)
        .unwrap();
    let stale = check_fresh(&binary, &sources).unwrap_err();
    assert!(stale.contains("is older than"), "{stale}");
    assert!(stale.contains("lib.rs"), "{stale}");
}

#[test]
fn the_sources_of_an_example_come_from_its_dep_info() {
    let tmp = tempfile::tempdir().unwrap();
    let binary = tmp.path().join("example");
    assert!(
        built_from(&binary)
            .unwrap_err()
            .contains("example.d is missing")
    );
    std::fs::write(
        tmp.path().join("example.d"),
        "/t/example: /w/examples/example.rs /w/a\\ b/lib.rs  /w/src/x.rs\n\n/w/src/x.rs:\n",
    )
    .unwrap();
    assert_eq!(
        built_from(&binary).unwrap(),
        ["/w/examples/example.rs", "/w/a b/lib.rs", "/w/src/x.rs"].map(std::path::PathBuf::from)
    );
}
