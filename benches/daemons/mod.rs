//! What the scale and throughput benches (`scale/mod.rs`, `throughput/mod.rs`) share: the userspace daemons
//! compared, the hook run as runc runs it with its log kept (the daemon's pid is in it), stand-in containers
//! of their own (sleepers that outlast a long bench), a daemon's memory and CPU from /proc, and the CSV files.
//! Included by `container_start.rs`.

use crate::lab::{self, Lab, LabProfile};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A userspace daemon the hook can run for a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Daemon {
    /// The default: `wg-oci-hook tunnel-daemon` (gotatun), its TUN made in the container's netns.
    BuiltIn,
    /// `userspace_command = ["wireguard-go"]`: its TUN made in the host netns and moved.
    WireguardGo,
}

/// The daemons compared, in order: WG_BENCH_DAEMONS (names, comma-separated), else both, the built-in first.
pub fn compared() -> Vec<Daemon> {
    let Ok(names) = std::env::var("WG_BENCH_DAEMONS") else {
        return vec![Daemon::BuiltIn, Daemon::WireguardGo];
    };
    names
        .split(',')
        .map(|n| match n.trim() {
            "built-in" => Daemon::BuiltIn,
            "wireguard-go" => Daemon::WireguardGo,
            other => panic!("WG_BENCH_DAEMONS: {other}? built-in or wireguard-go"),
        })
        .collect()
}

impl Daemon {
    /// Its name in tables and CSV files.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::BuiltIn => "built-in",
            Daemon::WireguardGo => "wireguard-go",
        }
    }

    /// The lab's policy for this daemon, `profiles` after the lab's one.
    pub fn policy(self, lab: &Lab, profiles: &[LabProfile]) -> lab::Policy {
        let mut policy = lab.policy();
        policy.profiles.extend(profiles.iter().cloned());
        if self == Daemon::WireguardGo {
            policy.userspace_command = vec!["wireguard-go".to_owned()];
        }
        policy
    }

    /// Writes this daemon's policy to a file of its own in the lab dir and returns its path.
    pub fn write_policy(self, lab: &Lab, profiles: &[LabProfile]) -> PathBuf {
        let name = format!("policy-{}.toml", self.name());
        lab.write_file(&name, &self.policy(lab, profiles).render(), 0o600)
    }
}

/// Profiles `{prefix}0..{prefix}{count}`, each on a wg-quick file of its own with a key of its own, the lab's
/// server as peer (which knows none of these keys: the tunnels come up all the same, and stay idle).
pub fn own_key_profiles(lab: &Lab, prefix: &str, count: usize) -> Vec<LabProfile> {
    (0..count)
        .map(|n| {
            let mut config = lab.client_config();
            config.private_key = genkey();
            let path = lab.write_file(&format!("{prefix}{n}.conf"), &config.render(), 0o600);
            let profile = LabProfile::new(&format!("{prefix}{n}"), path);
            // WG_BENCH_HEALTH_INTERVAL: how often each tunnel's supervisor looks (default 10 s), to tell its
            // cost from the daemons' own.
            match std::env::var("WG_BENCH_HEALTH_INTERVAL") {
                Ok(secs) => profile.with("health_interval", &secs).with(
                    "stale_after",
                    &secs.parse::<u64>().unwrap().max(180).to_string(),
                ),
                Err(_) => profile,
            }
        })
        .collect()
}

fn genkey() -> String {
    let out = Command::new("wg")
        .arg("genkey")
        .output()
        .expect("wg genkey");
    assert!(out.status.success(), "wg genkey: {}", out.status);
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs `f` on a thread that entered the lab's host netns (where runc would run the hook), so that no nsenter
/// is timed.
pub fn in_host_ns<T: Send>(lab: &Lab, f: impl FnOnce() -> T + Send) -> T {
    let host_ns =
        std::fs::File::open(format!("/var/run/netns/{}", lab.host_ns)).expect("lab host netns");
    thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&host_ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("setns into the lab");
            f()
        })
        .join()
        .expect("bench thread")
    })
}

/// One hook run: its wall time and what it wrote to stderr (the lab's policy logs at debug level there).
pub struct HookRun {
    pub took: Duration,
    pub log: String,
}

