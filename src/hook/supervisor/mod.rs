//! The tunnel's supervisor, `wg-oci-hook supervise KEY`: one small process per tunnel, started detached by
//! createRuntime once the tunnel carries packets and stopped by its teardown. It keeps the tunnel alive for as
//! long as the container runs:
//! - **health** (`health`): every `health_interval` it reads the newest handshake (and, with a `probe`, connects
//!   through the tunnel from inside the container's netns); the verdict goes to `<state_dir>/<key>.health` for
//!   `status` and into each member's `health_file`;
//! - **recovery** (`recover`), when the tunnel is unhealthy: a static profile's Endpoint host names are looked up
//!   again in the host's netns and a changed address is set in place; a PIA tunnel registers a fresh key (its
//!   region first, then the profile's) and applies it in place, the kill switch loaded throughout;
//! - **PIA port forwarding** (`provider::pia::port_forward`): the first bind before the hook returns (the
//!   workload reads the port from its first instruction), then one every `bind_interval`.
//!
//! It holds no descriptor of the container's netns between checks (it opens it through a live member each
//! time), so it pins nothing, and it ends when its record is gone or no member runs: it waits on the members'
//! pidfds, so that is at once. Its stdout is a pipe the hook reads one line from (`port N`, `error ...`), then
//! /dev/null; its stderr `<state_dir>/<key>.supervisor.log`, cut when it passes 1 MiB. No secret is ever in
//! its argv (the tunnel's key, a name), environment (empty) or lines.

pub mod health;
mod recover;

use super::record::{Member, Record, StateDir};
use super::teardown::find_netns;
use crate::config::health::{HealthSettings, PROBE_TIMEOUT};
use crate::config::pia_credentials;
use crate::config::policy::{Policy, Profile};
use crate::provider::pia::port_forward::Forwarder;
use crate::sys::container_file;
use crate::sys::netns::NetNs;
use crate::sys::private_dir::PrivateDir;
use crate::sys::process::{self, Started};
use crate::wg::{uapi, BackendKind, DeviceState};
use health::{Judge, Observation, Report};
use log::{info, warn};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The hidden subcommand that runs it.
pub const SUBCOMMAND: &str = "supervise";
/// A failed recovery is tried again after this, doubling up to `RECOVERY_MAX`.
const RECOVERY_MIN: Duration = Duration::from_secs(10);
const RECOVERY_MAX: Duration = Duration::from_secs(300);
/// After a failed bind round, try again this soon (or at the bind interval, if that is shorter).
const BIND_RETRY: Duration = Duration::from_secs(30);
/// Its log file is cut back to nothing past this size: it runs for months.
const LOG_LIMIT: u64 = 1 << 20;
/// How soon the health line is tried again for a container whose workload had not pivoted into its root yet
/// (the first look comes during createRuntime, before it has): a HEALTHCHECK should not wait a whole interval.
const LINE_RETRY: Duration = Duration::from_millis(200);
/// How long a daemon may take to answer `get=1`.
const DEVICE_READ_WAIT: Duration = Duration::from_secs(2);

fn log_file(key: &str) -> String {
    format!("{key}.supervisor.log")
}

fn health_file(key: &str) -> String {
    format!("{key}.health")
}

/// The supervisor's last verdict on tunnel `key`, as it wrote it.
pub fn last_report(state: &PrivateDir, key: &str) -> Option<Report> {
    let bytes = state.read(&health_file(key)).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Removes its host-side files (verdict, log).
pub fn remove_files(state: &PrivateDir, key: &str) {
    let _ = state.remove(&health_file(key));
    let _ = state.remove(&log_file(key));
}

/// Its executable (this binary) and whole argv for tunnel `key`: recorded before it is started.
pub fn command(policy_path: &Path, key: &str) -> Result<(PathBuf, Vec<String>), String> {
    let exe = own_binary()?;
    let argv = vec![
        exe.to_string_lossy().into_owned(),
        "--policy".into(),
        policy_path.to_string_lossy().into_owned(),
        SUBCOMMAND.into(),
        key.into(),
    ];
    Ok((exe, argv))
}

fn own_binary() -> Result<PathBuf, String> {
    let exe =
        std::fs::read_link("/proc/self/exe").map_err(|e| format!("finding our own binary: {e}"))?;
    // The in-process hook tier runs as the test harness: the supervisor is the crate's binary beside it.
    #[cfg(test)]
    if let Some(bin) = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("wg-oci-hook"))
        .filter(|bin| bin.exists())
    {
        return Ok(bin);
    }
    Ok(exe)
}

