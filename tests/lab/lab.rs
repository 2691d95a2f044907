//! The end-to-end test lab (ARCHITECTURE.md, "Tests").
//!
//! `Lab::new("name")` builds, per test and uniquely named so tests run in parallel:
//! - a "host" netns `wgl-<id>-h` where podman, runc and therefore the hook run (always through
//!   `nsenter --net=`, never in the machine's root netns);
//! - a "server" netns `wgl-<id>-s` joined to it by a veth pair, underlay 198.18.0.1/30 (host side) and
//!   198.18.0.2/30 (server side);
//! - a WireGuard server in the server netns (`wireguard-go -f wgs<id>`, port 51820, tunnel addresses
//!   10.77.0.1/24 and fd77::1/64) that accepts one client peer at 10.77.0.2/32 and fd77::2/128;
//! - a TCP responder on 10.77.0.1:8080 and [fd77::1]:8080 that writes [`MARKER`] and records who connected;
//! - a temp dir holding the client's wg-quick config, the policy, the hooks dir (the shipped `hooks.d` files
//!   pointed at the built binary), the state dir, podman's storage, config and network definitions, and one
//!   busybox rootfs per container;
//! - on request, podman bridge networks in the host netns, packet captures and leak probes (`bridge.rs`); the
//!   host netns always carries the public-looking lab-only addresses [`PUBLIC_V4`] and [`PUBLIC_V6`] on `lo`.
//!
//! Podman runs with a containers.conf of the lab's own: networks are defined under the lab dir, and netavark is
//! a wrapper that gives it a run dir under the lab dir too, so each lab's aardvark-dns is its own.
//!
//! Every address used lives only inside the lab's namespaces. Dropping the lab removes everything, also when
//! the test panicked: containers, networks, aardvark-dns, processes, namespaces, mounts, the temp dir.
//!
//! This file holds the [`Lab`] itself: what it is made of, how it is built and torn down. The rest, by what it
//! stands up: `netns.rs` (the namespaces, the underlay, `ip -n` and `nsenter` argv, sleepers), `wireguard.rs`
//! (the WireGuard server, the client config, the TCP responder), `podman.rs` (podman's argv, storage and
//! containers.conf, `podman run`), `hook.rs` (the policy, hooks.d, direct hook runs, what a tunnel leaves),
//! `bridge.rs` (bridge networks, captures, leak probes), `docker.rs` (dockerd and containerd), `cri.rs`
//! (containerd's CRI plugin, CNI, and a CRI client), `pia.rs` (the PIA server); `command.rs` runs every command.

use nix::sys::signal::Signal;
use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

mod bridge;
mod command;
mod cri;
mod docker;
mod hook;
mod netns;
mod pia;
mod podman;
mod pool;
mod wireguard;

pub use bridge::*;
pub use command::*;
pub use cri::*;
pub use docker::*;
pub use hook::*;
pub use netns::*;
pub use pia::*;
pub use podman::*;
pub use pool::*;
pub use wg_oci_hook::sys::names::HOST_LINK_PREFIX;
pub use wireguard::*;

/// The hook under test.
pub const HOOK_BIN: &str = env!("CARGO_BIN_EXE_wg-oci-hook");
/// The runtime wrapper under test.
pub const WRAPPER_BIN: &str = env!("CARGO_BIN_EXE_wg-oci-runtime");
/// What the TCP responder writes to every connection.
pub const MARKER: &str = "hello-via-wg\n";
/// A workload that pings the lab's server through the tunnel, then prints what its responder writes ([`MARKER`]).
pub const TUNNEL_PROBE: &str = "ping -c 1 -W 2 10.77.0.1 && nc -w 2 10.77.0.1 8080 </dev/null";

pub const HOST_UNDERLAY: &str = "198.18.0.1";
pub const SERVER_UNDERLAY: &str = "198.18.0.2";
pub const SERVER_PORT: u16 = 51820;
pub const SERVER_TUNNEL_V4: &str = "10.77.0.1";
pub const SERVER_TUNNEL_V6: &str = "fd77::1";
pub const CLIENT_TUNNEL_V4: &str = "10.77.0.2";
pub const CLIENT_TUNNEL_V6: &str = "fd77::2";
pub const RESPONDER_PORT: u16 = 8080;
pub const DNS_SERVER: &str = "10.77.0.53";
pub const DNS_SEARCH: &str = "lab.example";

