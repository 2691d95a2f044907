//! The end-to-end test lab (DESIGN.md section 6).
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

use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

mod bridge;
mod docker;
mod pia;

pub use bridge::*;
pub use docker::*;
pub use pia::*;
pub use wg_oci_hook::names::HOST_LINK_PREFIX;

/// The hook under test.
pub const HOOK_BIN: &str = env!("CARGO_BIN_EXE_wg-oci-hook");
/// What the TCP responder writes to every connection.
pub const MARKER: &str = "hello-via-wg\n";

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

/// PATH for every command the lab runs: the standard directories first (CI's PATH may lack the sbin ones).
const LAB_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Bound on any one command the lab runs (podman included).
const COMMAND_TIMEOUT_SECS: u32 = 60;
/// How long teardown done elsewhere (the kernel's netns cleanup, the TUN's daemon exiting) may take.
const SETTLE: Duration = Duration::from_secs(10);
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ip", "cat", "ls", "ping", "ping6", "nc", "wget", "sleep", "echo", "grep", "sed", "head",
    "tail", "wc", "cut", "tr", "true", "false", "test", "env", "timeout", "nslookup",
];
/// Podman 4.3's default `helper_binaries_dir`, searched after the lab's own.
const PODMAN_HELPER_DIRS: &[&str] = &[
    "/usr/local/libexec/podman",
    "/usr/local/lib/podman",
    "/usr/libexec/podman",
    "/usr/lib/podman",
];
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

/// The policy TOML the lab writes; `Lab::policy()` gives the default, `Lab::write_policy` writes a variant.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `default_profile`.
    pub default_profile: String,
    /// `interface`: the tunnel's name inside the container.
    pub interface: String,
    /// `state_dir`.
    pub state_dir: PathBuf,
    /// `backend`: kernel, userspace or auto.
    pub backend: String,
    /// `userspace_command`.
    pub userspace_command: Vec<String>,
    /// `allowed_annotations`.
    pub allowed_annotations: Vec<String>,
    /// `log_level`.
    pub log_level: String,
    /// Further top-level `key = value` lines (raw TOML value text), written before the first profile table.
    pub extra_top: Vec<(String, String)>,
    /// The `[profiles.NAME]` tables, in order.
    pub profiles: Profiles,
}

/// The policy's profiles: a `Vec<LabProfile>` (through `Deref`) whose `push` also takes the older
/// `(name, config path)` tuple.
#[derive(Clone, Debug, Default)]
pub struct Profiles(pub Vec<LabProfile>);

impl Profiles {
    /// Appends a profile (a [`LabProfile`], or a `(String, PathBuf)` name and config path).
    pub fn push(&mut self, profile: impl Into<LabProfile>) {
        self.0.push(profile.into());
    }
}

impl std::ops::Deref for Profiles {
    type Target = Vec<LabProfile>;
    fn deref(&self) -> &Vec<LabProfile> {
        &self.0
    }
}

impl std::ops::DerefMut for Profiles {
    fn deref_mut(&mut self) -> &mut Vec<LabProfile> {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Profiles {
    type Item = &'a LabProfile;
    type IntoIter = std::slice::Iter<'a, LabProfile>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Vec<LabProfile>> for Profiles {
    fn from(v: Vec<LabProfile>) -> Self {
        Profiles(v)
    }
}

/// One `[profiles.NAME]` table: `config = "PATH"`, then every `extra` as `key = value` (raw TOML value text).
#[derive(Clone, Debug)]
pub struct LabProfile {
    /// The profile's name (`[profiles.NAME]`).
    pub name: String,
    /// The wg-quick config file (`config = "PATH"`).
    pub config: PathBuf,
    /// Further keys of this profile: (key, raw TOML value text such as `true` or `["10.0.0.0/8"]`).
    pub extra: Vec<(String, String)>,
}

impl From<(String, PathBuf)> for LabProfile {
    fn from((name, config): (String, PathBuf)) -> Self {
        LabProfile::new(&name, config)
    }
}

impl LabProfile {
    /// A profile `name` using the wg-quick file `config`, without further keys.
    pub fn new(name: &str, config: impl Into<PathBuf>) -> Self {
        LabProfile {
            name: name.to_owned(),
            config: config.into(),
            extra: Vec::new(),
        }
    }

    /// A profile `name` without a config file, whose tunnel comes from `provider` (`provider = "pia"`).
    pub fn provider(name: &str, provider: &str) -> Self {
        LabProfile::new(name, PathBuf::new()).with("provider", &toml_str(provider))
    }

    /// Adds `key = raw_value` to this profile (`raw_value` is TOML value text, written verbatim).
    pub fn with(mut self, key: &str, raw_value: &str) -> Self {
        self.extra.push((key.to_owned(), raw_value.to_owned()));
        self
    }
}

impl Policy {
    /// The policy as TOML text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s += &format!("default_profile = {}\n", toml_str(&self.default_profile));
        s += &format!("interface = {}\n", toml_str(&self.interface));
        s += &format!(
            "state_dir = {}\n",
            toml_str(&self.state_dir.to_string_lossy())
        );
        s += &format!("backend = {}\n", toml_str(&self.backend));
        s += &format!(
            "userspace_command = {}\n",
            toml_list(&self.userspace_command)
        );
        s += &format!(
            "allowed_annotations = {}\n",
            toml_list(&self.allowed_annotations)
        );
        s += &format!("log_level = {}\n", toml_str(&self.log_level));
        for (key, value) in &self.extra_top {
            s += &format!("{key} = {value}\n");
        }
        for profile in &self.profiles {
            s += &format!("\n[profiles.{}]\n", profile.name);
            // A provider profile has no config file (see `LabProfile::provider`).
            if !profile.config.as_os_str().is_empty() {
                s += &format!("config = {}\n", toml_str(&profile.config.to_string_lossy()));
            }
            for (key, value) in &profile.extra {
                s += &format!("{key} = {value}\n");
            }
        }
        s
    }
}

/// The client's wg-quick config; `Lab::client_config()` gives the one matching the lab's server.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub private_key: String,
    pub addresses: Vec<String>,
    /// `DNS =` entries: addresses become nameservers, names become search domains.
    pub dns: Vec<String>,
    pub mtu: Option<u32>,
    /// Extra lines appended to `[Interface]`, verbatim.
    pub extra_interface_lines: Vec<String>,
    pub peer_public_key: String,
    pub endpoint: String,
    pub allowed_ips: Vec<String>,
}

