//! The checks a file that holds a secret gets before a byte of it is read,
//! in one place: the key files of a [`DirKeyStore`](super::DirKeyStore),
//! the key-encryption key file of a `RedisKeyStore` (feature `redis`) and
//! the PIN file of a PKCS#11 token (feature `pkcs11`).
//!
//! * It is opened without blocking (a FIFO opens at once, with or without
//!   a writer) and without following a symbolic link at its last
//!   component, except the one form Kubernetes writes volumes in
//!   (`NAME -> ..data/NAME`), and `fstat`ed: anything but a regular file is
//!   [`StoreError::NotRegularFile`].
//! * On Unix, its owner must be the process's effective uid, or one a
//!   [`ForeignOwner`] allows ([`StoreError::ForeignOwner`]), and it must be
//!   neither readable nor writable by group or others, unless
//!   [`LoosePermissions::Warn`] ([`StoreError::LoosePermissions`]).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;
#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, PermissionsExt};

#[cfg(unix)]
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
#[cfg(unix)]
use rustix::io::Errno;

use super::StoreError;

/// The link Kubernetes points a volume's files through (`NAME ->
/// ..data/NAME`).
#[cfg(unix)]
const KUBERNETES_DATA: &str = "..data";

/// What to do about a key directory, key file or key-encryption key file
/// whose permissions are too open. See "Permissions" in the
/// [`DirKeyStore`](super::DirKeyStore) docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LoosePermissions {
    /// Refuse with [`StoreError::LoosePermissions`] (the default).
    #[default]
    Refuse,
    /// Log a `tracing` warning and go on.
    Warn,
}

/// What to do about a key directory, key file or key-encryption key file
/// owned by another user than the process's effective uid (Unix). See
/// "Ownership" in the [`DirKeyStore`](super::DirKeyStore) docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForeignOwner {
    /// Refuse with [`StoreError::ForeignOwner`] (the default), as `ssh`
    /// refuses a private key another user owns.
    #[default]
    Refuse,
    /// Accept root (uid 0) as the owner too: a directory provisioned by
    /// root, such as a Kubernetes Secret or ConfigMap volume read by a pod
    /// that does not run as root.
    AllowRoot,
    /// Accept this uid as the owner too: for example `nobody` (65534) on
    /// an NFS export with `root_squash`, where the files a root process
    /// creates are owned by `nobody`.
    AllowUid(u32),
}

impl ForeignOwner {
    /// Whether a file owned by `owner` is accepted by a process whose
    /// effective uid is `euid`.
    #[cfg_attr(not(unix), allow(dead_code))]
    fn allows(self, owner: u32, euid: u32) -> bool {
        owner == euid
            || match self {
                ForeignOwner::Refuse => false,
                ForeignOwner::AllowRoot => owner == 0,
                ForeignOwner::AllowUid(uid) => owner == uid,
            }
    }
}

/// The owners and permissions a reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileRules {
    pub(crate) loose: LoosePermissions,
    pub(crate) foreign: ForeignOwner,
}

impl FileRules {
    /// Refuses (or logs, by [`LoosePermissions`]) `path`, whose `mode` is
    /// too open for the `reason` given.
    #[cfg_attr(not(unix), allow(dead_code))]
    fn loose(&self, path: &Path, mode: u32, reason: &'static str) -> Result<(), StoreError> {
        match self.loose {
            LoosePermissions::Refuse => Err(StoreError::LoosePermissions {
                path: path.to_path_buf(),
                mode,
                reason,
            }),
            LoosePermissions::Warn => {
                tracing::warn!(
                    path = %path.display(),
                    mode = %format_args!("{:04o}", mode & 0o7777),
                    reason,
                    "key store permissions are too open"
                );
                Ok(())
            }
        }
    }

    /// Refuses `path`, owned by `owner`, unless the effective uid or an
    /// owner [`ForeignOwner`] allows owns it.
    #[cfg(unix)]
    fn check_owner(&self, path: &Path, owner: u32) -> Result<(), StoreError> {
        let euid = rustix::process::geteuid().as_raw();
        if self.foreign.allows(owner, euid) {
            Ok(())
        } else {
            Err(StoreError::ForeignOwner {
                path: path.to_path_buf(),
                owner,
                euid,
            })
        }
    }

    /// A key directory's checks: owned by the process (or an owner
    /// [`ForeignOwner`] allows), not writable by group or others (they
    /// could plant or delete keys). Readable by others is fine: file names
    /// are kids, which are public.
    pub(super) fn check_dir(&self, path: &Path, meta: &fs::Metadata) -> Result<(), StoreError> {
        #[cfg(unix)]
        {
            self.check_owner(path, meta.uid())?;
            let mode = meta.permissions().mode();
            if mode & 0o022 != 0 {
                self.loose(path, mode, "directory writable by group or others")?;
            }
        }
        #[cfg(not(unix))]
        let _ = (path, meta);
        Ok(())
    }

