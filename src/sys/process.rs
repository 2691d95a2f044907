//! The processes the hook leaves running (the userspace WireGuard daemon, the port-forwarding helper): started
//! detached from the hook, recorded whole (`Started`), and found again and stopped only while that very process
//! still runs.

use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const STOP_WAIT: Duration = Duration::from_secs(2);

/// Starts the child in a session of its own, so that signals meant for the hook (runc's timeout kill of its
/// process group) do not reach it.
pub fn detach(cmd: &mut Command) -> &mut Command {
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe { cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from)) }
}

/// A process we started, as a record keeps it. A pid alone may have been reused by the time we look again, and
/// any process may carry a name of ours in its argv: before we signal a pid, its start time, executable and whole
/// argv must all be the ones recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// None in a record saved just before the spawn and not since (the hook was killed in between).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Clock ticks since boot at which it started; without a pid, the earliest it can have started.
    pub start_time: u64,
    /// Its executable as the kernel names it; None until it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBuf>,
    pub argv: Vec<String>,
}

impl Started {
    /// What we are about to start: `argv` (run from `exe`, when that is known before it runs): anything
    /// started from now on.
    pub fn before_spawn(exe: Option<PathBuf>, argv: Vec<String>) -> Started {
        Started {
            pid: None,
            start_time: start_time(std::process::id()).unwrap_or(0),
            exe,
            argv,
        }
    }

    /// `pid`, which we just started (and which has exec'd: `Command::spawn` returns after the exec), as it is
    /// now. Called again once it is ready, for a command that execs another program on its way.
    pub fn observe(&mut self, pid: u32) {
        if let Some(t) = start_time(pid) {
            self.pid = Some(pid);
            self.start_time = t;
        }
        if let Some(exe) = exe_of(pid) {
            self.exe = Some(exe);
        }
        // Spawn returns once the exec has closed our CLOEXEC pipe, which the kernel does before the new program's
        // arguments are on its stack: read in that window, /proc/PID/cmdline is empty. The argv we passed is
        // then the one to keep (a later look, once it runs, finds it there).
        if let Some(argv) = argv_of(pid).filter(|a| a.iter().any(|arg| !arg.is_empty())) {
            self.argv = argv;
        }
    }

    /// Whether `pid` is this process: the same start time (or, with no pid recorded, a later one), the same
    /// executable (or that file since replaced: `... (deleted)`), the same argv.
    fn is(&self, pid: u32) -> bool {
        let Some(started) = start_time(pid) else {
            return false;
        };
        let time_ok = match self.pid {
            Some(_) => started == self.start_time,
            None => started >= self.start_time,
        };
        let exe_ok = match &self.exe {
            None => true,
            Some(exe) => exe_of(pid).is_some_and(|now| {
                now == *exe
                    || now.as_os_str().as_encoded_bytes()
                        == [exe.as_os_str().as_encoded_bytes(), b" (deleted)"].concat()
            }),
        };
        time_ok && exe_ok && argv_of(pid).is_some_and(|argv| argv == self.argv)
    }

    /// Its pid while it runs; found by a scan of /proc when no pid was recorded (only a process started after
    /// the record, with exactly its argv, which holds a name nobody else has, qualifies).
    pub fn find(&self) -> Option<u32> {
        match self.pid {
            Some(pid) => (self.is(pid) && is_running(pid)).then_some(pid),
            None => {
                pids().find(|&pid| pid != std::process::id() && self.is(pid) && is_running(pid))
            }
        }
    }

    /// Its child with `argv` and the same executable (the PIA helper's worker), while both run.
    pub fn child(&self, argv: Vec<String>) -> Option<Started> {
        let parent = self.find()?;
        let mut child = Started {
            pid: None,
            start_time: self.start_time,
            exe: self.exe.clone(),
            argv,
        };
        let pid = pids()
            .find(|&pid| parent_of(pid) == Some(parent) && child.is(pid) && is_running(pid))?;
        child.observe(pid);
        Some(child)
    }

