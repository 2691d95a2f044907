//! The built-in userspace WireGuard daemon, `wg-oci-hook tunnel-daemon NAME --mtu N`: gotatun (Mullvad's
//! maintained boringtun) between a TUN device in the container's netns and UDP sockets in the host's.
//!
//! The hook makes the TUN from a thread inside the container's netns (`wg::tun`) and starts this process in
//! the host's netns with that descriptor as fd 3 and one end of a socketpair as fd 4. The sockets gotatun opens
//! are therefore the host's, and nothing is ever moved between namespaces. The hook configures the device over
//! fd 4 in the UAPI text protocol (keys never in argv, environment or a file); the answer is the readiness
//! signal, so there is nothing to poll. `status` and `wg show` reach it at /var/run/wireguard/NAME.sock.
//!
//! poststop kills it, and the non-persistent TUN goes with its last descriptor. Without a poststop it ends
//! by itself once no process is left in the container's netns (`netns_watch`: its TUN pins that netns), and
//! when the device fails (a read returns EBADFD once the device was deleted), which gotatun reports as fatal.

mod netns_watch;
mod tun_io;

use super::uapi;
use gotatun::device::uapi::UapiServer;
use gotatun::device::DeviceBuilder;
use nix::libc;
use nix::sys::stat::{fstat, SFlag};
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

/// The hidden subcommand that runs the daemon.
pub const SUBCOMMAND: &str = "tunnel-daemon";
/// Where the daemon finds the container's TUN device and its configuration socket.
pub const TUN_FD: RawFd = 3;
pub const CONTROL_FD: RawFd = 4;
/// The device's work spreads over this many threads at most: past two or three the crypto is not what limits
/// a container's tunnel, and every thread costs a stack.
const MAX_WORKERS: usize = 4;

/// Runs the daemon until its device ends or no process is left in the container's netns, which `container_pid`
/// (the container's init when the hook started it) was in.
pub fn run(name: &str, mtu: u16, container_pid: Option<u32>) -> Result<(), String> {
    // Nothing it starts may gain privileges, and files it creates (the UAPI socket) are root's alone.
    // Its name in ps and top (it runs /proc/self/exe, which the kernel would call "exe").
    // SAFETY: prctl and umask with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"wg-oci-tunnel".as_ptr(), 0, 0, 0);
        libc::umask(0o077);
    }
    // Whatever else the hook's parent left open without CLOEXEC is none of the daemon's business. First, before
    // any descriptor or thread of ours exists: closed later, it raced the netns watch's first descriptors (its
    // pidfd, its scan of /proc), which then took the container for gone and ended the daemon as it started.
    // SAFETY: closes descriptors this process does not use; close_range has been in Linux since 5.9.
    unsafe { libc::syscall(libc::SYS_close_range, CONTROL_FD + 1, u32::MAX, 0) };
    let tun = take_fd(TUN_FD, "the TUN device", |st| {
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
            && (libc::major(st.st_rdev), libc::minor(st.st_rdev)) == (10, 200)
    })?;
    let control = take_fd(CONTROL_FD, "the control socket", |st| {
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFSOCK
    })?;
    // Kernels before 5.2 cannot say which netns the TUN is in: there poststop, gc or the next start ends it.
    if let Ok(netns) = netns_watch::of_tun(&tun) {
        let socket = uapi::socket_path(name);
        std::thread::Builder::new()
            .name("netns-watch".into())
            .spawn(move || {
                // Where it cannot watch (Linux before 5.3), poststop, gc or the next start end it.
                if netns_watch::wait_until_empty(netns, container_pid) {
                    let _ = std::fs::remove_file(socket);
                    std::process::exit(0);
                }
            })
            .map_err(|e| format!("starting the netns watch: {e}"))?;
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(serve(name, tun, mtu, UnixStream::from(control)))
}

fn take_fd(
    fd: RawFd,
    what: &str,
    expected: impl Fn(&libc::stat) -> bool,
) -> Result<OwnedFd, String> {
    // SAFETY: only borrowed for the fstat; owned below only once it is known to be what the hook passed.
    let st = fstat(unsafe { BorrowedFd::borrow_raw(fd) })
        .map_err(|e| format!("fd {fd} ({what}): {e}: run only by wg-oci-hook create-runtime"))?;
    if !expected(&st) {
        return Err(format!(
            "fd {fd} is not {what}: run only by wg-oci-hook create-runtime"
        ));
    }
    // SAFETY: the descriptor is open, of the expected kind, and nothing else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

async fn serve(name: &str, tun: OwnedFd, mtu: u16, control: UnixStream) -> Result<(), String> {
    let tun = tun_io::Tun::new(tun, mtu).map_err(|e| format!("the TUN device: {e}"))?;
    let watched = tun.clone();
    let (client, server) = UapiServer::new();
    let mut device = DeviceBuilder::new()
        .with_default_udp()
        .with_ip(tun)
        .with_uapi(server)
        .build()
        .await
        .map_err(|e| format!("starting the device: {e}"))?;
    let socket = uapi::socket_path(name);
    let listener = bind(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    // The hook's configuration, then the readers of the socket, each on a thread of gotatun's.
    client.clone().wrap_read_write(control);
    std::thread::Builder::new()
        .name("uapi".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                client.clone().wrap_read_write(stream);
            }
        })
        .map_err(|e| format!("starting the UAPI thread: {e}"))?;
    // gotatun reports a fatal error when its device fails, the TUN's deletion included. But a reconfiguration
    // that rebuilds its connection (a new private key, a new port: a PIA key registered again) can report one
    // too, falsely: stopping the old connection cancels its TUN reader before its outgoing task is aborted,
    // which then ends on the closed channel (gotatun 0.10's `Connection::stop`). So a fatal error ends the
    // daemon only if the TUN is really gone; after a false one, the TUN is looked at every few seconds instead.
    device.wait().await;
    if !watched.is_detached() {
        watched.until_detached().await;
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

fn bind(socket: &std::path::Path) -> io::Result<UnixListener> {
    std::fs::create_dir_all(uapi::SOCKET_DIR)?;
    // The hook picked a name no socket has; one there now is stale (a daemon killed before its cleanup).
    let _ = std::fs::remove_file(socket);
    UnixListener::bind(socket)
}
