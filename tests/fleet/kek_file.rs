//! A key-encryption key file gets the checks a `DirKeyStore` key file gets,
//! by the same code: owned by the process's uid unless a `ForeignOwner`
//! allows another, `chmod 600` unless `LoosePermissions::Warn`, a regular
//! file opened without blocking and without following a link, except
//! Kubernetes' `kek -> ..data/kek`.
//!
//! The ownership test chowns the file to uid 65534 (`nobody`), which needs
//! root: run as another user, it fails and says so (CI runs as root).

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use tower_jwt_signer::StoreError;
use tower_jwt_signer::store::redis::Kek;
use tower_jwt_signer::store::{ForeignOwner, LoosePermissions};

/// The uid `nobody` has on Linux distributions.
const NOBODY: u32 = 65534;

fn write_kek(path: &Path, mode: u32) {
    std::fs::write(path, [5u8; 32]).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `f` on its own thread and waits for it at most 30 s: a read that
/// blocks (on a FIFO) fails the test instead of hanging it.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} did not return within 30 s: it blocks"))
}

#[test]
fn a_kek_file_another_user_owns_is_refused_unless_that_owner_is_allowed() {
    let euid = tempfile::tempfile().unwrap().metadata().unwrap().uid();
    assert_eq!(
        euid, 0,
        "this test needs root (it runs as uid {euid}): it chowns a KEK file to uid {NOBODY} \
         (nobody) to check that it is refused; run it as root, as CI does"
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kek");
    write_kek(&path, 0o600);
    let ours = Kek::from_file(&path).unwrap();
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();

    let err = Kek::from_file(&path).expect_err("a KEK file nobody owns was read");
    assert!(
        matches!(
            err,
            StoreError::ForeignOwner {
                owner: NOBODY,
                euid: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.path(), Some(path.as_path()), "{err}");
    // Root is not nobody; creating does not replace a file that is there.
    for builder in [
        Kek::builder(&path).foreign_owner(ForeignOwner::AllowRoot),
        Kek::builder(&path).create(true),
    ] {
        let err = builder.open().expect_err("still nobody's");
        assert!(matches!(err, StoreError::ForeignOwner { .. }), "{err:?}");
    }
    let allowed = Kek::builder(&path)
        .foreign_owner(ForeignOwner::AllowUid(NOBODY))
        .open()
        .unwrap();
    assert_eq!(allowed.id(), ours.id());
}

#[test]
fn loose_permissions_are_refused_unless_only_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("kek");
    for mode in [0o640, 0o604, 0o620, 0o440] {
        write_kek(&path, mode);
        let err = Kek::from_file(&path).expect_err("a loose KEK file was read");
        assert!(
            matches!(&err, StoreError::LoosePermissions { mode: found, reason, .. }
                if found & 0o777 == mode && reason.contains("key-encryption key file")),
            "{mode:o}: {err:?}"
        );
        Kek::builder(&path)
            .loose_permissions(LoosePermissions::Warn)
            .open()
            .unwrap();
    }
}

/// A Kubernetes Secret volume: `kek -> ..data/kek`, `..data ->
/// ..<timestamp>/`. That one form of link is read; any other link is not
/// followed.
#[test]
fn the_kubernetes_secret_layout_is_read_and_other_links_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("volume");
    let data = volume.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&data).unwrap();
    write_kek(&data.join("kek"), 0o400);
    symlink("..2026_01_01_00_00_00.000000001", volume.join("..data")).unwrap();
    symlink("..data/kek", volume.join("kek")).unwrap();
    let from_secret = Kek::from_file(volume.join("kek")).unwrap();
    assert_eq!(
        from_secret.id(),
        Kek::from_bytes(&[5; 32]).unwrap().id(),
        "the file behind the link"
    );

    for (name, target) in [
        ("other", "..data/kek"),
        ("elsewhere", "/etc/hostname"),
        ("plain", "volume/..data/kek"),
    ] {
        let link = volume.join(name);
        symlink(target, &link).unwrap();
        let err = Kek::from_file(&link).expect_err("a link was followed");
        assert!(
            matches!(&err, StoreError::NotRegularFile { found, .. } if found.contains("symbolic link")),
            "{name}: {err:?}"
        );
        assert_eq!(err.path(), Some(link.as_path()), "{err}");
    }
}

#[test]
fn a_fifo_as_the_kek_file_is_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("kek");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let reading = fifo.clone();
    let err = bounded("reading a FIFO as the KEK file", move || {
        Kek::from_file(&reading)
    })
    .expect_err("a FIFO was read as a KEK");
    assert!(
        matches!(&err, StoreError::NotRegularFile { found, .. } if found.contains("FIFO")),
        "{err:?}"
    );
    let creating = fifo.clone();
    let err = bounded("creating over a FIFO", move || {
        Kek::builder(&creating).create(true).open()
    })
    .expect_err("a FIFO was replaced");
    assert!(matches!(err, StoreError::NotRegularFile { .. }), "{err:?}");
    // A directory is not a KEK file either.
    let err = Kek::from_file(tmp.path()).expect_err("a directory was read");
    assert!(matches!(err, StoreError::NotRegularFile { .. }), "{err:?}");
}
