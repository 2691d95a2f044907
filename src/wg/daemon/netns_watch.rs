//! Ends the daemon when no process is left in the container's netns.
//!
//! The TUN descriptor pins the netns it was opened in (a TUN's socket holds a reference to it), so the netns
//! cannot die while the daemon runs, and the device never goes by itself. Without a poststop (a runtime killed
//! with its container, a host where nobody runs `runc delete`), the daemon would keep an empty netns until gc
//! or the next start swept it. So it watches one process of that netns through a pidfd; when that one exits it
//! looks for another, and when none is left it exits, which closes the TUN and frees the netns.
//!
//! Cheap: a blocked thread, and one scan of /proc per exit of the process it watches (usually once, when the
//! container's init exits).

use nix::libc;
use nix::sys::stat::fstat;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// `_IO('T', 227)`: a descriptor of the TUN device's netns (Linux 5.2).
const TUNGETDEVNETNS: libc::c_ulong = 0x54e3;

/// A netns as nsfs names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NetnsId {
    dev: u64,
    ino: u64,
}

/// The netns the TUN device lives in.
pub fn of_tun(tun: impl AsFd) -> io::Result<NetnsId> {
    // SAFETY: TUNGETDEVNETNS takes no argument and returns a new descriptor.
    let fd = unsafe { libc::ioctl(tun.as_fd().as_raw_fd(), TUNGETDEVNETNS as _) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl just returned this descriptor.
    let ns = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = fstat(ns.as_fd())?;
    Ok(NetnsId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

fn netns_of(pid: u32) -> Option<NetnsId> {
    let st = nix::sys::stat::stat(format!("/proc/{pid}/ns/net").as_str()).ok()?;
    Some(NetnsId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// What `watch_one` found.
enum Found {
    Process(OwnedFd),
    Nobody,
    /// pidfd_open is missing (Linux before 5.3): nothing can be watched.
    CannotWatch,
}

/// A pidfd of a process in `netns`: `hint` if it is in it, else the first found in /proc.
fn watch_one(netns: NetnsId, hint: Option<u32>) -> Found {
    let me = std::process::id();
    // A /proc that cannot be read says nothing about who is left: never taken for "nobody".
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Found::CannotWatch;
    };
    let candidates = hint.into_iter().chain(
        proc.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()),
    );
    for pid in candidates.filter(|&p| p != me) {
        if netns_of(pid) != Some(netns) {
            continue;
        }
        // SAFETY: pidfd_open with a pid and no flags; returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                return Found::CannotWatch;
            }
            continue;
        }
        // SAFETY: pidfd_open just returned this descriptor.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The pid may have been reused between the check and the open: still in the netns once opened.
        if netns_of(pid) == Some(netns) {
            return Found::Process(pidfd);
        }
    }
    Found::Nobody
}

/// Blocks until no process is left in `netns` (true), starting with `hint` (the container's init); false at once
/// where processes cannot be watched.
pub fn wait_until_empty(netns: NetnsId, hint: Option<u32>) -> bool {
    let mut hint = hint;
    loop {
        let pidfd = match watch_one(netns, hint.take()) {
            Found::Process(pidfd) => pidfd,
            Found::Nobody => return true,
            Found::CannotWatch => return false,
        };
        let mut poll = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call. A pidfd is readable once its process has exited.
        while unsafe { libc::poll(&mut poll, 1, -1) } < 0 {
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                // Never seen; rather than spin, look again in a while.
                std::thread::sleep(std::time::Duration::from_secs(1));
                break;
            }
        }
    }
}
