//! Real disk faults for the key directory: a directory the kernel refuses
//! writes to ([`ReadOnly`]), and a small file system that really fills up
//! ([`SmallDisk`]). The `DirKeyStore` under test meets the fault itself:
//! its temporary file is really created (or not), its write or rename
//! really fails, and it must clean up by itself, so "every file whole, no
//! temporary file left" is something the store did, not something a test
//! double made true.
//!
//! As root (CI runs as root), `chmod` stops nothing: the read-only
//! directory is a read-only bind mount and the small disk a tmpfs, both
//! needing `CAP_SYS_ADMIN`. Where a fault cannot be made the test fails,
//! saying what it needs; nothing falls back to a fake. Mounts are undone by
//! `Drop`, also when the test fails.
//!
//! One fault cannot be made at the right moment from outside: "the disk
//! fills up between the two writes of an activation". [`FullAfterSaves`]
//! only picks that moment: it fills the real tmpfs just before the Nth
//! save and then lets the real `DirKeyStore` save, which fails with the
//! real `ENOSPC`.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use tower_jwt_signer::store::{KeyStore, StoreLock, StoredKey};
use tower_jwt_signer::{DirKeyStore, Kid, StoreError};

/// Linux's "No space left on device".
pub const ENOSPC: i32 = 28;
/// Linux's "Read-only file system".
pub const EROFS: i32 = 30;
/// Linux's "Permission denied".
pub const EACCES: i32 = 13;

/// Runs a command; `Err` with what it printed when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|err| format!("cannot run {program}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn unmount(dir: &Path) {
    let display = dir.display().to_string();
    if run("umount", &[&display]).is_err() {
        // Still busy (a file open in it): detach it now, gone when closed.
        let _ = run("umount", &["-l", &display]);
    }
}

/// Whether a new file can be created in `dir` now.
fn can_create_in(dir: &Path) -> bool {
    let probe = dir.join(".write-probe");
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

/// How [`ReadOnly`] made the directory read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnlyHow {
    /// `chmod 0500`: what stops an unprivileged user.
    Chmod,
    /// A read-only bind mount of the directory on itself: what stops root.
    BindMount,
    Undone,
}

/// A key directory the kernel refuses writes to: `chmod 0500` for an
/// unprivileged user, a read-only bind mount for root (`chmod` does not
/// stop root). Panics, saying what it needs, if neither works. Undone by
/// [`undo`](Self::undo) or when dropped.
pub struct ReadOnly {
    dir: PathBuf,
    how: ReadOnlyHow,
}

impl ReadOnly {
    pub fn apply(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        if !can_create_in(dir) {
            return ReadOnly {
                dir: dir.to_path_buf(),
                how: ReadOnlyHow::Chmod,
            };
        }
        // Root: permissions are not enforced.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let display = dir.display().to_string();
        let needs = "making a directory read-only for root needs a read-only bind mount \
                     (`mount --bind DIR DIR`, then `mount -o remount,bind,ro DIR`), so \
                     CAP_SYS_ADMIN, as the CI container has";
        if let Err(err) = run("mount", &["--bind", &display, &display]) {
            panic!("{needs}: {err}");
        }
        // From here on, Drop unmounts.
        let read_only = ReadOnly {
            dir: dir.to_path_buf(),
            how: ReadOnlyHow::BindMount,
        };
        if let Err(err) = run("mount", &["-o", "remount,bind,ro", &display]) {
            panic!("{needs}: {err}");
        }
        assert!(
            !can_create_in(dir),
            "the read-only bind mount on {display} did not stop writes"
        );
        read_only
    }

    pub fn how(&self) -> ReadOnlyHow {
        self.how
    }

    /// The OS error a write in the directory now gets.
    pub fn errno(&self) -> i32 {
        match self.how {
            ReadOnlyHow::BindMount => EROFS,
            _ => EACCES,
        }
    }

    /// Makes the directory writable again.
    pub fn undo(&mut self) {
        self.restore();
        assert!(
            can_create_in(&self.dir),
            "{} is writable again",
            self.dir.display()
        );
    }

