//! PIA port forwarding: a helper per container (`wg-oci-hook pia-port-forward ID`), started by the hook once
//! the tunnel is up and stopped at poststop. It is a small supervisor that runs the worker
//! (`... pia-port-forward ID --worker`) and starts it again, with a backoff, if it ever ends while the
//! container lives; the worker dies with it (PR_SET_PDEATHSIG). Through the tunnel (its HTTP calls run on a
//! thread inside the container's netns) the worker gets a signature, binds the port every `bind_interval`,
//! renews the signature before it expires, and writes the port to `port_file` inside the container and to
//! `<state_dir>/<id>.port`. It retries a failed round, and both end by themselves when the container's init
//! is gone.
//!
//! The hook waits for the first bind, so the workload can read the port from its first instruction; a first
//! bind that fails fails the start. The helper holds none of the hook's stdio: its stdout is a pipe the hook
//! reads one line from, then /dev/null; its stderr is `<state_dir>/<id>.pf.log`.

use super::api::{Api, ApiError, Signature};
use super::cache::Cache;
use super::credentials::Credentials;
use super::settings::PiaHost;
use super::settings::PiaSettings;
use super::{runtime, PiaRecord, Tokens};
use crate::sys::container_file;
use crate::sys::deadline::Deadline;
use crate::sys::netns::NetNs;
use crate::sys::private_dir::PrivateDir;
use crate::sys::process;
use log::{info, warn};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const SUBCOMMAND: &str = "pia-port-forward";
/// Marks the worker's command line (the supervisor's has none).
pub const WORKER_FLAG: &str = "--worker";
/// A worker that ends is started again after this, doubling up to `RETRY` while it keeps ending quickly.
const RESTART_MIN: Duration = Duration::from_secs(1);
/// A worker that ran this long before it ended gets the shortest restart delay again.
const RESTART_RESET: Duration = Duration::from_secs(60);
/// After a failed round, try again this soon (or at the bind interval, if that is shorter).
const RETRY: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

fn port_file(container: &str) -> String {
    format!("{container}.port")
}

fn log_file(container: &str) -> String {
    format!("{container}.pf.log")
}

/// The forwarded port as the helper last bound it, from the host-side file.
pub fn current_port(state: &PrivateDir, container: &str) -> Option<u16> {
    let bytes = state.read(&port_file(container)).ok()??;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

/// Removes the helper's host-side files (port, log).
pub fn remove_files(state: &PrivateDir, container: &str) {
    let _ = state.remove(&port_file(container));
    let _ = state.remove(&log_file(container));
}

/// The helper's executable (this binary) and whole argv for `container`: recorded before it is started.
pub fn command(policy_path: &Path, container: &str) -> Result<(PathBuf, Vec<String>), String> {
    let exe =
        std::fs::read_link("/proc/self/exe").map_err(|e| format!("finding our own binary: {e}"))?;
    let argv = vec![
        exe.to_string_lossy().into_owned(),
        "--policy".into(),
        policy_path.to_string_lossy().into_owned(),
        SUBCOMMAND.into(),
        container.into(),
    ];
    Ok((exe, argv))
}

/// The worker's argv, from its supervisor's.
pub fn worker_argv(helper_argv: &[String]) -> Vec<String> {
    let mut argv = helper_argv.to_vec();
    argv.push(WORKER_FLAG.into());
    argv
}

/// A started helper that has not bound its first port yet.
pub struct Spawned {
    child: std::process::Child,
    first_line: std::sync::mpsc::Receiver<String>,
}

/// Starts the helper (`exe`, `argv` from `command`) for `container`, whose record, with its `pia` part, is
/// saved already. `Spawned::wait_for_port` then waits for its first bind.
pub fn spawn(
    state: &PrivateDir,
    container: &str,
    exe: &Path,
    argv: &[String],
) -> Result<Spawned, String> {
    let log = state
        .create_new(&log_file(container), 0o600)
        .map_err(|e| format!("{}/{}: {e}", state.path().display(), log_file(container)))?;
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
    process::detach(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        remove_files(state, container);
        format!("starting {}: {e}", exe.display())
    })?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, first_line) = std::sync::mpsc::channel();
    // A thread, so the wait is bounded; it ends at the helper's first line or when the pipe closes.
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

    /// Waits up to `wait` for the helper's first bind. On failure the helper is gone, and its files too.
    pub fn wait_for_port(
        mut self,
        state: &PrivateDir,
        container: &str,
        wait: Duration,
    ) -> Result<u16, String> {
        let pid = self.child.id();
        let log_path = format!("{}/{}", state.path().display(), log_file(container));
        let answer = match self.first_line.recv_timeout(wait) {
            Ok(line) => {
                let line = line.trim_end();
                if let Some(port) = line.strip_prefix("port ").and_then(|p| p.parse().ok()) {
                    Ok(port)
                } else if let Some(e) = line.strip_prefix("error ") {
                    Err(e.to_owned())
                } else {
                    let status = self.child.try_wait().ok().flatten();
                    Err(format!(
                        "the helper ended without a port ({}); see {log_path}",
                        status.map_or("still running".into(), |s| s.to_string()),
                    ))
                }
            }
            Err(_) => Err(format!("no port forwarded within {} s", wait.as_secs())),
        };
        match answer {
            Ok(port) => {
                info!("container {container}: port {port} forwarded (helper pid {pid})");
                Ok(port)
            }
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                remove_files(state, container);
                Err(e)
            }
        }
    }
}

