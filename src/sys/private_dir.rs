//! A directory only we may write (the state dir, the PIA cache under it) and the files in it. The directory is
//! opened once, without following a symlink, and refused unless we own it and neither group nor others may
//! write to it; every file in it is then created, read, renamed and removed relative to that open directory and
//! never through a symlink, so nothing planted in it, or swapped in for it, redirects what the hook writes as
//! root.

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl PrivateDir {
    /// Opens `path`, first creating it (and missing parents) with mode 0700 if it does not exist. Refused with
    /// one line naming `path` and what is wrong: a symlink, not a directory, not ours, writable by others.
    pub fn open(path: &Path) -> Result<PrivateDir, String> {
        let fail = |what: String| format!("{}: {what}", path.display());
        let fd = match nix::fcntl::open(path, DIR_FLAGS, Mode::empty()) {
            Err(Errno::ENOENT) => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(|e| fail(format!("creating it: {e}")))?;
                nix::fcntl::open(path, DIR_FLAGS, Mode::empty())
            }
            other => other,
        }
        .map_err(|e| fail(why_not_a_dir(e, std::fs::symlink_metadata(path).ok())))?;
        Self::checked(path.to_owned(), fd)
    }

    /// The subdirectory `name`, created 0700 when missing, checked like `open`.
    pub fn subdir(&self, name: &str) -> Result<PrivateDir, String> {
        let path = self.path.join(name);
        let fail = |what: String| format!("{}: {what}", path.display());
        match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(fail(format!("creating it: {}", io::Error::from(e)))),
        }
        let fd = openat(self.fd.as_fd(), name, DIR_FLAGS, Mode::empty()).map_err(|e| {
            let meta = fstatat(
                self.fd.as_fd(),
                name,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            fail(why_not_a_dir(e, meta.ok().map(Kind::from)))
        })?;
        Self::checked(path, fd)
    }

    fn checked(path: PathBuf, fd: OwnedFd) -> Result<PrivateDir, String> {
        let fail = |what: String| format!("{}: {what}", path.display());
        let stat = fstat(fd.as_fd()).map_err(|e| fail(io::Error::from(e).to_string()))?;
        let euid = nix::unistd::geteuid().as_raw();
        if stat.st_uid != euid {
            return Err(fail(format!(
                "owned by uid {}, not by us (uid {euid}); it must be ours alone",
                stat.st_uid
            )));
        }
        let mode = stat.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            return Err(fail(format!(
                "writable by group or others (mode {mode:04o}); run chmod 700 {}",
                path.display()
            )));
        }
        Ok(PrivateDir { path, fd })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file `name`, or None if there is none. A symlink or anything but a regular file is an error.
    pub fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = match openat(self.fd.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(is_a_symlink()),
            Err(e) => return Err(e.into()),
        };
        if SFlag::from_bits_truncate(fstat(fd.as_fd())?.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        let mut bytes = Vec::new();
        File::from(fd).read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    }

    /// Replaces `name` whole with `bytes` (permission bits `mode`): written to a temporary file of this process's
    /// own, renamed over `name`, so a reader (a poststop after runc killed us) finds the old file or the new one,
    /// never half. Not fsynced: what is kept here (records of live tunnels, a token) means nothing after a reboot,
    /// and an fsync costs ~10 ms on a disk-backed state dir, on every start. A stale temporary file of that name
    /// is removed first, and the new one is made with O_EXCL|O_NOFOLLOW.
    pub fn write(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        let result = (|| {
            let mut file = self.create_new(&tmp, mode)?;
            file.write_all(bytes)?;
            renameat(self.fd.as_fd(), tmp.as_str(), self.fd.as_fd(), name)?;
            Ok(())
        })();
        if result.is_err() {
            let _ = self.remove(&tmp);
        }
        result
    }

    /// A new, empty file `name` for writing (whatever was there, a symlink included, is removed first).
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        self.remove(name)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(self.fd.as_fd(), name, flags, Mode::from_bits_truncate(mode))?;
        let file = File::from(fd);
        // The umask may have taken bits away; the mode asked for is the mode wanted.
        nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode))?;
        Ok(file)
    }

    /// `name` opened for a lock: made (mode 0600) when missing, never through a symlink, and a regular file.
    pub(super) fn open_lock_file(&self, name: &str) -> io::Result<File> {
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            self.fd.as_fd(),
            name,
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| match e {
            Errno::ELOOP => is_a_symlink(),
            e => e.into(),
        })?;
        if SFlag::from_bits_truncate(fstat(fd.as_fd())?.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        Ok(File::from(fd))
    }

    /// Whether `name` is, right now, the file `file` has open.
    pub(super) fn is_same_file(&self, name: &str, file: &impl AsFd) -> io::Result<bool> {
        let open = fstat(file.as_fd())?;
        match fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(now) => Ok(now.st_dev == open.st_dev && now.st_ino == open.st_ino),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes `name`; none there is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the subdirectory `name` if it is empty; a missing or non-empty one is left as it is.
    pub fn remove_empty_dir(&self, name: &str) -> io::Result<()> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) | Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// When `name` (not followed if a symlink) was last modified.
    pub fn modified(&self, name: &str) -> Option<SystemTime> {
        let stat = fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?;
        let secs = u64::try_from(stat.st_mtime).ok()?;
        let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0);
        Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
    }

    /// The names of the directory's entries.
    pub fn names(&self) -> io::Result<Vec<String>> {
        // Through our fd's /proc link, so it is the directory we checked that is listed.
        let entries = std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }
}