/// A started supervisor whose first line (with port forwarding: its first bind) may still come.
pub struct Spawned {
    child: std::process::Child,
    first_line: std::sync::mpsc::Receiver<String>,
}

/// Starts the supervisor (`exe`, `argv` from `command`) of tunnel `key`, whose record is saved already.
pub fn spawn(
    state: &PrivateDir,
    key: &str,
    exe: &Path,
    argv: &[String],
) -> Result<Spawned, String> {
    let log = state
        .create_new(&log_file(key), 0o600)
        .map_err(|e| format!("{}/{}: {e}", state.path().display(), log_file(key)))?;
    let mut cmd = Command::new(exe);
    cmd.args(&argv[1..])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .current_dir("/");
    if let Ok(filter) = std::env::var("RUST_LOG") {
        cmd.env("RUST_LOG", filter);
    }
    // A session of its own, like the daemon's: signals meant for the hook's group or session (runc's kill at its
    // hook timeout, a hangup of a console the engine runs on) miss it. (A process group of its own, which
    // posix_spawn could set without a fork of the hook, measured no faster, and in the kernel VM, where the
    // hook runs under runc on a console, the supervisor did not survive the start.)
    process::detach(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, first_line) = std::sync::mpsc::channel();
    // A thread, so the wait is bounded; it ends at the first line or when the pipe closes.
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    Ok(Spawned { child, first_line })
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `wait` for the first port forwarded. On failure the caller's undo stops the supervisor.
    pub fn wait_for_port(
        self,
        state: &PrivateDir,
        key: &str,
        wait: Duration,
    ) -> Result<u16, String> {
        let log_path = format!("{}/{}", state.path().display(), log_file(key));
        match self.first_line.recv_timeout(wait) {
            Ok(line) => {
                let line = line.trim_end();
                if let Some(port) = line.strip_prefix("port ").and_then(|p| p.parse().ok()) {
                    Ok(port)
                } else if let Some(e) = line.strip_prefix("error ") {
                    Err(e.to_owned())
                } else {
                    Err(format!(
                        "the supervisor ended without a port; see {log_path}"
                    ))
                }
            }
            Err(_) => Err(format!("no port forwarded within {} s", wait.as_secs())),
        }
    }
}

/// Stops the supervisor as recorded (no other process, whatever its argv), then removes its files. It holds
/// nothing to flush; SIGTERM ends it at once, and its exit is awaited so it writes no file after this, but it
/// may have been between making a temporary file and renaming it (`PrivateDir::write`'s, named by its pid).
pub fn stop(state: &PrivateDir, key: &str, supervisor: &Started) {
    let pid = supervisor.find();
    supervisor.stop();
    remove_files(state, key);
    if let Some(pid) = pid {
        for name in [health_file(key), format!("{key}.port")] {
            let _ = state.remove(&format!(".{name}.{pid}.tmp"));
        }
    }
}