    /// Undoes what `apply` did; never panics.
    fn restore(&mut self) {
        use std::os::unix::fs::PermissionsExt as _;
        match self.how {
            ReadOnlyHow::Chmod => {
                let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
            }
            ReadOnlyHow::BindMount => unmount(&self.dir),
            ReadOnlyHow::Undone => {}
        }
        self.how = ReadOnlyHow::Undone;
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        // Never leave a mount behind, even when the test failed.
        self.restore();
    }
}

/// Fills the file system of `dir`: a file grows until the file system
/// refuses with `ENOSPC`. Returns the file (remove it to free the space).
pub fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(ENOSPC) => break,
            Err(err) => panic!("filling {}: {err}", path.display()),
        }
    }
    // Whatever the page cache held is on the file system now.
    let _ = file.sync_all();
    let probe = dir.join(".full-probe");
    let refused = std::fs::write(&probe, [0u8; 64]).is_err();
    let _ = std::fs::remove_file(&probe);
    assert!(refused, "{} is full", dir.display());
    path
}

/// A key directory on a small tmpfs of its own, which [`fill`](Self::fill)
/// really fills. Mounting needs root (`CAP_SYS_ADMIN`): without it, the
/// test fails saying so. Unmounted when dropped.
pub struct SmallDisk {
    dir: PathBuf,
    filler: Option<PathBuf>,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` on `dir` (created), mode 0700, before any
    /// store opens it.
    pub fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let display = dir.display().to_string();
        if let Err(err) = run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                &display,
            ],
        ) {
            panic!(
                "a full disk is a small tmpfs that fills up: `mount -t tmpfs` needs root \
                 with CAP_SYS_ADMIN, as the CI container has: {err}"
            );
        }
        SmallDisk {
            dir: dir.to_path_buf(),
            filler: None,
        }
    }

    /// Fills the disk.
    pub fn fill(&mut self) {
        self.filler = Some(fill(&self.dir));
    }

    /// Frees the space again.
    pub fn free(&mut self) {
        if let Some(path) = self.filler.take() {
            std::fs::remove_file(path).unwrap();
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        unmount(&self.dir);
    }
}

/// A [`DirKeyStore`] on a [`SmallDisk`] that fills that disk, for real,
/// just before the Nth save from when it is armed, then lets the real store
/// save (and fail with the real `ENOSPC`). It chooses the moment of the
/// fault, nothing else: every read, write, rename, removal and cleanup is
/// the real store's.
#[derive(Debug)]
pub struct FullAfterSaves {
    inner: DirKeyStore,
    dir: PathBuf,
    saves_left: Mutex<Option<usize>>,
    filler: Mutex<Option<PathBuf>>,
}

impl FullAfterSaves {
    pub fn open(dir: &Path) -> Arc<Self> {
        Arc::new(FullAfterSaves {
            inner: DirKeyStore::open(dir).unwrap(),
            dir: dir.to_path_buf(),
            saves_left: Mutex::new(None),
            filler: Mutex::new(None),
        })
    }

    /// Lets `saves` more saves go through, then fills the disk.
    pub fn fill_after(&self, saves: usize) {
        *self.saves_left.lock().unwrap() = Some(saves);
    }

    /// Whether the disk has been filled.
    pub fn is_full(&self) -> bool {
        self.filler.lock().unwrap().is_some()
    }

    /// Frees the space.
    pub fn free(&self) {
        if let Some(path) = self.filler.lock().unwrap().take() {
            std::fs::remove_file(path).unwrap();
        }
    }
}

impl KeyStore for FullAfterSaves {
    fn load(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.inner.load()
    }

    fn save(&self, key: &StoredKey) -> Result<(), StoreError> {
        let mut left = self.saves_left.lock().unwrap();
        match *left {
            Some(0) => {
                *left = None;
                *self.filler.lock().unwrap() = Some(fill(&self.dir));
            }
            Some(n) => *left = Some(n - 1),
            None => {}
        }
        drop(left);
        self.inner.save(key)
    }

    fn remove(&self, kid: &Kid) -> Result<(), StoreError> {
        self.inner.remove(kid)
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        self.inner.lock()
    }
}

/// The OS error under a store error, if any.
pub fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut source = Some(err);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        source = err.source();
    }
    None
}
