//! The userspace backend's daemon: started detached in the host netns, stopped as the process recorded. The
//! built-in one (`super::daemon`, this very executable) gets the container's TUN and a configuration socket as
//! inherited descriptors; a `userspace_command` (wireguard-go) makes its TUN itself and is configured over its
//! UAPI socket once that appears.

use super::{daemon, uapi};
use crate::sys::command::{resolve_program, DEFAULT_PATH};
use crate::sys::deadline::Deadline;
use crate::sys::process;
use log::debug;
use nix::fcntl::{fcntl, FcntlArg};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// A freshly started daemon. Dropping it leaves the daemon running (that is the point: it outlives the hook).
pub struct Daemon {
    child: Child,
    program: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The program and whole argv that `start` runs for `interface`: `command... <interface>`, the program
    /// looked up in PATH.
    pub fn command(command: &[String], interface: &str) -> io::Result<(PathBuf, Vec<String>)> {
        let (program, args) = command.split_first().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "userspace_command is empty")
        })?;
        let program = resolve_program(program)?;
        let mut argv = Vec::with_capacity(args.len() + 2);
        argv.push(program.to_string_lossy().into_owned());
        argv.extend(args.iter().cloned());
        argv.push(interface.to_owned());
        Ok((program, argv))
    }

    /// The built-in daemon's program (this executable, as the kernel names it: what the record checks) and argv
    /// for the tunnel `name` (host-unique, which names its UAPI socket) on a link of `mtu`, in the netns of the
    /// container whose init is `container_pid`.
    pub fn builtin_command(
        name: &str,
        mtu: u32,
        container_pid: u32,
    ) -> io::Result<(PathBuf, Vec<String>)> {
        let exe = std::env::current_exe()?;
        let argv = vec![
            exe.to_string_lossy().into_owned(),
            daemon::SUBCOMMAND.to_owned(),
            name.to_owned(),
            "--mtu".to_owned(),
            mtu.to_string(),
            "--container-pid".to_owned(),
            container_pid.to_string(),
        ];
        Ok((exe, argv))
    }

    /// Starts the built-in daemon with `argv` (from `builtin_command`) in a session of its own, with `tun` as
    /// its fd 3 and one end of a new socketpair as its fd 4, no stdio and an empty environment. Returns the
    /// other end, over which the caller configures it (`uapi::configure_over`): its answer means it runs.
    /// The running executable is executed, through a descriptor of /proc/self/exe (`/proc/self/fd/N`), so the
    /// daemon is this very build even if the file was replaced since. Not /proc/self/exe itself: under valgrind
    /// (`make icount`) that is valgrind's tool, which refuses to run, while opening it gives the program's file.
    pub fn spawn_builtin(argv: &[String], tun: &OwnedFd) -> io::Result<(Daemon, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        // Above the two numbers they must end up at, so that neither dup2 overwrites the other's source.
        let above = |fd: &dyn AsFd| -> io::Result<OwnedFd> {
            let raw = fcntl(
                fd.as_fd(),
                FcntlArg::F_DUPFD_CLOEXEC(daemon::CONTROL_FD + 1),
            )?;
            // SAFETY: fcntl just returned this new descriptor, owned by nobody else.
            Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) })
        };
        let exe = std::fs::File::open("/proc/self/exe")?;
        let (tun, theirs, exe) = (above(tun)?, above(&theirs)?, above(&exe)?);
        let (tun_raw, control_raw) = (tun.as_raw_fd(), theirs.as_raw_fd());
        // Resolved by the child before its exec closes the descriptor (CLOEXEC).
        let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
        cmd.arg0(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/");
        process::detach(&mut cmd);
        // SAFETY: dup2 is async-signal-safe; the new descriptors lack CLOEXEC, so they survive the exec.
        unsafe {
            cmd.pre_exec(move || {
                for (from, to) in [(tun_raw, daemon::TUN_FD), (control_raw, daemon::CONTROL_FD)] {
                    if nix::libc::dup2(from, to) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", argv[0])))?;
        debug!(
            "built-in daemon started as pid {} in {:.1} ms (fork and exec)",
            child.id(),
            started.elapsed().as_secs_f64() * 1e3
        );
        let program = PathBuf::from(&argv[0]);
        let socket = uapi::socket_path(&argv[2]);
        Ok((
            Daemon {
                child,
                program,
                socket,
            },
            ours,
        ))
    }

    /// Starts `program` with `argv` (from `command`) in the foreground mode that wireguard-go enters with
    /// WG_PROCESS_FOREGROUND=1 (so its pid is the one we record), in its own session, with no stdio of ours
    /// (runc waits for the hook's stdout/stderr pipes to close) and none of the hook's environment but PATH.
    /// Returns once it runs; `wait_ready` waits for its UAPI socket.
    pub fn spawn(program: &Path, argv: &[String], interface: &str) -> io::Result<Daemon> {
        let socket = uapi::socket_path(interface);
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is already served by another daemon", socket.display()),
            ));
        }
        let mut cmd = Command::new(program);
        cmd.args(&argv[1..])
            .env_clear()
            .env("WG_PROCESS_FOREGROUND", "1")
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/");
        process::detach(&mut cmd);
        let started = Instant::now();
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("starting {}: {e}", program.display()))
        })?;
        debug!(
            "{interface}: {} started as pid {} in {:.1} ms (fork and exec)",
            program.display(),
            child.id(),
            started.elapsed().as_secs_f64() * 1e3
        );
        Ok(Daemon {
            child,
            program: program.to_owned(),
            socket,
        })
    }

    /// Waits for the daemon's UAPI socket to accept connections; on failure the daemon is gone.
    /// Waits no longer than `SOCKET_WAIT` nor past `deadline`.
    pub fn wait_ready(&mut self, deadline: Deadline) -> io::Result<()> {
        let (socket, program) = (self.socket.clone(), self.program.clone());
        self.wait_for_socket(&socket, &program, deadline)
            .inspect_err(|_| self.kill_and_reap())
    }

    fn wait_for_socket(
        &mut self,
        socket: &Path,
        program: &Path,
        deadline: Deadline,
    ) -> io::Result<()> {
        let start = Instant::now();
        let wait = SOCKET_WAIT.min(deadline.left());
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                debug!(
                    "{} served after {:.1} ms ({attempts} connect attempts)",
                    socket.display(),
                    start.elapsed().as_secs_f64() * 1e3
                );
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited ({status}) before opening {}",
                    program.display(),
                    socket.display()
                )));
            }
            if start.elapsed() >= wait {
                let cut = if wait < SOCKET_WAIT {
                    format!(" ({})", deadline.name())
                } else {
                    String::new()
                };
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not open {} within {:.1} s{cut}",
                        program.display(),
                        socket.display(),
                        wait.as_secs_f64()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Undo during a failed create: the daemon is still our child, so reap it too.
    pub fn kill_and_reap(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops a daemon started by an earlier hook run: only that very process (see `process::Started`): the built-in
/// one with SIGKILL, another with SIGTERM,
/// then SIGKILL after a grace period. Removes a socket it left behind.
pub fn stop(daemon: &process::Started, interface: &str) -> io::Result<()> {
    // The built-in daemon has nothing to flush: SIGKILL, and its exit (the TUN's deletion with it, an RCU grace
    // period or two) goes on in the kernel without us. Another daemon gets SIGTERM and time to clean up.
    if daemon.argv.get(1).map(String::as_str) == Some(daemon::SUBCOMMAND) {
        daemon.kill();
    } else {
        daemon.stop();
    }
    remove_socket(interface)
}

/// Removes the UAPI socket a daemon for `interface` left behind; none there is fine.
pub fn remove_socket(interface: &str) -> io::Result<()> {
    match std::fs::remove_file(uapi::socket_path(interface)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