/// `wg-oci-hook supervise KEY`: the supervisor's life.
pub fn run(policy: &Policy, key: &str) -> Result<(), String> {
    // Its name in ps and top (the kernel keeps 15 bytes of it). SAFETY: prctl and umask with constant arguments.
    unsafe {
        nix::libc::prctl(nix::libc::PR_SET_NAME, c"wg-oci-watch".as_ptr(), 0, 0, 0);
        nix::libc::umask(0o077);
    }
    let state = StateDir::open(&policy.state_dir).map_err(|e| format!("the state dir {e}"))?;
    let record = state
        .load(key)
        .map_err(|e| format!("reading the record: {e}"))?
        .ok_or("no record for this tunnel")?;
    let profile = policy.profiles.get(&record.profile).ok_or_else(|| {
        format!(
            "profile {:?} is not in {}",
            record.profile,
            policy.path.display()
        )
    })?;
    let dir = state.dir();
    let forwarder = match profile.pia().filter(|s| s.port_forwarding) {
        Some(settings) => {
            let credentials =
                pia_credentials::load(&settings.credentials).map_err(|e| e.to_string())?;
            Some(Forwarder::new(
                settings,
                credentials,
                dir,
                &profile.name,
                key,
            )?)
        }
        None => None,
    };
    let now = Instant::now();
    let mut supervisor = Supervisor {
        policy,
        state: &state,
        key,
        profile,
        judge: Judge::new(&profile.health, SystemTime::now()),
        forwarder,
        recoveries: 0,
        last_recovery: None,
        written: HashMap::new(),
        health_line: None,
        line_pending: false,
        next_check: now,
        next_bind: now,
        next_recovery: now,
        recovery_wait: RECOVERY_MIN,
    };
    // The hook waits for the first bind: reported on stdout, which is then /dev/null.
    if supervisor.forwarder.is_some() {
        let first = supervisor.bind(&record);
        let line = match &first {
            Ok(port) => format!("port {port}\n"),
            Err(e) => format!("error {}\n", e.replace('\n', " ")),
        };
        let mut out = io::stdout();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
        first?;
        supervisor.next_bind = Instant::now() + supervisor.bind_interval();
    }
    if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
    supervisor.run()
}

struct Supervisor<'a> {
    policy: &'a Policy,
    state: &'a StateDir,
    key: &'a str,
    profile: &'a Profile,
    judge: Judge<'a>,
    forwarder: Option<Forwarder<'a>>,
    recoveries: u32,
    last_recovery: Option<String>,
    /// What each member's health file holds, by pid: written again only when it changes.
    written: HashMap<u32, String>,
    /// The last verdict's line for the containers' `health_file`.
    health_line: Option<String>,
    /// Whether a live member has not had that line yet (its workload had not pivoted into its root).
    line_pending: bool,
    next_check: Instant,
    next_bind: Instant,
    next_recovery: Instant,
    recovery_wait: Duration,
}