    /// Opens the secret file `name` of `dir` (`path` names it in errors)
    /// with the checks of the [module docs](self): a regular file (or
    /// Kubernetes' link to one), owned by the process (or an owner
    /// [`ForeignOwner`] allows), neither readable nor writable by group or
    /// others (`loose_reason` says what the file is when it is). `None`
    /// when it does not exist (any more). Nothing is read.
    pub(super) fn open_secret(
        &self,
        dir: &OpenDir,
        name: &OsStr,
        path: &Path,
        loose_reason: &'static str,
    ) -> Result<Option<(File, fs::Metadata)>, StoreError> {
        let Some((file, meta)) = open_in(dir, name, path)? else {
            return Ok(None);
        };
        #[cfg(unix)]
        {
            self.check_owner(path, meta.uid())?;
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                self.loose(path, mode, loose_reason)?;
            }
        }
        #[cfg(not(unix))]
        let _ = loose_reason;
        Ok(Some((file, meta)))
    }
}

/// Reads the secret file at `path` with the checks of `rules` (see
/// [`FileRules::open_secret`]; `loose_reason` says what the file is when
/// its permissions are too open): at most `limit + 1` bytes, so that the
/// caller can tell a file longer than `limit`. `None` when it does not
/// exist.
#[cfg_attr(not(any(feature = "redis", feature = "pkcs11")), allow(dead_code))]
pub(crate) fn read_secret_file(
    path: &Path,
    rules: FileRules,
    limit: u64,
    loose_reason: &'static str,
) -> Result<Option<Vec<u8>>, StoreError> {
    use std::io::Read as _;

    let Some(name) = path.file_name() else {
        return Err(StoreError::io("read", path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not the path of a file",
        )));
    };
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let (dir, _) = open_dir(parent, "open directory")?;
    let Some((file, _)) = rules.open_secret(&dir, name, path, loose_reason)? else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(StoreError::io("read", path))?;
    Ok(Some(bytes))
}

/// A directory, open: on Unix the checks, the listing and every file open
/// of one load go through its descriptor (`fstat`, `openat`), so they are
/// all about one directory even if its path is renamed or replaced
/// meanwhile.
#[cfg(unix)]
pub(super) struct OpenDir(pub(super) File);
#[cfg(not(unix))]
pub(super) struct OpenDir;

/// Opens the directory at `path`, following it if it is a symbolic link,
/// and returns its metadata; `action` names what failed in errors. Refuses
/// anything but a directory.
pub(super) fn open_dir(
    path: &Path,
    action: &'static str,
) -> Result<(OpenDir, fs::Metadata), StoreError> {
    let failed = || StoreError::io(action, path);
    #[cfg(unix)]
    let (dir, meta) = {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| failed()(errno.into()))?;
        let dir = File::from(fd);
        let meta = dir.metadata().map_err(failed())?;
        (OpenDir(dir), meta)
    };
    #[cfg(not(unix))]
    let (dir, meta) = (OpenDir, fs::metadata(path).map_err(failed())?);
    if !meta.is_dir() {
        return Err(failed()(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    Ok((dir, meta))
}

/// Opens the file `name` of `dir` (at `path`): see [`open_regular`]. A
/// symbolic link is read only in the form Kubernetes writes volumes with,
/// `NAME -> ..data/NAME`, through `..data` (which the kubelet swaps to
/// update the volume atomically), still without following a link at the
/// last step. `None` when it does not exist (any more).
fn open_in(
    dir: &OpenDir,
    name: &OsStr,
    path: &Path,
) -> Result<Option<(File, fs::Metadata)>, StoreError> {
    #[cfg(unix)]
    match open_regular(dir.0.as_fd(), name, path)? {
        Opened::File(file, meta) => Ok(Some((file, meta))),
        Opened::Missing => Ok(None),
        Opened::Link => {
            let target = Path::new(KUBERNETES_DATA).join(name);
            match rustix::fs::readlinkat(&dir.0, name, Vec::new()) {
                Ok(link) if link.as_bytes() == target.as_os_str().as_bytes() => {}
                Ok(_) => return Err(not_regular(path, "a symbolic link")),
                Err(Errno::NOENT) => return Ok(None),
                Err(errno) => return Err(StoreError::io("read", path)(errno.into())),
            }
            open_regular(dir.0.as_fd(), target.as_path(), path)?.or_refuse_link(path)
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, name);
        open_regular(path)
    }
}

/// What [`open_regular`] found.
#[cfg(unix)]
pub(super) enum Opened {
    /// A regular file, open for reading, and its `fstat`.
    File(File, fs::Metadata),
    /// Nothing by that name.
    Missing,
    /// A symbolic link, not followed.
    Link,
}

#[cfg(unix)]
impl Opened {
    /// The file, `None` when missing; a link is refused.
    pub(super) fn or_refuse_link(
        self,
        path: &Path,
    ) -> Result<Option<(File, fs::Metadata)>, StoreError> {
        match self {
            Opened::File(file, meta) => Ok(Some((file, meta))),
            Opened::Missing => Ok(None),
            Opened::Link => Err(not_regular(path, "a symbolic link")),
        }
    }
}

/// Opens `rel` (relative to `dir`; `path` names it in errors) for reading,
/// without blocking (a FIFO opens at once, with or without a writer) and
/// without following a symbolic link at its last component, then `fstat`s
/// the open file: anything but a regular file is refused with
/// [`StoreError::NotRegularFile`] before a byte is read.
#[cfg(unix)]
pub(super) fn open_regular<P: rustix::path::Arg + Copy>(
    dir: BorrowedFd<'_>,
    rel: P,
    path: &Path,
) -> Result<Opened, StoreError> {
    let flags =
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, rel, flags, Mode::empty()) {
        Ok(fd) => {
            let (file, meta) = regular_file(fd, path, "read")?;
            Ok(Opened::File(file, meta))
        }
        Err(Errno::NOENT) => Ok(Opened::Missing),
        Err(errno) => match file_type_at(dir, rel) {
            Some(FileType::Symlink) => Ok(Opened::Link),
            Some(kind) if kind != FileType::RegularFile => Err(not_regular(path, kind_name(kind))),
            _ => Err(StoreError::io("read", path)(errno.into())),
        },
    }
}

/// The type of `rel` in `dir`, without following a link. After a failed
/// open: the error `O_NOFOLLOW` gives for a link varies (`ELOOP` on Linux,
/// `EMLINK` on FreeBSD) and a socket cannot be opened at all.
#[cfg(unix)]
pub(super) fn file_type_at<P: rustix::path::Arg>(dir: BorrowedFd<'_>, rel: P) -> Option<FileType> {
    rustix::fs::statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|stat| FileType::from_raw_mode(stat.st_mode))
}