fn is_a_symlink() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "is a symlink")
}

/// What a failed open of a directory means, told from the path's own (unfollowed) metadata.
fn why_not_a_dir(e: Errno, kind: Option<impl Into<Kind>>) -> String {
    match kind.map(Into::into) {
        Some(Kind::Symlink) => {
            "is a symlink; name the real directory (symlinks are not followed here)".into()
        }
        Some(Kind::Other) => "is not a directory".into(),
        _ => io::Error::from(e).to_string(),
    }
}

enum Kind {
    Symlink,
    Dir,
    Other,
}

impl From<std::fs::Metadata> for Kind {
    fn from(m: std::fs::Metadata) -> Kind {
        if m.file_type().is_symlink() {
            Kind::Symlink
        } else if m.is_dir() {
            Kind::Dir
        } else {
            Kind::Other
        }
    }
}

impl From<FileStat> for Kind {
    fn from(s: FileStat) -> Kind {
        match SFlag::from_bits_truncate(s.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFLNK => Kind::Symlink,
            SFlag::S_IFDIR => Kind::Dir,
            _ => Kind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("wgoh-pd-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_missing_dir_is_made_private_and_files_round_trip() {
        let tmp = TempDir::new("make");
        let path = tmp.0.join("a/state");
        let dir = PrivateDir::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
        assert!(dir.read("x").unwrap().is_none());
        dir.write("x", b"one", 0o600).unwrap();
        dir.write("x", b"two", 0o644).unwrap();
        assert_eq!(dir.read("x").unwrap().unwrap(), b"two");
        let mode = std::fs::metadata(path.join("x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o644);
        assert_eq!(dir.names().unwrap(), ["x"], "no temporary file left");
        assert!(dir.modified("x").is_some());
        dir.remove("x").unwrap();
        dir.remove("x").unwrap();
        assert!(dir.read("x").unwrap().is_none());
    }

    #[test]
    fn dirs_that_others_may_write_or_that_are_symlinks_are_refused_in_one_line() {
        let tmp = TempDir::new("refuse");
        let open = tmp.0.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = PrivateDir::open(&open).err().unwrap();
        assert!(
            e.contains("open: writable by group or others (mode 0777)"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let link = tmp.0.join("link");
        let real = tmp.0.join("real");
        std::fs::create_dir(&real).unwrap();
        symlink(&real, &link).unwrap();
        let e = PrivateDir::open(&link).err().unwrap();
        assert!(e.contains("link: is a symlink"), "{e}");
        let file = tmp.0.join("file");
        std::fs::write(&file, "").unwrap();
        let e = PrivateDir::open(&file).err().unwrap();
        assert!(e.contains("file: is not a directory"), "{e}");

        // The same for a subdirectory, which is made private when missing.
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir = PrivateDir::open(&real).unwrap();
        let sub = dir.subdir("pia").unwrap();
        assert_eq!(sub.path(), real.join("pia"));
        std::fs::set_permissions(real.join("pia"), std::fs::Permissions::from_mode(0o770)).unwrap();
        let e = dir.subdir("pia").err().unwrap();
        assert!(e.contains("pia: writable by group or others"), "{e}");
        symlink(&open, real.join("cache")).unwrap();
        let e = dir.subdir("cache").err().unwrap();
        assert!(e.contains("cache: is a symlink"), "{e}");
    }

    #[test]
    fn symlinks_planted_in_the_dir_are_never_followed() {
        let tmp = TempDir::new("plant");
        let victim = tmp.0.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let dir = PrivateDir::open(&tmp.0.join("state")).unwrap();
        let state = dir.path().to_owned();
        // At this process's temporary name, and at the target's own name.
        symlink(
            &victim,
            state.join(format!(".rec.{}.tmp", std::process::id())),
        )
        .unwrap();
        dir.write("rec", b"record", 0o600).unwrap();
        symlink(&victim, state.join("log")).unwrap();
        dir.create_new("log", 0o600)
            .unwrap()
            .write_all(b"log line")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(dir.read("rec").unwrap().unwrap(), b"record");
        assert!(!std::fs::symlink_metadata(state.join("log"))
            .unwrap()
            .file_type()
            .is_symlink());
        // Reading refuses a symlink rather than reading what it points at.
        symlink(&victim, state.join("planted")).unwrap();
        let e = dir.read("planted").unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }
}