impl<'a> Supervisor<'a> {
    fn settings(&self) -> &'a HealthSettings {
        &self.profile.health
    }

    fn run(&mut self) -> Result<(), String> {
        loop {
            let record = match self.state.load(self.key) {
                Ok(Some(record)) => record,
                Ok(None) => {
                    info!("tunnel {}: its record is gone; stopping", self.key);
                    return Ok(());
                }
                Err(e) => {
                    warn!("tunnel {}: reading the record: {e}", self.key);
                    std::thread::sleep(self.settings().interval);
                    continue;
                }
            };
            let members: Vec<(u32, u64)> = record
                .members
                .iter()
                .filter(|m| m.alive())
                .map(|m| (m.pid, m.start_time))
                .collect();
            if members.is_empty() {
                info!("tunnel {}: no member runs; stopping", self.key);
                return Ok(());
            }
            cut_log();
            let now = Instant::now();
            if now >= self.next_check {
                self.next_check = Instant::now() + self.settings().interval;
                self.check(&record);
            }
            // Not while the last look found something wrong: a round through a dead tunnel would wait out its
            // timeouts and hold up the next look (and a recovery restarts the rounds).
            if self.forwarder.is_some() && Instant::now() >= self.next_bind && !self.judge.suspect()
            {
                let pause = match self.bind(&record) {
                    Ok(_) => self.bind_interval(),
                    Err(e) => {
                        warn!("tunnel {}: port forwarding: {e}; trying again", self.key);
                        self.bind_interval().min(BIND_RETRY)
                    }
                };
                self.next_bind = Instant::now() + pause;
            }
            if self.line_pending {
                self.write_health_line(&record);
            }
            let mut until = self.next_check;
            if self.forwarder.is_some() && !self.judge.suspect() {
                until = until.min(self.next_bind);
            }
            if self.line_pending {
                until = until.min(Instant::now() + LINE_RETRY);
            }
            process::wait_for_any_exit(&members, until.saturating_duration_since(Instant::now()));
        }
    }

    fn bind_interval(&self) -> Duration {
        self.forwarder
            .as_ref()
            .map_or(Duration::MAX, |f| f.settings.bind_interval)
    }

    /// One port-forwarding round, through the container's netns (the record's PIA part says where).
    fn bind(&mut self, record: &Record) -> Result<u16, String> {
        let pia = record
            .pia
            .as_ref()
            .ok_or("the record has no PIA registration")?;
        let ns = find_netns(record).ok_or("the container's netns is gone")?;
        let state = self.state;
        let held = |k: &str| state.tunnel_runs(k);
        let forwarder = self.forwarder.as_mut().ok_or("no port forwarding")?;
        forwarder.round(pia, &ns, &held)
    }

    /// One look at the tunnel; a recovery if it is unhealthy and none was tried too recently.
    fn check(&mut self, record: &Record) {
        let ns = find_netns(record);
        let device = match &ns {
            Some(ns) => read_device(record, ns),
            None => Err("the container's netns cannot be reached".to_owned()),
        };
        let probe = match (self.settings().probe, &ns) {
            (Some(target), Some(ns)) => Some(probe(ns, target, self.settings().interval)),
            (Some(_), None) => Some(Err("the container's netns cannot be reached".to_owned())),
            (None, _) => None,
        };
        let now = SystemTime::now();
        let mut report = self.judge.judge(Observation {
            now,
            handshake: device.as_ref().map(newest_handshake).map_err(Clone::clone),
            probe,
        });
        report.recoveries = self.recoveries;
        report.last_recovery = self.last_recovery.clone();
        // Said first: the container and status learn of the outage before the recovery's API calls.
        self.publish(record, &report);
        if !report.healthy && Instant::now() >= self.next_recovery {
            if let (Some(ns), Ok(device)) = (&ns, &device) {
                self.recover(record, ns, device, &report);
                // The next look comes at once, and says how the recovery went.
                self.next_check = Instant::now();
            }
        }
    }

    fn recover(&mut self, record: &Record, ns: &NetNs, device: &DeviceState, report: &Report) {
        let started = Instant::now();
        let what = recover::recover(
            &recover::Context {
                policy: self.policy,
                state: self.state,
                key: self.key,
                profile: self.profile,
            },
            record,
            ns,
            device,
        );
        let took = started.elapsed().as_secs_f64();
        let mut wait = RECOVERY_MIN;
        match what {
            // Nothing to do (no host name, or each still leads where it did): look again later.
            Ok(None) => {}
            Ok(Some(done)) => {
                info!(
                    "tunnel {}: unhealthy ({}); {done} in {took:.2} s",
                    self.key, report.reason
                );
                self.recoveries += 1;
                self.last_recovery = Some(format!("{done}, in {took:.2} s"));
                self.judge.restart(SystemTime::now());
                if let Some(forwarder) = self.forwarder.as_mut() {
                    forwarder.server_changed();
                    self.next_bind = Instant::now();
                }
                self.recovery_wait = RECOVERY_MIN;
            }
            Err(e) => {
                wait = self.recovery_wait;
                warn!(
                    "tunnel {}: unhealthy ({}); recovering failed after {took:.2} s: {e}; trying again in {} s",
                    self.key,
                    report.reason,
                    wait.as_secs()
                );
                self.last_recovery = Some(format!("failed: {e}"));
                self.recovery_wait = (self.recovery_wait * 2).min(RECOVERY_MAX);
            }
        }
        self.next_recovery = Instant::now() + wait;
    }

    /// The verdict beside the record, and in each live member's health file when it changed there.
    fn publish(&mut self, record: &Record, report: &Report) {
        let dir = self.state.dir();
        match serde_json::to_vec(report) {
            Ok(body) => {
                if let Err(e) = dir.write(&health_file(self.key), &body, 0o644) {
                    warn!("tunnel {}: {}: {e}", self.key, health_file(self.key));
                }
            }
            Err(e) => warn!("tunnel {}: the verdict: {e}", self.key),
        }
        self.health_line = Some(report.file_text());
        self.write_health_line(record);
    }

    /// The last verdict's line into each live member's `health_file` that does not hold it yet.
    fn write_health_line(&mut self, record: &Record) {
        self.line_pending = false;
        let profile = self.profile;
        let (Some(path), Some(text)) = (&profile.health.file, self.health_line.clone()) else {
            return;
        };
        let live: Vec<&Member> = record.members.iter().filter(|m| m.alive()).collect();
        self.written
            .retain(|pid, _| live.iter().any(|m| m.pid == *pid));
        for member in live {
            let pid = member.pid;
            if self.written.get(&pid) == Some(&text) {
                continue;
            }
            // Only into a root the workload has pivoted into: before that, /proc/PID/root is the host's.
            match container_file::write_in_container(pid, || member.alive(), path, text.as_bytes())
            {
                Ok(true) => {
                    self.written.insert(pid, text.clone());
                }
                Ok(false) => self.line_pending = true,
                Err(e) => {
                    warn!("tunnel {}: health_file in pid {pid}: {e}", self.key);
                    // Not tried again until the verdict changes.
                    self.written.insert(pid, text.clone());
                }
            }
        }
    }
}