/// How long teardown done elsewhere (the kernel's netns cleanup, the TUN's daemon exiting) may take.
const SETTLE: Duration = Duration::from_secs(10);
const BUSYBOX: &str = "/bin/busybox";
/// (tool, Debian package) the lab cannot work without.
const TOOLS: &[(&str, &str)] = &[
    ("podman", "podman"),
    ("runc", "runc"),
    ("conmon", "conmon"),
    ("wireguard-go", "wireguard-go"),
    ("wg", "wireguard-tools"),
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("findmnt", "util-linux"),
    ("umount", "mount"),
    ("timeout", "coreutils"),
];

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Knobs fixed when the lab is built.
#[derive(Clone, Debug, Default)]
pub struct LabOpts {
    /// MTU of both ends of the underlay veth (default: the kernel's 1500).
    pub host_mtu: Option<u32>,
}

pub struct Lab {
    pub test: String,
    pub id: String,
    pub dir: PathBuf,
    pub host_ns: String,
    pub server_ns: String,
    pub host_veth: String,
    pub server_veth: String,
    /// The server's wireguard-go interface (never `wgo*`, which is the hook's prefix).
    pub server_if: String,
    pub server_public_key: String,
    pub client_private_key: String,
    pub client_public_key: String,
    /// `<dir>/lab.conf`, the default profile's wg-quick file.
    pub config_path: PathBuf,
    pub policy_path: PathBuf,
    pub state_dir: PathBuf,
    pub hooks_dir: PathBuf,
    podman_dir: PathBuf,
    busybox: PathBuf,
    responder: Option<Responder>,
    /// Processes the lab started, killed by pid at drop.
    children: Mutex<Vec<(String, Child)>>,
    /// wireguard-go interfaces the lab started (their UAPI sockets are removed at drop).
    lab_wg_ifs: Mutex<Vec<String>>,
    /// Every container id podman gave us (their hook leftovers are cleaned at drop).
    seen_cids: Mutex<Vec<String>>,
    /// The host link name each container's record gave (the hook picks them at random), once seen.
    known_links: Mutex<Vec<(String, String)>>,
    /// (container id, its tunnel's key), as `tunnel_key_of` saw them.
    known_keys: Mutex<Vec<(String, String)>>,
    /// Every command's full output, in order.
    transcript: Mutex<String>,
    runs: AtomicUsize,
    netns_created: Vec<String>,
    /// Podman networks this lab created (removed at drop, after the containers).
    networks: Mutex<Vec<String>>,
    /// The bridge networks, whose bridge `podman_run` re-creates with its fixed MAC when netavark deleted it.
    bridges: Mutex<Vec<BridgeNet>>,
    /// Run first at drop, last registered first (a dockerd's teardown, see `docker.rs`).
    teardown_hooks: Mutex<Vec<TeardownHook>>,
    /// The process holding the mount namespace every CDI podman command of the lab runs in (`podman.rs`).
    pub(super) cdi_ns: Mutex<Option<u32>>,
}

/// Teardown work registered with a lab; returns the problems it met.
type TeardownHook = Box<dyn FnOnce() -> Vec<String> + Send>;

impl Lab {
    pub fn new(test: &str) -> Lab {
        Lab::with(test, LabOpts::default())
    }

    pub fn with(test: &str, opts: LabOpts) -> Lab {
        check_prerequisites();
        let mut lab = Lab::reserve(test);
        lab.build(&opts);
        lab
    }

    /// Picks a unique id and claims the netns names and the temp dir; the rest is built by `build`, with
    /// `Drop` already responsible for whatever exists.
    fn reserve(test: &str) -> Lab {
        for _ in 0..20 {
            let id = random_hex8();
            let dir = lab_temp_base().join(format!("wgl-{id}"));
            if fs::DirBuilder::new().mode(0o700).create(&dir).is_err() {
                continue;
            }
            let _ = fs::write(dir.join("TEST"), test);
            let mut lab = Lab {
                test: test.to_owned(),
                id: id.clone(),
                host_ns: format!("wgl-{id}-h"),
                server_ns: format!("wgl-{id}-s"),
                host_veth: format!("vh{id}"),
                server_veth: format!("vs{id}"),
                server_if: format!("wgs{id}"),
                server_public_key: String::new(),
                client_private_key: String::new(),
                client_public_key: String::new(),
                config_path: dir.join("lab.conf"),
                policy_path: dir.join("policy.toml"),
                state_dir: dir.join("state"),
                hooks_dir: dir.join("hooks.d"),
                podman_dir: dir.join("podman"),
                busybox: dir.join("busybox"),
                dir,
                responder: None,
                children: Mutex::new(Vec::new()),
                lab_wg_ifs: Mutex::new(Vec::new()),
                seen_cids: Mutex::new(Vec::new()),
                known_links: Mutex::new(Vec::new()),
                known_keys: Mutex::new(Vec::new()),
                transcript: Mutex::new(String::new()),
                runs: AtomicUsize::new(0),
                netns_created: Vec::new(),
                networks: Mutex::new(Vec::new()),
                bridges: Mutex::new(Vec::new()),
                teardown_hooks: Mutex::new(Vec::new()),
                cdi_ns: Mutex::new(None),
            };
            let (h, s) = (lab.host_ns.clone(), lab.server_ns.clone());
            if !run_cmd(&["ip", "netns", "add", &h]).success() {
                continue; // name taken: `lab` drops and removes its dir
            }
            lab.netns_created.push(h);
            if !run_cmd(&["ip", "netns", "add", &s]).success() {
                continue;
            }
            lab.netns_created.push(s);
            return lab;
        }
        panic!("could not reserve unique lab names for {test}");
    }