    /// SIGKILL if it still runs, without waiting for its exit: for a process with nothing to flush. Once the
    /// signal is sent it runs no more code of its own; the kernel closes its descriptors as it exits. Nothing for
    /// any other process, whatever its pid or argv.
    pub fn kill(&self) {
        if let Some(pid) = self.find() {
            let identity = Started {
                pid: Some(pid),
                start_time: start_time(pid).unwrap_or(self.start_time),
                ..self.clone()
            };
            if let Some(target) = target(pid, || identity.is(pid)) {
                target.signal(nix::libc::SIGKILL);
            }
        }
    }

    /// SIGTERM if it still runs, then SIGKILL after a grace period if it is still that same process. Nothing
    /// for any other process, whatever its pid or argv.
    pub fn stop(&self) {
        if let Some(pid) = self.find() {
            let identity = Started {
                pid: Some(pid),
                start_time: start_time(pid).unwrap_or(self.start_time),
                ..self.clone()
            };
            terminate(pid, || identity.is(pid));
        }
    }
}

/// How we reach a process we may signal: by a pidfd, which names that very process whatever happens to its pid,
/// or, where pidfd_open is missing (Linux before 5.3, valgrind), by its pid.
enum Target {
    Pidfd(std::os::fd::OwnedFd),
    Pid(u32),
}

/// `pid`, if `still_ours` says so once it is reachable (with a pidfd: once that is open, so that it names the
/// very process that answered).
fn target(pid: u32, still_ours: impl Fn() -> bool) -> Option<Target> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open with a pid and no flags returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    let target = if fd >= 0 {
        // SAFETY: pidfd_open just returned this descriptor.
        Target::Pidfd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
    } else if io::Error::last_os_error().raw_os_error() == Some(nix::libc::ENOSYS) {
        Target::Pid(pid)
    } else {
        return None;
    };
    still_ours().then_some(target)
}

impl Target {
    fn signal(&self, sig: nix::libc::c_int) {
        use std::os::fd::AsRawFd;
        match self {
            // SAFETY: a pidfd we own, a signal number, no siginfo, no flags.
            Target::Pidfd(pidfd) => unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    sig,
                    std::ptr::null::<nix::libc::siginfo_t>(),
                    0,
                );
            },
            // SAFETY: kill with a pid checked just before and a signal number.
            Target::Pid(pid) => unsafe {
                nix::libc::kill(*pid as nix::libc::pid_t, sig);
            },
        }
    }

    /// Whether it exits within `wait`: a pidfd is readable once its process has exited (a zombie included: it
    /// runs no more); a pid is looked up every 2 ms.
    fn exited_within(&self, wait: Duration) -> bool {
        use nix::libc;
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self {
                Target::Pidfd(pidfd) => {
                    let mut poll = libc::pollfd {
                        fd: pidfd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd, valid for the call.
                    let n =
                        unsafe { libc::poll(&mut poll, 1, left.as_millis().min(60_000) as i32) };
                    if n > 0 {
                        return true;
                    }
                    let interrupted =
                        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
                    if !interrupted || left.is_zero() {
                        return false;
                    }
                }
                Target::Pid(pid) => {
                    if !is_running(*pid) {
                        return true;
                    }
                    if left.is_zero() {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }
}

/// SIGTERM to `pid`, SIGKILL after the grace period if it still runs; through a pidfd opened before
/// `still_ours` is asked, so that the signals reach the process that answered, even if the pid were reused
/// meanwhile, and its exit is awaited by poll rather than by reading /proc in a loop.
fn terminate(pid: u32, still_ours: impl Fn() -> bool) {
    let Some(target) = target(pid, still_ours) else {
        return;
    };
    target.signal(nix::libc::SIGTERM);
    if !target.exited_within(STOP_WAIT) {
        target.signal(nix::libc::SIGKILL);
        target.exited_within(STOP_WAIT);
    }
}

/// Sleeps until one of `processes` (pid, start time), each checked to be that process, exits, or `timeout`
/// passes: by poll on their pidfds, so an exit is seen at once. Where pidfd_open is missing it sleeps the
/// timeout (at most a second, so exits are still seen soon).
pub fn wait_for_any_exit(processes: &[(u32, u64)], timeout: Duration) {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let mut fds = Vec::with_capacity(processes.len());
    for &(pid, started) in processes {
        match target(pid, || runs_since(pid, started)) {
            Some(Target::Pidfd(fd)) => fds.push(fd),
            Some(Target::Pid(_)) => {
                std::thread::sleep(timeout.min(Duration::from_secs(1)));
                return;
            }
            // Gone already.
            None => return,
        }
    }
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `polls` is valid for the call and its length is passed; EINTR just ends the wait early.
    unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, millis) };
}

/// Whether `pid` runs a command with `arg` among its arguments.
pub fn has_arg(pid: u32, arg: &str) -> bool {
    argv_of(pid).is_some_and(|argv| argv.iter().any(|a| a == arg))
}

/// For a version-1 record, which kept only a pid: SIGTERM (then SIGKILL) to `pid` if it still runs a command
/// with all of `args`.
pub fn stop_legacy(pid: u32, args: &[&str]) {
    if args.iter().all(|a| has_arg(pid, a)) {
        terminate(pid, || args.iter().all(|a| has_arg(pid, a)));
    }
}

/// Alive and not a zombie (a zombie waits for a parent that is not us).
pub fn is_running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|rest| !rest.starts_with('Z'))
}

