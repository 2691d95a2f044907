//! The lab's network namespaces: `wgl-<id>-h` (the "host", where podman, runc and the hook run) and
//! `wgl-<id>-s` (the WireGuard server's side), the veth underlay between them, `ip -n` and `nsenter --net=`
//! argv for them, and stand-in container inits (sleepers) in the host netns.

use super::command::lab_path;
use super::{CmdOutput, Lab, LabOpts, HOST_UNDERLAY, PUBLIC_V4, PUBLIC_V6, SERVER_UNDERLAY};
use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub(super) fn netns_path(ns: &str) -> String {
    format!("/var/run/netns/{ns}")
}

/// (device, inode) of a namespace file such as `/proc/PID/ns/net` or a netns bind mount: equal means same netns.
pub fn ns_id(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Names from `ip -o link` output (`2: name@peer: <...>`).
pub fn parse_link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// `nsenter --net=<netns> ARGS...`: `ARGS` run in the lab netns `netns`.
pub(super) fn in_netns(netns: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["nsenter".to_owned(), format!("--net={}", netns_path(netns))];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// `nsenter --net=<netns>` with the lab's PATH, to spawn a process the lab keeps running in the lab netns `netns`.
pub(super) fn nsenter(netns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.env("PATH", lab_path())
        .arg(format!("--net={}", netns_path(netns)));
    cmd
}

/// `ip -n NETNS ARGS...`.
fn ip_argv(netns: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["ip".to_owned(), "-n".to_owned(), netns.to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

impl Lab {
    /// Runs `ip -n NETNS ARGS...` (bounded by a timeout, logged to the transcript).
    pub fn ip(&self, netns: &str, args: &[&str]) -> CmdOutput {
        self.run(&ip_argv(netns, args))
    }

    /// `ip -n NETNS ARGS...` for the lab's setup: it must succeed.
    #[track_caller]
    pub(super) fn must_ip(&self, netns: &str, args: &[&str]) -> CmdOutput {
        self.must(&ip_argv(netns, args))
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

    pub(super) fn spawn_unshared_sleeper(&self, own_mount_ns: bool) -> u32 {
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

    pub(super) fn spawn_in_host_ns(&self, what: &str, argv: &[&str]) -> u32 {
        let child = nsenter(&self.host_ns)
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

    /// Runs `busybox ARGS...` in the lab's host netns.
    pub fn host_busybox(&self, args: &[&str]) -> CmdOutput {
        let mut argv = vec!["busybox"];
        argv.extend_from_slice(args);
        self.run_in(&self.host_ns, &argv)
    }

    /// From the lab's WireGuard server netns (so through the tunnel when `addr` is the container's tunnel
    /// address), a TCP connection to `addr` `port` with busybox nc, given 2 s to answer.
    pub fn nc_from_server(&self, addr: &str, port: &str) -> CmdOutput {
        self.run_in(
            &self.server_ns,
            &["busybox", "timeout", "3", "nc", "-w", "2", addr, port],
        )
    }

    /// Link names in the lab's host netns.
    pub fn host_links(&self) -> Vec<String> {
        let out = self.ip(&self.host_ns, &["-o", "link"]);
        out.assert_success("listing host links");
        parse_link_names(&out.stdout)
    }

    /// Runs `ARGS...` in the lab netns `netns` (through nsenter; bounded by a timeout, logged).
    pub fn run_in(&self, netns: &str, args: &[&str]) -> CmdOutput {
        self.run(&in_netns(netns, args))
    }

    /// `run_in` for the lab's setup: it must succeed.
    #[track_caller]
    pub(super) fn must_in(&self, netns: &str, args: &[&str]) -> CmdOutput {
        self.must(&in_netns(netns, args))
    }

    /// The underlay: `lo` up in both namespaces, the veth pair between them (MTU as `opts` says), its addresses,
    /// and the public-looking addresses on the host netns's `lo`.
    pub(super) fn build_underlay(&mut self, opts: &LabOpts) {
        let (h, s) = (self.host_ns.clone(), self.server_ns.clone());
        let (vh, vs) = (self.host_veth.clone(), self.server_veth.clone());
        self.must_ip(&h, &["link", "set", "lo", "up"]);
        self.must_ip(&s, &["link", "set", "lo", "up"]);
        self.must_ip(
            &h,
            &[
                "link", "add", &vh, "type", "veth", "peer", "name", &vs, "netns", &s,
            ],
        );
        if let Some(mtu) = opts.host_mtu {
            let mtu = mtu.to_string();
            self.must_ip(&h, &["link", "set", &vh, "mtu", &mtu]);
            self.must_ip(&s, &["link", "set", &vs, "mtu", &mtu]);
        }
        self.must_ip(
            &h,
            &["addr", "add", &format!("{HOST_UNDERLAY}/30"), "dev", &vh],
        );
        self.must_ip(
            &s,
            &["addr", "add", &format!("{SERVER_UNDERLAY}/30"), "dev", &vs],
        );
        self.must_ip(&h, &["link", "set", &vh, "up"]);
        self.must_ip(&s, &["link", "set", &vs, "up"]);
        // Public-looking addresses that are local to the host netns (see `bridge::PUBLIC_V4`).
        for addr in [format!("{PUBLIC_V4}/32"), format!("{PUBLIC_V6}/128")] {
            self.must_ip(&h, &["addr", "add", &addr, "dev", "lo"]);
        }
    }
}

impl Lab {
    /// The server netns stops answering `addr` (an address of its own: the WireGuard server's, a PIA server's):
    /// every packet to it is dropped on the way in, as if the machine behind it had gone. Undone by
    /// [`Lab::answer_again`].
    pub fn silence(&self, addr: &str) {
        let table = silence_table(addr);
        let rules = format!(
            "table inet {table} {{\n\tchain input {{\n\t\ttype filter hook input priority -20; policy accept;\n\
             \t\tip daddr {addr} drop\n\t}}\n}}\n"
        );
        let file = self.write_file(&format!("{table}.nft"), &rules, 0o600);
        self.run_in(&self.server_ns, &["nft", "-f", &file.to_string_lossy()])
            .assert_success(&format!("silencing {addr} in the server netns"));
    }

    /// `addr` answers again.
    pub fn answer_again(&self, addr: &str) {
        self.run_in(
            &self.server_ns,
            &["nft", "delete", "table", "inet", &silence_table(addr)],
        )
        .assert_success(&format!("letting {addr} answer again"));
    }

    /// The lab's WireGuard server forgets the peer `public_key` (base64), as a VPN provider forgets a key:
    /// its packets are dropped from then on.
    pub fn forget_peer(&self, public_key: &str) {
        self.run_in(
            &self.server_ns,
            &["wg", "set", &self.server_if, "peer", public_key, "remove"],
        )
        .assert_success("removing a peer from the lab's server");
    }

    /// An extra address `addr` (/32) of the server netns on its lo, routed to from the host netns: the
    /// WireGuard server answers there too (it listens on every address).
    pub fn add_server_address(&self, addr: &str) {
        self.must_ip(
            &self.server_ns,
            &["addr", "add", &format!("{addr}/32"), "dev", "lo"],
        );
        self.must_ip(
            &self.host_ns,
            &[
                "route",
                "add",
                &format!("{addr}/32"),
                "via",
                SERVER_UNDERLAY,
            ],
        );
    }
}

fn silence_table(addr: &str) -> String {
    format!("wgl_silence_{}", addr.replace(['.', ':'], "_"))
}