/// What the helper works from, found by its caller in the container's record and the policy.
pub struct Helper<'a> {
    /// The policy the helper was started with, passed on to the worker.
    pub policy_path: &'a Path,
    pub state_dir: PrivateDir,
    /// The container's registration, from its record.
    pub pia: PiaRecord,
    /// The settings of the profile the container was registered under.
    pub settings: &'a PiaSettings,
}

/// The supervisor: `wg-oci-hook pia-port-forward ID`. Relays the first worker's one line to the hook, then
/// keeps a worker running for as long as the container's init lives.
pub fn supervise(helper: Helper, container: &str) -> Result<(), String> {
    let init = helper.pia.container_pid;
    let init_started = process::start_time(init).ok_or("the container's init is gone")?;
    let exe =
        std::fs::read_link("/proc/self/exe").map_err(|e| format!("finding our own binary: {e}"))?;
    let me = std::process::id();
    let mut ready = Some(io::stdout());
    let mut backoff = RESTART_MIN;
    loop {
        let mut cmd = Command::new(&exe);
        cmd.arg("--policy")
            .arg(helper.policy_path)
            .args([SUBCOMMAND, container, WORKER_FLAG])
            .stdin(Stdio::null())
            .stdout(if ready.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .current_dir("/");
        // SAFETY: prctl and getppid are async-signal-safe and touch no memory of ours.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
                // The supervisor died before the line above: do not run unsupervised.
                if nix::unistd::getppid().as_raw() as u32 != me {
                    return Err(io::Error::other("the supervisor is gone"));
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut worker = cmd
            .spawn()
            .map_err(|e| format!("starting the worker: {e}"))?;
        if let Some(out) = ready.take() {
            let mut line = String::new();
            if let Some(stdout) = worker.stdout.take() {
                let _ = BufReader::new(stdout).read_line(&mut line);
            }
            let result = match line.trim_end().strip_prefix("port ").map(str::parse::<u16>) {
                Some(Ok(port)) => Ok(port),
                _ => Err(line
                    .trim_end()
                    .strip_prefix("error ")
                    .unwrap_or("the worker ended without a port")
                    .to_owned()),
            };
            if result.is_err() {
                let _ = worker.wait();
            }
            report(out, result)?;
        }
        let status = worker
            .wait()
            .map_err(|e| format!("waiting for the worker: {e}"))?;
        if process::start_time(init) != Some(init_started) {
            return Ok(());
        }
        if started.elapsed() > RESTART_RESET {
            backoff = RESTART_MIN;
        }
        warn!(
            "container {container}: the port-forwarding worker ended ({status}); starting another in {} s",
            backoff.as_secs()
        );
        if !sleep_while_alive(init, init_started, backoff) {
            return Ok(());
        }
        backoff = (backoff * 2).min(RETRY);
    }
}

/// The worker's life: `wg-oci-hook pia-port-forward ID --worker`.
pub fn run(helper: Helper, credentials: Credentials, container: &str) -> Result<(), String> {
    let Helper {
        state_dir: state,
        pia,
        settings,
        ..
    } = helper;
    let mut forwarder = Forwarder {
        container,
        credentials,
        cache: Cache::open(&state)?,
        state,
        ns: NetNs::of_pid(pia.container_pid).map_err(|e| format!("the container's netns: {e}"))?,
        init_started: process::start_time(pia.container_pid)
            .ok_or("the container's init is gone")?,
        settings,
        pia,
        signature: None,
    };
    let mut ready = Some(io::stdout());
    let mut bound: Option<u16> = None;
    loop {
        let pause = match forwarder.round() {
            Ok(port) => {
                if bound != Some(port) {
                    match forwarder.publish(port) {
                        Ok(()) => bound = Some(port),
                        Err(e) => {
                            if let Some(out) = ready.take() {
                                return report(out, Err(e));
                            }
                            // Not marked as published: the next round tries again.
                            warn!("container {container}: {e}");
                        }
                    }
                }
                if let Some(out) = ready.take() {
                    report(out, Ok(port))?;
                }
                settings.bind_interval
            }
            Err(e) => {
                if let Some(out) = ready.take() {
                    return report(out, Err(e));
                }
                warn!("container {container}: {e}; trying again");
                settings.bind_interval.min(RETRY)
            }
        };
        if !sleep_while_alive(forwarder.pia.container_pid, forwarder.init_started, pause) {
            info!("container {container}: its init is gone; stopping");
            return Ok(());
        }
    }
}

/// The one line the hook waits for; afterwards stdout is /dev/null, so no pipe of the hook's stays open.
fn report(mut out: io::Stdout, result: Result<u16, String>) -> Result<(), String> {
    let line = match &result {
        Ok(port) => format!("port {port}\n"),
        Err(e) => format!("error {}\n", e.replace('\n', " ")),
    };
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
    if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
    result.map(drop)
}

struct Forwarder<'a> {
    state: PrivateDir,
    container: &'a str,
    settings: &'a PiaSettings,
    credentials: Credentials,
    cache: Cache,
    pia: PiaRecord,
    ns: NetNs,
    init_started: u64,
    signature: Option<Signature>,
}

impl Forwarder<'_> {
    /// One bindPort (with a new signature first when there is none or it expires within two intervals).
    fn round(&mut self) -> Result<u16, String> {
        let deadline = Deadline::after(self.settings.api_deadline, "api_deadline");
        let api = Api::new(self.settings, deadline)?;
        // The port-forwarding API answers on the server's tunnel address, under the server's name.
        let host = PiaHost {
            ip: self.pia.server_vip,
            cn: self.pia.server_cn.clone(),
        };
        let renew_before =
            SystemTime::now() + (2 * self.settings.bind_interval).max(Duration::from_secs(60));
        if self
            .signature
            .as_ref()
            .is_none_or(|s| s.expires_at < renew_before)
        {
            let tokens = Tokens {
                api: &api,
                cache: &self.cache,
                credentials: &self.credentials,
                via_meta: self.settings.token_via_meta,
            };
            let meta = self.pia.meta_hosts();
            let rt = runtime()?;
            let token = rt.block_on(tokens.get(&meta))?;
            let signature =
                match self.in_container(|rt| rt.block_on(api.get_signature(&host, &token)))? {
                    Err(ApiError::LoginFailed) => {
                        let token = rt.block_on(tokens.renew(&meta))?;
                        self.in_container(|rt| rt.block_on(api.get_signature(&host, &token)))?
                    }
                    other => other,
                }
                .map_err(|e| e.to_string())?;
            info!(
                "container {}: signature for port {} until {}",
                self.container,
                signature.port,
                humantime::format_rfc3339_seconds(signature.expires_at)
            );
            self.signature = Some(signature);
        }
        let signature = self.signature.as_ref().expect("set above");
        let bound = self.in_container(|rt| rt.block_on(api.bind_port(&host, signature)))?;
        if let Err(e) = bound {
            // A refused signature is not worth keeping: get a new one next round.
            self.signature = None;
            return Err(e);
        }
        Ok(signature.port)
    }

    /// Runs `work` on a thread inside the container's netns, with a runtime of its own there.
    fn in_container<T: Send>(
        &self,
        work: impl FnOnce(&tokio::runtime::Runtime) -> T + Send,
    ) -> Result<T, String> {
        self.ns
            .run(|| {
                let rt = runtime().map_err(io::Error::other)?;
                Ok(work(&rt))
            })
            .map_err(|e| format!("entering the container's netns: {e}"))
    }

    fn publish(&self, port: u16) -> Result<(), String> {
        // The port opens in the container's table (the old one shuts in the same transaction) before the
        // workload can read it; the first one too, since the hook loads the table before any port is known.
        crate::sys::nft::set_forwarded_port(&self.ns, port)
            .map_err(|e| format!("letting port {port} in through the tunnel (nftables): {e}"))?;
        let text = format!("{port}\n");
        container_file::write(
            self.pia.container_pid,
            &self.pia.rootfs,
            &self.settings.port_file,
            text.as_bytes(),
        )
        .map_err(|e| format!("writing the port inside the container: {e}"))?;
        let host = port_file(self.container);
        self.state
            .write(&host, text.as_bytes(), 0o644)
            .map_err(|e| format!("{}/{host}: {e}", self.state.path().display()))
    }
}

/// Sleeps `pause`; false as soon as the container's init (`pid`, started at `started`) is gone.
fn sleep_while_alive(pid: u32, started: u64, pause: Duration) -> bool {
    let until = Instant::now() + pause;
    loop {
        if process::start_time(pid) != Some(started) {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(POLL));
    }
}