impl ClientConfig {
    pub fn render(&self) -> String {
        let mut s = String::from("[Interface]\n");
        s += &format!("PrivateKey = {}\n", self.private_key);
        s += &format!("Address = {}\n", self.addresses.join(", "));
        if !self.dns.is_empty() {
            s += &format!("DNS = {}\n", self.dns.join(", "));
        }
        if let Some(mtu) = self.mtu {
            s += &format!("MTU = {mtu}\n");
        }
        for line in &self.extra_interface_lines {
            s += line;
            s += "\n";
        }
        s += "\n[Peer]\n";
        s += &format!("PublicKey = {}\n", self.peer_public_key);
        s += &format!("Endpoint = {}\n", self.endpoint);
        s += &format!("AllowedIPs = {}\n", self.allowed_ips.join(", "));
        s
    }
}

/// One `podman run`.
#[derive(Clone, Debug, Default)]
pub struct RunOpts {
    pub annotations: Vec<(String, String)>,
    /// Run as `/bin/sh -c SCRIPT` in the busybox rootfs.
    pub script: String,
    /// `-d`: return once the container started.
    pub detach: bool,
    /// Leave out `--rm`.
    pub keep: bool,
    /// Inserted before `--rootfs`.
    pub extra_args: Vec<String>,
    /// `--network NAME` (a network of this lab, see `Lab::bridge_network`); `None` is `--network none`.
    pub network: Option<String>,
    /// (lab file, machine path): podman (and so runc and the hook) runs in a mount namespace of its own where
    /// each lab file is bind-mounted over the machine path (e.g. a resolv.conf for the hook's resolver).
    pub binds: Vec<(PathBuf, String)>,
}

impl RunOpts {
    /// A container that asks for a tunnel (`wg.enable=true`).
    pub fn wg(script: &str) -> Self {
        RunOpts::plain(script).annotation("wg.enable", "true")
    }

    /// A container without any `wg.*` annotation.
    pub fn plain(script: &str) -> Self {
        RunOpts {
            script: script.to_owned(),
            ..RunOpts::default()
        }
    }

    /// Adds the annotation `key=value`.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs with `-d`.
    pub fn detached(mut self) -> Self {
        self.detach = true;
        self
    }

    /// Attaches the container to the podman network `name` instead of `--network none`.
    pub fn network(mut self, name: &str) -> Self {
        self.network = Some(name.to_owned());
        self
    }

    /// Runs podman with the lab file `file` bind-mounted over `target` (see `RunOpts::binds`).
    pub fn bind(mut self, file: &Path, target: &str) -> Self {
        self.binds.push((file.to_owned(), target.to_owned()));
        self
    }
}

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

/// One `podman run`'s output, with the container id from the cidfile (podman writes it before starting).
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub out: CmdOutput,
    pub cid: Option<String>,
    pub rootfs: PathBuf,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        self.out.success()
    }

    #[track_caller]
    pub fn cid(&self) -> &str {
        match &self.cid {
            Some(cid) => cid,
            None => panic!("podman wrote no container id to the cidfile\n{self}"),
        }
    }

    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(self.success(), "{what}: podman run failed\n{self}");
        self
    }

    /// The hook's error line as podman relays it: from `wg-oci-hook: container <cid>: ` to the end of that line.
    pub fn hook_error_line(&self) -> Option<&str> {
        let needle = format!("wg-oci-hook: container {}: ", self.cid.as_deref()?);
        let start = self.out.stderr.find(&needle)?;
        let rest = &self.out.stderr[start..];
        Some(rest.lines().next().unwrap_or(rest))
    }
}

