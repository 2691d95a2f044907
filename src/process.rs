//! The processes the hook leaves running (the userspace WireGuard daemon, the port-forwarding helper): started
//! detached from the hook, found again and stopped by pid, but only while that pid still runs our command.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

const STOP_WAIT: Duration = Duration::from_secs(2);

/// Starts the child in a session of its own, so that signals meant for the hook (runc's timeout kill of its
/// process group) do not reach it.
pub fn detach(cmd: &mut Command) -> &mut Command {
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe { cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from)) }
}

/// Whether `pid` runs a command with `arg` among its arguments (a pid may have been reused since we recorded it).
pub fn has_arg(pid: u32, arg: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes()),
        Err(_) => false,
    }
}

/// Alive and not a zombie (a zombie waits for a parent that is not us).
pub fn is_running(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|rest| !rest.starts_with('Z'))
}

/// The process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, an identity
/// that survives pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.split(' ').nth(19)?.parse().ok()
}

/// /proc/PID/stat after the command name, which may itself hold spaces and parentheses.
fn stat_fields(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ").map(|(_, rest)| rest.to_owned())
}

/// A process (not us) whose arguments include every one of `args`, found by scanning /proc.
pub fn find_with_args(args: &[&str]) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| pid != std::process::id() && args.iter().all(|a| has_arg(pid, a)))
}

/// SIGTERM to `pid` if it still runs a command with all of `args`, then SIGKILL after a grace period.
pub fn stop(pid: u32, args: &[&str]) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if !args.iter().all(|a| has_arg(pid, a)) {
        return;
    }
    let target = Pid::from_raw(pid as i32);
    let _ = kill(target, Signal::SIGTERM);
    let start = Instant::now();
    while is_running(pid) && start.elapsed() < STOP_WAIT {
        std::thread::sleep(Duration::from_millis(2));
    }
    if is_running(pid) {
        let _ = kill(target, Signal::SIGKILL);
    }
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
    }

    #[test]
    fn stop_spares_a_pid_that_runs_something_else() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        // Until the exec, the child's cmdline is still ours.
        let start = Instant::now();
        while !has_arg(child.id(), "30") {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "sleep never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        stop(child.id(), &["not-sleep"]);
        assert!(is_running(child.id()));
        assert!(has_arg(child.id(), "30"));
        stop(child.id(), &["30"]);
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
}
