//! Running commands for the lab: every command bounded by a timeout, with the lab's PATH, its output kept as a
//! [`CmdOutput`]; and finding the machine's processes by their arguments.

use nix::sys::signal::Signal;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// PATH for every command the lab runs: the standard directories first (CI's PATH may lack the sbin ones).
pub(super) const LAB_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Bound on any one command the lab runs (podman included).
pub(super) const COMMAND_TIMEOUT_SECS: u32 = 60;

/// What a command printed, and how it ended; `Display` shows all of it (for readable CI failures).
#[derive(Clone, Debug)]
pub struct CmdOutput {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what}: command failed\n{self}");
        self
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        writeln!(f, "exit: {}", self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(
            f,
            "--- stderr ---\n{}\n--------------",
            self.stderr.trim_end()
        )
    }
}

pub(super) fn lab_path() -> String {
    match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => format!("{LAB_PATH}:{p}"),
        _ => LAB_PATH.to_owned(),
    }
}

pub(super) fn resolve_tool(name: &str) -> Option<String> {
    lab_path()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
        .map(|p| p.to_string_lossy().into_owned())
}

pub(super) fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub(super) fn run_cmd(argv: &[&str]) -> CmdOutput {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    run_argv(&argv, &[])
}

/// Runs `timeout -k 5 60 ARGV...` with the lab's PATH and extra `env`, stdin from /dev/null.
pub(super) fn run_argv(argv: &[String], env: &[(&str, &Path)]) -> CmdOutput {
    let mut cmd = Command::new("timeout");
    cmd.env("PATH", lab_path())
        .args(["-k", "5", &COMMAND_TIMEOUT_SECS.to_string()])
        .args(argv);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let cmdline = env
        .iter()
        .map(|(k, v)| format!("{k}={} ", v.display()))
        .collect::<String>()
        + &argv.join(" ");
    output_with_stdin(cmd, b"", &cmdline)
}

pub(super) fn output_with_stdin(mut cmd: Command, stdin: &[u8], cmdline: &str) -> CmdOutput {
    let mut child = cmd
        .stdin(if stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning `{cmdline}`: {e}"));
    if let Some(mut w) = child.stdin.take() {
        let data = stdin.to_vec();
        thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for `{cmdline}`: {e}"));
    CmdOutput {
        cmdline: cmdline.to_owned(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Processes started by a test, killed when it ends, pass or fail.
#[derive(Default)]
pub struct Bystanders(Vec<Child>);

impl Bystanders {
    /// `sh -c 'sleep 600; :' sh ARG`: an unrelated process whose argv holds `arg` (the `; :` keeps sh from
    /// exec'ing sleep, so the argv stays), in a process group of its own with no stdio of ours. Returns its pid
    /// once it runs.
    pub fn spawn(&mut self, arg: &str) -> u32 {
        let child = Command::new("sh")
            .args(["-c", "sleep 600; :", "sh", arg])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning a bystander");
        let pid = child.id();
        self.0.push(child);
        let start = Instant::now();
        while !argv_of(pid).iter().any(|a| a == arg) {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "bystander never ran"
            );
            thread::sleep(Duration::from_millis(2));
        }
        pid
    }
}

impl Drop for Bystanders {
    /// Kills each bystander's whole process group: its `sleep` too, which would otherwise outlive it.
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }
}

/// Sends `sig` to `pid`, if it is still there.
pub fn kill(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

pub(super) fn stop_child(what: &str, child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    kill(child.id(), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("lab: {what} ({}) ignored SIGTERM; killing it", child.id());
    let _ = child.kill();
    let _ = child.wait();
}

/// The arguments process `pid` runs with (none when it is gone, or a kernel thread).
pub fn argv_of(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces or parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// (pid, argv) of every process with an argument containing `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let args = argv_of(pid);
        if args.iter().any(|a| a.contains(needle)) {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// `s` as one single-quoted sh word.
pub(super) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Lazily unmounts every mount at or under one of `dirs`, deepest first; returns the problems met.
pub(super) fn unmount_under(dirs: &[&Path]) -> Vec<String> {
    let prefixes: Vec<String> = dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let mounts = run_cmd(&["findmnt", "-rn", "-o", "TARGET"]);
    let mut under: Vec<&str> = mounts
        .stdout
        .lines()
        .filter(|m| {
            prefixes
                .iter()
                .any(|p| m == p || m.starts_with(&format!("{p}/")))
        })
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let mut problems = Vec::new();
    for m in under {
        let out = run_cmd(&["umount", "-l", m]);
        if !out.success() {
            problems.push(format!("umount {m}:\n{out}"));
        }
    }
    problems
}