    fn build(&mut self, opts: &LabOpts) {
        self.build_underlay(opts);
        self.start_server();
        // Busybox template, client config, policy, hooks.
        fs::copy(BUSYBOX, &self.busybox).unwrap_or_else(|e| panic!("copying {BUSYBOX}: {e}"));
        let config = self.client_config();
        self.write_config(&config.render());
        self.write_policy(&self.policy());
        self.write_hooks();
        self.write_containers_conf();
    }

    /// Writes `<dir>/<name>` with `mode` and returns its path (for extra profiles or bad files).
    pub fn write_file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.dir.join(name);
        write_file(&path, text, mode);
        path
    }

    /// Everything every command of this lab printed, in order.
    pub fn transcript(&self) -> String {
        self.transcript.lock().unwrap().clone()
    }

    /// Runs a command (bounded by a timeout), logs its output to the transcript.
    pub fn run<S: AsRef<str>>(&self, argv: &[S]) -> CmdOutput {
        let argv: Vec<String> = argv.iter().map(|s| s.as_ref().to_owned()).collect();
        self.exec(&argv, &[])
    }

    #[track_caller]
    fn must<S: AsRef<str>>(&self, argv: &[S]) -> CmdOutput {
        let out = self.run(argv);
        assert!(
            out.success(),
            "lab {} ({}): setup command failed\n{out}",
            self.test,
            self.id
        );
        out
    }

    fn exec(&self, argv: &[String], env: &[(&str, &Path)]) -> CmdOutput {
        let out = run_argv(argv, env);
        self.log(&out);
        out
    }

    fn log(&self, out: &CmdOutput) {
        let mut t = self.transcript.lock().unwrap();
        t.push_str(&out.to_string());
        t.push('\n');
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        if thread::panicking() {
            // The tunnels' supervisors, whose logs are the state dir's while their tunnels live: before the
            // containers go, and their poststop with those files.
            for entry in fs::read_dir(&self.state_dir)
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".supervisor.log") {
                    let log = fs::read_to_string(entry.path()).unwrap_or_default();
                    eprintln!("=== lab {} supervisor {name} ===\n{log}", self.id);
                }
            }
        }
        // 0. Registered teardowns (dockerd: its containers, daemons, shims), while the netns still exist.
        let hooks: Vec<TeardownHook> = self.teardown_hooks.lock().unwrap().drain(..).collect();
        for hook in hooks.into_iter().rev() {
            problems.extend(hook());
        }
        // 1. Containers (this also runs our poststop hooks for any still there).
        if self.podman_dir.join("root").exists() {
            let out = self.podman(&["rm", "-fa", "-t", "0"]);
            if !out.success() {
                problems.push(format!("podman rm -fa failed:\n{out}"));
            }
            // Networks next, then the aardvark-dns that netavark started for them (it stops it itself when
            // the last container goes; this catches the rest).
            let networks: Vec<String> = self.networks.lock().unwrap().drain(..).rev().collect();
            for net in networks {
                let out = self.podman(&["network", "rm", "-f", &net]);
                if !out.success() {
                    problems.push(format!("podman network rm {net} failed:\n{out}"));
                }
            }
        }
        self.kill_aardvark_dns();
        // conmon and its exit command (`podman container cleanup`) may still be at work on a container that
        // just ended: let them finish (they would recreate files in the dir), kill them if they hang.
        let dir = self.dir.to_string_lossy().into_owned();
        let deadline = Instant::now() + SETTLE;
        loop {
            let busy = processes_mentioning(&dir);
            if busy.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for (pid, argv) in busy {
                    problems.push(format!(
                        "killing a lab process that did not finish: {pid} {argv}"
                    ));
                    kill(pid, Signal::SIGKILL);
                }
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // 2. The responder thread.
        if let Some(r) = self.responder.take() {
            r.stop();
        }
        // 3. Processes the lab started.
        for (what, mut child) in self.children.lock().unwrap().drain(..) {
            stop_child(&what, &mut child);
        }
        // 4. Whatever the hook left for containers of this lab (their tests have failed already if so).
        let mut names: Vec<String> = Vec::new();
        for (pid, _, name) in self.hook_daemons() {
            kill(pid, Signal::SIGKILL);
            names.push(name);
        }
        names.extend(self.known_links.lock().unwrap().drain(..).map(|(_, n)| n));
        let cids: Vec<String> = self.seen_cids.lock().unwrap().clone();
        for cid in &cids {
            self.tunnel_key_of(cid);
        }
        // Only those run with this lab's policy: a key of a container that ended may name another lab's live
        // tunnel by now (the kernel reuses netns inode numbers).
        let policy = self.policy_path.to_string_lossy().into_owned();
        for (_, key) in self.known_keys.lock().unwrap().iter() {
            for (pid, argv) in supervisors(key) {
                if argv.split(' ').any(|a| a == policy) {
                    kill(pid, Signal::SIGKILL);
                }
            }
        }
        for name in names {
            let _ = fs::remove_file(Path::new("/var/run/wireguard").join(format!("{name}.sock")));
        }
        for ifname in self.lab_wg_ifs.lock().unwrap().iter() {
            let _ = fs::remove_file(Path::new("/var/run/wireguard").join(format!("{ifname}.sock")));
        }
        // 5. Namespaces (their TUNs and veths go with them).
        for ns in self.netns_created.drain(..).rev() {
            let out = run_cmd(&["ip", "netns", "del", &ns]);
            if !out.success() {
                problems.push(format!("deleting netns {ns}:\n{out}"));
            }
        }
        // 6. Mounts under the temp dir, deepest first, then the dir.
        problems.extend(unmount_under(&[&self.dir]));
        if thread::panicking() {
            for ifname in self.lab_wg_ifs.lock().unwrap().iter() {
                if let Ok(log) = fs::read_to_string(self.dir.join(format!("{ifname}.log"))) {
                    eprintln!("=== lab {} wireguard-go {ifname} log ===\n{log}", self.id);
                }
            }
        }
        if let Err(e) = remove_dir_all_retrying(&self.dir) {
            problems.push(format!("removing {}: {e}", self.dir.display()));
        }
        if !problems.is_empty() {
            eprintln!(
                "lab {} ({}) teardown problems:\n{}",
                self.test,
                self.id,
                problems.join("\n")
            );
        }
    }
}