impl fmt::Display for RunOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "container id: {}",
            self.cid.as_deref().unwrap_or("(none)")
        )?;
        write!(f, "{}", self.out)
    }
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
                transcript: Mutex::new(String::new()),
                runs: AtomicUsize::new(0),
                netns_created: Vec::new(),
                networks: Mutex::new(Vec::new()),
                bridges: Mutex::new(Vec::new()),
                teardown_hooks: Mutex::new(Vec::new()),
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
        let (h, s) = (self.host_ns.clone(), self.server_ns.clone());
        let (vh, vs) = (self.host_veth.clone(), self.server_veth.clone());
        self.must(&["ip", "-n", &h, "link", "set", "lo", "up"]);
        self.must(&["ip", "-n", &s, "link", "set", "lo", "up"]);
        self.must(&[
            "ip", "-n", &h, "link", "add", &vh, "type", "veth", "peer", "name", &vs, "netns", &s,
        ]);
        if let Some(mtu) = opts.host_mtu {
            let mtu = mtu.to_string();
            self.must(&["ip", "-n", &h, "link", "set", &vh, "mtu", &mtu]);
            self.must(&["ip", "-n", &s, "link", "set", &vs, "mtu", &mtu]);
        }
        self.must(&[
            "ip",
            "-n",
            &h,
            "addr",
            "add",
            &format!("{HOST_UNDERLAY}/30"),
            "dev",
            &vh,
        ]);
        self.must(&[
            "ip",
            "-n",
            &s,
            "addr",
            "add",
            &format!("{SERVER_UNDERLAY}/30"),
            "dev",
            &vs,
        ]);
        self.must(&["ip", "-n", &h, "link", "set", &vh, "up"]);
        self.must(&["ip", "-n", &s, "link", "set", &vs, "up"]);
        // Public-looking addresses that are local to the host netns (see `bridge::PUBLIC_V4`).
        for addr in [format!("{PUBLIC_V4}/32"), format!("{PUBLIC_V6}/128")] {
            self.must(&["ip", "-n", &h, "addr", "add", &addr, "dev", "lo"]);
        }

        // Keys.
        let server_key = self.genkey();
        self.server_public_key = self.pubkey(&server_key);
        self.client_private_key = self.genkey();
        self.client_public_key = self.pubkey(&self.client_private_key);
        let server_key_file = self.dir.join("server.key");
        write_file(&server_key_file, &server_key, 0o600);

        // WireGuard server.
        let wgs = self.server_if.clone();
        self.start_wireguard_go(&s, &wgs);
        let allowed = format!("{CLIENT_TUNNEL_V4}/32,{CLIENT_TUNNEL_V6}/128");
        let key_file = server_key_file.to_string_lossy().into_owned();
        let port = SERVER_PORT.to_string();
        let client_pub = self.client_public_key.clone();
        self.must(&self.in_ns(
            &s,
            &[
                "wg",
                "set",
                &wgs,
                "private-key",
                &key_file,
                "listen-port",
                &port,
                "peer",
                &client_pub,
                "allowed-ips",
                &allowed,
            ],
        ));
        self.must(&[
            "ip",
            "-n",
            &s,
            "addr",
            "add",
            &format!("{SERVER_TUNNEL_V4}/24"),
            "dev",
            &wgs,
        ]);
        self.must(&[
            "ip",
            "-n",
            &s,
            "addr",
            "add",
            &format!("{SERVER_TUNNEL_V6}/64"),
            "dev",
            &wgs,
            "nodad",
        ]);
        self.must(&["ip", "-n", &s, "link", "set", &wgs, "up"]);

        // Responder on the tunnel addresses.
        let addrs: Vec<SocketAddr> = vec![
            format!("{SERVER_TUNNEL_V4}:{RESPONDER_PORT}")
                .parse()
                .unwrap(),
            format!("[{SERVER_TUNNEL_V6}]:{RESPONDER_PORT}")
                .parse()
                .unwrap(),
        ];
        self.responder = Some(Responder::start(&netns_path(&s), addrs));

        // Busybox template, client config, policy, hooks.
        fs::copy(BUSYBOX, &self.busybox).unwrap_or_else(|e| panic!("copying {BUSYBOX}: {e}"));
        let config = self.client_config();
        self.write_config(&config.render());
        self.write_policy(&self.policy());
        self.write_hooks();
        self.write_containers_conf();
    }

    // ----- configuration -----------------------------------------------------------------------------------------

    /// The client config that matches the lab's server.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            private_key: self.client_private_key.clone(),
            addresses: vec![
                format!("{CLIENT_TUNNEL_V4}/32"),
                format!("{CLIENT_TUNNEL_V6}/128"),
            ],
            dns: vec![DNS_SERVER.to_owned(), DNS_SEARCH.to_owned()],
            mtu: None,
            extra_interface_lines: Vec::new(),
            peer_public_key: self.server_public_key.clone(),
            endpoint: format!("{SERVER_UNDERLAY}:{SERVER_PORT}"),
            allowed_ips: vec!["0.0.0.0/0".to_owned(), "::/0".to_owned()],
        }
    }

    /// Replaces the default profile's config (`lab.conf`, mode 0600).
    pub fn write_config(&self, text: &str) {
        write_file(&self.config_path, text, 0o600);
    }

    /// Writes `<dir>/<name>` with `mode` and returns its path (for extra profiles or bad files).
    pub fn write_file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.dir.join(name);
        write_file(&path, text, mode);
        path
    }

    /// The default policy: one profile `lab` using `lab.conf`, userspace backend, `wg.profile` allowed.
    pub fn policy(&self) -> Policy {
        Policy {
            default_profile: "lab".to_owned(),
            interface: "wg0".to_owned(),
            state_dir: self.state_dir.clone(),
            backend: "userspace".to_owned(),
            userspace_command: vec!["wireguard-go".to_owned()],
            allowed_annotations: vec!["wg.profile".to_owned()],
            log_level: "debug".to_owned(),
            extra_top: Vec::new(),
            profiles: vec![LabProfile::new("lab", &self.config_path)].into(),
        }
    }

    pub fn write_policy(&self, policy: &Policy) {
        write_file(&self.policy_path, &policy.render(), 0o600);
    }

    /// The shipped `hooks.d/*.json`, with `hook.path` set to the built binary and `--policy <lab policy>`
    /// appended to `hook.args`; everything else as shipped.
    fn write_hooks(&self) {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.hooks_dir)
            .unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks.d");
        let mut n = 0;
        for name in [
            "wg-oci-hook-create-runtime.json",
            "wg-oci-hook-poststop.json",
        ] {
            let path = shipped.join(name);
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let mut v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let hook = v
                .get_mut("hook")
                .and_then(|h| h.as_object_mut())
                .expect("hook object");
            hook.insert("path".into(), HOOK_BIN.into());
            let args = hook
                .entry("args")
                .or_insert_with(|| serde_json::json!([HOOK_BIN]));
            let args = args.as_array_mut().expect("hook.args is an array");
            args.push("--policy".into());
            args.push(self.policy_path.to_string_lossy().into_owned().into());
            write_file(
                &self.hooks_dir.join(name),
                &serde_json::to_string_pretty(&v).unwrap(),
                0o600,
            );
            n += 1;
        }
        assert_eq!(n, 2);
    }

    /// A containers.conf of the lab's own, so the machine's config does not leak in and no two labs share
    /// podman's tmp dir, locks or network definitions (`<dir>/podman/networks`, never /etc/containers/networks).
    /// Podman finds netavark first in `<dir>/podman/helpers`: see `write_netavark_wrapper`.
    fn write_containers_conf(&self) {
        let p = |s: &str| toml_str(&self.podman_dir.join(s).to_string_lossy());
        let mut helper_dirs = vec![self
            .podman_dir
            .join("helpers")
            .to_string_lossy()
            .into_owned()];
        helper_dirs.extend(PODMAN_HELPER_DIRS.iter().map(|d| d.to_string()));
        let text = format!(
            "[containers]\ndefault_sysctls = []\n\n\
             [engine]\nlock_type = \"file\"\ntmp_dir = {}\nhelper_binaries_dir = {}\n\n\
             [network]\nnetwork_backend = \"netavark\"\nnetwork_config_dir = {}\n",
            p("tmp"),
            toml_list(&helper_dirs),
            p("networks"),
        );
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.podman_dir)
            .unwrap();
        write_file(&self.podman_dir.join("containers.conf"), &text, 0o600);
        self.write_netavark_wrapper();
    }

    /// `<dir>/podman/helpers/netavark`: the real netavark with `--config <dir>/podman/netavark`. Rootful podman
    /// 4.3 always passes the machine-wide `/run/containers/networks`, where netavark keeps aardvark-dns's config
    /// and pid file: labs running in parallel would then share (and signal) one aardvark-dns in one lab's netns.
    fn write_netavark_wrapper(&self) {
        let helpers = self.podman_dir.join("helpers");
        fs::DirBuilder::new().mode(0o700).create(&helpers).unwrap();
        let run_dir = self.netavark_run_dir();
        // netavark creates `aardvark-dns/` in it, but not the dir itself.
        fs::DirBuilder::new().mode(0o700).create(&run_dir).unwrap();
        let script = match find_podman_helper("netavark") {
            Some(real) => format!(
                "#!/bin/sh\n\
                 # The lab's netavark: the real one, with a run dir (aardvark-dns config, pid file, lock) of this lab's own.\n\
                 real={}\n\
                 dir={}\n\
                 prev=\n\
                 found=\n\
                 for a in \"$@\"; do\n\
                 \x20 shift\n\
                 \x20 case $prev in --config|-c) a=$dir; found=1 ;; esac\n\
                 \x20 case $a in --config=*) a=--config=$dir; found=1 ;; esac\n\
                 \x20 set -- \"$@\" \"$a\"\n\
                 \x20 prev=$a\n\
                 done\n\
                 [ -n \"$found\" ] || set -- --config \"$dir\" \"$@\"\n\
                 exec \"$real\" \"$@\"\n",
                sh_quote(&real),
                sh_quote(&run_dir.to_string_lossy())
            ),
            None => "#!/bin/sh\necho 'netavark not found: install the Debian package netavark' >&2\nexit 127\n"
                .to_owned(),
        };
        write_file(&helpers.join("netavark"), &script, 0o700);
    }

    /// Where the lab's netavark keeps aardvark-dns's config (`aardvark-dns/`) and lock.
    fn netavark_run_dir(&self) -> PathBuf {
        self.podman_dir.join("netavark")
    }

    // ----- podman --------------------------------------------------------------------------------------------------

    fn podman_base(&self) -> Vec<String> {
        let p = |s: &str| self.podman_dir.join(s).to_string_lossy().into_owned();
        let mut v: Vec<String> = vec![
            "nsenter".into(),
            format!("--net={}", netns_path(&self.host_ns)),
            "podman".into(),
        ];
        for (flag, value) in [
            ("--root", p("root")),
            ("--runroot", p("rr")),
            ("--tmpdir", p("tmp")),
            ("--storage-driver", "vfs".into()),
            ("--cgroup-manager", "cgroupfs".into()),
            ("--runtime", "runc".into()),
            ("--events-backend", "file".into()),
            ("--hooks-dir", self.hooks_dir.to_string_lossy().into_owned()),
        ] {
            v.push(flag.into());
            v.push(value);
        }
        v
    }

    /// Runs podman (in the lab's host netns, with the lab's storage and hooks) with `args`.
    pub fn podman(&self, args: &[&str]) -> CmdOutput {
        let mut argv = self.podman_base();
        argv.extend(args.iter().map(|s| s.to_string()));
        self.exec(
            &argv,
            &[("CONTAINERS_CONF", &self.podman_dir.join("containers.conf"))],
        )
    }

    /// `podman` as `Lab::podman`, inside a private mount namespace with `binds` mounted (never on the machine's
    /// own view of those paths: the namespace ends with its last process).
    fn podman_with_binds(&self, args: &[&str], binds: &[(PathBuf, String)]) -> CmdOutput {
        let mut script = String::new();
        for (file, target) in binds {
            script += &format!(
                "mount --bind {} {} || exit 125\n",
                sh_quote(&file.to_string_lossy()),
                sh_quote(target)
            );
        }
        script += "exec \"$@\"\n";
        let mut argv: Vec<String> = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
            .map(String::from)
            .to_vec();
        argv.push(script);
        argv.push("sh".into());
        argv.extend(self.podman_base());
        argv.extend(args.iter().map(|s| s.to_string()));
        self.exec(
            &argv,
            &[("CONTAINERS_CONF", &self.podman_dir.join("containers.conf"))],
        )
    }

    /// `podman run` in a fresh busybox rootfs of this lab. On a bridge network of this lab, the bridge is first
    /// re-created with its fixed MAC if netavark deleted it (see `Lab::ensure_bridge`).
    pub fn podman_run(&self, opts: &RunOpts) -> RunOutput {
        if let Some(name) = &opts.network {
            let net = self
                .bridges
                .lock()
                .unwrap()
                .iter()
                .find(|b| &b.name == name)
                .cloned();
            if let Some(net) = net {
                self.ensure_bridge(&net);
            }
        }
        let n = self.runs.fetch_add(1, Ordering::SeqCst);
        let rootfs = self.make_rootfs(n);
        let cidfile = self.dir.join(format!("run-{n}.cid"));
        let mut args: Vec<String> = vec!["run".into()];
        if !opts.keep {
            args.push("--rm".into());
        }
        if opts.detach {
            args.push("-d".into());
        }
        for a in [
            "--cidfile",
            &cidfile.to_string_lossy(),
            "--network",
            opts.network.as_deref().unwrap_or("none"),
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            // busybox ping needs a raw socket; podman's default capabilities lack NET_RAW.
            "--cap-add",
            "NET_RAW",
        ] {
            args.push(a.into());
        }
        for (k, v) in &opts.annotations {
            args.push("--annotation".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(opts.extra_args.iter().cloned());
        args.push("--rootfs".into());
        args.push(rootfs.to_string_lossy().into_owned());
        args.extend(["/bin/sh".into(), "-c".into(), opts.script.clone()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = if opts.binds.is_empty() {
            self.podman(&refs)
        } else {
            self.podman_with_binds(&refs, &opts.binds)
        };
        let cid = fs::read_to_string(&cidfile)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(cid) = &cid {
            self.seen_cids.lock().unwrap().push(cid.clone());
        }
        RunOutput { out, cid, rootfs }
    }

    /// A fresh rootfs: busybox (hard-linked from the lab's copy), its applets, empty etc proc sys dev tmp run.
    fn make_rootfs(&self, n: usize) -> PathBuf {
        let root = self.dir.join(format!("rootfs-{n}"));
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::hard_link(&self.busybox, root.join("bin/busybox"))
            .or_else(|_| fs::copy(&self.busybox, root.join("bin/busybox")).map(drop))
            .unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        root
    }

    /// Polls for the state record of `cid` (up to 5 s) and returns its text.
    pub fn wait_for_record(&self, cid: &str) -> Option<String> {
        let path = self.record_path(cid);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                return Some(text);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn record_path(&self, cid: &str) -> PathBuf {
        self.state_dir.join(format!("{cid}.json"))
    }

    // ----- the hook, run directly -------------------------------------------------------------------------------

    /// A bundle dir with a config.json carrying `annotations`, and the OCI state JSON runc would send at
    /// createRuntime for a container whose init is `pid`.
    pub fn fake_state(&self, id: &str, pid: u32, annotations: &[(&str, &str)]) -> String {
        let bundle = self.dir.join(format!("bundle-{id}"));
        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let ann: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": { "path": "rootfs" },
            "process": { "args": ["/bin/sh"], "cwd": "/" },
            "annotations": ann,
            "linux": { "namespaces": [ { "type": "network" }, { "type": "mount" } ] }
        });
        write_file(&bundle.join("config.json"), &config.to_string(), 0o600);
        serde_json::json!({
            "ociVersion": "1.0.2",
            "id": id,
            "status": "creating",
            "pid": pid,
            "bundle": bundle.to_string_lossy(),
            "annotations": ann,
        })
        .to_string()
    }

    /// Runs the hook binary itself in the lab's host netns with `args`, `stdin`, and an EMPTY environment
    /// (as runc may start it), bounded by a timeout.
    pub fn run_hook_direct(&self, args: &[&str], stdin: &str) -> CmdOutput {
        self.run_hook_direct_env(args, stdin, &[])
    }

    /// `run_hook_direct` with `env` as the hook's whole environment.
    pub fn run_hook_direct_env(
        &self,
        args: &[&str],
        stdin: &str,
        env: &[(&str, &str)],
    ) -> CmdOutput {
        let mut argv: Vec<String> = vec![
            "/usr/bin/timeout".into(),
            COMMAND_TIMEOUT_SECS.to_string(),
            resolve_tool("nsenter").unwrap_or_else(|| "/usr/bin/nsenter".into()),
            format!("--net={}", netns_path(&self.host_ns)),
            HOOK_BIN.into(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env.iter().copied())
            .current_dir("/");
        let out = output_with_stdin(cmd, stdin.as_bytes(), &argv.join(" "));
        self.log(&out);
        out
    }

    /// Makes teardown treat `id` like a container this lab ran: whatever is left under its names is killed
    /// when the lab is dropped (for tests that run the hook directly).
    pub fn track_container_id(&self, id: &str) {
        self.seen_cids.lock().unwrap().push(id.to_owned());
    }

    /// A process sleeping in the lab's host netns (a stand-in container init for direct hook runs).
    pub fn spawn_sleeper(&self) -> u32 {
        self.spawn_in_host_ns("sleeper", &["sleep", "120"])
    }

    /// A stand-in for a container's init: a process with network and mount namespaces of its own (the netns
    /// inside the lab's host netns), for running the hook directly. Returns once it is in them. Killed with the lab.
    pub fn spawn_netns_sleeper(&self) -> u32 {
        self.spawn_unshared_sleeper(true)
    }

    /// Not a container: a process in a netns of its own but in our mount namespace (a `sleep` anyone could
    /// start), which the hook must refuse to treat as a container's init.
    pub fn spawn_netns_only_sleeper(&self) -> u32 {
        self.spawn_unshared_sleeper(false)
    }

    fn spawn_unshared_sleeper(&self, own_mount_ns: bool) -> u32 {
        let argv: &[&str] = if own_mount_ns {
            &["unshare", "--net", "--mount", "sleep", "120"]
        } else {
            &["unshare", "--net", "sleep", "120"]
        };
        let pid = self.spawn_in_host_ns("netns sleeper", argv);
        // Namespaces compare by the inode of their nsfs file (a netns bind mount is not a symlink). Ours, not
        // PID 1's: in a sandbox /proc/1/ns/net may be unreadable, and the forked child starts in ours.
        let host = ns_id(&netns_path(&self.host_ns));
        let ours = ns_id("/proc/self/ns/net");
        let our_mnt = ns_id("/proc/self/ns/mnt");
        assert!(
            host.is_some() && ours.is_some() && our_mnt.is_some(),
            "the lab's host netns or ours is missing"
        );
        let start = Instant::now();
        loop {
            let ns = ns_id(&format!("/proc/{pid}/ns/net"));
            let mnt = ns_id(&format!("/proc/{pid}/ns/mnt"));
            // `sleep` runs only after unshare made the namespaces: until then the pid is nsenter's or unshare's.
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let mnt_ok = mnt.is_some() && (mnt != our_mnt) == own_mount_ns;
            if ns.is_some() && ns != host && ns != ours && mnt_ok && comm.trim_end() == "sleep" {
                return pid;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "sleeper {pid} never got its own namespaces"
            );
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn spawn_in_host_ns(&self, what: &str, argv: &[&str]) -> u32 {
        let child = Command::new("nsenter")
            .env("PATH", lab_path())
            .arg(format!("--net={}", netns_path(&self.host_ns)))
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
        let pid = child.id();
        self.children.lock().unwrap().push((what.into(), child));
        pid
    }

    // ----- a hand-made client, to prove the lab without the hook ----------------------------------------------

    /// Starts a wireguard-go client `wgm<id>` in the host netns configured by hand with `wg set` and `ip`
    /// (10.77.0.2/32, fd77::2/128, routes to the tunnel prefixes only).
    pub fn start_manual_client(&self) -> String {
        let h = self.host_ns.clone();
        let name = format!("wgm{}", self.id);
        self.start_wireguard_go(&h, &name);
        let key_file = self.write_file("client.key", &self.client_private_key, 0o600);
        let endpoint = format!("{SERVER_UNDERLAY}:{SERVER_PORT}");
        self.must(&self.in_ns(
            &h,
            &[
                "wg",
                "set",
                &name,
                "private-key",
                &key_file.to_string_lossy(),
                "peer",
                &self.server_public_key,
                "endpoint",
                &endpoint,
                "allowed-ips",
                "10.77.0.0/24,fd77::/64",
            ],
        ));
        self.must(&[
            "ip",
            "-n",
            &h,
            "addr",
            "add",
            &format!("{CLIENT_TUNNEL_V4}/32"),
            "dev",
            &name,
        ]);
        self.must(&[
            "ip",
            "-n",
            &h,
            "addr",
            "add",
            &format!("{CLIENT_TUNNEL_V6}/128"),
            "dev",
            &name,
            "nodad",
        ]);
        self.must(&["ip", "-n", &h, "link", "set", &name, "up"]);
        self.must(&["ip", "-n", &h, "route", "add", "10.77.0.0/24", "dev", &name]);
        self.must(&[
            "ip",
            "-n",
            &h,
            "-6",
            "route",
            "add",
            "fd77::/64",
            "dev",
            &name,
        ]);
        name
    }

    /// Runs `busybox ARGS...` in the lab's host netns.
    pub fn host_busybox(&self, args: &[&str]) -> CmdOutput {
        let mut argv = vec!["busybox"];
        argv.extend_from_slice(args);
        self.run(&self.in_ns(&self.host_ns, &argv))
    }

    /// From the lab's WireGuard server netns (so through the tunnel when `addr` is the container's tunnel
    /// address), a TCP connection to `addr` `port` with busybox nc, given 2 s to answer.
    pub fn nc_from_server(&self, addr: &str, port: &str) -> CmdOutput {
        self.run(&self.in_ns(
            &self.server_ns,
            &["busybox", "timeout", "3", "nc", "-w", "2", addr, port],
        ))
    }

    // ----- observations ------------------------------------------------------------------------------------------

    /// The addresses of the peers the TCP responder accepted, in order.
    pub fn responder_peer_ips(&self) -> Vec<String> {
        self.responder_peers()
            .iter()
            .map(|p| p.ip().to_string())
            .collect()
    }

    /// Peers the TCP responder accepted, in order.
    pub fn responder_peers(&self) -> Vec<SocketAddr> {
        self.responder
            .as_ref()
            .map(|r| r.hits.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Link names in the lab's host netns.
    pub fn host_links(&self) -> Vec<String> {
        let out = self.run(&["ip", "-n", &self.host_ns, "-o", "link"]);
        out.assert_success("listing host links");
        parse_link_names(&out.stdout)
    }

    /// Everything every command of this lab printed, in order.
    pub fn transcript(&self) -> String {
        self.transcript.lock().unwrap().clone()
    }

    /// The host link name of `cid`'s tunnel, from its record (the hook picks it at random), remembered once seen
    /// so that it is still known after poststop removed the record.
    pub fn host_link_of(&self, cid: &str) -> Option<String> {
        let mut known = self.known_links.lock().unwrap();
        if let Some((_, name)) = known.iter().find(|(id, _)| id == cid) {
            return Some(name.clone());
        }
        let name = record_host_link(&self.record_path(cid))?;
        known.push((cid.to_owned(), name.clone()));
        Some(name)
    }

    /// The hook's userspace daemons in this lab's host netns: (pid, argv, the `wgo*` name in their argv).
    pub fn hook_daemons(&self) -> Vec<(u32, String, String)> {
        let Some(host) = ns_id(&netns_path(&self.host_ns)) else {
            return Vec::new();
        };
        processes_mentioning(HOST_LINK_PREFIX)
            .into_iter()
            .filter(|(pid, _)| ns_id(&format!("/proc/{pid}/ns/net")) == Some(host))
            .filter_map(|(pid, argv)| {
                let name = argv
                    .split(' ')
                    .find(|a| a.starts_with(HOST_LINK_PREFIX))?
                    .to_owned();
                Some((pid, argv, name))
            })
            .collect()
    }

    /// What of container `cid`'s tunnel still exists; empty when nothing does. Its link name comes from its
    /// record (see `host_link_of`); besides, any `wgo*` link in the lab's host netns, and any hook daemon there
    /// that no other container's live record names, counts.
    pub fn leftovers(&self, cid: &str) -> Vec<String> {
        let name = self.host_link_of(cid);
        let mut found = Vec::new();
        for link in self.host_links() {
            if link.starts_with(HOST_LINK_PREFIX) {
                found.push(format!("link {link} in the host netns {}", self.host_ns));
            }
        }
        let others: Vec<String> = fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name() != *format!("{cid}.json"))
            .filter_map(|e| record_host_link(&e.path()))
            .collect();
        let mut sockets: Vec<String> = name.iter().cloned().collect();
        for (pid, argv, daemon_name) in self.hook_daemons() {
            if !others.contains(&daemon_name) {
                found.push(format!("process {pid}: {argv}"));
                sockets.push(daemon_name);
            }
        }
        for (pid, argv) in port_forward_helpers(cid) {
            found.push(format!("port-forwarding helper {pid}: {argv}"));
        }
        for name in sockets {
            let sock = Path::new("/var/run/wireguard").join(format!("{name}.sock"));
            if sock.exists() {
                found.push(format!("UAPI socket {}", sock.display()));
            }
        }
        let record = self.record_path(cid);
        if record.exists() {
            found.push(format!("state record {}", record.display()));
        }
        if let Ok(entries) = fs::read_dir(&self.state_dir) {
            for e in entries.flatten() {
                let file_name = e.file_name().to_string_lossy().into_owned();
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if !is_dir
                    && file_name != format!("{cid}.json")
                    && (file_name.contains(cid) || file_name.contains("tmp"))
                {
                    found.push(format!("stray file {}", e.path().display()));
                }
            }
        }
        found
    }

    /// Nothing of `cid`'s tunnel is left (waiting up to 10 s for teardown that the kernel does asynchronously):
    /// no `wgo*` link in the host netns, no hook daemon there that is not another live container's, no UAPI
    /// socket of its name, no record and no temp file in the state dir.
    #[track_caller]
    pub fn assert_nothing_left(&self, cid: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let left = self.leftovers(cid);
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "container {cid} (host link {}) left behind, {} s after it ended:\n  {}\n=== lab transcript ===\n{}",
                    self.host_link_of(cid).as_deref().unwrap_or("unknown"),
                    SETTLE.as_secs(),
                    left.join("\n  "),
                    self.transcript()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    // ----- plumbing ------------------------------------------------------------------------------------------------

    fn in_ns(&self, ns: &str, args: &[&str]) -> Vec<String> {
        let mut v = vec!["nsenter".to_owned(), format!("--net={}", netns_path(ns))];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn start_wireguard_go(&self, ns: &str, ifname: &str) {
        let log = File::create(self.dir.join(format!("{ifname}.log"))).unwrap();
        let child = Command::new("nsenter")
            .env("PATH", lab_path())
            .args([
                &format!("--net={}", netns_path(ns)),
                "wireguard-go",
                "-f",
                ifname,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning wireguard-go");
        self.lab_wg_ifs.lock().unwrap().push(ifname.to_owned());
        self.children
            .lock()
            .unwrap()
            .push((format!("wireguard-go {ifname}"), child));
        let sock = Path::new("/var/run/wireguard").join(format!("{ifname}.sock"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            let exited = {
                let mut children = self.children.lock().unwrap();
                let (_, child) = children.last_mut().unwrap();
                child.try_wait().ok().flatten()
            };
            if exited.is_some() || Instant::now() > deadline {
                let log =
                    fs::read_to_string(self.dir.join(format!("{ifname}.log"))).unwrap_or_default();
                panic!("wireguard-go {ifname} in {ns} did not come up ({exited:?}):\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Not logged: the transcript must never hold a private key.
    fn genkey(&self) -> String {
        let out = run_cmd(&["wg", "genkey"]);
        assert!(out.success(), "wg genkey failed: {}", out.stderr);
        out.stdout.trim().to_owned()
    }

    fn pubkey(&self, private: &str) -> String {
        let mut cmd = Command::new("wg");
        cmd.env("PATH", lab_path()).arg("pubkey");
        let out = output_with_stdin(cmd, format!("{private}\n").as_bytes(), "wg pubkey");
        out.assert_success("wg pubkey");
        out.stdout.trim().to_owned()
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
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
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
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            names.push(name);
        }
        names.extend(self.known_links.lock().unwrap().drain(..).map(|(_, n)| n));
        for cid in self.seen_cids.lock().unwrap().iter() {
            for (pid, _) in port_forward_helpers(cid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
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
        let prefix = self.dir.to_string_lossy().into_owned();
        let mounts = run_cmd(&["findmnt", "-rn", "-o", "TARGET"]);
        let mut under: Vec<&str> = mounts
            .stdout
            .lines()
            .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let out = run_cmd(&["umount", "-l", m]);
            if !out.success() {
                problems.push(format!("umount {m}:\n{out}"));
            }
        }
        if thread::panicking() {
            for ifname in self.lab_wg_ifs.lock().unwrap().iter() {
                if let Ok(log) = fs::read_to_string(self.dir.join(format!("{ifname}.log"))) {
                    eprintln!("=== lab {} wireguard-go {ifname} log ===\n{log}", self.id);
                }
            }
        }
        for attempt in 1..=5 {
            match fs::remove_dir_all(&self.dir) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) if attempt == 5 => {
                    problems.push(format!("removing {}: {e}", self.dir.display()))
                }
                Err(_) => thread::sleep(Duration::from_millis(200)),
            }
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

// ----- the TCP responder ---------------------------------------------------------------------------------------

struct Responder {
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl Responder {
    /// A thread that enters `netns`, listens on `addrs` and answers every connection with [`MARKER`].
    fn start(netns: &str, addrs: Vec<SocketAddr>) -> Responder {
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let netns_owned = netns.to_owned();
        let (stop2, hits2) = (stop.clone(), hits.clone());
        let thread = thread::spawn(move || {
            let listeners = match bind_in_netns(&netns_owned, &addrs) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !stop2.load(Ordering::SeqCst) {
                let mut idle = true;
                for l in &listeners {
                    match l.accept() {
                        Ok((mut stream, peer)) => {
                            idle = false;
                            hits2.lock().unwrap().push(peer);
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                            let _ = stream.write_all(MARKER.as_bytes());
                            let _ = stream.shutdown(std::net::Shutdown::Write);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => {}
                    }
                }
                if idle {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Responder {
                stop,
                hits,
                thread: Some(thread),
            },
            other => {
                stop.store(true, Ordering::SeqCst);
                panic!("TCP responder in {netns} did not start: {other:?}");
            }
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind_in_netns(netns: &str, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
    let f = File::open(netns).map_err(|e| format!("open {netns}: {e}"))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns: {e}"))?;
    addrs
        .iter()
        .map(|a| {
            let l = TcpListener::bind(a).map_err(|e| format!("bind {a}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(l)
        })
        .collect()
}

// ----- helpers -----------------------------------------------------------------------------------------------------

fn lab_path() -> String {
    match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => format!("{LAB_PATH}:{p}"),
        _ => LAB_PATH.to_owned(),
    }
}

fn resolve_tool(name: &str) -> Option<String> {
    lab_path()
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
        .map(|p| p.to_string_lossy().into_owned())
}

/// The first `name` in podman's default helper dirs (the lab's own wrapper dir excluded).
fn find_podman_helper(name: &str) -> Option<String> {
    PODMAN_HELPER_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
        .map(|p| p.to_string_lossy().into_owned())
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

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

fn netns_path(ns: &str) -> String {
    format!("/var/run/netns/{ns}")
}

fn run_cmd(argv: &[&str]) -> CmdOutput {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    run_argv(&argv, &[])
}

/// Runs `timeout -k 5 60 ARGV...` with the lab's PATH and extra `env`, stdin from /dev/null.
fn run_argv(argv: &[String], env: &[(&str, &Path)]) -> CmdOutput {
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

fn output_with_stdin(mut cmd: Command, stdin: &[u8], cmdline: &str) -> CmdOutput {
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

fn stop_child(what: &str, child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("lab: {what} ({pid}) ignored SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// (pid, argv) of every process with an argument containing `needle`.
/// Script output between `BEGIN <tag>` and `END <tag>` lines.
pub fn section<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    let (begin, end) = (format!("BEGIN {tag}"), format!("END {tag}"));
    out.lines()
        .skip_while(|l| *l != begin)
        .skip(1)
        .take_while(|l| *l != end)
        .collect()
}

/// The hook's error line for a refused container: podman must fail, relay
/// `wg-oci-hook: container <cid>: <step>: <cause>` containing every `needle`, and leave nothing behind.
#[track_caller]
pub fn assert_refused(lab: &Lab, opts: &RunOpts, needles: &[&str]) -> RunOutput {
    let run = lab.podman_run(opts);
    assert!(!run.success(), "podman run should have failed\n{run}");
    let cid = run.cid().to_owned();
    let line = run.hook_error_line().unwrap_or_else(|| {
        panic!("podman's stderr lacks the hook's line `wg-oci-hook: container {cid}: ...`\n{run}")
    });
    println!("refused as expected: {line}");
    for needle in needles {
        assert!(
            line.contains(needle),
            "the hook's error line should name `{needle}`:\n  {line}\n{run}"
        );
    }
    lab.assert_nothing_left(&cid);
    run
}

/// The hook's PIA port-forwarding helpers for container `cid` (`wg-oci-hook ... pia-port-forward CID`).
pub fn port_forward_helpers(cid: &str) -> Vec<(u32, String)> {
    processes_mentioning(cid)
        .into_iter()
        .filter(|(_, argv)| argv.split(' ').any(|a| a == "pia-port-forward"))
        .collect()
}

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
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a.contains(needle)) {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// The `host_link` of the record at `path`, if it holds one.
fn record_host_link(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(record["host_link"].as_str()?.to_owned())
}

/// Names from `ip -o link` output (`2: name@peer: <...>`).
pub fn parse_link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
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

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` as one single-quoted sh word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// (device, inode) of a namespace file such as `/proc/PID/ns/net` or a netns bind mount: equal means same netns.
fn ns_id(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn toml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| toml_str(s))
            .collect::<Vec<_>>()
            .join(", ")
    )
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