/// Whether `pid` is the process that started at `start_time` and still runs (a zombie has left its namespaces).
pub fn runs_since(pid: u32, start_time: u64) -> bool {
    stat_fields(pid).is_some_and(|rest| {
        !rest.starts_with('Z')
            && rest.split(' ').nth(19).and_then(|t| t.parse().ok()) == Some(start_time)
    })
}

/// The process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, an identity
/// that survives pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.split(' ').nth(19)?.parse().ok()
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.split(' ').nth(1)?.parse().ok()
}

fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

fn argv_of(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    raw.split(|&b| b == 0)
        .map(|a| String::from_utf8(a.to_vec()).ok())
        .collect()
}

/// /proc/PID/stat after the command name, which may itself hold spaces and parentheses.
fn stat_fields(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ").map(|(_, rest)| rest.to_owned())
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_found_by_its_stat() {
        let me = std::process::id();
        assert!(is_running(me));
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert!(!is_running(u32::MAX));
        assert!(start_time(u32::MAX).is_none());
        assert!(runs_since(me, start_time(me).unwrap()));
        assert!(!runs_since(me, start_time(me).unwrap() + 1));
    }

    /// A shell with `arg` in its argv that waits on its stdin (a builtin `read`: it forks no child, which would
    /// carry the same argv for a moment and be found by a scan).
    fn spawn_sleep(arg: &str) -> std::process::Child {
        let child = Command::new("sh")
            .args(["-c", "read x; :", "sh", arg])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !has_arg(child.id(), arg) {
            assert!(start.elapsed() < Duration::from_secs(5), "sh never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        child
    }

    #[test]
    fn stop_spares_any_process_that_is_not_the_one_recorded() {
        let mut child = spawn_sleep("wgo-test-name");
        let pid = child.id();
        let mut ours = Started::before_spawn(None, Vec::new());
        ours.observe(pid);
        assert_eq!(ours.pid, Some(pid));
        assert!(ours.exe.is_some());
        assert_eq!(ours.argv.last().unwrap(), "wgo-test-name");
        assert_eq!(ours.find(), Some(pid));
        // Another start time (a reused pid), another argv, another executable: all spared.
        let mut reused = ours.clone();
        reused.start_time -= 1;
        let mut other_argv = ours.clone();
        other_argv.argv.pop();
        let mut other_exe = ours.clone();
        other_exe.exe = Some("/nonexistent/sh".into());
        for wrong in [reused, other_argv, other_exe] {
            assert_eq!(wrong.find(), None, "{wrong:?}");
            wrong.stop();
            assert!(is_running(pid));
        }
        // With no pid recorded, a process with exactly the argv, started after the record, is found.
        let mut unrecorded = Started::before_spawn(ours.exe.clone(), ours.argv.clone());
        assert_eq!(unrecorded.find(), Some(pid));
        unrecorded.start_time = ours.start_time + 1;
        assert_eq!(unrecorded.find(), None, "started before the record");
        ours.stop();
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert_eq!(ours.find(), None);
    }

    #[test]
    fn legacy_stop_needs_every_argument() {
        let mut child = spawn_sleep("legacy-name");
        stop_legacy(child.id(), &["not-there"]);
        assert!(is_running(child.id()));
        stop_legacy(child.id(), &["legacy-name"]);
        assert!(!child.wait().unwrap().success());
    }
}