// ----- helpers -----------------------------------------------------------------------------------------------------

/// Fails the test (never skips it) when the machine lacks something the lab needs.
fn check_prerequisites() {
    let mut missing = Vec::new();
    let euid = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .map(|l| l.split_whitespace().nth(2).unwrap_or("").to_owned())
    });
    if euid.as_deref() != Some("0") {
        missing.push(
            "root: the podman end-to-end lab creates network namespaces and must run as root"
                .to_owned(),
        );
    }
    for (tool, package) in TOOLS {
        if resolve_tool(tool).is_none() {
            missing.push(format!(
                "`{tool}` not found in {}: install the Debian package `{package}`",
                lab_path()
            ));
        }
    }
    match is_static_elf(Path::new(BUSYBOX)) {
        Ok(true) => {}
        Ok(false) => missing.push(format!(
            "{BUSYBOX} is dynamically linked; the lab's rootfs needs a static one: install `busybox-static`"
        )),
        Err(e) => missing.push(format!("{BUSYBOX}: {e}: install the Debian package `busybox-static`")),
    }
    for dev in ["/dev/net/tun"] {
        if !Path::new(dev).exists() {
            missing.push(format!(
                "{dev} is missing: wireguard-go needs TUN (modprobe tun)"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "the podman end-to-end lab cannot run on this machine:\n  {}",
        missing.join("\n  ")
    );
}

/// True when the ELF file has no PT_INTERP program header.
fn is_static_elf(path: &Path) -> Result<bool, String> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| e.to_string())?;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > bytes.len() {
            return Err("truncated program headers".into());
        }
        if u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) == 3 {
            return Ok(false); // PT_INTERP
        }
    }
    Ok(true)
}

fn write_file(path: &Path, text: &str, mode: u32) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `fs::remove_dir_all`, tried up to 5 times 200 ms apart (a process that just ended may still be writing); a
/// dir that is not there counts as removed.
pub(super) fn remove_dir_all_retrying(dir: &Path) -> std::io::Result<()> {
    for attempt in 1..=5 {
        match fs::remove_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt == 5 => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
    Ok(())
}

fn random_hex8() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_usize(LAB_COUNTER.fetch_add(1, Ordering::SeqCst));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:08x}", h.finish() as u32)
}

/// The temp dir, unless podman's runroot under it (`<base>/wgl-XXXXXXXX/podman/rr`) would pass podman's
/// 50-character limit: then /tmp.
fn lab_temp_base() -> PathBuf {
    let base = std::env::temp_dir();
    if base.join("wgl-00000000/podman/rr").as_os_str().len() <= 50 {
        base
    } else {
        PathBuf::from("/tmp")
    }
}