/// The device as its backend reports it: the kernel's from a thread inside the container's netns, a daemon's
/// over its UAPI socket (in the host's).
fn read_device(record: &Record, ns: &NetNs) -> Result<DeviceState, String> {
    match record.backend {
        BackendKind::Kernel => ns.run(|| crate::wg::kernel::get(&record.interface)),
        BackendKind::Userspace => {
            uapi::get(&uapi::socket_path(&record.host_link), DEVICE_READ_WAIT)
        }
    }
    .map_err(|e| e.to_string())
}

fn newest_handshake(device: &DeviceState) -> Option<SystemTime> {
    device.peers.iter().filter_map(|p| p.last_handshake).max()
}

/// A TCP connect to `target` from a thread inside the container's netns: through the tunnel, like the
/// workload's own traffic. A refusal is an answer (the path works); only silence is a failure. The socket is
/// the supervisor's and closed at once: nothing is left that the workload could use.
fn probe(ns: &NetNs, target: std::net::SocketAddr, interval: Duration) -> Result<(), String> {
    let wait = PROBE_TIMEOUT.min(interval).max(Duration::from_millis(500));
    let reached = ns
        .run(
            || match std::net::TcpStream::connect_timeout(&target, wait) {
                Ok(_) => Ok(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(Ok(())),
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    Ok(Err(format!(
                        "no answer from {target} within {:.1} s",
                        wait.as_secs_f64()
                    )))
                }
                Err(e) => Ok(Err(format!("{target}: {e}"))),
            },
        )
        .map_err(|e| format!("entering the container's netns: {e}"))?;
    reached
}

/// Cuts stderr (the log file) back to nothing once it passes `LOG_LIMIT`; O_APPEND writes then start over.
fn cut_log() {
    let stderr = io::stderr();
    let fd = stderr.as_raw_fd();
    // SAFETY: fd 2 stays open for the life of the process; the borrow ends with this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if let Ok(st) = nix::sys::stat::fstat(borrowed) {
        if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG && st.st_size as u64 > LOG_LIMIT {
            let _ = nix::unistd::ftruncate(borrowed, 0);
            let _ = nix::unistd::lseek(borrowed, 0, nix::unistd::Whence::SeekSet);
        }
    }
}
