//! Finding the helper programs we run (wireguard-go, nft) when runc gave the hook little or no environment, and
//! waiting for one without outliving the hook's deadline.

use crate::sys::deadline::Deadline;
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;

/// runc starts hooks with only their entry's `env`, often without PATH.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `program` itself when it holds a `/`, else the first executable of that name on PATH (or `DEFAULT_PATH`).
pub fn resolve_program(program: &str) -> io::Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_owned());
    resolve_program_in(program, &path)
}

/// `program` itself when it holds a `/` (and is an executable file), else the first executable of that name
/// in the directories of `path`. What `check` asks of the hook's PATH (hooks.d gives it `DEFAULT_PATH`).
pub fn resolve_program_in(program: &str, path: &str) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{program} not found in {path}"),
            )
        })
}

/// As `resolve_program_in`, and a program named by its path must also be an executable file there.
pub fn find_executable(program: &str, path: &str) -> io::Result<PathBuf> {
    let found = resolve_program_in(program, path)?;
    if is_executable(&found) {
        Ok(found)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{program}: no executable file there"),
        ))
    }
}

/// A regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The exit status and stderr of `child` (stderr piped, stdout not), or None once `deadline` passed first, when
/// the child has been killed and reaped. A thread reads stderr (so a full pipe cannot stall the child) and waits
/// for the exit without reaping it (WNOWAIT): only the caller reaps, so the kill can never hit a reused pid.
pub fn output_until(
    mut child: Child,
    deadline: Deadline,
) -> io::Result<Option<(ExitStatus, Vec<u8>)>> {
    let mut stderr = child.stderr.take();
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("wait".into())
        .spawn(move || {
            let mut text = Vec::new();
            if let Some(pipe) = stderr.as_mut() {
                let _ = pipe.read_to_end(&mut text);
            }
            let exited = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT);
            let _ = tx.send(exited.map(|_| text));
        })?;
    match rx.recv_timeout(deadline.left()) {
        Ok(Ok(text)) => Ok(Some((child.wait()?, text))),
        Ok(Err(errno)) => Err(io::Error::from(errno)),
        Err(_) => {
            let _ = child.kill();
            child.wait()?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn spawn(script: &str) -> Child {
        Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_child_that_ends_in_time_gives_its_status_and_stderr() {
        let deadline = Deadline::after(Duration::from_secs(10), "create_timeout");
        let (status, stderr) = output_until(spawn("echo oops >&2; exit 3"), deadline)
            .unwrap()
            .expect("ended in time");
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr, b"oops\n");
    }

    #[test]
    fn a_child_that_hangs_is_killed_and_reaped_at_the_deadline() {
        let child = spawn("exec sleep 30");
        let pid = child.id();
        let deadline = Deadline::after(Duration::from_millis(200), "create_timeout");
        let started = Instant::now();
        assert!(output_until(child, deadline).unwrap().is_none());
        assert!(started.elapsed() < Duration::from_secs(5));
        // Reaped: no zombie left under that pid (a new process could only have it after many more forks).
        assert!(!crate::sys::process::is_running(pid));
        assert!(std::fs::metadata(format!("/proc/{pid}")).is_err());
    }
}