impl HookRun {
    /// The daemon's pid, from the hook's "... started as pid N ..." line (either daemon).
    pub fn daemon_pid(&self) -> Option<u32> {
        self.log.lines().find_map(|l| {
            let rest = l.split(" started as pid ").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
    }
}

/// Runs wg-oci-hook at `stage` as runc does (state on stdin, an empty environment) with `policy`; panics,
/// with its log, when it fails.
pub fn run_hook(policy: &Path, stage: &str, state: &str) -> HookRun {
    try_run_hook(policy, stage, state).unwrap_or_else(|(status, log)| {
        panic!("wg-oci-hook {stage}: {status}\n{log}");
    })
}

/// `run_hook`, but a failure is returned: (exit status, log).
pub fn try_run_hook(policy: &Path, stage: &str, state: &str) -> Result<HookRun, (String, String)> {
    let start = Instant::now();
    let mut child = Command::new(lab::HOOK_BIN)
        .args([stage, "--policy"])
        .arg(policy)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hook");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(state.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(HookRun { took, log })
    } else {
        Err((out.status.to_string(), log))
    }
}

/// The hook's error line in `log` (`wg-oci-hook: container ID: ...`), else its last line.
pub fn error_line(log: &str) -> &str {
    log.lines()
        .rfind(|l| l.starts_with("wg-oci-hook: container "))
        .or_else(|| log.lines().last())
        .unwrap_or("")
}

/// `fs.inotify.max_user_instances`: how many inotify instances one user's processes may hold. Each
/// wireguard-go holds one (its UAPI listener watches its socket file), so root's wireguard-go daemons, the lab
/// server's included, can be no more than this (128 by default).
pub fn inotify_max_user_instances() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many inotify instances this machine's processes hold now (all users: an upper bound for root's).
pub fn inotify_instances() -> usize {
    let mut n = 0;
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        for fd in std::fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:inotify") {
                n += 1;
            }
        }
    }
    n
}

/// Stand-ins for containers' inits, like `Lab::spawn_netns_sleeper` (a `sleep` with a network and a mount
/// namespace of its own, started from the lab's host netns) but of this bench's own: they sleep up to half an
/// hour rather than two minutes, since a level of 200 tunnels outlasts two minutes, and each can be stopped
/// when its level ends. Whatever is left is killed at drop.
pub struct Sleepers {
    host_ns: String,
    children: Vec<Child>,
}

impl Sleepers {
    pub fn new(lab: &Lab) -> Sleepers {
        Sleepers {
            host_ns: format!("/var/run/netns/{}", lab.host_ns),
            children: Vec::new(),
        }
    }

    /// A new sleeper; returns its pid once it is in its namespaces.
    pub fn spawn(&mut self) -> u32 {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.host_ns))
            .args(["unshare", "--net", "--mount", "sleep", "1800"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning a sleeper");
        let pid = child.id();
        self.children.push(child);
        let host = lab::ns_id(&self.host_ns);
        let our_mnt = lab::ns_id("/proc/self/ns/mnt");
        let start = Instant::now();
        loop {
            // nsenter and unshare exec: the pid is `sleep` once both namespaces are made.
            let net = lab::ns_id(&format!("/proc/{pid}/ns/net"));
            let mnt = lab::ns_id(&format!("/proc/{pid}/ns/mnt"));
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if net.is_some()
                && net != host
                && mnt.is_some()
                && mnt != our_mnt
                && comm.trim_end() == "sleep"
            {
                return pid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "sleeper {pid} never got its own namespaces"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills the sleeper `pid` and reaps it.
    pub fn stop(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.swap_remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stop_all(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A process's memory, KiB, from /proc/PID/smaps_rollup.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mem {
    pub rss: u64,
    /// Proportional set size: each shared page counted as 1/n in each of the n processes mapping it.
    pub pss: u64,
}

impl std::ops::AddAssign for Mem {
    fn add_assign(&mut self, other: Mem) {
        self.rss += other.rss;
        self.pss += other.pss;
    }
}

/// `pid`'s RSS and PSS (None when it is gone).
pub fn mem(pid: u32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Mem {
        rss: field("Rss:")?,
        pss: field("Pss:")?,
    })
}

/// `pid`'s CPU time so far, user and system, all its threads (None when it is gone).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// The 1-minute load average.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// /proc/loadavg's three averages, as it writes them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Where the CSV files go: WG_BENCH_OUT, else `bench/` in cargo's target dir.
pub fn out_dir() -> PathBuf {
    let dir = std::env::var_os("WG_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .expect("the target dir")
                .join("bench")
        });
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Writes `rows` under `header` as `name` in `out_dir()` and returns its path.
pub fn write_csv(name: &str, header: &[&str], rows: &[Vec<String>]) -> PathBuf {
    let mut text = header.join(",");
    text.push('\n');
    for row in rows {
        assert_eq!(row.len(), header.len(), "a row of {name}");
        let _ = writeln!(text, "{}", row.join(","));
    }
    let path = out_dir().join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

/// `v`'s median (the upper one of an even count); v must not be empty.
pub fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