/// `fd` as a file if it is a regular file (checked with `fstat`).
#[cfg(unix)]
pub(super) fn regular_file(
    fd: OwnedFd,
    path: &Path,
    action: &'static str,
) -> Result<(File, fs::Metadata), StoreError> {
    let file = File::from(fd);
    let meta = file.metadata().map_err(StoreError::io(action, path))?;
    if meta.is_file() {
        return Ok((file, meta));
    }
    let kind = rustix::fs::fstat(&file).map_or(FileType::Unknown, |stat| {
        FileType::from_raw_mode(stat.st_mode)
    });
    Err(not_regular(path, kind_name(kind)))
}

/// Opens `path` for reading, refusing anything but a regular file. `None`
/// when it does not exist.
#[cfg(not(unix))]
pub(super) fn open_regular(path: &Path) -> Result<Option<(File, fs::Metadata)>, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(StoreError::io("read", path)(err)),
    };
    let meta = file.metadata().map_err(StoreError::io("read", path))?;
    if meta.is_file() {
        Ok(Some((file, meta)))
    } else if meta.is_dir() {
        Err(not_regular(path, "a directory"))
    } else {
        Err(not_regular(path, "an unknown kind of file"))
    }
}

#[cfg(unix)]
pub(super) fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "an unknown kind of file",
    }
}

pub(super) fn not_regular(path: &Path, found: &'static str) -> StoreError {
    StoreError::NotRegularFile {
        path: path.to_path_buf(),
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_effective_uid_owns_keys_unless_another_owner_is_allowed() {
        let (euid, root, nobody) = (1000, 0, 65534);
        for owner in [root, nobody, 1001] {
            assert!(!ForeignOwner::Refuse.allows(owner, euid));
        }
        for foreign in [
            ForeignOwner::Refuse,
            ForeignOwner::AllowRoot,
            ForeignOwner::AllowUid(nobody),
        ] {
            assert!(foreign.allows(euid, euid), "{foreign:?}");
            // Root's own files, as root.
            assert!(foreign.allows(root, root), "{foreign:?}");
            assert!(!foreign.allows(1001, euid), "{foreign:?}");
        }
        assert!(ForeignOwner::AllowRoot.allows(root, euid));
        assert!(!ForeignOwner::AllowRoot.allows(nobody, euid));
        assert!(ForeignOwner::AllowUid(nobody).allows(nobody, euid));
        assert!(!ForeignOwner::AllowUid(nobody).allows(root, euid));
        assert_eq!(ForeignOwner::default(), ForeignOwner::Refuse);
    }
}
