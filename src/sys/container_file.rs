//! Writing a small file inside a running container's filesystem, from the host, safely.
//!
//! The container's files are reached through `/proc/PID/root`, which sees the container's own mounts. At
//! createRuntime runc has not yet done pivot_root: that root is still the host's `/` (in the container's mount
//! namespace), and the container's tree is under the bundle's rootfs path. Paths are resolved with openat2's
//! RESOLVE_IN_ROOT, so a symlink planted in the image resolves inside the container, never to a host file.
//! `open_root`, `open_dir_in_root` and `replace_at` do the same for a rootfs reached by its host path (dns.rs).

use nix::fcntl::{openat2, renameat, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` (absolute, as the container sees it) with `content`, mode 0644, by rename, so readers see
/// the old file or the new one. The directory must exist.
pub fn write(pid: u32, rootfs: &Path, path: &str, content: &[u8]) -> io::Result<()> {
    let root = container_root(pid, rootfs)?;
    let (dir, name) = split(path)?;
    let dir_fd = open_dir_in_root(&root, dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: its directory: {e}")))?;
    replace_at(&dir_fd, OsStr::new(name), content)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

/// Replaces `path` inside the container whose workload runs as `pid`, once it has pivoted into its root; false
/// (nothing written) while `/proc/PID/root` is still the host's `/` (before pivot_root): a path resolved there
/// would name a host file. `still_ours` is asked once the root is open: a pid that another process took over
/// in between must not lead into that process's root.
pub fn write_in_container(
    pid: u32,
    still_ours: impl Fn() -> bool,
    path: &str,
    content: &[u8],
) -> io::Result<bool> {
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    if !still_ours() {
        return Ok(false);
    }
    let theirs = nix::sys::stat::fstat(&root)?;
    let ours = std::fs::metadata("/")?;
    if theirs.st_dev as u64 == ours.dev() && theirs.st_ino as u64 == ours.ino() {
        return Ok(false);
    }
    let (dir, name) = split(path)?;
    let dir_fd = open_dir_in_root(&root, dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: its directory: {e}")))?;
    replace_at(&dir_fd, OsStr::new(name), content)
        .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
    Ok(true)
}

/// Opens the host directory `rootfs` as a root to resolve container paths in; a symlink there is refused, not
/// followed.
pub fn open_root(rootfs: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens the directory `dir` (relative to the container's `/`) as the container sees it: absolute symlinks and
/// `..` stay inside `root`, and /proc's magic links are refused.
pub fn open_dir_in_root(root: impl AsFd, dir: &str) -> io::Result<OwnedFd> {
    openat2(
        root,
        dir,
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
    .map_err(io::Error::from)
}

/// An absolute container path as its directory (relative to `/`) and its file name.
pub fn split(path: &str) -> io::Result<(&str, &str)> {
    let relative = path.trim_start_matches('/');
    let (dir, name) = relative.rsplit_once('/').unwrap_or((".", relative));
    if name.is_empty() || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path}: not a file path"),
        ));
    }
    Ok((dir, name))
}

/// Replaces the entry `name` of `dir` with a new file holding `content`, mode 0644, by rename: readers see the old
/// file or the new one, and a symlink there is replaced, never followed. The temporary file's name is this
/// writer's alone (pid and a counter): containers started from one rootfs write its files at the same time.
pub fn replace_at(dir: impl AsFd, name: &OsStr, content: &[u8]) -> io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let dir = dir.as_fd();
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".wg-oci-hook.{}.{}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = tmp.as_os_str();
    let _ = unlinkat(dir, tmp, UnlinkatFlags::NoRemoveDir);
    let file = openat2(
        dir,
        tmp,
        OpenHow::new()
            .flags(
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(Mode::from_bits_truncate(0o644))
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS),
    )
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("creating it: {e}")))?;
    let written = File::from(file)
        .write_all(content)
        .and_then(|()| renameat(dir, tmp, dir, name).map_err(io::Error::from));
    if written.is_err() {
        let _ = unlinkat(dir, tmp, UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// The directory that is `/` for the container's workload: `/proc/PID/root` after pivot_root, the rootfs
/// under it before.
fn container_root(pid: u32, rootfs: &Path) -> io::Result<OwnedFd> {
    let proc_root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let theirs = nix::sys::stat::fstat(&proc_root)?;
    let ours = std::fs::metadata("/")?;
    if theirs.st_dev as u64 != ours.dev() || theirs.st_ino as u64 != ours.ino() {
        return Ok(proc_root);
    }
    let relative = rootfs.strip_prefix("/").map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("rootfs {} is not absolute", rootfs.display()),
        )
    })?;
    openat2(
        &proc_root,
        relative,
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own process has not pivoted: its rootfs is a directory of the host, as at createRuntime.
    #[test]
    fn writes_inside_the_rootfs_and_symlinks_stay_inside() {
        let base = std::env::temp_dir().join(format!("wgoh-cfile-{}", std::process::id()));
        let rootfs = base.join("rootfs");
        std::fs::create_dir_all(rootfs.join("run")).unwrap();
        let outside = base.join("outside");
        std::fs::write(&outside, "host file\n").unwrap();
        write(std::process::id(), &rootfs, "/run/pia-port", b"47001\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(rootfs.join("run/pia-port")).unwrap(),
            "47001\n"
        );
        write(std::process::id(), &rootfs, "/run/pia-port", b"47002\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(rootfs.join("run/pia-port")).unwrap(),
            "47002\n"
        );

        // A symlinked directory that points at an absolute host path resolves inside the rootfs.
        std::os::unix::fs::symlink(&base, rootfs.join("escape")).unwrap();
        let e = write(std::process::id(), &rootfs, "/escape/outside", b"pwned\n").unwrap_err();
        assert!(e.to_string().contains("/escape/outside"), "{e}");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host file\n");
        // A symlink as the file itself is replaced, not followed.
        std::os::unix::fs::symlink(&outside, rootfs.join("run/link")).unwrap();
        write(std::process::id(), &rootfs, "/run/link", b"1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host file\n");
        assert!(write(std::process::id(), &rootfs, "/missing/dir/file", b"1").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// Containers started from one rootfs directory write its resolv.conf at once: each write must land whole,
    /// whatever the others do (a fixed temporary name made one start in 25 fail with ENOENT or EEXIST).
    #[test]
    fn concurrent_replacements_of_one_file_all_succeed_and_leave_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("wgoh-cfile-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let handle = File::open(&dir).unwrap();
        std::thread::scope(|scope| {
            for n in 0..16 {
                let handle = &handle;
                scope.spawn(move || {
                    for round in 0..50 {
                        let content = format!("nameserver 10.0.{n}.{round}\n");
                        replace_at(handle, OsStr::new("resolv.conf"), content.as_bytes())
                            .unwrap_or_else(|e| panic!("writer {n}, round {round}: {e}"));
                    }
                });
            }
        });
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["resolv.conf"]);
        let text = std::fs::read_to_string(dir.join("resolv.conf")).unwrap();
        assert!(
            text.starts_with("nameserver 10.0.") && text.ends_with(".49\n"),
            "{text:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
